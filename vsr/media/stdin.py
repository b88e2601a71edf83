"""Reading "-" (stdin) so that a stop signal ends the wait for a producer that has written nothing or stalled.

Why not hand PyAV `sys.stdin.buffer`: PyAV reads a Python file object from a C callback (av/container/pyio.py
`pyio_read_gil`, the same in PyAV 17.1 and 18.1) that catches `Exception` only and may not raise
(`exceptval(check=False)`). A stop signal raises `vsr.signals.Interrupted` (a `BaseException`) inside the blocked
read, so it escapes that `except`, is printed as "Exception ignored in: 'av.container.pyio.pyio_read_gil'" and
dropped, and FFmpeg reads on: the command cannot be stopped. And a decode thread blocked in `BufferedReader.read`
holds the reader's lock, so the interpreter aborts at exit ("Fatal Python error: _enter_buffered_busy").

Contract:
- `open_stdin()` -> what PyAV reads "-" from: a `StdinPipe` on stdin's descriptor; `sys.stdin.buffer` itself where
  sys.stdin has no descriptor (replaced in-process by an in-memory stream). No stdin at all is an `InputError`.
- `StdinPipe.read(n)` waits for data in slices of `POLL_S` (select), then returns what one `os.read` gives, at most
  `n` bytes; b"" at the end of the stream. It stops waiting and returns b"" (an ordinary end of input to FFmpeg)
  once a stop signal has arrived (`vsr.signals.arrived()`; a thread other than the main one notices within
  `POLL_S`), once `cancel()` was called (any thread), or when the signal handler raises inside the read (the main
  thread, inside `av.open`). Such an exception is kept, never raised into PyAV, so nothing is printed; the thread
  that read calls `raise_stop()` after the PyAV call returns or fails, which raises it there.
- The end stays the end: after a read returned b"", later ones return b"" without reading (until a `seek`).
  FFmpeg reads again after an end while it probes, and a terminal's Ctrl-D ends only the read it answers, so
  without this vsr would wait on at the terminal after Ctrl-D.
- `bytes_read` counts the bytes that came: 0 at the end means nothing was piped (or Ctrl-D at a terminal).
- Stdin redirected from a regular file (`< clip.mp4`) is seekable (`seek`/`tell` through os.lseek), as PyAV needs
  for an MP4 whose index is at its end; a pipe or a terminal is not.
- The descriptor is never closed: it is the process's stdin. select() on a pipe or terminal is POSIX; vsr is Linux only.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import threading

from vsr.errors import InputError
from vsr.signals import arrived, check

POLL_S = 0.1  # seconds between looks at the stop flags while no data comes


class StdinPipe:
    """A file object on stdin's descriptor for PyAV; see the module contract."""

    def __init__(self, fd: int):
        self.fd = fd
        self.bytes_read = 0
        self._cancelled = threading.Event()
        self._caught: BaseException | None = None
        self._ended = False
        self._seekable = stat.S_ISREG(os.fstat(fd).st_mode)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (PyAV always gives `n`) once some are there; b"" at the end or when stopped (see the contract)."""
        size = n if n > 0 else 1 << 16
        try:
            while not (self._ended or self._waited_enough()):
                if select.select([self.fd], [], [], POLL_S)[0]:
                    data = os.read(self.fd, size)
                    self.bytes_read += len(data)
                    self._ended = not data
                    return data
            return b""
        except Exception:
            raise  # an I/O error: PyAV passes it on as it is (av/error.py `stash_exception`, `err_check`)
        except BaseException as exc:  # a stop signal's handler raised here: keep it for raise_stop, end the input
            self._caught = exc
            self._cancelled.set()
            return b""

    def _waited_enough(self) -> bool:
        return self._cancelled.is_set() or arrived()

    def cancel(self) -> None:
        """Stop waiting: the read in progress and every later one return b"" within `POLL_S`. Any thread."""
        self._cancelled.set()

    def raise_stop(self) -> None:
        """Raise the exception a read kept (see the contract), once: a stop signal as `vsr.signals.check()` raises it
        (which also clears it there), anything else (KeyboardInterrupt without `vsr.signals.install()`) as it was."""
        caught, self._caught = self._caught, None
        if caught is not None:
            check()
            raise caught

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._ended = False
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)


def open_stdin():
    """A `StdinPipe` on stdin, or `sys.stdin.buffer` where stdin has no descriptor (see the module contract)."""
    if sys.stdin is None:
        raise InputError("-: this process has no stdin (it is closed); pipe a video into vsr, or give a file")
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
        return sys.stdin.buffer
    return StdinPipe(fd)
