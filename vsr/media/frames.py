"""Decoded pictures and their planes: what flows from the reader through SR to the writer. No torch.

- A `Picture` holds planar YUV as numpy arrays `(Y, U, V)`, plus `A` (alpha) for formats with alpha, of shape H x W
  (Y and A) and ceil(H/sy) x ceil(W/sx) (U and V). `info.pix_fmt` is a working format: `work_format(chroma, bits,
  alpha)`, yuv420p/yuv422p/yuv444p or yuva..., 8-bit (uint8, 0..255) or 10/12/16-bit (`...10le`, `...12le`,
  `...16le`: uint16, 0..2^bits-1). Values are the decoder's own: studio or full range as `info.full_range` says,
  never rescaled.
- Other pixel formats are converted once (swscale, `working_format`) to the working format that holds them without
  loss: the same chroma layout (4:2:0, 4:2:2, 4:4:4; 4:4:0 goes to 4:4:4, 4:1:1 to 4:2:2, other layouts to
  4:2:0; NVDEC's semi-planar nv12/nv16/p010/p210/p410/yuv444p16 keep theirs), the depth rounded up to 8, 10, 12 or
  16 bits (no yuva420p12le exists: 16), alpha kept; yuvj* are the same planes, full range; grey becomes 4:2:0
  with its values as they are in Y (its range kept, full where untagged, as swscale reads grey). RGB (gbrp,
  rgb24, gbrap, rgba, ...) and palette (pal8, with its alpha) become full-range BT.709 4:4:4 YUV of the same
  depth, tagged so (`info.from_rgb`): the writer turns it back into RGB where the encoder takes RGB. A GBR
  matrix tag on a YUV or grey input (PNG's decoder tags grey so) becomes unspecified.
  Odd sizes are kept: the last chroma column/row covers a single luma column/row, as FFmpeg lays it out.
- `Picture.pts` is the decoder's timestamp in `Picture.time_base` (the input stream's), never rebuilt
  from a frame counter.
- `VideoInfo` is what the writer keeps of the input: size, pixel format, colour tags, rotation, rate, time base.
  Colour tags are the container's where it declares them (`declared`), else the decoder's: the VP8 decoder tags
  every frame BT.470BG whatever the file says. `plain_info(width, height, rate, time_base)` describes pictures vsr
  makes itself (no source reader, e.g. `vsr webcam --record`): 8-bit yuv420p tagged studio-range BT.601 matrix,
  primaries and transfer unspecified.
- `traits(pix_fmt)` is what a pixel format holds (`FormatTraits`: chroma layout, bits, alpha, RGB), for choosing
  an output format that keeps it (`vsr.media.encoders`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

Warn = Callable[[str], None]


_DEPTHS = (8, 10, 12, 16)
_FULL_RANGE_ALIASES = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p"}
RANGE_MPEG, RANGE_JPEG = 1, 2  # AVColorRange: studio ("tv") and full ("pc")
_SEMIPLANAR_TWINS = {"yuv420p": ("nv12",), "yuv422p": ("nv16",), "yuv420p10le": ("p010le",)}
SPC_RGB, SPC_BT709, SPC_SMPTE170M = 0, 1, 6  # AVColorSpace: GBR, BT.709, BT.601 (525; swscale's default matrix)
_UNSPECIFIED = {"colorspace": 2, "color_primaries": 2, "color_trc": 2, "color_range": 0}


@dataclass(frozen=True)
class FormatTraits:
    """What a pixel format holds: `chroma` "444"/"422"/"420" (RGB: "444"), `bits` per sample, `alpha`, `rgb`."""

    chroma: str
    bits: int
    alpha: bool
    rgb: bool

    @property
    def chroma_rank(self) -> int:
        """0 for 4:4:4, 1 for 4:2:2, 2 for 4:2:0: how much colour resolution it drops."""
        return ("444", "422", "420").index(self.chroma)


def traits(pix_fmt: str) -> FormatTraits:
    """The `FormatTraits` of an FFmpeg pixel format (4:4:0 counts as 4:2:2 and 4:1:1/4:1:0 as 4:2:0: what they
    keep; grey as 4:2:0)."""
    fmt = av.VideoFormat(_FULL_RANGE_ALIASES.get(pix_fmt, pix_fmt))
    if fmt.has_palette:  # pal8: RGB(A) colours by index
        return FormatTraits(chroma="444", bits=8, alpha=True, rgb=True)
    comps = fmt.components
    alpha = any(c.is_alpha for c in comps)
    bits = max((c.bits for c in comps), default=8)
    if fmt.is_rgb or len(comps) < 3:
        chroma = "444" if fmt.is_rgb else "420"
    else:
        sub = (16 // max(1, fmt.chroma_width(16))) * (16 // max(1, fmt.chroma_height(16)))
        chroma = "444" if sub == 1 else "422" if sub == 2 else "420"
    return FormatTraits(chroma=chroma, bits=bits, alpha=alpha, rgb=bool(fmt.is_rgb))


def work_format(chroma: str, bits: int, alpha: bool) -> str:
    """The working format (see the module contract) holding `chroma` layout at `bits` (rounded up to 8, 10, 12 or
    16) with or without alpha."""
    depth = next((d for d in _DEPTHS if d >= bits), 16)
    for d in _DEPTHS[_DEPTHS.index(depth) :]:
        name = f"yuv{'a' if alpha else ''}{chroma}p" + (f"{d}le" if d > 8 else "")
        try:
            av.VideoFormat(name)
        except ValueError:
            continue  # e.g. yuva420p12le: FFmpeg has no such format
        return name
    raise ValueError(f"no working format for {chroma} {bits}-bit alpha={alpha}")


def is_work_format(pix_fmt: str) -> bool:
    return re.fullmatch(r"yuva?(420|422|444)p(10le|12le|16le)?", pix_fmt) is not None


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
    pix_fmt: str  # format of Picture.planes: a working format (module contract)
    bits: int  # 8, 10, 12 or 16: the working format's
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
    from_rgb: bool = False  # the input was RGB: the pictures are full-range BT.709 4:4:4 made from it
    source_fmt: str | None = None  # the decoder's pixel format of the first frame (what the input holds)

    @property
    def alpha(self) -> bool:
        return self.pix_fmt.startswith("yuva")

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
    if is_work_format(name):
        return name
    t = traits(name)
    chroma = t.chroma
    if not t.rgb and not fmt.has_palette and len(fmt.components) >= 3:  # 4:4:0 is held by 4:4:4 without loss, 4:1:1 by 4:2:2
        sub_x, sub_y = 16 // max(1, fmt.chroma_width(16)), 16 // max(1, fmt.chroma_height(16))
        chroma = "444" if sub_x == 1 else "422" if sub_y == 1 else "420"
    return work_format(chroma, t.bits, t.alpha)


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
    """(rows, columns) of each plane of a `pix_fmt` frame of width x height: Y, U, V and, with alpha, A."""
    fmt = av.VideoFormat(pix_fmt)
    chroma = (fmt.chroma_height(height), fmt.chroma_width(width))
    alpha = ((height, width),) if pix_fmt.startswith("yuva") else ()
    return ((height, width), chroma, chroma, *alpha)


class PictureMaker:
    """Decoded frames -> `Picture`s of one working format, size, colour range and time base, all fixed by the first
    frame (see the module contract): a frame of another pixel format is converted, one of another size scaled to the
    first size (with a warning), and frames without timestamps are timed by the frame rate (with a warning).
    `declared` holds the colour tags the container gives (a stream's codec parameters, read before decoding)."""

    def __init__(self, first: av.VideoFrame, stream_time_base, rate, src: str, warn: Warn, declared: dict | None = None):
        fmt = first.format
        self.work_fmt = working_format(fmt)
        self.source_fmt = fmt.name
        self.from_rgb = traits(fmt.name).rgb  # RGB and palette formats become full-range BT.709 YUV, tagged so
        self.grey = not self.from_rgb and len(fmt.components) < 3
        tags = _tags(first, declared or {})
        self.colorspace, self.color_primaries, self.color_trc = tags["colorspace"], tags["color_primaries"], tags["color_trc"]
        if self.from_rgb:
            self.colorspace, self.color_range = SPC_BT709, RANGE_JPEG
        elif self.grey:  # its values are copied to Y as they are (swscale reads grey as full range): the range stays
            self.color_range = tags["color_range"] or RANGE_JPEG
        else:
            self.color_range = RANGE_JPEG if fmt.name.startswith("yuvj") else tags["color_range"]
        if not self.from_rgb and self.colorspace == SPC_RGB:  # e.g. PNG's decoder tags grey GBR: YUV is not
            self.colorspace = _UNSPECIFIED["colorspace"]
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
        if traits(frame.format.name).rgb:
            return frame.reformat(width, height, self.work_fmt, dst_colorspace="ITU709", dst_color_range=RANGE_JPEG)
        if len(frame.format.components) < 3:  # grey: Y as it is, neutral chroma
            return frame.reformat(width, height, self.work_fmt, src_color_range=RANGE_JPEG, dst_color_range=RANGE_JPEG)
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


def _tags(frame: av.VideoFrame, declared: dict) -> dict:
    """Colour tags: matrix, primaries and transfer as the container declares them, else as the decoder says; the
    range as the decoder says (it reads the bitstream's flag), else as declared."""
    out = {}
    for key in ("colorspace", "color_primaries", "color_trc"):
        value = declared.get(key, _UNSPECIFIED[key])
        out[key] = value if value not in (_UNSPECIFIED[key], None) else getattr(frame, key)
    rng = frame.color_range
    out["color_range"] = rng if rng else declared.get("color_range", 0) or 0
    return out


def declared_tags(stream: av.video.stream.VideoStream) -> dict:
    """The colour tags of `stream`'s codec parameters (what the container says), read before any decoding changes
    them."""
    ctx = stream.codec_context
    return {key: getattr(ctx, key, None) for key in ("colorspace", "color_primaries", "color_trc", "color_range")}
