#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, lints, runs the suite.
# Where no NVIDIA GPU is present, torch is pinned to 2.13.0, which this project's machines
# resolve to the CPU build (elsewhere add --index-url https://download.pytorch.org/whl/cpu).
# Tests that need ../shared/data skip with a reason when VSR_TEST_DATA is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install --quiet torch
  else
    "$PY" -m pip install --quiet torch==2.13.0
  fi
fi
"$PY" -m pip install --quiet -e ".[test]"
"$PY" -m ruff check vsr tests bench
"$PY" -m ruff format --check vsr tests bench
export VSR_TEST_DATA="${VSR_TEST_DATA:-$(cd .. && pwd)/shared/data}"
exec "$PY" -m pytest -q tests "$@"
