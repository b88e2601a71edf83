"""Shared fixtures: the reference data folder (skips when absent) and small synthetic images."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(os.environ.get("VSR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped with a reason without it (`bash bench/gpu_check.sh` runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu_check.sh runs these on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A small random 9-1-5 weights file (fast, non-trivial output)."""
    from vsr.model.srcnn import save_weights

    from .test_model import make_model

    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    save_weights(make_model("9-1-5"), path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Set5").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set VSR_TEST_DATA to the folder with Set5/, Set14/, 91images/)")
    return SHARED_DATA


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A deterministic natural-ish uint8 test image: smooth gradients plus a few edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = []
    for c in range(channels):
        f = rng.uniform(2, 6, size=2)
        p = 0.5 + 0.3 * np.sin(f[0] * np.pi * xx + c) * np.cos(f[1] * np.pi * yy)
        p += 0.2 * ((xx * (c + 2) + yy * 3) % 1.0 > 0.5)
        planes.append(p)
    img = np.clip(np.stack(planes, -1) * 200 + 20, 0, 255).astype(np.uint8)
    return img[:, :, 0] if channels == 1 else img


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Four 72x60 RGB PNGs: a tiny training/evaluation set."""
    from vsr.media.imageio import write_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        write_image(folder / f"img{i}.png", smooth_image(72, 60, seed=i))
    return folder


def default_signals() -> None:
    """`preexec_fn` for a child the test signals: SIGINT/SIGTERM/SIGHUP back to their defaults. A shell without job
    control starts background jobs with SIGINT ignored (`bash tests/run.sh &`), nohup ignores SIGHUP, and children
    inherit that; vsr keeps an ignored signal ignored (vsr.signals), as the launcher asked."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def spawn(args: list, **kwargs) -> subprocess.Popen:
    """Start a child process that a test will signal (see `default_signals`); stderr is captured as text."""
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([str(a) for a in args], preexec_fn=default_signals, text=True, **kwargs)
