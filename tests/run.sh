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
# opencv-python (it has the window of `vsr webcam`) needs libGL and GLib, which minimal images lack. The window test
# runs a real X server (Xvfb), sends keys (xdotool) and grabs the screen (ImageMagick's import); it skips without
# them. Install what is missing where we can: as root on a Debian/Ubuntu machine.
missing=()
"$PY" -c "import cv2" >/dev/null 2>&1 || missing+=(libgl1 libglib2.0-0)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
command -v xdotool >/dev/null 2>&1 || missing+=(xdotool)
command -v import >/dev/null 2>&1 || missing+=(imagemagick)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      echo "tests/run.sh: could not install ${missing[*]}; the window test will skip" >&2
  fi
fi
"$PY" -m ruff check vsr tests bench
"$PY" -m ruff format --check vsr tests bench
export VSR_TEST_DATA="${VSR_TEST_DATA:-$(cd .. && pwd)/shared/data}"
exec "$PY" -m pytest -q tests "$@"
