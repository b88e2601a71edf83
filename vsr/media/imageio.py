"""Reading and writing still images (PNG, JPEG, BMP, TIFF, WebP) with OpenCV.

Contract: `read_image` returns a uint8 array, HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA),
channels in RGB order; 16-bit images are reduced to 8 bits. `write_image` writes
such an array atomically: to a temporary file beside the target, renamed on success.
Errors are `InputError` / `OutputError` with one actionable line.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # errors are ours to report, in one line

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from vsr.errors import InputError, OutputError  # noqa: E402
from vsr.media.atomic import atomic_path

if hasattr(cv2.utils, "logging"):  # OpenCV 4.10 and older have only the environment variable above
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name; an error if there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_path(p))
    if not files:
        raise InputError(f"{folder}: no images (PNG, JPEG, BMP, TIFF) in this folder")
    return files


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 grey / RGB / RGBA (see module contract)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    return _as_uint8(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), str(path))


def read_image_bytes(data: bytes, label: str = "image") -> np.ndarray:
    """`read_image` of a file's contents held in memory."""
    return _as_uint8(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), label)


def _as_uint8(img: np.ndarray | None, path: str) -> np.ndarray:
    if img is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format); use PNG, JPEG, BMP or TIFF")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{path}: {img.dtype} images are not supported; convert it to 8- or 16-bit")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
        img = cv2.cvtColor(img, code)
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    """Write a uint8 grey / RGB / RGBA image atomically; the format follows the suffix."""
    path = Path(path)
    if img.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
        img = cv2.cvtColor(img, code)
    ok, buf = cv2.imencode(path.suffix.lower() or ".png", img)
    if not ok:
        raise OutputError(f"{path}: cannot encode an image with suffix {path.suffix!r}; use .png")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(buf.tobytes())
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({exc.strerror}); choose a writable folder") from None
