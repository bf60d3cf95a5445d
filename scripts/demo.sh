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
DEMO_DIR="$(mktemp -d /tmp/mlengine-demo-XXXX)"
export MLE_HOME="${MLE_HOME:-$DEMO_DIR/home}"
unset MLE_API_URL MLE_TOKEN
SAMPLE="$ROOT/samples/taxifare"
DATA="$SAMPLE/data"
STEPS="${DEMO_STEPS:-200}"
# Job directories are the user's, never inside MLE_HOME (the server refuses its own home).
WORK="$DEMO_DIR/work"
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

step "mle models create taxifare; mle versions create v1 --origin $EXPORT"
mle models create taxifare
mle versions create v1 --model taxifare --origin "$EXPORT" --min-nodes 0 --max-nodes 2

step "mle predict: online prediction over the ml v1 REST API (served by a replica process)"
mle predict --model taxifare --json-instances "$SAMPLE/instances.json"

step "mle local predict: the same predictor code, no server"
mle local predict --model-dir "$EXPORT" --json-instances "$SAMPLE/instances.json"

step "mle versions list --model taxifare"
mle versions list --model taxifare

step "Done: job $JOB SUCCEEDED, its model serves predictions; outputs are in $WORK/$JOB"
