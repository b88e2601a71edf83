"""Where vsr keeps what it downloads or builds for later runs: `$VSR_CACHE`, default ~/.cache/vsr (an empty value
counts as unset). Datasets (`vsr data get`), TensorRT engines and Inductor's compiled kernels live below it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("VSR_CACHE") or Path.home() / ".cache" / "vsr")
