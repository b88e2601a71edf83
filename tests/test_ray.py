"""`vsr upscale --ray`: segments as Ray tasks (vsr.scaleout.raytasks). The tests that start Ray skip where it is not installed
(the test command installs it); the ones about a missing or unreachable Ray need no cluster."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from .test_cli import vsr
from .test_scaleout import GOP, LONG, _decoded
from .test_video import make_clip, names, packets_of


def test_missing_ray_is_one_line_with_the_pip_command(tmp_path, weights):
    fake = tmp_path / "fake"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    src = make_clip(tmp_path / "in.mkv", pts=LONG[:60], options=GOP)
    env = {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    r = vsr("upscale", src, tmp_path / "out.mkv", "--weights", weights, "--ray", "local", "--segment", 0.4, **env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == "vsr: error: --ray needs Ray, which is not installed: pip install 'ray>=2.10'\n"
    assert names(tmp_path) == {"fake", "in.mkv"}


def test_an_unreachable_cluster_fails_in_seconds(tmp_path, weights):
    pytest.importorskip("ray")
    src = make_clip(tmp_path / "in.mkv", pts=LONG[:60], options=GOP)
    r = vsr("upscale", src, tmp_path / "out.mkv", "--weights", weights, "--ray", "127.0.0.1:1", "--segment", 0.4)
    assert r.returncode == 5 and r.stderr.count("\n") == 1, r.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in r.stderr
    assert names(tmp_path) == {"in.mkv"}


def test_ray_local_gives_the_single_process_output(tmp_path, weights):
    """FFV1 with AAC audio, 9-1-5, segments as Ray tasks of one CPU and one torch thread each, the single run with
    two threads: the same output, byte for byte. Ray leaves nothing behind: no process, no session files, no
    auth token."""
    pytest.importorskip("ray")
    src = make_clip(tmp_path / "in.mkv", pts=LONG, size=(96, 64), options=GOP)
    common = ["--scale", 2, "--arch", "9-1-5", "--codec", "ffv1"]
    r = vsr("upscale", src, tmp_path / "one.mkv", *common, OMP_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    before = set(os.listdir(tempfile.gettempdir()))
    home = tmp_path / "home"
    home.mkdir()
    r = vsr("upscale", src, tmp_path / "ray.mkv", *common, "--ray", "local", "--segment", 0.4, HOME=str(home))
    assert r.returncode == 0, r.stderr
    assert "Ray at local: " in r.stderr and "CPU task slots" in r.stderr
    assert _decoded(tmp_path / "one.mkv") == _decoded(tmp_path / "ray.mkv")
    assert packets_of(tmp_path / "ray.mkv", "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"in.mkv", "one.mkv", "ray.mkv", "home"}
    assert not list(home.iterdir())  # no ~/.ray/auth_token
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("vsr-")}
    assert not left
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_ray(p)]


def _is_ray(cmdline: Path) -> bool:
    try:
        text = cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "vsr-ray-" in text  # the processes of a local cluster vsr started name its session folder
