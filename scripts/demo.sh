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
# DEMO BODY — PLACEHOLDER (the lead fills this in: train the taxifare sample,
# deploy it, predict, ...). For now it only proves the CLI is installed.
# =========================================================================== #
echo "==> mle --help"
mle --help
# =========================================================================== #
# END OF DEMO BODY PLACEHOLDER
# =========================================================================== #
