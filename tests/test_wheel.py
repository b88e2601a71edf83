"""The distribution as users get it: an sdist, a wheel built from that sdist (as pip builds one), both carrying the
shipped weights, the precision record and the dataset manifest; the wheel installed (not editable) into a fresh venv
outside the repository and run from another folder on a clip with audio and on an image.

To stay fast and offline, the fresh venv borrows this environment's installed dependencies (torch, PyAV, ...) through
a .pth line; vsr itself comes only from the wheel. `bash tests/matrix.sh` does the full version: fresh venvs whose
dependencies come from PyPI, on every Python 3.10-3.13 it finds.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vsr import __version__
from vsr.media.imageio import read_image, write_image
from vsr.model.weights import SHIPPED_WEIGHTS

from .conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in SHIPPED_WEIGHTS.iterdir() if p.suffix in (".safetensors", ".json"))


def _build(kind: str, source: Path, out: Path) -> Path:
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(out)!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    sdist = _build("sdist", ROOT, out)
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "unpacked", filter="data") if sys.version_info >= (3, 12) else tar.extractall(out / "unpacked")
    wheel = _build("wheel", out / "unpacked" / sdist.name.removesuffix(".tar.gz"), out)
    return sdist, wheel


def test_sdist_and_wheel_carry_the_shipped_files(dist):
    sdist, wheel = dist
    assert SHIPPED and "cpu_precision.json" in SHIPPED and len([n for n in SHIPPED if n.endswith(".safetensors")]) == 6
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames() if len(Path(n).parts) > 1}
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        meta = next(z.read(n).decode() for n in in_wheel if n.endswith(".dist-info/METADATA"))
        entry_points = next(z.read(n).decode() for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    for name in [f"vsr/model/weights/{n}" for n in SHIPPED] + ["vsr/train/datasets.json", "vsr/cli/__init__.py"]:
        assert name in in_sdist, name
        assert name in in_wheel, name
    assert "Name: vsr-srcnn" in meta and f"Version: {__version__}" in meta and "Requires-Python: >=3.10" in meta
    assert "vsr = vsr.__main__:main" in entry_points
    assert not any(n.startswith(("tests/", "bench/", "weights/")) for n in in_wheel)


def test_installed_wheel_runs_from_another_folder(dist, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True)
    Path(purelib.stdout.strip(), "_borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VSR_WEIGHTS", "PYTHONPATH", "VIRTUAL_ENV")}
    run = lambda *args: subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True)  # noqa: E731

    r = run(py, "-c", "import vsr, vsr.model.weights as w; print(vsr.__file__); print(w.SHIPPED_WEIGHTS)")
    module, weights = r.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(weights).is_relative_to(venv), r.stdout
    assert run(venv / "bin" / "vsr", "--version").stdout.strip() == f"vsr {__version__}"

    r = run(py, "-m", "vsr.synth", "clip.mkv", "--size", "96x64", "--frames", "12")
    assert r.returncode == 0, r.stderr
    r = run(venv / "bin" / "vsr", "upscale", "clip.mkv", "out.mkv", "--scale", "2", "--arch", "9-1-5")
    assert r.returncode == 0, r.stderr
    check = run(py, ROOT / "bench" / "check_video.py", "clip.mkv", "out.mkv", "--scale", "2")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "audio: 0 packets" not in check.stdout  # the clip has audio, and it came through

    write_image(work / "photo.png", smooth_image(30, 40))
    r = run(venv / "bin" / "vsr", "upscale", "photo.png", "photo_x3.png", "--scale", "3", "--no-ensemble")
    assert r.returncode == 0, r.stderr
    out = read_image(work / "photo_x3.png")
    assert out.shape == (90, 120, 3) and np.ptp(out) > 0
