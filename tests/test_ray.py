"""`vsr upscale --ray`: segments as Ray tasks (vsr.scaleout.raytasks). The tests that start Ray skip where it is not installed
(the test command installs it); the ones about a missing or unreachable Ray need no cluster."""

from __future__ import annotations

import os
import shutil
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
    auth token. (The run gets a temporary folder of its own, short enough for Ray's socket paths: other test runs
    on the machine may start Ray or leave vsr-* files in the shared one meanwhile.)"""
    pytest.importorskip("ray")
    src = make_clip(tmp_path / "in.mkv", pts=LONG, size=(96, 64), options=GOP)
    common = ["--scale", 2, "--arch", "9-1-5", "--codec", "ffv1"]
    r = vsr("upscale", src, tmp_path / "one.mkv", *common, OMP_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    home = tmp_path / "home"
    home.mkdir()
    temp = tempfile.mkdtemp(prefix="vr")
    try:
        r = vsr("upscale", src, tmp_path / "ray.mkv", *common, "--ray", "local", "--segment", 0.4, HOME=str(home), TMPDIR=temp)
        left = os.listdir(temp)
        running = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_ray(p, temp)]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert "Ray at local: " in r.stderr and "CPU task slots" in r.stderr
    assert _decoded(tmp_path / "one.mkv") == _decoded(tmp_path / "ray.mkv")
    assert packets_of(tmp_path / "ray.mkv", "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"in.mkv", "one.mkv", "ray.mkv", "home"}
    assert not list(home.iterdir())  # no ~/.ray/auth_token
    assert not left
    assert not running


def _is_ray(cmdline: Path, temp: str) -> bool:
    try:
        text = cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False
    return f"{temp}/vsr-ray-" in text  # the processes of a local cluster vsr started name its session folder


_RULES = """
import json, logging, os, shutil, sys, tempfile
import ray
tmp = tempfile.mkdtemp(prefix="ray-rules-")
ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.CRITICAL, _temp_dir=tmp)
def probe():
    import os, ray
    from vsr.scaleout.raytasks import _assigned_gpu
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), [str(i) for i in ray.get_gpu_ids()], _assigned_gpu()
out = {}
try:
    decorated = ray.remote(num_cpus=1, num_gpus=1, max_retries=0)(probe)
    optioned = ray.remote(probe).options(num_cpus=1, num_gpus=1, max_retries=0)
    env = {"env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}}
    noset = ray.remote(num_cpus=1, num_gpus=1, max_retries=0, runtime_env=env)(probe)
    out["decorator"] = ray.get([decorated.remote(), decorated.remote()]) + ray.get([decorated.remote(), decorated.remote()])
    out["options"] = ray.get([optioned.remote(), optioned.remote()]) + ray.get([optioned.remote(), optioned.remote()])
    out["noset"] = ray.get([noset.remote(), noset.remote()])
    try:
        ray.remote(probe).options(max_calls=1)
    except ValueError as exc:
        out["options_max_calls"] = str(exc)
finally:
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps(out))
"""


def test_the_rules_fake_ray_enforces_hold_for_the_installed_ray(tmp_path):
    """tests/fake_ray.py stands in for Ray in the GPU tests (tests/test_ray_gpu.py); here the installed Ray, on a node
    that declares 2 GPUs, shows the same rules: `num_gpus` in `ray.remote` gives every task a new process
    (max_calls=1), `.options()` refuses max_calls; each task sees only its GPU in CUDA_VISIBLE_DEVICES, named as
    `get_gpu_ids()` names it, or every GPU with RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES; and `_assigned_gpu`
    gives the torch device of that GPU in both. (Whether Ray reuses a process after `.options(num_gpus=1)` is up to
    its raylet: Ray 2.60 did, handing a process that had run on GPU 1 a task for GPU 0; Ray 2.10 started new ones.)"""
    import json
    import subprocess
    import sys

    pytest.importorskip("ray")
    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_TOKEN": "0" * 64, "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-c", _RULES], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    decorated, optioned, noset = out["decorator"], out["options"], out["noset"]
    assert len({pid for pid, *_ in decorated}) == 4  # a process per GPU task
    for _, visible, ids, device in decorated + optioned:
        assert len(ids) == 1 and visible == ids[0] and device == "cuda:0"
    assert sorted(ids[0] for _, _, ids, _ in decorated[:2]) == ["0", "1"]  # two at once: both GPUs
    for _, visible, ids, device in noset:
        assert visible is None and device == f"cuda:{ids[0]}"
    assert out["options_max_calls"] == "Setting 'max_calls' is not supported in '.options()'."
