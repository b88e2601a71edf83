"""`vsr upscale - OUT` stops on Ctrl-C, SIGTERM and SIGHUP whatever its stdin does (issue 23): a terminal with nothing
typed, a pipe whose producer wrote nothing, stalled inside the header, stalled after some frames, or streams on
slowly. Each stop: exit 128 + signal within 5 s, one line on stderr (no "Exception ignored", no "Fatal Python error",
no traceback), nothing at the target. A terminal gets a line saying vsr waits for stdin; Ctrl-D there ends it.

Each test starts one vsr per signal at once (three processes), so the file costs about as much as six vsr startups.
The moment to signal is found, not guessed: the stop handlers are installed (/proc/PID/status SigCgt), the producer's
bytes were all read (FIONREAD on the pipe), the temporary output exists where frames must flow, and the process has
gone idle (no CPU time for a while) where it must be waiting. Linux only (/proc, FIONREAD on a pipe's write end).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from vsr.cli.upscale import WAITING_FOR_STDIN

from .conftest import default_signals
from .test_video import make_clip

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")

SIGNALS = [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, " by SIGTERM"), (signal.SIGHUP, 129, " by SIGHUP")]
STOP_WITHIN_S = 5.0
START_TIMEOUT_S = 180.0  # a cold vsr start (torch import) on a busy 2-core machine
WAITING_LINE = f"vsr: {WAITING_FOR_STDIN}"
STREAM_CHUNK, STREAM_PAUSE_S = 512, 0.1  # the slow producer: ~5 KB/s


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> bytes:
    """A 600-frame 64x48 H.264 Matroska stream (~210 KB: ~40 s for the slow producer)."""
    path = make_clip(tmp_path_factory.mktemp("clip") / "clip.mkv", pts=list(range(0, 600 * 40, 40)), audio=None)
    return path.read_bytes()


class Producer(threading.Thread):
    """The writing end of vsr's stdin pipe: writes `data` (all at once, or in slow chunks), then stalls with the pipe
    open until `close()`. The pipe holds 4 KiB, so what vsr has not read stays with the producer."""

    def __init__(self, data: bytes, slow: bool = False):
        super().__init__(daemon=True)
        self.read_end, self.write_end = os.pipe()
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, 4096)
        self.data, self.slow, self.sent = data, slow, 0
        self.closed = threading.Event()

    def run(self) -> None:
        step = STREAM_CHUNK if self.slow else len(self.data)
        try:
            while self.sent < len(self.data) and not self.closed.is_set():
                self.sent += os.write(self.write_end, self.data[self.sent : self.sent + step])
                if self.slow:
                    time.sleep(STREAM_PAUSE_S)
        except OSError:  # vsr has gone: EPIPE
            pass
        self.closed.wait()

    def unread(self) -> int:
        """Bytes vsr has not read yet: those still to write plus those in the pipe."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.write_end, termios.FIONREAD, buf)
        return len(self.data) - self.sent + buf[0]

    def close(self) -> None:
        self.closed.set()
        self.join(5)
        os.close(self.write_end)


def _start(stdin_fd: int, out_dir: Path) -> subprocess.Popen:
    out_dir.mkdir()
    args = [sys.executable, "-m", "vsr", "upscale", "-", out_dir / "out.mp4", "--scale", "2", "--arch", "9-1-5"]
    return subprocess.Popen(
        [*map(str, args), "--preset", "ultrafast", "-q"],
        stdin=stdin_fd,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )


def _handlers_installed(pid: int) -> bool:
    """SIGTERM and SIGHUP are caught: `vsr.signals.install()` has run (Python itself catches only SIGINT)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return all(caught >> (s - 1) & 1 for s in (signal.SIGTERM, signal.SIGHUP))


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _wait_for(what: str, predicate, proc: subprocess.Popen, deadline: float) -> None:
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"vsr ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def _wait_until_idle(proc: subprocess.Popen, deadline: float, quiet_s: float = 0.5) -> None:
    """At most one clock tick of CPU time in `quiet_s`: the process is blocked, waiting for stdin (its threads wake a
    few times a second for microseconds)."""
    start, since = _cpu_ticks(proc.pid), time.monotonic()
    while time.monotonic() - since < quiet_s:
        _wait_for("a moment passes", lambda t=time.monotonic(): time.monotonic() - t >= 0.1, proc, deadline)
        if _cpu_ticks(proc.pid) - start > 1:
            start, since = _cpu_ticks(proc.pid), time.monotonic()


def _read_line(proc: subprocess.Popen, deadline: float) -> str:
    ready = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]
    assert ready, "no line on stderr in time"
    return proc.stderr.readline().rstrip("\n")


def _stop_all(procs: dict) -> None:
    """Send each process its signal, then check exit code, time to exit, stderr and the empty output folder."""
    sent = {}
    for signum, (proc, _) in procs.items():
        proc.send_signal(signum)
        sent[signum] = time.monotonic()
    for signum, code, said in SIGNALS:
        proc, out_dir = procs[signum]
        try:
            _, err = proc.communicate(timeout=max(0.1, sent[signum] + STOP_WITHIN_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"{signum.name}: vsr did not end within {STOP_WITHIN_S} s; stderr: {err}")
        took = time.monotonic() - sent[signum]
        assert took < STOP_WITHIN_S, (signum.name, took)
        for bad in ("Exception ignored", "Fatal Python error", "Traceback"):
            assert bad not in err, (signum.name, err)
        assert err.strip().splitlines() == [f"vsr: interrupted{said}; no partial file was left"], (signum.name, err)
        assert proc.returncode == code, (signum.name, err)
        assert os.listdir(out_dir) == [], (signum.name, os.listdir(out_dir))


def _wait_until_ready(proc: subprocess.Popen, out_dir: Path, feed: Producer, producer: str, deadline: float) -> None:
    """Until vsr is where `producer` should have it: waiting for stdin (all given was read, idle), or with frames
    flowing (the temporary output beside the target exists; a stalled stream then idles too)."""
    _wait_for("the stop handlers are installed", lambda: _handlers_installed(proc.pid), proc, deadline)
    if producer in ("stalled", "streaming"):
        _wait_for("frames flow", lambda: os.listdir(out_dir) != [], proc, deadline)
    if producer == "streaming":
        assert feed.unread() > 20 * STREAM_CHUNK, "the stream ran out before the signal: slow the producer"
        return
    _wait_for("vsr has read all it was given", lambda: feed.unread() == 0, proc, deadline)
    _wait_until_idle(proc, deadline)


@pytest.mark.parametrize("producer", ["nothing", "header", "stalled", "streaming"])
def test_signal_stops_a_pipe_in_any_state(tmp_path, stream, producer):
    """The producer wrote nothing / the first 100, 1000 or 3000 bytes (vsr waits inside av.open, probing or reading
    the stream info; av.open fails or returns after the stop) / half the stream (frames flow, then the decode thread
    waits) / streams on slowly: each of the three signals ends vsr."""
    header = dict(zip([s for s, _, _ in SIGNALS], (100, 1000, 3000), strict=True))
    procs, feeds = {}, {}
    try:
        for signum, _, _ in SIGNALS:
            data = {"nothing": b"", "header": stream[: header[signum]], "stalled": stream[: len(stream) // 2]}
            feeds[signum] = feed = Producer(data.get(producer, stream), slow=producer == "streaming")
            procs[signum] = (_start(feed.read_end, tmp_path / signum.name), tmp_path / signum.name)
            os.close(feed.read_end)
            feed.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for signum, (proc, out_dir) in procs.items():
            _wait_until_ready(proc, out_dir, feeds[signum], producer, deadline)
        _stop_all(procs)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for feed in feeds.values():
            feed.close()


def _start_on_terminal(tmp_path: Path, name: str) -> tuple[subprocess.Popen, int]:
    """vsr with a fresh pseudo-terminal as stdin -> (process, the terminal's master end); nothing is typed."""
    master, slave = os.openpty()
    proc = _start(slave, tmp_path / name)
    os.close(slave)
    return proc, master


def test_signal_stops_the_wait_on_a_terminal(tmp_path):
    """Nothing piped, stdin a terminal: one line says vsr waits for a stream on stdin; each signal ends the wait."""
    procs, masters = {}, []
    try:
        for signum, _, _ in SIGNALS:
            proc, master = _start_on_terminal(tmp_path, signum.name)
            masters.append(master)
            procs[signum] = (proc, tmp_path / signum.name)
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc, _ in procs.values():
            assert _read_line(proc, deadline) == WAITING_LINE
            _wait_until_idle(proc, deadline)
        _stop_all(procs)  # the waiting line was read above
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for master in masters:
            os.close(master)


def test_ctrl_d_on_a_terminal_is_no_input(tmp_path):
    """Ctrl-D at the terminal ends stdin before any data: one error line, exit 2, nothing written."""
    proc, master = _start_on_terminal(tmp_path, "eof")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert _read_line(proc, deadline) == WAITING_LINE
        _wait_until_idle(proc, deadline)
        os.write(master, b"\x04")  # VEOF at the start of a line: the read returns 0 bytes
        _, err = proc.communicate(timeout=STOP_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("vsr: error: -: no input: stdin ended before any data came; pipe a video in"), err
    assert os.listdir(tmp_path / "eof") == []


def test_cancel_ends_a_read_from_another_thread():
    """The pipeline's stop (another stage failed) ends a read that waits for a stalled producer: b"" within POLL_S."""
    from vsr.media.stdin import POLL_S, StdinPipe

    read_end, write_end = os.pipe()
    try:
        pipe = StdinPipe(read_end)
        os.write(write_end, b"abc")
        assert pipe.read(2) == b"ab" and pipe.read(100) == b"c" and pipe.bytes_read == 3
        threading.Timer(0.2, pipe.cancel).start()
        t0 = time.monotonic()
        assert pipe.read(100) == b""
        assert 0.15 < time.monotonic() - t0 < 0.2 + 3 * POLL_S
        pipe.raise_stop()  # nothing was caught: nothing to raise
        assert not pipe.seekable()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_ctrl_c_without_vsr_signals_is_raised_after_the_read_not_inside_pyav(tmp_path):
    """Python's own SIGINT handler (the API, no `vsr.signals.install()`): the KeyboardInterrupt raised in the wait is
    kept, the read ends the input, `raise_stop()` raises it; the end is sticky, a regular file is seekable."""
    code = """
import os, signal, sys, threading, time
from vsr.media.stdin import StdinPipe
read_end, write_end = os.pipe()
pipe = StdinPipe(read_end)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
assert pipe.read(100) == b""
os.write(write_end, b"late")
assert pipe.read(100) == b""  # the end stays the end
try:
    pipe.raise_stop()
except KeyboardInterrupt:
    print("raised after the read")
pipe.raise_stop()  # once
with open(sys.argv[1], "rb") as f:
    regular = StdinPipe(f.fileno())
    assert regular.seekable() and regular.read(3) == b"vsr" and regular.read(9) == b"" and regular.read(9) == b""
    assert regular.seek(1) == 1 and regular.tell() == 1 and regular.read(9) == b"sr"
"""
    regular = tmp_path / "regular.bin"
    regular.write_bytes(b"vsr")
    r = subprocess.run(
        [sys.executable, "-c", code, regular], capture_output=True, text=True, timeout=60, preexec_fn=default_signals
    )
    assert r.returncode == 0 and r.stdout.strip() == "raised after the read", r.stderr
    assert "Exception ignored" not in r.stderr, r.stderr
