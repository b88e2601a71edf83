"""`vsr upscale --ray ADDRESS`: what a user sees when the address is wrong or the cluster goes away
(vsr.scaleout.rayconnect, the connection side of vsr.scaleout.raytasks). Real Ray, real processes: a TCP server
that is not Ray, a gRPC port of another kind (a raylet's), an unreachable Ray Client address, a real
`ray start --head` on a free port whose GCS is killed mid-run, and vsr in a PID namespace of its own (a machine
that is not a node). Each head has a private temporary folder and HOME; its processes (those naming its folder, and
their children) are killed whatever happens, never with `ray stop`, which would stop every Ray on the machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .conftest import spawn
from .test_scaleout import GOP, LONG
from .test_video import make_clip

pytest.importorskip("ray")
RAY = Path(sys.executable).parent / "ray"


def _start(*args, **env) -> subprocess.Popen:
    """vsr with its stop signals at their defaults (`spawn`: a suite started with SIGINT ignored hands that on)."""
    return spawn([sys.executable, "-m", "vsr", *args], stdout=subprocess.PIPE, env={**os.environ, "COLUMNS": "200", **env})


def _reap(proc: subprocess.Popen) -> None:
    """Kills `proc` if it still runs (a test that failed or timed out leaves no vsr behind)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _run(*args, limit: float, **env) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = _start(*args, **env)
    try:
        _, err = proc.communicate(timeout=limit)
    finally:
        _reap(proc)
    return proc.returncode, err, time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NotRay:
    def __init__(self, address: str, held: list):
        self.address, self.held = address, held


@pytest.fixture
def not_ray():
    """A TCP server that accepts connections and never answers (an SSH or database port given by mistake); `held`
    lists the connections it accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield _NotRay(f"127.0.0.1:{server.getsockname()[1]}", held)
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "in.mkv", pts=LONG[:60], options=GOP)


def _args(clip, address, *more):
    return ("upscale", clip, clip.parent / "out.mkv", "--arch", "9-1-5", "--ray", address, "--segment", 0.4, *more)


def test_a_tcp_port_that_is_not_ray_fails_in_seconds_in_one_line(clip, weights, not_ray, tmp_path):
    code, err, took = _run(*_args(clip, not_ray.address, "--weights", weights), limit=30, HOME=str(tmp_path))
    assert code == 5 and err.count("\n") == 1, err
    assert f"{not_ray.address} accepts connections but is not a Ray cluster's GCS" in err
    assert took < 15, took
    assert not (tmp_path / ".ray").exists()


@pytest.mark.parametrize("scheme", ["", "ray://"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_connect_at_once(clip, weights, not_ray, signum, scheme):
    """The signal comes once vsr has connected to the port, while it checks it (Ray would retry for minutes) or,
    through Ray Client, while Ray Client's handshake waits for an answer that never comes (its second connection:
    the first is vsr's TCP check)."""
    if scheme:
        pytest.importorskip("grpc", reason="ray:// needs ray[client]")
    proc = _start(*_args(clip, scheme + not_ray.address, "--weights", weights))
    try:
        deadline = time.monotonic() + 60
        while len(not_ray.held) < (2 if scheme else 1) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert not_ray.held, "vsr never connected"
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        _reap(proc)
    assert proc.returncode == 128 + signum, err
    assert took < 3, took
    assert err.count("\n") == 1 and "interrupted" in err, err


def test_a_port_that_is_not_a_ray_client_server_fails_in_one_line(clip, weights, not_ray):
    """ray:// to a port that accepts TCP but never answers gRPC: Ray Client's handshake (3 tries of 3 s here) ends in
    vsr's one line, without Ray Client's "connection timed out" UserWarning."""
    pytest.importorskip("grpc", reason="ray:// needs ray[client]")
    code, err, took = _run(*_args(clip, "ray://" + not_ray.address, "--weights", weights), limit=60)
    assert code == 5 and err.count("\n") == 1, err
    assert f"cannot start or reach Ray at 'ray://{not_ray.address}' (ray client connection timeout)" in err
    assert "Ray Client port" in err
    assert took < 20, took


def test_an_unreachable_ray_client_address_fails_in_seconds(clip, weights):
    code, err, took = _run(*_args(clip, "ray://127.0.0.1:1", "--weights", weights), limit=30)
    assert code == 5 and err.count("\n") == 1, err
    assert "no Ray Client server answers at ray://127.0.0.1:1" in err
    assert took < 15, took


class _Head:
    """`ray start --head` on a free port with its own temporary folder (short: Ray's socket paths) and HOME."""

    def __init__(self, home: Path, client: bool = False):
        self.temp = tempfile.mkdtemp(prefix="vc")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = _free_port() if client else None  # Ray Client's server (its command line names its port)
        self.env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
        more = ["--ray-client-server-port", str(self.client_port)] if client else []
        subprocess.run(
            [RAY, "start", "--head", "--port", str(self.port), "--num-cpus", "1", "--include-dashboard=false",
             "--temp-dir", self.temp, "--disable-usage-stats", *more],
            env=self.env, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        if client:  # Ray Client's server starts after `ray start` returns: wait until it accepts connections
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2)

    def pids(self, name: str = "") -> list[int]:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue
            ours = self.temp in text or (
                self.client_port is not None and "ray.util.client.server" in text and f"{self.client_port}" in text
            )
            if ours and name in text:
                found.append(int(cmdline.parent.name))
        return found

    def listening(self, name: str) -> list[int]:
        """The TCP ports the head's process `name` listens on."""
        pids = set(self.pids(name))
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        return [
            int(m.group(1))
            for line in out.splitlines()
            if (m := re.search(r":(\d+)\s.*pid=(\d+)", line)) and int(m.group(2)) in pids
        ]

    def stop(self):
        """Kills this head's processes and their children only: `ray stop` would kill every Ray process on the
        machine (ray/scripts/scripts.py, stop: psutil.process_iter by name), other users' included."""
        for _ in range(3):
            pids = set(self.pids())
            pids |= _descendants(pids)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


def _descendants(pids: set[int]) -> set[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, grew = set(), True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if (ppid in pids or ppid in found) and pid not in found and pid not in pids:
                found.add(pid)
                grew = True
    return found


@pytest.fixture
def head(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    started = _Head(home)
    try:
        yield started
    finally:
        started.stop()


def test_a_grpc_port_of_another_kind_fails_in_seconds_in_one_line(clip, weights, head, tmp_path):
    ports = [p for p in head.listening("raylet") if p != head.port]
    assert ports, "the raylet listens on no TCP port?"
    address = f"127.0.0.1:{ports[0]}"
    code, err, took = _run(*_args(clip, address, "--weights", weights), limit=30, HOME=str(tmp_path))
    assert code == 5 and err.count("\n") == 1, err
    assert f"{address} accepts connections but is not a Ray cluster's GCS" in err
    assert took < 15, took


def test_losing_the_head_mid_run_ends_in_one_line_and_resume_continues(tmp_path, weights, head):
    """The head's GCS is killed and its task processes are stopped once the first segment is done (as a driver on
    another node sees a lost head: its own raylet goes on, for Ray's 60 s, and the head's tasks never finish): vsr
    ends within seconds, says what is kept and that --resume continues; no local Ray is started, nothing is
    written under HOME, no Ray C++ line is printed."""
    _lose_the_head_mid_run(tmp_path, weights, head, head.address, "gcs_server")


def _has_ray_client() -> bool:
    try:
        import grpc  # noqa: F401 - what ray[client] adds
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_ray_client(), reason="needs ray[client] (grpcio)")
def test_losing_a_ray_client_connection_mid_run_ends_in_one_line(tmp_path, weights):
    """Through Ray Client (ray://): the whole head is killed once the first segment is done. Ray Client would
    print its own warnings, a 134-line traceback from wait, and start a local Ray in its place (auto-connect)."""
    home = tmp_path / "home"
    home.mkdir()
    started = _Head(home, client=True)
    try:
        _lose_the_head_mid_run(tmp_path, weights, started, f"ray://127.0.0.1:{started.client_port}", "")
    finally:
        started.stop()


def _lose_the_head_mid_run(tmp_path, weights, head, address, kill):
    src = make_clip(tmp_path / "in.mkv", pts=[t * 40 for t in range(240)], size=(192, 128), options=GOP)  # ~20 s
    home = tmp_path / "home"
    proc = _start("upscale", src, tmp_path / "out.mkv", "--arch", "9-1-5", "--weights", weights, "--ray", address,
                  "--segment", 0.4, "--codec", "ffv1", HOME=str(home))  # fmt: skip
    try:
        out, err = "", ""
        deadline = time.monotonic() + 120
        work = tmp_path / ".out.mkv.vsr-work"
        while time.monotonic() < deadline and proc.poll() is None:
            if work.is_dir() and list(work.glob("part[0-9][0-9][0-9][0-9][0-9].mkv")):
                break  # a segment is done
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        if kill:  # the head's task processes stop too, as on a lost machine: the run cannot end on its own first
            for pid in _descendants(set(head.pids("raylet"))):
                os.kill(pid, signal.SIGSTOP)
        for pid in head.pids(kill) + (list(_descendants(set(head.pids()))) if not kill else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        _reap(proc)
    # Ray Client's head may fail to start a session and vsr connect again, one line each (ray-project/ray#63202);
    # such retries (about 40 s each) make the run long enough for a progress line, "vsr: 20 / 240 frames (8%), ..."
    progress = re.compile(r"^vsr: \d+ / \d+ frames \(\d+%\)")
    lines = [line for line in err.strip().splitlines() if "failed to start a session" not in line and not progress.match(line)]
    assert proc.returncode == 5, err
    assert took < 20, took
    assert lines[-1].startswith(f"vsr: error: lost the Ray cluster at {address}"), err
    assert "the same command with --resume continues" in lines[-1]
    assert len(lines) == 3, err  # "Ray at ...", what is kept, the error
    assert not (tmp_path / "out.mkv").exists()
    assert not (home / ".ray").exists()  # a local Ray started in its place would write ~/.ray/auth_token
    r = subprocess.run(
        [sys.executable, "-m", "vsr", "upscale", src, tmp_path / "out.mkv", "--arch", "9-1-5", "--weights", weights,
         "--workers", "2", "--segment", "0.4", "--codec", "ffv1", "--resume"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(r"reusing [1-9]\d* of 13 segments", r.stderr), r.stderr


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --pid --mount-proc (root)")
def test_a_machine_that_is_not_a_node_is_told_to_use_ray_client(clip, weights, head, tmp_path):
    """vsr in a PID namespace of its own sees no raylet, as on a machine that is not a node, while the GCS answers
    (same network): within seconds it says so, instead of Ray's 60 s wait and 'cannot be reached'."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-m", "vsr",
         *map(str, _args(clip, head.address)), "--weights", str(weights)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    took = time.monotonic() - t0
    assert r.returncode == 5 and r.stderr.count("\n") == 1, r.stderr
    assert f"this machine is not a node of the Ray cluster at {head.address}" in r.stderr
    assert "--ray ray://127.0.0.1:10001" in r.stderr and "ray[client]" in r.stderr
    assert took < 15, took
