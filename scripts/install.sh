#!/usr/bin/env bash
# Create .venv and install voxssl into it, CPU torch first so that no dependency pulls a CUDA build.
# GPU users: create .venv with your CUDA torch yourself first (see README); an importable torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
# pin whatever torch is installed (CPU 2.13.0 here, or the user's CUDA build) for the rest
.venv/bin/python -c "import torch; print('torch==' + torch.__version__)" > "$CONSTRAINT"
.venv/bin/python -m pip install -q -c "$CONSTRAINT" -e ".[fewshot,test]" 2>&1 | grep -vE "^WARNING: Location|BuildBackendWarning" || true
# The explore page's browser test drives Debian's chromium (never a downloaded browser); as root
# with apt-get, install it when missing (--no-install-recommends keeps it to the browser itself).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium with apt-get (for tests/embedding/test_explore_browser.py)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
        || echo "chromium could not be installed: the browser test will be skipped"
fi
.venv/bin/python -c "import voxssl, torch, monai; print(f'voxssl {voxssl.__version__} ready (torch {torch.__version__}, monai {monai.__version__})')"
