"""The shipped weights and where weights are looked up.

Contract: this package's folder holds the shipped files as package data (in the wheel and the sdist):
`srcnn_<arch>_x<scale>.safetensors` for 9-5-5 and 9-1-5 at x2, x3, x4, and `cpu_precision.json`, the bf16 layers of
`--precision auto` per shipped model (`vsr.engine.precision`). `SHIPPED_WEIGHTS` is that folder, found with
`importlib.resources`, so it is right wherever vsr is installed: a wheel in any environment, an sdist, an editable
clone. `default_weights(scale, arch)` returns `<dir>/srcnn_<arch>_x<scale>.safetensors` where dir is `$VSR_WEIGHTS` if
set, else `SHIPPED_WEIGHTS`; a missing file is a `WeightsError` that says how to get one. The training runs that made
the shipped files, and how to remake them, are in the repository's top-level `weights/` folder.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from vsr.errors import WeightsError


def _shipped_folder() -> Path:
    folder = files(__name__)
    # pip unpacks every wheel into a folder, so this is a real path; only a zip import (a zipapp, an egg) is not
    return folder if isinstance(folder, Path) else Path(str(folder))


SHIPPED_WEIGHTS = _shipped_folder()


def weights_dir() -> Path:
    return Path(os.environ["VSR_WEIGHTS"]) if os.environ.get("VSR_WEIGHTS") else SHIPPED_WEIGHTS


def default_weights(scale: int, arch: str = "9-5-5") -> Path:
    path = weights_dir() / f"srcnn_{arch}_x{scale}.safetensors"
    if not path.is_file():
        where = "VSR_WEIGHTS" if os.environ.get("VSR_WEIGHTS") else "this installation of vsr"
        raise WeightsError(
            f"no weights for {arch} x{scale} at {path} ({where}); train them with `vsr train --scale {scale} --arch {arch}` "
            "and pass --weights, or set VSR_WEIGHTS to a folder that has them"
        )
    return path
