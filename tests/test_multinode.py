"""`vsr upscale --ray HEAD:6379` on a Ray cluster of three separate "hosts" built on this machine (tests/multinode.py:
a network, PID, mount and UTS namespace per node, 1 CPU each, its own /tmp, a shared folder at /mnt/shared on all).
The driver runs on node 1 (a worker node), writes its output to its own /tmp, and the input is in the shared
folder. Skips with the reason where such a cluster cannot be built (not root, no iproute2, no namespaces).

Every command is bounded (tests/multinode.py: `Cluster.run`; `_wait` here), and the cluster is torn down whatever
happens, so a case that hangs on a defect fails in its bound instead."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .multinode import SHARED, Cluster, Watcher, unavailable
from .test_scaleout import GOP, LONG, _decoded
from .test_video import make_clip, packets_of

_WHY = unavailable()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"multi-node cluster: {_WHY}")
pytest.importorskip("ray")

COMMON = ["--scale", 2, "--arch", "9-1-5", "--codec", "ffv1", "--segment", 0.5, "--weights", f"{SHARED}/w.safetensors"]
ONE = ["--scale", 2, "--arch", "9-1-5", "--codec", "ffv1"]  # the one-process run, on this machine
DRIVER = 1  # the node vsr runs on
VSR = [sys.executable, "-m", "vsr", "upscale"]
_PART = re.compile(r"part\d{5}\.mkv$")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, weights) -> Path:
    """The shared folder: a 3 s clip (6 segments of 0.5 s) and the weights; `one.mkv`, the one-process output."""
    folder = tmp_path_factory.mktemp("shared")
    make_clip(folder / "clip.mkv", pts=LONG[:75], size=(96, 64), options=GOP)
    make_clip(folder / "other.mkv", pts=LONG[:75], size=(96, 64), options=GOP, pix_fmt="yuv444p")
    shutil.copy(weights, folder / "w.safetensors")
    argv = [*VSR, folder / "clip.mkv", folder / "one.mkv", *ONE, "--weights", folder / "w.safetensors"]
    r = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return folder


class _Shared:
    """The one cluster the tests that leave every node as it was share (a build costs about 7.5 s). Two clusters
    cannot live at once (one process's namespaces and addresses), so a test that needs a cluster of its own closes
    this one first; the tests that share it come first in this file."""

    def __init__(self):
        self.cluster: Cluster | None = None

    def get(self, shared: Path, logs: Path) -> Cluster:
        if self.cluster is None:
            self.cluster = Cluster(shared, n=3, extra=1, logs=logs).__enter__()
        return self.cluster

    def close(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.__exit__(None, None, None)


@pytest.fixture(scope="module")
def _shared_cluster():
    holder = _Shared()
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def cluster(shared, tmp_path, _shared_cluster):
    """A cluster of its own, for a test that kills a node or changes what a node sees."""
    _shared_cluster.close()
    with Cluster(shared, n=3, extra=1, logs=tmp_path) as c:
        yield c


@pytest.fixture
def intact(shared, tmp_path_factory, _shared_cluster):
    """The shared cluster (`_Shared`); what a test wrote on the driver's node (its output, a work folder) is removed
    after it."""
    built = _shared_cluster.get(shared, tmp_path_factory.mktemp("logs"))
    yield built
    r = built.run(DRIVER, ["rm", "-rf", "/tmp/out.mkv", "/tmp/.out.mkv.vsr-work"], timeout=20)
    assert r.returncode == 0, r.stderr


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int | None, str, str, float]:
    """(returncode or None when it had to be killed at `timeout`, stdout, stderr, seconds it ran)."""
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # nsenter and the command it forked (tests/multinode.py: popen)
        out, err = proc.communicate(timeout=30)
        return None, out, err, time.monotonic() - start


def _vsr(cluster: Cluster, src: str, dst: str, *extra, address: str | None = None, cwd: str = "/", node: int = DRIVER):
    return cluster.popen(node, [*VSR, src, dst, *COMMON, "--ray", address or cluster.head, *extra], cwd=cwd)


def _same_as_one_process(cluster: Cluster, shared: Path, dst: str = "/tmp/out.mkv") -> None:
    out = cluster.path(DRIVER, dst)
    assert _decoded(out) == _decoded(shared / "one.mkv")
    assert packets_of(out, "audio") == packets_of(shared / "clip.mkv", "audio")


def _parts(cluster: Cluster, dst: str = "/tmp/out.mkv") -> list[str]:
    folder = cluster.path(DRIVER, str(Path(dst).parent / f".{Path(dst).name}.vsr-work"))
    try:
        return sorted(p.name for p in folder.iterdir() if _PART.match(p.name))
    except OSError:
        return []


def _until(condition, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _child(proc: subprocess.Popen) -> int:
    """The host PID of the command `Cluster.popen` started (nsenter's child, which execs it)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(children[0])


def test_tasks_land_on_every_node_and_the_output_is_the_one_process_output(intact, shared):
    with Watcher(intact) as seen:
        rc, _, err, _ = _wait(_vsr(intact, f"{SHARED}/clip.mkv", "/tmp/out.mkv"), timeout=300)
    assert rc == 0, err
    assert "3 CPU task slots" in err
    assert all("_ray_segment" in seen.seen[k] for k in range(intact.n)), seen.seen
    _same_as_one_process(intact, shared)


def test_a_relative_input_path_works(intact, shared):
    """Issue 25 item 1: the README's own form, `cd /shared; vsr upscale clip.mkv ...`."""
    rc, _, err, _ = _wait(_vsr(intact, "clip.mkv", "/tmp/out.mkv", cwd=SHARED), timeout=300)
    assert rc == 0, err
    _same_as_one_process(intact, shared)


_LISTEN = (
    "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('{ip}', 7000)); s.listen(64); print('up', flush=True); time.sleep(600)"
)


def _listening(cluster: Cluster) -> subprocess.Popen:
    """A TCP listener that is not Ray's, on the head's address, port 7000."""
    listener = cluster.popen(0, [sys.executable, "-c", _LISTEN.format(ip=cluster.ip(0))])
    if listener.stdout.readline().strip() != "up":
        os.killpg(listener.pid, signal.SIGKILL)
        raise RuntimeError(f"the listener did not start: {listener.communicate(timeout=30)[1]}")
    return listener


def _unlisten(listener: subprocess.Popen) -> None:
    os.killpg(listener.pid, signal.SIGKILL)
    listener.communicate(timeout=30)


def test_a_port_that_is_not_ray_ends_within_30_s_in_one_line(intact, shared):
    """Issue 25 item 3: a port that accepts TCP but is not Ray's."""
    listener = _listening(intact)
    try:
        address = f"{intact.ip(0)}:7000"
        rc, _, err, took = _wait(_vsr(intact, f"{SHARED}/clip.mkv", "/tmp/out.mkv", address=address), timeout=45)
    finally:
        _unlisten(listener)
    assert rc is not None and took < 30, f"still running after {took:.0f} s: {err[-2000:]}"
    assert rc != 0 and err.count("\n") == 1 and address in err, err


def test_ctrl_c_stops_a_run_that_waits_on_a_port_that_is_not_ray_at_once(intact, shared):
    """Issue 25 item 3: Ctrl-C (SIGINT) 3 s into that wait ends vsr within 5 s."""
    listener = _listening(intact)
    try:
        proc = _vsr(intact, f"{SHARED}/clip.mkv", "/tmp/out.mkv", address=f"{intact.ip(0)}:7000")
        time.sleep(3)
        sent = time.monotonic()
        if proc.poll() is None:
            os.kill(_child(proc), signal.SIGINT)
        rc, _, err, _ = _wait(proc, timeout=20)
        took = time.monotonic() - sent
    finally:
        _unlisten(listener)
    assert rc is not None and took < 5, f"Ctrl-C did not stop it in {took:.0f} s: {err[-2000:]}"
    assert rc == 130, err


def test_from_a_machine_that_is_not_a_node_one_line_says_to_run_on_a_node_or_use_ray_client(intact, shared):
    """Issue 25 item 5: host 3 is on the cluster's network but runs no Ray; `--ray HEAD:6379` from there."""
    rc, _, err, took = _wait(_vsr(intact, f"{SHARED}/clip.mkv", "/tmp/out.mkv", node=3), timeout=90)
    assert rc is not None and took < 30, f"still running after {took:.0f} s: {err[-2000:]}"
    assert rc != 0 and err.count("\n") == 1, err
    assert "ray://" in err and "node" in err, err


def test_a_worker_node_killed_mid_run_is_survived(cluster, shared):
    proc = _vsr(cluster, f"{SHARED}/clip.mkv", "/tmp/out.mkv")
    running = _until(lambda: "_ray_segment" in cluster.tasks(2), timeout=120, proc=proc)
    cluster.kill(2)
    rc, _, err, _ = _wait(proc, timeout=300)
    assert running, err
    assert rc == 0, err
    _same_as_one_process(cluster, shared)


def test_a_node_with_different_content_at_the_same_path_is_refused(cluster, shared):
    """Issue 25 item 2: node 2 sees another file at the input's path (a bind mount in its own mount namespace)."""
    r = cluster.run(2, ["mount", "--bind", f"{SHARED}/other.mkv", f"{SHARED}/clip.mkv"], timeout=20)
    assert r.returncode == 0, r.stderr
    rc, _, err, _ = _wait(_vsr(cluster, f"{SHARED}/clip.mkv", "/tmp/out.mkv"), timeout=300)
    assert rc not in (0, None), err
    last = err.strip().splitlines()[-1]
    assert "node2" in last and "clip.mkv" in last, err
    assert "Traceback" not in err, err
    assert not cluster.path(DRIVER, "/tmp/out.mkv").exists()


def test_the_head_killed_mid_run_ends_in_one_line_and_resume_finishes(cluster, shared):
    """Issue 25 item 4: the head dies once a segment is done, while the tasks on the other nodes still run (they
    are paused: SIGSTOP, or the tasks left would finish without the head before Ray notices it is gone); vsr ends
    with one line that says what is kept and that --resume continues; no local Ray is started and nothing is written
    to ~/.ray; the kept folder then finishes with --resume (here in one process on the driver's node) to the
    one-process output."""
    proc = _vsr(cluster, f"{SHARED}/clip.mkv", "/tmp/out.mkv")
    done = _until(lambda: len(_parts(cluster)) >= 1, timeout=120, proc=proc)
    for k in range(1, cluster.n):
        cluster.pause(k, "_ray_segment")
    cluster.kill(0)
    rc, _, err, took = _wait(proc, timeout=150)
    assert done, err
    assert rc not in (0, None), f"rc={rc} after {took:.0f} s: {err}"
    lines = err.strip().splitlines()
    assert "--resume" in lines[-1] and "kept" in lines[-1], err
    assert not [line for line in lines if not line.startswith("vsr")], err  # vsr's own lines only
    assert not cluster.path(DRIVER, "/tmp/home/.ray").exists()
    kept = len(_parts(cluster))
    assert kept >= 1
    args = [*map(str, COMMON), "--resume"]
    r = cluster.run(DRIVER, [*VSR, f"{SHARED}/clip.mkv", "/tmp/out.mkv", *args], timeout=300)
    assert r.returncode == 0, r.stderr
    assert "reus" in r.stderr, r.stderr
    _same_as_one_process(cluster, shared)
