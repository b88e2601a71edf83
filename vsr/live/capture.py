"""Webcam-preview sources: a camera through OpenCV, or a file or stream URL through PyAV.

Contract (see `vsr.live.webcam` for the whole preview):
- `open_source(spec, live, loop, camera_size, warn)`: a number or /dev/videoN is a camera, read with OpenCV (V4L2 on
  Linux) as BGR and converted once to studio-range BT.601 yuv420p (`bgr_to_planes`); a URL (rtsp://, http://, ...)
  or a file is read with PyAV (`vsr.media.reader.VideoReader`), planes as the decoder gives them. Cameras are always live;
  URLs are live unless `live` is False, files only when `live` is True (played at their frame rate); `loop`
  restarts a file. Each source has `info` (a `VideoInfo`), `frames()` yielding `Frame`s, and `close()`.
- Live frames carry their capture time as pts (ms since the first frame, strictly increasing).
- A source that cannot be read raises InputError; options that do not fit the source raise UsageError.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # errors are ours to report, in one line

import cv2  # noqa: E402, I001  (OpenCV before PyAV: see vsr.live.preview)
import av  # noqa: E402
import numpy as np  # noqa: E402

from vsr.errors import InputError, UsageError  # noqa: E402
from vsr.media.frames import RANGE_MPEG, Picture, plain_info, read_planes
from vsr.media.reader import VideoReader
from vsr.media.source import is_url  # noqa: E402

LIVE_TIME_BASE = Fraction(1, 1000)  # live recordings: capture time in ms


def bgr_to_planes(bgr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Studio-range BT.601 yuv420p planes (Y, U, V) of a BGR uint8 image (what `plain_info` describes)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
    return read_planes(frame.reformat(format="yuv420p", dst_colorspace="ITU601", dst_color_range=RANGE_MPEG))


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class Frame:
    """One captured or decoded frame: planes in `info.pix_fmt`, pts in `info.time_base`, when it was captured."""

    planes: tuple[np.ndarray, ...]
    pts: int
    captured_s: float  # time.perf_counter() when the frame was read (live) or handed to SR (file)


class _LiveClock:
    """Capture timestamps for live sources: ms since the first frame, strictly increasing."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.last = -1

    def pts(self, now: float) -> int:
        if self.t0 is None:
            self.t0 = now
        self.last = max(self.last + 1, round((now - self.t0) * 1000))
        return self.last


def parse_camera(spec: str) -> int | str | None:
    """The camera a --source names (index, or device path), or None when it is not a camera."""
    if re.fullmatch(r"\d+", spec.strip()):
        return int(spec)
    if re.fullmatch(r"/dev/video\d+", spec):
        return spec
    return None


class CameraSource:
    """A camera through OpenCV: BGR frames converted to studio BT.601 yuv420p (see the module contract)."""

    live = True

    def __init__(
        self,
        camera: int | str,
        size: tuple[int, int] | None = None,
        capture: cv2.VideoCapture | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ):
        self.description = f"camera {camera}"
        self._warn = warn
        self._cap = capture if capture is not None else _open_camera(camera)
        try:
            if size is not None:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver queue adds latency; we read continuously anyway
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise InputError(f"{self.description} opened but gives no picture; is another program using it?")
            self._first = bgr
            rate = self._cap.get(cv2.CAP_PROP_FPS)
            h, w = bgr.shape[:2]
            fps = Fraction(rate).limit_denominator(1001) if 0 < rate < 1000 else None
            self.info = plain_info(w, h, fps, LIVE_TIME_BASE)
        except BaseException:
            self.close()
            raise

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        clock = _LiveClock()
        bgr, now = self._first, time.perf_counter()
        del self._first
        frames = 0
        while not stop.is_set():
            if bgr.ndim == 2:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            yield Frame(bgr_to_planes(bgr[:, :, :3]), clock.pts(now), now)
            frames += 1
            ok, bgr = self._cap.read()
            now = time.perf_counter()
            if not ok or bgr is None:  # like a cut-off file: what was captured is kept (and recorded)
                self._warn(f"{self.description} stopped giving pictures after {frames} frames (unplugged?); the run ends here")
                return

    def close(self) -> None:
        self._cap.release()


def _open_camera(camera: int | str) -> cv2.VideoCapture:
    linux = sys.platform.startswith("linux")
    device = f"/dev/video{camera}" if isinstance(camera, int) else camera
    if linux:
        if not os.path.exists(device):
            found = sorted((p for p in Path("/dev").glob("video*") if re.fullmatch(r"video\d+", p.name)), key=lambda p: p.name)
            seen = f"cameras here: {', '.join(map(str, found))}" if found else "no cameras found in /dev"
            what = f"no camera at index {camera}" if isinstance(camera, int) else f"no camera at {camera}"
            hint = "pass --source with another camera, a video file or a URL"
            raise InputError(f"{what}: {device} does not exist ({seen}); {hint}")
        if not os.access(device, os.R_OK | os.W_OK):
            raise InputError(f"camera {device}: permission denied; add your user to the 'video' group or run with access to it")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(camera)
    if not cap.isOpened():
        cap.release()
        if isinstance(camera, int) and not linux:
            raise InputError(f"no camera at index {camera}; pass --source with another index, a video file or a URL")
        raise InputError(f"camera {device} cannot be opened: it is busy (another program uses it) or not a capture device")
    return cap


class AVSource:
    """A file or URL through PyAV (see the module contract); pts in the file's time base, or capture ms when live."""

    def __init__(self, src: str, live: bool, loop: bool, warn: Callable[[str], None]):
        self.src, self.live, self.loop, self._warn = src, live, loop, warn
        self.description = src
        self._reader = VideoReader(src, None, warn, live=live and is_url(src))
        info = self._reader.info
        self.info = dataclasses.replace(info, time_base=LIVE_TIME_BASE, frames=None) if live else info
        self._file_info = info

    def _pictures(self) -> Iterator[Picture]:
        reader = self._reader
        while True:
            for item in reader.read():
                if isinstance(item, Picture):
                    yield item
            reader.close()
            if not self.loop or reader.frames_read == 0:
                return
            reader = self._reader = VideoReader(self.src, None, self._warn)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        info = self._file_info
        step = max(1, round(1 / (info.rate * info.time_base))) if info.rate else 1
        offset, first, last = 0, None, None  # loop offset in the file's time base
        clock, t0 = _LiveClock(), None
        for pic in self._pictures():
            if stop.is_set():
                return
            if first is None:
                first = pic.pts
            if last is not None and pic.pts + offset <= last:  # the file restarted (loop)
                offset = last + step - pic.pts
            pts = pic.pts + offset
            last = pts
            if self.live and not is_url(self.src):  # a file played like a camera: at its own pace
                media_s = float((pts - first) * info.time_base)
                t0 = time.perf_counter() - media_s if t0 is None else t0
                delay = t0 + media_s - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)
            now = time.perf_counter()
            yield Frame(pic.planes, clock.pts(now) if self.live else pts, now)

    def close(self) -> None:
        self._reader.close()


def open_source(
    spec: str,
    live: bool | None,
    loop: bool,
    camera_size: tuple[int, int] | None,
    warn: Callable[[str], None],
) -> CameraSource | AVSource:
    """The source `spec` names (see the module contract); raises InputError when it cannot be read."""
    camera = parse_camera(spec)
    if camera is not None:
        if live is False:
            raise UsageError("a camera is always live; leave out --no-live")
        if loop:
            raise UsageError("--loop is for files; a camera does not end")
        return CameraSource(camera, camera_size, warn=warn)
    if not is_url(spec):
        path = Path(spec)
        if not path.exists():
            raise InputError(f"{spec}: no such file, and not a camera (0, 1, ... or /dev/videoN) or URL; check --source")
        if path.is_dir():
            raise InputError(f"{spec}: is a folder; --source takes a camera, a video file or a URL")
        if path.is_char_device():
            raise InputError(f"{spec}: is a device but not /dev/videoN; give a camera as /dev/videoN or its index")
    elif loop:
        raise UsageError("--loop is for files; a stream does not restart")
    return AVSource(spec, live if live is not None else is_url(spec), loop, warn)
