"""A stop signal in vsr's first moments (while Python imports the command line interface) ends it with one line and
the shell's exit status, never a traceback from inside an import (issue 23: Ctrl-C in the first 0.2 s).

The window starts when vsr's entry point has run its first line (`vsr.signals.install_early`): before that the
interpreter itself is starting (some 30-80 ms), and a Ctrl-C there is Python's own KeyboardInterrupt. The test waits
for that moment by reading the child's caught-signal mask (/proc/PID/status, SigCgt: SIGTERM is caught from then on),
then signals it at several delays that fall inside the import of typer, rich and vsr's commands."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from .conftest import spawn

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status (Linux)")


def _wait_until_catching(pid: int, signum: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return  # already gone: the caller sees how it ended
        state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "?")
        if state in ("Z", "X"):  # ended (a zombie until communicate() reaps it): the caller sees how
            return
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if mask >> (signum - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError("vsr never installed its stop handlers")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_while_starting_is_one_line(tmp_path, signum):
    for delay in [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]:
        child = spawn([sys.executable, "-m", "vsr", "upscale", tmp_path / "missing.mp4", tmp_path / "out.mp4"])
        _wait_until_catching(child.pid, signal.SIGTERM)
        time.sleep(delay)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
        lines = err.strip().splitlines()
        if "missing.mp4" in err:  # the command had finished (the input is missing) when the signal came: too late
            assert len(lines) == 1 and "Traceback" not in err, err
            continue
        assert child.returncode == 128 + signum, (delay, child.returncode, err)
        assert len(lines) == 1 and lines[0].startswith("vsr: interrupted"), (delay, err)
        assert "Traceback" not in err and "Exception ignored" not in err
    assert not (tmp_path / "out.mp4").exists()
