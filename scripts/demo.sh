#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the mlengine demo end to end.
#
#   scripts/demo.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

export PATH="$ROOT/.venv/bin:$PATH"

# =========================================================================== #
# The demo: the AI Platform workflow on this machine with the taxifare sample.
# State goes to a fresh MLE_HOME (override with MLE_HOME=...); the server is
# stopped at the end. Set DEMO_STEPS to train longer.
# =========================================================================== #
export MLE_HOME="${MLE_HOME:-$(mktemp -d /tmp/mlengine-demo-XXXX)}"
unset MLE_API_URL MLE_TOKEN
SAMPLE="$ROOT/samples/taxifare"
DATA="$SAMPLE/data"
STEPS="${DEMO_STEPS:-200}"
WORK="$MLE_HOME/demo"
mkdir -p "$WORK"
TRAIN_ARGS=(--train-data-paths "$DATA/taxi-train.csv" --eval-data-paths "$DATA/taxi-valid.csv"
            --train-steps "$STEPS" --batch-size 64 --num-evals 2)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "mle local train: run the trainer package locally, as gcloud ai-platform local train does"
mle local train --package-path "$SAMPLE/trainer" --module-name trainer.task \
    --job-dir "$WORK/local" -- "${TRAIN_ARGS[@]}" --train-steps 20

step "mle server start: the control plane (MLE_HOME=$MLE_HOME)"
mle server start --port 0
trap 'mle server stop >/dev/null 2>&1 || true' EXIT
mle server status

JOB="taxifare_$(date +%Y%m%d_%H%M%S)"
step "mle jobs submit training $JOB --stream-logs: the same package as a training job"
mle jobs submit training "$JOB" --package-path "$SAMPLE/trainer" --module-name trainer.task \
    --job-dir "$WORK/$JOB" --region local --labels sample=taxifare --stream-logs \
    -- "${TRAIN_ARGS[@]}"

step "mle jobs describe $JOB"
mle jobs describe "$JOB"

step "mle jobs list"
mle jobs list

step "The exported SavedModel"
EXPORT="$(ls -d "$WORK/$JOB"/export/*/ | tail -1)"
ls -l "$EXPORT"
python - "$EXPORT" <<'PY'
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
signature = model.signatures["serving_default"]
print("serving_default inputs:", sorted(signature.structured_input_signature[1]))
ride = {"pickup_datetime": tf.constant(["2011-01-28 20:42:59 UTC"]),
        "pickup_longitude": tf.constant([-73.999022]), "pickup_latitude": tf.constant([40.739146]),
        "dropoff_longitude": tf.constant([-73.990369]), "dropoff_latitude": tf.constant([40.717866]),
        "passenger_count": tf.constant([1.0])}
print("predicted fare for a 2.5 km ride in Manhattan:", signature(**ride))
PY

step "Done: job $JOB SUCCEEDED; its outputs are in $WORK/$JOB"
