"""Atomic file output: a file appears at its target path only when complete.

Contract: `atomic_path(target)` is a context manager that yields a hidden temporary
path beside `target` (same folder, so the rename is atomic; same suffix, so writers
that pick a format from the name still do). When the block ends normally the
temporary file replaces `target`; when it raises, the temporary file is removed and
`target` is untouched. `temp_path` and `remove` are the two halves, for callers whose
flow does not fit one block (the video pipeline).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(target: Path | str) -> str:
    """A hidden, unique name beside `target` that ends in the same suffix."""
    target = Path(target)
    return str(target.with_name(f".{target.stem}.vsr-{uuid.uuid4().hex[:8]}.part{target.suffix}"))


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
        os.replace(tmp, target)
    finally:
        remove(tmp)
