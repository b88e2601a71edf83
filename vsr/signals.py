"""Stop signals: SIGTERM and SIGHUP stop vsr as safely as Ctrl-C.

Contract:
- `install()` (the CLI calls it once, in the main thread, before any work) makes SIGINT, SIGTERM and
  SIGHUP raise `Interrupted(signum)` in the main thread. `kill`, `timeout`, systemd and `docker stop`
  send SIGTERM; a closed terminal or SSH session sends SIGHUP. Every stage of vsr cleans up on any
  `BaseException` (worker threads stopped, containers closed, temporary files removed, the target left
  as it was), so the three signals stop a command alike; the CLI prints one line and exits
  `exit_code(signum)` = 128 + signum (130 SIGINT, 143 SIGTERM, 129 SIGHUP), the shell's convention.
- `Interrupted` is a `BaseException` but not a `KeyboardInterrupt`, so no library's Ctrl-C handling
  (typer turns KeyboardInterrupt into exit 130) hides which signal it was.
- A signal the launcher set to be ignored stays ignored: `nohup` ignores SIGHUP so that a job survives
  its terminal, and a shell without job control starts background jobs (`vsr ... &` in a script) with
  SIGINT ignored so that Ctrl-C at the terminal does not reach them. Undoing either would break what the
  user asked of the shell. SIGTERM is handled unless it too was ignored.
- Every stop signal raises until the CLI has caught one (`acknowledge()`); after that they are ignored,
  so the clean-up finishes. A signal whose exception C code swallowed (OpenCV's mouse callback) is
  therefore not lost: the next one raises again. A second signal during the clean-up may leave a partial
  file, which the next run sweeps (`vsr.media.atomic`).
- `with deferred():` holds a signal back until the block ends (then raises it), for writes that belong
  together (training's checkpoint, weights and log of one epoch). Main thread only, like the handler.
- `with held():` holds signals the same way but does not raise them when the block ends: clean-up that runs
  while a stop is already unwinding the run (worker pools) must finish, and must not raise a second time.
- `install_early()` (the entry point calls it first, before importing the CLI) ends the process at once, with one line
  and `exit_code(signum)`, on a stop signal that arrives before `install()`: nothing is open or written yet, so
  there is nothing to clean up, and Python's default (a KeyboardInterrupt traceback from inside an import) is not
  what a user should see. Signals the launcher ignored stay ignored, as with `install()`.
- `check()` raises a stop that arrived but was swallowed: Python runs signal handlers wherever the main
  thread is, and a callback that C code calls (OpenCV's mouse callback inside `cv2.waitKey`) may discard
  the exception. The main loops (video pipeline, webcam, training steps, image folders) call it, so such
  a stop still ends the run instead of being lost. It raises once.
- `arrived()` says, in any thread, that a stop signal has arrived since `install()` (deferred, held, raised or
  ignored after `acknowledge()` alike); it stays true. Code that waits where the signal cannot reach it (a thread
  other than the main one, a wait inside a C callback that would swallow the exception: reading stdin for PyAV,
  `vsr.media.stdin`) waits in short slices and gives up once it is true.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(BaseException):
    """A stop signal arrived (Ctrl-C, SIGTERM, SIGHUP); raised in the main thread."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def exit_code(signum: int) -> int:
    """The shell's exit status for a process stopped by `signum`: 128 + signum."""
    return 128 + int(signum)


_acknowledged = threading.Event()
_previous: dict[int, object] = {}
_state = {"depth": 0, "pending": None}  # deferred() nesting; the stop signal not yet raised by check()/deferred()
_arrived = threading.Event()  # a stop signal arrived since install(): arrived()


def _handler(signum: int, frame) -> None:
    _arrived.set()
    if _acknowledged.is_set():
        return  # the CLI is stopping: let it finish
    _state["pending"] = signum
    if _state["depth"]:
        return  # deferred(): raised when the block ends
    raise Interrupted(signum)


def acknowledge() -> None:
    """The stop has reached the CLI: later signals are ignored."""
    _acknowledged.set()


def restore() -> None:
    """Put back the handlers `install()` replaced (for callers of the CLI in-process, e.g. tests)."""
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()


def arrived() -> bool:
    """Whether a stop signal has arrived since `install()`; any thread (see the contract)."""
    return _arrived.is_set()


def check() -> None:
    """Raise `Interrupted` for a stop signal that arrived and has not ended the run (see the contract)."""
    pending = _state["pending"]
    if pending is not None and not _state["depth"]:
        _state["pending"] = None
        raise Interrupted(pending)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal that arrives inside the block; raise it as `Interrupted` when the block ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    check()


@contextmanager
def held() -> Iterator[None]:
    """Hold stop signals inside the block without raising them at its end: for clean-up that must finish (worker
    pools shut down while a stop is already unwinding the run). A signal that arrives stays pending for `check()`."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1


def install() -> list[int]:
    """Route SIGINT, SIGTERM and SIGHUP to `Interrupted` unless ignored (see the contract); returns the
    signals now handled. Must be called from the main thread."""
    handled = []
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous = signal.getsignal(signum)
        if previous is _exit_now:  # install_early's: after the CLI, Python's own behaviour again
            previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        _previous.setdefault(signum, previous)
        signal.signal(signum, _handler)
        handled.append(signum)
    _acknowledged.clear()
    _arrived.clear()
    _state["pending"] = None
    return handled


def _exit_now(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"vsr: interrupted{'' if name == 'SIGINT' else ' by ' + name} while starting; nothing was written\n".encode())
    os._exit(exit_code(signum))


def install_early() -> None:
    """Until `install()`: a stop signal ends the process at once with one line (see the contract)."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _exit_now)


def settle() -> None:
    """The command has ended: ignore stop signals while the interpreter shuts down (see vsr.__main__)."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_IGN)
