"""The work folder of a segmented run: finished parts and what identifies them, so `--resume` can reuse them.

Contract:
- Proof of ownership. vsr deletes only what it can prove it wrote:
  - a folder is vsr's when it is a real folder (not a symbolic link) named `.<target name>.vsr-work` that holds
    a manifest vsr writes (`manifest.json`: a JSON object with an integer `format`, a `run` object and a
    `parts` object of index -> object), or that holds nothing vsr could lose (empty, or only an empty `lock`:
    a run killed before it wrote its first manifest);
  - inside such a folder, vsr's files are the names vsr gives its files and nothing else: `lock`,
    `manifest.json`, `manifest.json.writing`, `partNNNNN<suffix>` and `partNNNNN.writing[-PID]<suffix>` (five
    digits; `<suffix>` the target's, `.mkv` without one), never a folder. A finished part the manifest lists
    is also checked by its SHA-256 before it is reused (a mismatch is redone). Anything else (a user's
    `notes.txt`, a subfolder) is not vsr's: it is never deleted, overwritten or moved, and a folder that
    still holds such files is left in place with a notice naming them.
  A folder at that name that is not vsr's (`not_ours`) is never written to, not even a lock file: a segmented
  run refuses it (`OutputError`: move or remove it), the one-process path leaves it alone with a notice.
- `WorkFolder.open(target, run, resume, overwrite, notice)` takes the folder `.<target name>.vsr-work` beside
  `target` (hidden, named after it, the same on every host that sees the folder) and locks it (`flock` on its
  `lock` file: a second run writing the same target gets `OutputError`). `run` is a JSON-able dict that
  identifies the run: input identity (`input_identity`; its `content_identity`, size and end hashes, is what
  each Ray task checks its node's copy against, `content_differs`), options, weights hash, engine. `found` is how many
  finished parts an earlier run had left in it (0: no earlier work). An existing folder with parts:
  - without `resume`: an error (`OutputError`) that says how many finished segments it holds and to add
    `--resume` or `--overwrite`; with `overwrite` vsr's files in it are deleted, with a notice. Never used
    silently.
  - with `resume`: when its `run` differs from this one (input changed, other options or weights), vsr's files
    in it are deleted with a notice naming what differs; otherwise its parts are offered to `reusable`.
- `reusable(segment)` is the part file of `segment` when the manifest lists one with the same bounds
  (seek, start, frames) and its SHA-256 still matches the file, else None (a mismatched file is deleted).
- `writing_path(index)` is where a worker writes a part; `add(segment, path, frames)` checksums it, renames it
  to its final name and records it in `manifest.json` (written to a temporary file and renamed, so a crash
  leaves the old or the new manifest, never half of one).
- `finish()` deletes vsr's files and the folder (the target is written); `close()` keeps them when the folder
  holds finished parts (returns how many) and deletes them otherwise. Partial parts (`*.writing*`) never
  survive either. A folder that also holds files vsr did not write stays, with them, and a notice says so.
- `check_stale`, `check_ours` and `discard` are the same rules for callers that do not open the folder (the
  one-process path, and checks made before any work).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from pathlib import Path

from vsr.errors import OutputError
from vsr.scaleout.segments import Segment

FORMAT = 1
_MANIFEST = "manifest.json"
_MANIFEST_TMP = f"{_MANIFEST}.writing"
_LOCK = "lock"
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
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ends_sha256": _ends_sha256(path, st.st_size)}


def _ends_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_CHUNK))
        if size > _CHUNK:
            f.seek(max(_CHUNK, size - _CHUNK))
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def content_identity(identity: dict) -> tuple[int, str]:
    """The part of an `input_identity` that another machine's copy of the same file shares: (size, SHA-256 of
    its first and last MiB). Path and modification time are left out: a copy on another node has its own mtime
    (unless copied with its times kept), and the path is the one the task opens."""
    return identity["size"], identity["ends_sha256"]


def content_differs(src: str | Path, expected: tuple[int, str]) -> str | None:
    """Why the file at `src` is not the content `expected` (a `content_identity`) describes, in a few words,
    or None when it is (same size, same SHA-256 of its first and last MiB)."""
    size = os.stat(src).st_size
    if size != expected[0]:
        return f"{size} bytes here, {expected[0]} where vsr was started"
    if _ends_sha256(Path(src), size) != expected[1]:
        return "same size, but other bytes at its start or end"
    return None


def _bounds(segment: Segment) -> list[int]:
    return [segment.seek_pts, segment.start_pts, segment.frames]


def _part_suffix(target: Path) -> str:
    return target.suffix or ".mkv"


def _part_name(target: Path, writing: bool) -> re.Pattern:
    """The names vsr gives part files of `target`: finished, or (`writing`) being written."""
    middle = r"\.writing(?:-\d+)?" if writing else ""
    return re.compile(rf"part\d{{5}}{middle}{re.escape(_part_suffix(target))}")


def _is_vsr_file(entry: os.DirEntry, target: Path) -> bool:
    """Whether `entry`, in a folder proven vsr's, has a name vsr gives its files (see the contract)."""
    if entry.is_dir(follow_symlinks=False):
        return False
    name = entry.name
    return name in (_LOCK, _MANIFEST, _MANIFEST_TMP) or any(_part_name(target, w).fullmatch(name) for w in (False, True))


def _is_writing(entry: os.DirEntry, target: Path) -> bool:
    return not entry.is_dir(follow_symlinks=False) and (
        entry.name == _MANIFEST_TMP or bool(_part_name(target, True).fullmatch(entry.name))
    )


def _manifest(path: Path) -> dict | None:
    """The manifest in `path` when it is one vsr writes (see the contract), else None."""
    try:
        data = json.loads((path / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and type(data.get("format")) is int and isinstance(data.get("run"), dict)):
        return None
    parts = data.get("parts")
    if not isinstance(parts, dict) or not all(k.isdigit() and isinstance(v, dict) for k, v in parts.items()):
        return None
    return data


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def not_ours(path: Path) -> str | None:
    """Why the existing `path` cannot be proven a vsr work folder (a few words), or None when it is one."""
    if path.is_symlink() or not path.is_dir():
        return "it is a symbolic link" if path.is_symlink() else "it is not a folder"
    if _manifest(path) is not None:
        return None
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        return f"it cannot be read: {exc.strerror}"
    if all(e.name == _LOCK and e.is_file(follow_symlinks=False) and not e.stat(follow_symlinks=False).st_size for e in entries):
        return None  # empty, or a run killed between creating its lock and writing its first manifest
    return "it holds no vsr manifest" if not _exists(path / _MANIFEST) else "its manifest.json is not one vsr writes"


def _foreign_error(target: Path, path: Path, why: str) -> OutputError:
    return OutputError(
        f"{target}: {path} is not a vsr work folder ({why}), so vsr leaves it untouched; move or remove it, then run again"
    )


def _foreign_notice(target: Path, path: Path, why: str) -> str:
    return f"{target}: leaving {path} untouched: it is not a vsr work folder ({why})"


def _stale_message(target: Path, path: Path, count: int) -> str:
    return (
        f"{target}: an earlier run stopped and left {count} finished segment(s) in {path}; "
        "add --resume to reuse them, or --overwrite to start over"
    )


def check_ours(target: str | Path) -> None:
    """The error `WorkFolder.open` gives for a folder that is not vsr's, checked early (before workers start)."""
    target = Path(target)
    path = folder_for(target)
    why = not_ours(path) if _exists(path) else None
    if why:
        raise _foreign_error(target, path, why)


def _own_folder(target: Path, notice) -> Path | None:
    """The work folder of `target` when there is one and it is vsr's; one that is not vsr's is named in a notice."""
    path = folder_for(target)
    if not _exists(path):
        return None
    why = not_ours(path)
    if why:
        notice(_foreign_notice(target, path, why))
        return None
    return path


def check_stale(target: str | Path, notice=lambda text: None) -> None:
    """The error `WorkFolder.open` gives without --resume, checked early (before workers start). A folder that is
    not vsr's holds no segments of vsr's: it is left alone, with a notice."""
    target = Path(target)
    path = _own_folder(target, notice)
    if path is None:
        return
    count = len((_manifest(path) or {}).get("parts", {}))
    if count:
        raise OutputError(_stale_message(target, path, count))


def discard(target: str | Path, notice=lambda text: None) -> None:
    """Delete vsr's files in the work folder of `target` (written by other means with --overwrite), unless a run
    holds it; a folder that is not vsr's is left alone, with a notice."""
    target = Path(target)
    if _own_folder(target, notice) is None:
        return
    try:
        WorkFolder.open(target, {}, resume=False, overwrite=True, notice=notice).finish()
    except OutputError:
        pass


class WorkFolder:
    """See the module contract."""

    def __init__(self, path: Path, target: Path, run: dict, lock_fd: int, notice):
        self.path, self.target, self.run, self._lock_fd, self._notice = path, target, run, lock_fd, notice
        self.parts: dict[int, dict] = {}
        self.found = 0

    @classmethod
    def open(cls, target: str | Path, run: dict, *, resume: bool, overwrite: bool, notice=lambda text: None):
        target = Path(target)
        path = folder_for(target)
        check_ours(target)  # before anything is created in it
        try:
            path.mkdir(exist_ok=True)
            fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{target}: cannot create the work folder {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{target}: another vsr run is writing this output (its work folder {path} is in use)") from None
        folder = cls(path, target, run, fd, notice)
        try:
            folder._adopt(resume, overwrite)
        except BaseException:
            folder._unlock()
            raise
        return folder

    @property
    def is_open(self) -> bool:
        """Held by this run: neither finished nor closed."""
        return self._lock_fd is not None

    def _adopt(self, resume: bool, overwrite: bool) -> None:
        check_ours(self.target)  # again, under the lock
        old = _manifest(self.path)
        self._delete_writing()  # a killed run's unfinished parts
        count = self.found = len(old["parts"]) if old else 0
        if not count:
            self._clear()
            return
        if not resume:
            if not overwrite:
                raise OutputError(_stale_message(self.target, self.path, count))
            self._notice(f"{self.target}: starting over; the {count} segment(s) an earlier run left are discarded (--overwrite)")
            self._clear()
            return
        differs = [key for key in sorted(set(old["run"]) | set(self.run)) if old["run"].get(key) != self.run.get(key)]
        if old["format"] != FORMAT or differs:
            what = ", ".join(differs) if differs else "its format"
            self._notice(f"{self.target}: the earlier run's {count} segment(s) cannot be reused ({what} differ); starting over")
            self._clear()
            return
        self.parts = {int(k): v for k, v in old["parts"].items()}

    def _entries(self) -> list[os.DirEntry]:
        try:
            return list(os.scandir(self.path))
        except OSError:
            return []

    def _delete_writing(self) -> None:
        for entry in self._entries():
            if _is_writing(entry, self.target):
                _remove(entry.path)

    def _clear(self) -> None:
        """Delete vsr's files but the lock and start an empty manifest; other files stay."""
        for entry in self._entries():
            if entry.name != _LOCK and _is_vsr_file(entry, self.target):
                _remove(entry.path)
        self.parts = {}
        self._write_manifest()

    def _remove_all(self) -> None:
        """Delete vsr's files, the lock last, then the folder; a folder with other files stays, with a notice."""
        others = []
        for entry in sorted(self._entries(), key=lambda e: e.name == _LOCK):
            if _is_vsr_file(entry, self.target):
                _remove(entry.path)
            else:
                others.append(entry.name)
        if others:
            shown = ", ".join(sorted(others)[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            self._notice(
                f"{self.target}: deleted vsr's files from {self.path} but left the folder: it also holds {shown}, "
                "which vsr did not write"
            )
            return
        try:
            os.rmdir(self.path)
        except OSError:
            pass

    def _write_manifest(self) -> None:
        data = {"format": FORMAT, "run": self.run, "parts": {str(k): v for k, v in sorted(self.parts.items())}}
        tmp = self.path / _MANIFEST_TMP
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path / _MANIFEST)

    def part_path(self, index: int) -> Path:
        return self.path / f"part{index:05d}{_part_suffix(self.target)}"

    def writing_path(self, index: int, tag: str = "") -> Path:
        """Where a part is written; `tag` is "" or "-PID" (the contract's names)."""
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
            _remove(path)
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
        if self.is_open:
            self._remove_all()
            self.parts = {}
            self._unlock()

    def close(self) -> int:
        """Keep the folder if it holds finished parts (returns how many), else delete it (vsr's files)."""
        if not self.is_open:
            return 0
        self._delete_writing()
        kept = len(self.parts)
        if not kept:
            self._remove_all()
        self._unlock()
        return kept

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _remove(path: str | Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
