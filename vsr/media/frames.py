"""Decoded pictures and their planes: what flows from the reader through SR to the writer. No torch.

- A `Picture` holds planar YUV as numpy arrays `(Y, U, V)` of shape H x W and ceil(H/sy) x ceil(W/sx),
  `info.pix_fmt` one of yuv420p/yuv422p/yuv444p (uint8, 0..255) or their 10-bit `...10le` twins (uint16,
  0..1023). Values are the decoder's own: studio or full range as `info.full_range` says, never rescaled.
  Other pixel formats are converted once (swscale) to the planar format of the same chroma layout (4:2:0,
  4:2:2, 4:4:4: nv12, nv16, p010, p210, p410, yuv444p16 as NVDEC hands them out keep theirs), 10-bit when
  deeper than 8 bits (yuvj* are the same planes, full range); grey and other layouts become 4:2:0; RGB
  becomes studio-range BT.601 yuv420p and is tagged so (`working_format`).
  Odd sizes are kept: the last chroma column/row covers a single luma column/row, as FFmpeg lays it out.
- `Picture.pts` is the decoder's timestamp in `Picture.time_base` (the input stream's), never rebuilt
  from a frame counter.
- `VideoInfo` is what the writer keeps of the input: size, pixel format, colour tags, rotation, rate, time base;
  `plain_info(width, height, rate, time_base)` describes pictures vsr makes itself (no source reader, e.g.
  `vsr webcam --record`): 8-bit yuv420p tagged studio-range BT.601 matrix, primaries and transfer unspecified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

Warn = Callable[[str], None]


# pix_fmt -> (chroma layout, bits) of the formats handed out as they are
NATIVE_FORMATS = {f"yuv{c}p{d}": (c, 10 if d else 8) for c in ("420", "422", "444") for d in ("", "10le")}
_FULL_RANGE_ALIASES = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p"}
RANGE_MPEG, RANGE_JPEG = 1, 2  # AVColorRange: studio ("tv") and full ("pc")
_SEMIPLANAR_TWINS = {"yuv420p": ("nv12",), "yuv422p": ("nv16",), "yuv420p10le": ("p010le",)}
SPC_SMPTE170M = 6  # AVColorSpace of BT.601 (525) YCbCr, the matrix swscale uses by default


@dataclass(frozen=True)
class Picture:
    """One frame: planar YUV planes (see module contract) and its timestamp."""

    planes: tuple[np.ndarray, ...]
    pts: int
    time_base: Fraction


@dataclass(frozen=True)
class VideoInfo:
    """What the writer and the progress display need to know about the input video stream."""

    width: int
    height: int
    pix_fmt: str  # format of Picture.planes: a key of NATIVE_FORMATS
    bits: int  # 8 or 10
    color_range: int  # RANGE_MPEG, RANGE_JPEG or 0 (unspecified, i.e. studio)
    colorspace: int
    color_primaries: int
    color_trc: int
    rotation: int  # degrees of the display matrix, as PyAV's frame.rotation and set_display_rotation use them
    time_base: Fraction
    rate: Fraction | None  # average frame rate (encoder rate control only; timestamps come from the frames)
    frames: int | None  # frame count from the container or duration x rate; None when unknown
    duration_s: float | None
    codec: str

    @property
    def full_range(self) -> bool:
        return self.color_range == RANGE_JPEG

    @property
    def peak(self) -> int:
        return (1 << self.bits) - 1


def plain_info(width: int, height: int, rate: Fraction | None = None, time_base: Fraction = Fraction(1, 1000)) -> VideoInfo:
    """The `VideoInfo` of yuv420p pictures vsr makes itself: studio-range BT.601, primaries/transfer unspecified."""
    return VideoInfo(
        width=width,
        height=height,
        pix_fmt="yuv420p",
        bits=8,
        color_range=RANGE_MPEG,
        colorspace=SPC_SMPTE170M,
        color_primaries=2,  # AVCOL_PRI_UNSPECIFIED
        color_trc=2,  # AVCOL_TRC_UNSPECIFIED
        rotation=0,
        time_base=time_base,
        rate=rate,
        frames=None,
        duration_s=None,
        codec="rawvideo",
    )


def working_format(fmt: av.VideoFormat) -> str:
    """The planar YUV format frames of `fmt` are handed out in (see module contract)."""
    name = _FULL_RANGE_ALIASES.get(fmt.name, fmt.name)
    if name in NATIVE_FORMATS:
        return name
    deep = max((c.bits for c in fmt.components), default=8) > 8
    layout = "420"
    if not fmt.is_rgb and len(fmt.components) >= 3:  # keep the chroma layout of semi-planar / 16-bit YUV
        sub_x, sub_y = 16 // max(1, fmt.chroma_width(16)), 16 // max(1, fmt.chroma_height(16))
        if sub_x == 1:  # 4:4:4 (also 4:4:0, which 4:4:4 holds without loss)
            layout = "444"
        elif sub_y == 1:  # 4:2:2 (also 4:1:1)
            layout = "422"
    return f"yuv{layout}p10le" if deep else f"yuv{layout}p"


def read_planes(frame: av.VideoFrame) -> tuple[np.ndarray, ...]:
    """Copies of the planes of a planar frame (uint8, or uint16 for formats deeper than 8 bits)."""
    dtype = np.uint16 if max(c.bits for c in frame.format.components) > 8 else np.uint8
    size = np.dtype(dtype).itemsize
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // size)
        out.append(rows[:, : plane.width].copy())
    return tuple(out)


def make_frame(planes: tuple[np.ndarray, ...], pix_fmt: str) -> av.VideoFrame:
    """A new planar frame of `pix_fmt` holding `planes` (shapes must match the format's plane sizes)."""
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, data in zip(frame.planes, planes, strict=True):
        rows = np.frombuffer(plane, data.dtype).reshape(plane.height, plane.line_size // data.itemsize)
        if data.shape != (plane.height, plane.width):
            raise ValueError(f"plane of shape {data.shape} does not fit {pix_fmt} {w}x{h} ({plane.height}x{plane.width})")
        rows[:, : plane.width] = data
    return frame


def plane_shapes(pix_fmt: str, width: int, height: int) -> tuple[tuple[int, int], ...]:
    """(rows, columns) of each plane of a `pix_fmt` frame of width x height."""
    fmt = av.VideoFormat(pix_fmt)
    chroma = (fmt.chroma_height(height), fmt.chroma_width(width))
    return ((height, width), chroma, chroma)


class PictureMaker:
    """Decoded frames -> `Picture`s of one working format, size, colour range and time base, all fixed by the first
    frame (see the module contract): a frame of another pixel format is converted, one of another size scaled to the
    first size (with a warning), and frames without timestamps are timed by the frame rate (with a warning)."""

    def __init__(self, first: av.VideoFrame, stream_time_base, rate, src: str, warn: Warn):
        self.work_fmt = working_format(first.format)
        self.from_rgb = first.format.is_rgb  # RGB becomes studio-range BT.601 YUV, and is tagged so
        self.colorspace = SPC_SMPTE170M if self.from_rgb else first.colorspace
        if self.from_rgb:
            self.color_range = RANGE_MPEG
        else:
            self.color_range = RANGE_JPEG if first.format.name.startswith("yuvj") else first.color_range
        self.time_base = first.time_base or stream_time_base or Fraction(1, 90000)
        self.size = (first.width, first.height)
        self._rate, self._src, self._warn = rate, src, warn
        self._warned: set[str] = set()

    def picture(self, frame: av.VideoFrame, last: Picture | None, position: Callable[[], str]) -> Picture:
        """`frame` as a `Picture`; `last` is the picture before it, `position` says where the input is (for warnings)."""
        pts = self._timestamp(frame, last)
        if (frame.width, frame.height) != self.size:
            if self._warn_once("resize"):
                self._warn(
                    f"{self._src}: the picture size changes from {self.size[0]}x{self.size[1]} to "
                    f"{frame.width}x{frame.height} at {position()}; later frames are scaled to the first size"
                )
            frame = self._convert(frame)
        elif _FULL_RANGE_ALIASES.get(frame.format.name, frame.format.name) != self.work_fmt:
            frame = self._convert(frame)
        return Picture(planes=read_planes(frame), pts=pts, time_base=self.time_base)

    def _convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Reformat (and rescale, if the size changed mid-stream) to the working format, keeping the range."""
        width, height = self.size
        if frame.format.is_rgb:
            return frame.reformat(width, height, self.work_fmt, dst_colorspace="ITU601", dst_color_range=RANGE_MPEG)
        rng = RANGE_JPEG if frame.format.name.startswith("yuvj") else (frame.color_range or None)
        return frame.reformat(width, height, self.work_fmt, src_color_range=rng, dst_color_range=rng)

    def _timestamp(self, frame: av.VideoFrame, last: Picture | None) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None:
            tb = frame.time_base or self.time_base
            return pts if tb == self.time_base else round(pts * tb / self.time_base)
        if self._warn_once("pts"):
            self._warn(f"{self._src}: the input has no timestamps; frames are timed by the frame rate")
        if last is None:
            return 0
        return last.pts + max(1, round(1 / (Fraction(self._rate) * self.time_base)))

    def _warn_once(self, key: str) -> bool:
        if key in self._warned:
            return False
        self._warned.add(key)
        return True
