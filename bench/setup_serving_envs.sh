#!/usr/bin/env bash
# Virtual environments of the serving benchmark's peers (bench/serving.py), under bench/.envs/
# (gitignored): MLflow and Ray Serve, each with the same scikit-learn and TensorFlow as .venv,
# plus wrk (Debian) as the load generator. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV="$ROOT/.venv/bin/uv"
PY="$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
SK="$("$ROOT/.venv/bin/python" -c 'import sklearn; print(sklearn.__version__)')"
TF="$("$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
for peer in mlflow "ray[serve]"; do
    name="${peer%%[*}"
    [ -x "$ROOT/bench/.envs/$name/bin/python" ] || "$UV" venv --python "$PY" "$ROOT/bench/.envs/$name"
    "$UV" pip install --quiet --python "$ROOT/bench/.envs/$name/bin/python" "$peer" "scikit-learn==$SK" \
        "tensorflow-cpu==$TF" pandas
done
echo "bench/.envs ready: $(ls "$ROOT/bench/.envs")"
