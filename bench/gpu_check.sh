#!/usr/bin/env bash
# Accept vsr's GPU path on a CUDA machine: the GPU tests (TensorRT through GpuFrames among them), `vsr bench --eval`,
# a 1080p-output upscale checked against its input, a 10-bit clip against fp32, a `--workers 2` segment run against
# the streaming path, `vsr train` resumed after an epoch against an uninterrupted run (bit for bit), and a pass/fail
# table against the goals (details: bench/gpu_check.py; tests/test_gpu_check.py runs its steps on the CPU).
#   bash bench/gpu_check.sh [--data DIR] [--out FILE] [--no-tensorrt]
# Exit 0: every goal passed; 1: some failed; 77: no CUDA GPU here (one line, nothing run).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then py=python; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c "import vsr, torch" 2>/dev/null; then
  echo "gpu_check: $py cannot import vsr and torch; install them first (see docs/gpu.md)" >&2
  exit 2
fi
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to torch $("$py" -c 'import torch; print(torch.__version__)') here; run it on a machine with an NVIDIA GPU" >&2
  exit 77
fi
exec "$py" bench/gpu_check.py "$@"
