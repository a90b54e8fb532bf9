#!/usr/bin/env bash
# Create .venv and install voxssl into it, CPU torch first so that no dependency pulls a CUDA build.
# GPU users: create .venv with your CUDA torch yourself first (see README); an importable torch is kept.
# Quiet when it works; when a step fails it prints that step's full output and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

# Run a command quietly; on failure show everything it printed, then stop.
quietly() {
    local what=$1 log
    shift
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        fail "$what failed (its output is above)"
    fi
    rm -f "$log"
}

if [ ! -x .venv/bin/python ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        fail "voxssl needs Python 3.10 or newer; $PY is $("$PY" --version 2>&1) (set PYTHON=python3.X)"
    echo "creating .venv with $("$PY" --version 2>&1)"
    quietly "creating the virtual environment" "$PY" -m venv .venv
fi
quietly "upgrading pip" .venv/bin/python -m pip install --upgrade pip

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "installing torch 2.13.0 (CPU build)"
    quietly "installing torch" .venv/bin/python -m pip install "torch==2.13.0"
fi
# the installed version, read from its metadata: importing torch before numpy is there warns
TORCH=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))") ||
    fail "no torch in .venv after installing it"

CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
# pin whatever torch is installed (CPU 2.13.0 here, or the user's CUDA build) for the rest
echo "torch==$TORCH" >"$CONSTRAINT"
echo "installing voxssl and its dependencies (torch $TORCH kept)"
quietly "installing voxssl" .venv/bin/python -m pip install -c "$CONSTRAINT" -e ".[fewshot,test]"
# The explore page's browser test drives Debian's chromium (never a downloaded browser); as root
# with apt-get, install it when missing (--no-install-recommends keeps it to the browser itself).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium with apt-get (for tests/embedding/test_explore_browser.py)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
        || echo "chromium could not be installed: the browser test will be skipped"
fi

# The checks that catch a broken environment here rather than in the first command: torch is the
# one pinned above, and it works with the numpy that the other dependencies brought in.
.venv/bin/python - "$TORCH" <<'EOF' || fail "the installed environment does not work (see above)"
import sys

import numpy
import torch

expected = sys.argv[1]
if torch.__version__ != expected:
    sys.exit(f"torch changed from {expected} to {torch.__version__} during the install")
torch.from_numpy(numpy.arange(3.0)).sum()  # a torch built against another numpy ABI fails here

import monai

import voxssl

print(f"voxssl {voxssl.__version__} ready (torch {torch.__version__}, numpy {numpy.__version__}, monai {monai.__version__})")
EOF
