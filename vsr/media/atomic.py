"""Atomic file output: a file appears at its target path only when complete.

Contract:
- `atomic_path(target)` is a context manager that yields a hidden temporary path beside `target` (same
  folder, so the rename is atomic; same suffix, so writers that pick a format from the name still do).
  When the block ends normally the temporary file gets the permissions a new file gets (0666 less the
  umask: some writers, safetensors among them, create 0600 files) and replaces `target`; when it raises
  (an error, Ctrl-C, SIGTERM: see `vsr.signals`), the temporary file is removed and `target` is untouched.
  `temp_path`, `publish` and `remove` are the three steps, for callers whose flow does not fit one block
  (the video pipeline, webcam recording).
- Temporary names are `.<stem>.vsr-<host>-<pid>-<random>.part<suffix>`: hidden, marked as partial, and
  naming the writer (a 4-hex tag of the host name and the process id). Only SIGKILL, a power loss or a
  second stop signal during the clean-up can leave one behind. `temp_path` first sweeps the target's
  folder (once per folder and process): a partial file that this host's process wrote and that process
  is gone is deleted, with a warning; a partial file of the same target whose writer may still run
  (another host's, a live process's, an older vsr's naming) is left alone and named in a warning (two
  runs writing one output); other targets' live partial files are none of this run's business (parallel
  jobs into one folder). Warnings go to the `vsr` logger (the CLI prints them as `vsr: warning: ...`).
- Proof: the sweep deletes a file only when its whole name is one `temp_path` gives (the `.vsr-` marker, a
  host tag, a process id, a random tag and `.part`: a name no other program or person gives a file) and it
  names this host and a process that no longer runs here: vsr wrote it and its writer cannot finish it. A
  name without a process id (an older vsr's) proves no writer gone and is only named in a warning; the
  one-in-65536 chance that another host sharing the folder has the same host tag is the remaining risk
  (that host's vsr run, not a user's file, would lose its partial file and fail with one line).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("vsr")

_PART = re.compile(r"^\.(?P<stem>.*)\.vsr-(?:(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-)?[0-9a-f]{6,8}\.part(?P<suffix>(?:\.[^.]*)?)$")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def _new_file_mode() -> int:
    """0666 less the process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read, restored at once
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def sweep(folder: Path | str, target: str | None = None) -> None:
    """Delete this host's partial files in `folder` whose writer is gone; warn about other partial files of
    `target` (a file name in `folder`)."""
    folder = Path(folder)
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(".") and ".vsr-" in e.name]
    except OSError:
        return
    host = _host_tag()
    for name in sorted(names):
        match = _PART.match(name)
        if match is None:
            continue
        path = folder / name
        pid = int(match["pid"]) if match["pid"] else None
        if match["host"] == host and pid is not None and pid != os.getpid() and not _alive(pid):
            try:
                os.remove(path)
            except OSError:
                continue
            log.warning(f"removed {path}, a partial file left by an interrupted vsr run (process {pid} is gone)")
        elif pid != os.getpid() and f"{match['stem']}{match['suffix']}" == target:
            who = f"process {pid} on host tag {match['host']}" if pid is not None else "an earlier vsr version"
            log.warning(f"{path} is a partial file of another vsr run ({who}); delete it if that run is over")


def temp_path(target: Path | str) -> str:
    """A hidden, unique name beside `target` that ends in the same suffix (sweeps the folder first)."""
    target = Path(target)
    folder = str(target.parent.resolve())
    with _swept_lock:
        first = folder not in _swept
        _swept.add(folder)
    if first:
        sweep(folder, target.name)
    tag = f"{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return str(target.with_name(f".{target.stem}.vsr-{tag}.part{target.suffix}"))


def publish(tmp: str, target: Path | str) -> None:
    """Give the finished temporary file a new file's permissions and move it onto `target`."""
    os.chmod(tmp, _new_file_mode())
    os.replace(tmp, target)


def remove(path: str | None) -> None:
    """Delete `path` if it exists (None or a missing file is fine)."""
    if path is not None:
        try:
            os.remove(path)
        except OSError:
            pass


@contextmanager
def atomic_path(target: Path | str) -> Iterator[str]:
    """Yield a temporary path; move it onto `target` on success, delete it on error."""
    tmp = temp_path(target)
    try:
        yield tmp
        publish(tmp, target)
    finally:
        remove(tmp)
