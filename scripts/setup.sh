#!/usr/bin/env bash
# Set up a development environment for mlengine, idempotently.
#
#   scripts/setup.sh
#
# On a fresh Debian machine (as root, or with sudo) this:
#   1. installs the system packages the tests need (PostgreSQL server; Chromium for the
#      console's Playwright tests, driven through /usr/bin/chromium) if missing;
#   2. creates .venv in the repository root (python3 -m venv);
#   3. installs uv into it and, with uv, the project in editable mode with the
#      extras [tensorflow,sklearn,postgres,ray,notebooks,test];
#   4. installs PyTorch's CPU build with pip (torch==2.13.0; see below).
# A second run only checks, and takes seconds: step 3 is skipped while
# pyproject.toml and this script are unchanged since the last successful install
# and the venv still imports the project (MLE_SETUP_FORCE=1 reinstalls anyway).
#
# Environment:
#   PYTHON            interpreter used to create .venv (default: python3, needs >= 3.10)
#   MLE_SETUP_EXTRAS  extras to install (default: tensorflow,sklearn,postgres,ray,notebooks,test)
#   MLE_SETUP_NO_TORCH 1 = skip step 4
#   MLE_SETUP_FORCE   1 = run the package install even when it looks up to date
#   MLE_SETUP_NO_APT  1 = never call apt-get (fail later if PostgreSQL is missing)
#
# torch is not in the uv step: on this kind of machine pip is capped at a local
# CPU torch wheel that uv does not see, and uv would download a multi-GB CUDA
# build. Step 4 installs it with pip (pip install torch==2.13.0), once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
EXTRAS="${MLE_SETUP_EXTRAS:-tensorflow,sklearn,postgres,ray,notebooks,test}"
TORCH_VERSION="2.13.0"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.mlengine-setup-stamp"

step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

START=$SECONDS

# uv trusts its own bundled roots and pip (23.x) certifi's; behind a TLS-inspecting
# proxy only the system bundle (with the proxy's CA added) works. Use it when present.
SYSTEM_CA=/etc/ssl/certs/ca-certificates.crt
if [ -s "$SYSTEM_CA" ]; then
    export SSL_CERT_FILE="${SSL_CERT_FILE:-$SYSTEM_CA}"
    export PIP_CERT="${PIP_CERT:-$SYSTEM_CA}"
fi

# --------------------------------------------------------------------------- #
# 1. System packages
# --------------------------------------------------------------------------- #
have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q -o Dpkg::Use-Pty=0 --no-install-recommends)
    local log
    log="$(mktemp -t mle-apt.XXXXXX.log)"
    if ! apt_lists_present; then
        info "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$@" >"$log" 2>&1; then
        # Stale package lists are the usual cause: refresh once and retry.
        info "apt-get install failed; running apt-get update and retrying"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$@" >"$log" 2>&1 \
            || { tail -n 30 "$log" >&2; die "apt-get install $* failed (log: $log)"; }
    fi
    rm -f "$log"
}

step "System packages"
if have_postgres; then
    info "PostgreSQL server present ($(echo /usr/lib/postgresql/*/bin))"
elif [ "${MLE_SETUP_NO_APT:-0}" = "1" ]; then
    info "PostgreSQL server missing; MLE_SETUP_NO_APT=1, not installing"
else
    command -v apt-get >/dev/null 2>&1 \
        || die "PostgreSQL server not found and apt-get is unavailable; install PostgreSQL (initdb, pg_ctl) yourself"
    info "installing PostgreSQL server (apt-get install postgresql)"
    # The tests start their own throw-away server: don't let the Debian package
    # create (and try to start) a default cluster on port 5432.
    if [ ! -e /etc/postgresql-common/createcluster.d/mlengine.conf ]; then
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" \
            | as_root tee /etc/postgresql-common/createcluster.d/mlengine.conf >/dev/null
    fi
    apt_install postgresql
    have_postgres || die "apt-get installed postgresql but initdb/pg_ctl are still missing"
    info "installed: $(echo /usr/lib/postgresql/*/bin)"
fi
# The browser tests (console, notebooks) drive Debian's Chromium with Playwright (the test
# extra's playwright package; never `playwright install`, a download outside apt).
if command -v chromium >/dev/null 2>&1; then
    info "Chromium present ($(command -v chromium))"
elif [ "${MLE_SETUP_NO_APT:-0}" = "1" ] || ! command -v apt-get >/dev/null 2>&1; then
    info "Chromium missing; the browser tests will be skipped"
else
    info "installing Chromium (apt-get install chromium)"
    apt_install chromium
fi

# --------------------------------------------------------------------------- #
# 2. Virtual environment
# --------------------------------------------------------------------------- #
step "Python virtual environment (.venv)"
if [ -x "$VPY" ] && "$VPY" -c 'import sys' >/dev/null 2>&1; then
    info "exists: $("$VPY" -V 2>&1)"
else
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=/path/to/python3.10+)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); mlengine needs Python >= 3.10"
    if [ -e "$VENV" ]; then
        info "existing .venv is broken; recreating it"
        rm -rf "$VENV"
    fi
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
    info "created with $("$VPY" -V 2>&1)"
fi

# --------------------------------------------------------------------------- #
# 3. uv and the project
# --------------------------------------------------------------------------- #
step "uv"
if [ -x "$VENV/bin/uv" ] && "$VENV/bin/uv" --version >/dev/null 2>&1; then
    info "present: $("$VENV/bin/uv" --version)"
else
    "$VPY" -m pip install -qq --disable-pip-version-check uv
    info "installed: $("$VENV/bin/uv" --version)"
fi

step "Project and dependencies: -e .[$EXTRAS]"
# The stamp records what the last successful install was made from.
want_stamp="$(cat pyproject.toml "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1) $EXTRAS"
up_to_date() {
    [ "${MLE_SETUP_FORCE:-0}" != "1" ] \
        && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
        && "$VPY" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
import pathlib
import mlengine  # the editable install must point at this checkout
md.distribution("mlengine")
assert pathlib.Path(mlengine.__file__).resolve().is_relative_to(pathlib.Path("src").resolve())
EOF
}
if up_to_date; then
    info "up to date (pyproject.toml unchanged since last install; MLE_SETUP_FORCE=1 to reinstall)"
else
    rm -f "$STAMP"
    t0=$SECONDS
    # uv does not read pip's configuration; it talks to PyPI directly.
    "$VENV/bin/uv" pip install --quiet --python "$VPY" -e ".[$EXTRAS]"
    "$VPY" -c 'import mlengine' || die "the project installed but 'import mlengine' fails"
    echo "$want_stamp" >"$STAMP"
    info "installed in $((SECONDS - t0))s"
fi

step "PyTorch $TORCH_VERSION (CPU build; the distributed training tests use it)"
if [ "${MLE_SETUP_NO_TORCH:-0}" = "1" ]; then
    info "skipped (MLE_SETUP_NO_TORCH=1)"
elif "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '$TORCH_VERSION')" \
        >/dev/null 2>&1; then
    info "present"
else
    "$VPY" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
        || die "pip install torch==$TORCH_VERSION failed"
    info "installed"
fi

step "Setup done in $((SECONDS - START))s"
