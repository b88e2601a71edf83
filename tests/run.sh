#!/usr/bin/env bash
# The test command (README, .ci/run): sets up a Python, installs what the tests need, lints, runs the suite.
#
# Python: $PYTHON if set; else the virtual environment you are in; else .venv in the repository, created on the
# first run (Debian/Ubuntu's system Python refuses `pip install` outside one: externally-managed-environment).
# torch: where no NVIDIA GPU is present it is pinned to 2.13.0, which this project's machines resolve to the CPU
# build (elsewhere PyPI's 2.13.0 is the CUDA build: install the CPU one first, see README). With apt as root it
# also installs what the window test needs (libGL, GLib, Xvfb, xdotool, ImageMagick), ffmpeg (the formats test) and
# python3-venv if missing.
# Tests that need ../shared/data skip with a reason when it (or $VSR_TEST_DATA) is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }
}

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  PY=python3 # already in a virtual environment
else
  if [ ! -x .venv/bin/python ]; then
    echo "tests/run.sh: creating the virtual environment .venv" >&2
    if ! python3 -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if can_apt; then apt_install python3-venv || true; fi
      python3 -m venv .venv || { echo "tests/run.sh: cannot create .venv; install python3-venv (Debian/Ubuntu) and retry" >&2; exit 1; }
    fi
  fi
  PY=.venv/bin/python
fi

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
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg) # tests/test_formats.py makes its inputs with ffmpeg's own tool
command -v ip >/dev/null 2>&1 || missing+=(iproute2) # tests/test_multinode.py: a Ray cluster of network namespaces
if [ ${#missing[@]} -gt 0 ]; then
  if can_apt; then
    apt_install "${missing[@]}" || echo "tests/run.sh: could not install ${missing[*]}; the tests that need them skip" >&2
  else
    echo "tests/run.sh: ${missing[*]} missing (not root or no apt-get); the tests that need them skip" >&2
  fi
fi
"$PY" -m ruff check vsr tests bench
"$PY" -m ruff format --check vsr tests bench
export VSR_TEST_DATA="${VSR_TEST_DATA:-$(cd .. && pwd)/shared/data}"
exec "$PY" -m pytest -q tests "$@"
