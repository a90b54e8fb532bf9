#!/usr/bin/env bash
# Lint, format and type checks, run before the tests (README's test command, .ci/run).
# Configuration: [tool.ruff] and [tool.mypy] in pyproject.toml. Fix what they report; do not
# silence it: no module is exempt, and a `# type: ignore[code]` is only for a wrong third-party stub,
# with the reason beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
echo "ruff check"
"$BIN/ruff" check .
echo "ruff format --check"
"$BIN/ruff" format --check .
echo "mypy voxssl"
"$BIN/mypy"
