"""Getting the paper's datasets (Set5, Set14, the 91 images) into the cache: `vsr data get`.

Contract:
- `MANIFEST` (the package's `datasets.json`) lists every file of each dataset with two SHA-256 sums: of the PNG file
  as this project holds it (`sha256`, the same as `../shared/data/SHA256SUMS`) and of its pixels (`pixels`, see
  `pixels_sha256`: the same whatever lossless format carries them).
- `get_dataset(name, source=None, progress=None)` makes `dataset_folder(name)` (`<cache>/datasets/<name>`, where
  `vsr.train.data.resolve_dataset` looks) hold every file of the manifest, each verified, and returns the folder. Files
  already there and verified are kept, so a second run downloads nothing; a file there with other contents is not
  vsr's (it writes only checked files) and is an error, never replaced. Where the files come from:
  - `source=None`: the archives the SRCNN authors publish on the paper's project page (`ARCHIVES`; the 91 images,
    Set5 and Set14 as BMP), each checked against its pinned SHA-256; every image inside is checked by its pixels and
    written as PNG (same pixels; the PNG bytes may differ from this project's copy).
  - a URL or folder: a mirror laid out like `../shared/data` (`<name>/<file>.png`); each file is checked by the SHA-256
    of its bytes (or, for a mirror that re-encoded them, of its pixels) and kept as it came.
  - a `.zip` (a URL or a file): an archive like the authors', for one downloaded by hand; images checked by pixels.
- Downloads go to `<cache>/datasets/.downloads/<file>.part` and resume with an HTTP Range request after an
  interruption (Ctrl-C, a dropped connection); a file appears in the dataset folder only complete and verified.
- Every failure is an `InputError` of one line: no network names the URL, what to download by hand and where to
  put it. `progress(done_bytes, total_bytes_or_None, label)` is called as bytes arrive; nothing is printed here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from vsr import __version__
from vsr.cache import cache_dir
from vsr.errors import InputError
from vsr.media.atomic import atomic_path
from vsr.train.data import KNOWN_DATASETS

Progress = Callable[[int, "int | None", str], None]

MANIFEST: dict = json.loads(files("vsr.train").joinpath("datasets.json").read_text())

# The SRCNN authors' packages, linked from the paper's project page (mmlab.ie.cuhk.edu.hk/projects/SRCNN.html):
# SRCNN_train.zip holds the training images (Train/) and the test sets (Test/Set5, Test/Set14) as BMP; SRCNN_v1.zip,
# the demo, holds Set5 and Set14. The SHA-256 sums are those a third party recorded on retrieving them (2026-09-01).
# They could not be fetched from this project's machines (no internet there): a changed or moved archive is an error
# that says so, never other data, since every image inside is checked against the manifest's pixels.
_PAGE = "http://mmlab.ie.cuhk.edu.hk/projects/SRCNN"
ARCHIVES = (
    (f"{_PAGE}/SRCNN_train.zip", "001146419f7acfb12a3e7929c8acd5de88a08d687d6881085f81321ad6982b1a"),
    (f"{_PAGE}/SRCNN_v1.zip", "bfa68ca613c1326a59e0c34353205a254ab2b67e34df7f04e28eef567980af30"),
)
# The folder that holds a dataset inside such an archive, by dataset name.
ARCHIVE_FOLDERS = {"91images": ("train", "91images"), "Set5": ("set5",), "Set14": ("set14",)}
TIMEOUT_S = 30.0
CHUNK = 1 << 16


@dataclass(frozen=True)
class Entry:
    name: str  # file name in the dataset folder, e.g. baby_GT.png
    sha256: str  # of this project's PNG file
    pixels: str  # pixels_sha256 of its image


def entries(name: str) -> list[Entry]:
    """The manifest's files of a dataset (an InputError for an unknown name)."""
    if name not in MANIFEST["datasets"]:
        raise InputError(f"unknown dataset {name!r}; vsr data gets {', '.join(KNOWN_DATASETS)} (or all)")
    return [Entry(f, *MANIFEST["datasets"][name][f]) for f in sorted(MANIFEST["datasets"][name])]


def dataset_folder(name: str) -> Path:
    return cache_dir() / "datasets" / name


def _downloads() -> Path:
    return cache_dir() / "datasets" / ".downloads"


def pixels_sha256(img: np.ndarray) -> str:
    """SHA-256 of an image's pixels as `vsr.media.imageio.read_image` returns them, with the shape in front. A colour image
    whose three channels are equal counts as grey and an alpha channel that is opaque everywhere is dropped, so
    one picture has one sum whatever lossless format (PNG, BMP, grey or RGB) carries it."""
    img = _canonical(img)
    head = "x".join(str(n) for n in img.shape).encode() + b":"
    return hashlib.sha256(head + np.ascontiguousarray(img).tobytes()).hexdigest()


def _canonical(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 4 and (img[:, :, 3] == 255).all():
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 3 and (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all():
        img = img[:, :, 0]
    return img


def _decode(data: bytes) -> np.ndarray | None:
    import cv2

    from vsr.media.imageio import read_image_bytes

    try:
        return read_image_bytes(data)
    except (InputError, cv2.error):
        return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, entry: Entry) -> bool:
    """The file at `path` is this entry: the same bytes, or (a re-encoded copy) the same pixels."""
    if not path.is_file():
        return False
    if _file_sha256(path) == entry.sha256:
        return True
    img = _decode(path.read_bytes())
    return img is not None and pixels_sha256(img) == entry.pixels


def missing(name: str) -> list[Entry]:
    """The files of a dataset that its cache folder lacks (or holds with other contents)."""
    folder = dataset_folder(name)
    return [e for e in entries(name) if not _verified(folder / e.name, e)]


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https", "file")


def _offline_hint(name: str) -> str:
    url = ARCHIVES[0][0]
    return (
        f"without a network, download {url} by hand and run `vsr data get {name} --from SRCNN_train.zip`, "
        f"or put the images in {dataset_folder(name)}/ (or set VSR_DATA to a folder holding {name}/)"
    )


def _not_there(exc: BaseException) -> bool:
    """A 404 from a server, or no such file in a folder given as the source."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 404
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"no answer in {TIMEOUT_S:.0f} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the end of the file; run the command again to resume"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def fetch(url: str, part: Path, label: str, progress: Progress | None = None) -> Path:
    """Download `url` into `part`, resuming what an earlier, interrupted download left there. Returns `part`.
    Raises OSError (urllib's errors among them) or http.client.HTTPException; the caller words them."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"vsr/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we have: it was complete
            return part
        raise
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file (it ignores Range, or there was nothing to resume)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if progress:
            progress(have, total, label)
        with open(part, "ab" if resumed else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                have += len(block)
                if progress:
                    progress(have, total, label)
    if total is not None and have < total:
        raise OSError(f"the connection closed after {have} of {total} bytes; run the command again to resume")
    return part


def _fetch_verified(url: str, part: Path, sha256: str | None, label: str, progress: Progress | None) -> Path:
    """`fetch`, then check the whole file's SHA-256; a finished file that does not match is downloaded once more
    from the start (a resumed file whose beginning was of another version), then it is an error."""
    for attempt in range(2):
        fetch(url, part, label, progress)
        if sha256 is None or _file_sha256(part) == sha256:
            return part
        part.unlink()
        if attempt:
            raise InputError(f"{url} does not have the expected SHA-256 ({sha256}); the file there has changed")
    return part


def _store(folder: Path, entry: Entry, data: bytes) -> bool:
    """Write an image into the dataset folder if it is this entry: the bytes as they are when they are this project's
    file, else its pixels as PNG. False when it is not this entry."""
    from vsr.media.imageio import write_image

    if hashlib.sha256(data).hexdigest() == entry.sha256:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / entry.name) as tmp, open(tmp, "wb") as f:
            f.write(data)
        return True
    img = _decode(data)
    if img is None or pixels_sha256(img) != entry.pixels:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / entry.name, _canonical(img))
    return True


def _from_mirror(name: str, base: str, todo: list[Entry], progress: Progress | None) -> list[Entry]:
    """Each missing file from `<base>/<name>/<file>`; returns what is still missing."""
    base = base if base.endswith("/") else base + "/"
    left = []
    for entry in todo:
        url = urllib.parse.urljoin(base, f"{urllib.parse.quote(name)}/{urllib.parse.quote(entry.name)}")
        part = _downloads() / f"{name}-{entry.name}.part"
        try:
            fetch(url, part, f"{name}/{entry.name}", progress)
        except (OSError, http.client.HTTPException) as exc:
            if _not_there(exc):
                left.append(entry)
                continue
            raise InputError(f"cannot download {url}: {_reason(exc)}; {_offline_hint(name)}") from None
        if not _store(dataset_folder(name), entry, part.read_bytes()):
            part.unlink()
            raise InputError(f"{url} is not {name}'s {entry.name} (its SHA-256 and its pixels differ); use another mirror")
        part.unlink()
    return left


def _from_archive(name: str, archive: Path, todo: list[Entry]) -> list[Entry]:
    """The missing files from an archive's `<...>/<folder>/<stem>.<any image suffix>`; returns what is still missing."""
    wanted = {Path(e.name).stem.lower(): e for e in todo}
    folders = ARCHIVE_FOLDERS[name]
    found: dict[str, Entry] = {}
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                path = Path(member)
                entry = wanted.get(path.stem.lower())
                if entry is None or path.parent.name.lower() not in folders or entry.name in found:
                    continue
                if _store(dataset_folder(name), entry, z.read(member)):
                    found[entry.name] = entry
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive}: not a readable zip archive ({_reason(exc)}); download it again") from None
    return [e for e in todo if e.name not in found]


def _archive(name: str, location: str, sha256: str | None, progress: Progress | None) -> Path:
    """A local archive as it is; a URL's downloaded (resuming) and verified, then kept in the downloads folder, since
    the other datasets come from the same archive."""
    if not _is_url(location):
        if not Path(location).is_file():
            raise InputError(f"{location}: no such file; give the path of the downloaded .zip")
        return Path(location)
    file_name = Path(urllib.parse.urlsplit(location).path).name or "archive.zip"
    done = _downloads() / file_name
    if done.is_file() and (sha256 is None or _file_sha256(done) == sha256):
        return done
    part = _downloads() / f"{file_name}.part"
    try:
        _fetch_verified(location, part, sha256, file_name, progress)
    except (OSError, http.client.HTTPException) as exc:
        raise InputError(f"cannot download {location}: {_reason(exc)}; {_offline_hint(name)}") from None
    os.replace(part, done)
    return done


def get_dataset(name: str, source: str | None = None, progress: Progress | None = None) -> Path:
    """Make the cache hold dataset `name`, verified (see module contract); returns its folder."""
    todo = missing(name)
    if not todo:
        return dataset_folder(name)
    foreign = [dataset_folder(name) / e.name for e in todo if (dataset_folder(name) / e.name).exists()]
    if foreign:  # vsr writes a file there only once it is checked: this one is someone else's
        raise InputError(
            f"{foreign[0]} is not {name}'s {foreign[0].name} as vsr gets it (other contents); vsr does not replace files "
            "it did not write: move it away and run the command again"
        )
    if source is not None and not source.lower().endswith(".zip"):
        base = source if _is_url(source) else Path(source).resolve().as_uri()
        if not _is_url(source) and not Path(source).is_dir():
            raise InputError(f"{source}: no such folder or URL; give a mirror's URL, a folder holding {name}/, or a .zip")
        todo = _from_mirror(name, base, todo, progress)
        where = source
    else:
        archives = [(source, None)] if source is not None else list(ARCHIVES)
        where = ", ".join(a for a, _ in archives)
        failed: list[InputError] = []
        for location, sha256 in archives:
            if todo:
                try:
                    todo = _from_archive(name, _archive(name, location, sha256, progress), todo)
                except InputError as exc:
                    failed.append(exc)  # the next archive may have what this one could not give
        if todo and failed:
            raise failed[0]
    if todo:
        names = ", ".join(e.name for e in todo[:3]) + (f" and {len(todo) - 3} more" if len(todo) > 3 else "")
        raise InputError(f"{where} lacks {len(todo)} of {name}'s files ({names}) or holds other pixels; {_offline_hint(name)}")
    return dataset_folder(name)


def manifest_of(root: Path) -> dict:
    """The manifest of a folder holding the datasets as this project has them (how `datasets.json` was made, from
    ../shared/data: `python -c "import json, vsr.train.download as d; print(json.dumps(d.manifest_of(...), indent=1))"`)."""
    from vsr.media.imageio import read_image

    sets = {}
    for name in KNOWN_DATASETS:
        paths = sorted(p for p in (Path(root) / name).iterdir() if p.suffix == ".png")
        sets[name] = {p.name: [_file_sha256(p), pixels_sha256(read_image(p))] for p in paths}
    return {"about": "vsr data get: each file's SHA-256 and the SHA-256 of its pixels (vsr.train.download)", "datasets": sets}
