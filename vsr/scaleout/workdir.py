"""The work folder of a segmented run: finished parts and what identifies them, so `--resume` can reuse them.

Contract:
- `WorkFolder.open(target, run, resume, overwrite, notice)` takes the folder `.<target name>.vsr-work` beside
  `target` (hidden, named after it, the same on every host that sees the folder) and locks it (`flock` on its
  `lock` file: a second run writing the same target gets `OutputError`). `run` is a JSON-able dict that
  identifies the run: input identity (`input_identity`), options, weights hash, engine. An existing folder:
  - without `resume`: an error (`OutputError`) that says how many finished segments it holds and to add
    `--resume` or `--overwrite`; with `overwrite` it is emptied, with a notice. Never used silently.
  - with `resume`: when its `run` differs from this one (input changed, other options or weights), it is
    emptied with a notice naming what differs; otherwise its parts are offered to `reusable`.
- `reusable(segment)` is the part file of `segment` when the manifest lists one with the same bounds
  (seek, start, frames) and its SHA-256 still matches the file, else None (a mismatched file is deleted).
- `writing_path(index)` is where a worker writes a part; `add(segment, path, frames)` checksums it, renames it
  to its final name and records it in `manifest.json` (written to a temporary file and renamed, so a crash
  leaves the old or the new manifest, never half of one).
- `finish()` removes the folder (the target is written); `close()` keeps it when it holds finished parts
  (returns how many) and removes it otherwise. Partial parts (`*.writing*`) never survive either.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from vsr.errors import OutputError
from vsr.scaleout.segments import Segment

FORMAT = 1
_MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def folder_for(target: str | Path) -> Path:
    """The work folder of `target`: hidden, beside it, named after it."""
    target = Path(target)
    return target.parent / f".{target.name}.vsr-work"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def input_identity(src: str | Path) -> dict:
    """What tells an input file apart from a changed one: absolute path, size, modification time, and the
    SHA-256 of its first and last MiB (a file copied elsewhere with its times kept is still the same)."""
    path = Path(src).resolve()
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_CHUNK))
        if st.st_size > _CHUNK:
            f.seek(max(_CHUNK, st.st_size - _CHUNK))
            h.update(f.read(_CHUNK))
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ends_sha256": h.hexdigest()}


def _bounds(segment: Segment) -> list[int]:
    return [segment.seek_pts, segment.start_pts, segment.frames]


def _stale_message(target: Path, path: Path, count: int) -> str:
    return (
        f"{target}: an earlier run stopped and left {count} finished segment(s) in {path}; "
        "add --resume to reuse them, or --overwrite to start over"
    )


def check_stale(target: str | Path) -> None:
    """The error `WorkFolder.open` gives without --resume, checked early (before workers start)."""
    target = Path(target)
    path = folder_for(target)
    if path.is_dir():
        try:
            count = len(json.loads((path / _MANIFEST).read_text()).get("parts", {}))
        except (OSError, ValueError, AttributeError):
            count = len(list(path.glob("part*")))
        if count:
            raise OutputError(_stale_message(target, path, count))


def discard(target: str | Path, notice=lambda text: None) -> None:
    """Remove the work folder of `target` (written by other means with --overwrite), unless a run holds it."""
    if folder_for(target).is_dir():
        try:
            WorkFolder.open(target, {}, resume=False, overwrite=True, notice=notice).finish()
        except OutputError:
            pass


class WorkFolder:
    """See the module contract."""

    def __init__(self, path: Path, target: Path, run: dict, lock_fd: int):
        self.path, self.target, self.run, self._lock_fd = path, target, run, lock_fd
        self.parts: dict[int, dict] = {}

    @classmethod
    def open(cls, target: str | Path, run: dict, *, resume: bool, overwrite: bool, notice=lambda text: None):
        target = Path(target)
        path = folder_for(target)
        existed = path.is_dir()
        try:
            path.mkdir(exist_ok=True)
            fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{target}: cannot create the work folder {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{target}: another vsr run is writing this output (its work folder {path} is in use)") from None
        folder = cls(path, target, run, fd)
        try:
            folder._adopt(existed, resume, overwrite, notice)
        except BaseException:
            folder._unlock()
            raise
        return folder

    def _adopt(self, existed: bool, resume: bool, overwrite: bool, notice) -> None:
        old = self._read_manifest() if existed else None
        for entry in os.scandir(self.path):  # a killed run's unfinished parts
            if ".writing" in entry.name:
                os.remove(entry.path)
        if old is None or not old.get("parts"):
            self._clear()
            return
        count = len(old.get("parts", {}))
        if not resume:
            if not overwrite:
                raise OutputError(_stale_message(self.target, self.path, count))
            notice(f"{self.target}: starting over; the {count} segment(s) an earlier run left are discarded (--overwrite)")
            self._clear()
            return
        differs = [
            key for key in sorted(set(old.get("run", {})) | set(self.run)) if old.get("run", {}).get(key) != self.run.get(key)
        ]
        if old.get("format") != FORMAT or differs:
            what = ", ".join(differs) if differs else "its format"
            notice(f"{self.target}: the earlier run's {count} segment(s) cannot be reused ({what} differ); starting over")
            self._clear()
            return
        self.parts = {int(k): v for k, v in old.get("parts", {}).items()}

    def _read_manifest(self) -> dict | None:
        try:
            data = json.loads((self.path / _MANIFEST).read_text())
        except (OSError, ValueError):
            return {"format": None, "run": {}, "parts": {}} if any(self.path.glob("part*")) else None
        return data if isinstance(data, dict) else None

    def _clear(self) -> None:
        for entry in os.scandir(self.path):
            if entry.name != "lock":
                (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.remove)(entry.path)
        self.parts = {}
        self._write_manifest()

    def _write_manifest(self) -> None:
        data = {"format": FORMAT, "run": self.run, "parts": {str(k): v for k, v in sorted(self.parts.items())}}
        tmp = self.path / f"{_MANIFEST}.writing"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path / _MANIFEST)

    def part_path(self, index: int) -> Path:
        return self.path / f"part{index:05d}{self.target.suffix or '.mkv'}"

    def writing_path(self, index: int, tag: str = "") -> Path:
        final = self.part_path(index)
        return final.with_name(f"{final.stem}.writing{tag}{final.suffix}")

    def reusable(self, segment: Segment) -> Path | None:
        entry = self.parts.get(segment.index)
        if entry is None:
            return None
        path = self.part_path(segment.index)
        ok = entry.get("bounds") == _bounds(segment) and path.is_file() and sha256_file(path) == entry.get("sha256")
        if not ok:
            del self.parts[segment.index]
            path.unlink(missing_ok=True)
            self._write_manifest()
            return None
        return path

    def add(self, segment: Segment, written: Path, frames: int) -> Path:
        path = self.part_path(segment.index)
        digest = sha256_file(written)
        os.replace(written, path)
        self.parts[segment.index] = {"bounds": _bounds(segment), "frames": frames, "sha256": digest, "bytes": path.stat().st_size}
        self._write_manifest()
        return path

    def finish(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()

    def close(self) -> int:
        """Keep the folder if it holds finished parts (returns how many), else remove it."""
        for entry in os.scandir(self.path) if self.path.is_dir() else ():
            if ".writing" in entry.name:
                os.remove(entry.path)
        kept = len(self.parts)
        if not kept:
            shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()
        return kept

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
