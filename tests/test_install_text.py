"""What vsr tells users about installing torch-tensorrt is what pip does (issue 24, risk 10).

Each torch-tensorrt release requires the torch of its own minor version (wheel METADATA, e.g. 2.14.0:
`torch<2.15.0,>=2.14.0`), so `.[tensorrt]` (`torch-tensorrt>=2.4,<2.15`) makes pip take the newest release and
replace the installed torch to fit it; `torch-tensorrt==X.Y.*` for the installed torch X.Y keeps it. The last test
has this machine's pip resolve both against a local index of stand-in wheels with the same pins.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from vsr.engine import tensorrt as trt

ROOT = Path(__file__).resolve().parents[1]


def test_the_advice_names_the_release_of_the_installed_torchs_minor_version():
    assert trt.install_advice("2.13.0+cu126") == (
        "`pip install 'torch-tensorrt==2.13.*'` installs the release for your torch 2.13"
    )
    assert trt.install_advice("2.4.1").startswith("`pip install 'torch-tensorrt==2.4.*'`")
    for outside in ("2.15.0", "2.3.1", "3.0.0"):
        minor = ".".join(outside.split(".")[:2])
        assert trt.install_advice(outside) == (
            f"no torch-tensorrt release vsr was checked against (2.4 to 2.14) fits torch {minor}"
        )
    assert "not installed; " in trt.INSTALL_HINT and trt.install_advice() in trt.INSTALL_HINT


def test_the_checked_range_is_the_extras_and_the_docs_say_what_pip_does():
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^tensorrt = \["torch-tensorrt>=(\d+)\.(\d+),<(\d+)\.(\d+)"\]', text, re.M)
    assert m, "the [tensorrt] extra's pin moved: keep vsr.engine.tensorrt.CHECKED with it"
    lo, hi = (int(m[1]), int(m[2])), (int(m[3]), int(m[4]) - 1)
    assert trt.CHECKED == (lo, hi)
    for doc in ("README.md", "docs/gpu.md"):
        body = " ".join((ROOT / doc).read_text().split())
        assert "matches that torch" not in body, doc
        assert "torch-tensorrt==X.Y.*" in body, doc


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name.replace('-', '_')}_stub/__init__.py", "")
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")


def test_pip_replaces_torch_for_the_range_and_keeps_it_for_the_advised_pin(tmp_path):
    """Stand-ins: torch X.Y+1 on the index, torch-tensorrt X.Y and X.Y+1 each pinned to its torch, as the real ones
    are; the installed torch (X.Y) is this environment's. pip --dry-run changes nothing."""
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    here, newer = f"{major}.{minor}", f"{major}.{minor + 1}"
    for v in (here, newer):
        nxt = f"{major}.{int(v.split('.')[1]) + 1}"
        _wheel(tmp_path, "torch-tensorrt", f"{v}.0", (f"torch<{nxt}.0,>={v}.0",))
    _wheel(tmp_path, "torch", f"{newer}.0")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_FIND_LINKS", None)
    env.pop("PIP_CONSTRAINT", None)

    def dry_run(requirement: str) -> str:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(tmp_path), requirement]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if "no such option: --dry-run" in r.stderr:
            pytest.skip("this pip has no --dry-run (pip 22.2 and newer)")
        assert r.returncode == 0, r.stderr
        return next(line for line in r.stdout.splitlines() if line.startswith("Would install"))

    ranged = dry_run(f"torch-tensorrt>=2.4,<{major}.{minor + 2}")  # what the extra does, one minor ahead of torch
    assert f"torch-{newer}.0" in ranged.split() and f"torch-tensorrt-{newer}.0" in ranged.split(), ranged
    advised = dry_run(f"torch-tensorrt=={here}.*")
    assert advised.split() == ["Would", "install", f"torch-tensorrt-{here}.0"], advised
