#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (ruff, mypy, import contracts), then run the test suite (pytest).
#
#   scripts/test.sh [PYTEST ARGS...]
#
# Examples:
#   scripts/test.sh                          # everything
#   scripts/test.sh tests/store -x           # a subset (paths replace the default "tests")
#   scripts/test.sh -m "not e2e" -k filter   # select by marker / keyword
#   MLE_TEST_LINT=0 scripts/test.sh tests/test_infra.py   # skip ruff and mypy
#
# Lint runs first and fails fast: if ruff, mypy or lint-imports reports anything, pytest is not
# run and the exit status is 1. Otherwise the exit status is pytest's, except that
# "no tests ran" (pytest's exit 5) is a failure too.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh || { echo "test.sh: setup failed" >&2; exit 1; }

VPY="$ROOT/.venv/bin/python"

if [ "${MLE_TEST_LINT:-1}" != "0" ]; then
    lint_failed=0
    echo "==> ruff check src tests"
    "$VPY" -m ruff check src tests || lint_failed=1
    echo "==> mypy"
    "$VPY" -m mypy || lint_failed=1
    echo "==> lint-imports (the layer map of docs/architecture.md)"
    "$ROOT/.venv/bin/lint-imports" || lint_failed=1
    if [ "$lint_failed" -ne 0 ]; then
        echo "test.sh: lint failed (ruff/mypy above); not running pytest. MLE_TEST_LINT=0 skips lint." >&2
        exit 1
    fi
fi

# Default to the whole suite unless the arguments already name test paths.
has_path=0
for arg in "$@"; do
    case "$arg" in -*) continue ;; esac
    [ -e "${arg%%::*}" ] && has_path=1
done
targets=()
[ "$has_path" -eq 0 ] && targets=(tests)

echo "==> pytest ${targets[*]}${targets[*]:+ }$*"
"$VPY" -m pytest "${targets[@]}" "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"
