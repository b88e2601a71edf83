"""Where the shipped weights live and how a default is chosen.

Contract: `default_weights(scale, arch)` returns `<dir>/srcnn_<arch>_x<scale>.safetensors`
where dir is `$VSR_WEIGHTS` if set, else the `weights/` folder of this repository;
a missing file is a `WeightsError` that says how to get one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WeightsError

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def weights_dir() -> Path:
    return Path(os.environ["VSR_WEIGHTS"]) if os.environ.get("VSR_WEIGHTS") else REPO_WEIGHTS


def default_weights(scale: int, arch: str = "9-5-5") -> Path:
    path = weights_dir() / f"srcnn_{arch}_x{scale}.safetensors"
    if not path.is_file():
        raise WeightsError(
            f"no weights for {arch} x{scale} at {path}; train them with `vsr train --scale {scale} --arch {arch}` "
            "and pass --weights, or set VSR_WEIGHTS to a folder that has them"
        )
    return path
