"""Reading and writing videos with PyAV: decoded planes, untouched remux, timestamps, colour tags. No torch.

Contract:
- `VideoReader(src, fmt)` opens a file path, a URL (rtsp://, http(s)://, ...) or "-" (stdin, `fmt` names the
  container format, e.g. "matroska") and picks the first video stream that is not cover art. It decodes the
  first frame at once, so a file without a decodable video frame fails early with `InputError`.
- `VideoReader.read()` yields, in demux order, `Picture`s (decoded frames) and `av.Packet`s of the other
  streams (audio, subtitle, data), which `VideoWriter.mux` copies byte for byte.
- A `Picture` holds planar YUV as numpy arrays `(Y, U, V)` of shape H x W and ceil(H/sy) x ceil(W/sx),
  `info.pix_fmt` one of yuv420p/yuv422p/yuv444p (uint8, 0..255) or their 10-bit `...10le` twins (uint16,
  0..1023). Values are the decoder's own: studio or full range as `info.full_range` says, never rescaled.
  Other pixel formats are converted once (swscale) to the planar format of the same chroma layout (4:2:0,
  4:2:2, 4:4:4: nv12, nv16, p010, p210, p410, yuv444p16 as NVDEC hands them out keep theirs), 10-bit when
  deeper than 8 bits (yuvj* are the same planes, full range); grey and other layouts become 4:2:0; RGB
  becomes studio-range BT.601 yuv420p and is tagged so.
  Odd sizes are kept: the last chroma column/row covers a single luma column/row, as FFmpeg lays it out.
- `Picture.pts` is the decoder's timestamp in `Picture.time_base` (the input stream's), never rebuilt
  from a frame counter; only input without any timestamps gets them from the frame rate, with a warning.
- `VideoWriter(dst, fmt, reader, width, height, encoder)` writes the `Picture`s it is given with those
  timestamps, the input's colour range, matrix, primaries, transfer, rotation, sample aspect ratio and
  metadata, and remuxes the reader's other streams. Damaged input is decoded as far as it goes; where
  reading stopped or packets were skipped is reported through the `warn` callback (one line each).
- Pictures vsr makes itself (no source reader, e.g. `vsr webcam --record`) are written with
  `VideoWriter(..., reader=None, info=plain_info(width, height, rate, time_base))`: 8-bit yuv420p tagged
  studio-range BT.601 matrix, primaries and transfer unspecified; nothing is remuxed.
- `VideoReader(..., live=True)` decodes with slice threads only, so no frame waits in frame threads (latency
  for live sources); otherwise frame and slice threads (throughput).
- `VideoReader(..., hwaccel="cuda", hwaccel_device=N)` decodes with NVDEC on GPU N where it can (see
  `_open_input`); `hwaccel_active` says whether it really does, and a warning says why not.

Why decoded frames leave the GPU (NVDEC) even though the SR stage uploads them again. PyAV can keep them there
(`HWAccel(is_hw_owned=True)`, planes exported through DLPack: av/video/plane.py `__dlpack__`), which would save
the NVDEC download and the SR stage's upload of the low-resolution frame. Not done, by reasoning, not
measurement (nothing here has run on a GPU):
- The saving is small: at x3 the input is 1/9 of the output, whose download to the encoder stays; the two
  copies saved are ~2/11 of the PCIe traffic, on copy engines that already overlap compute (`vsr.engine.gpu`).
- Hardware frames belong to the decoder's fixed surface pool. The pipeline queues up to 16 decoded frames
  ahead of the SR stage (`vsr.pipeline.video.QUEUE_SIZE`), which would hold the pool's surfaces and stall NVDEC
  unless the pool grew with it (`extra_hw_frames`), and the copy a frame needs before its surface returns to
  the decoder would move onto the SR stage's critical path.
- It would need its own stream discipline: PyAV's `__dlpack__` refuses any stream argument (the decoder's work
  must be complete: a synchronize per frame), and `torch.from_dlpack(plane)` passes torch's current stream for
  CUDA producers, so the capsule has to be taken by hand; plus a second code path for NVDEC's semi-planar
  4:2:2/4:4:4 layouts, and it would tie `vsr.media.video` to torch.
The bottleneck of a GPU run is expected to be the CPU encoder (libx264) or NVENC, not this copy.
"""

from __future__ import annotations

import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsr.errors import InputError, OutputError, UsageError

# Metadata that is not valid UTF-8 (old muxers write Latin-1 titles): PyAV before 19 decodes it strictly unless told
# `metadata_errors="replace"`, and raises on the whole file otherwise; PyAV 19 removed the argument (av/container/core.py
# `open`, changelog 19.0.0 "Remove the metadata_encoding and metadata_errors arguments") and always reads it as UTF-8
# with surrogateescape, byte exact, so its values copy back to the output unchanged.
AV_MAJOR = int(av.__version__.split(".")[0])
_METADATA_OPTIONS = {"metadata_errors": "replace"} if AV_MAJOR < 19 else {}

Warn = Callable[[str], None]

# pix_fmt -> (chroma layout, bits) of the formats handed out as they are
NATIVE_FORMATS = {f"yuv{c}p{d}": (c, 10 if d else 8) for c in ("420", "422", "444") for d in ("", "10le")}
_FULL_RANGE_ALIASES = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p"}
_SEMIPLANAR_TWINS = {"yuv420p": ("nv12",), "yuv422p": ("nv16",), "yuv420p10le": ("p010le",)}
RANGE_MPEG, RANGE_JPEG = 1, 2  # AVColorRange: studio ("tv") and full ("pc")
SPC_SMPTE170M = 6  # AVColorSpace of BT.601 (525) YCbCr, the matrix swscale uses by default
_STALE_TAGS = frozenset(  # tags that describe the old encode; the muxer writes fresh ones
    "encoder duration bps number_of_frames number_of_bytes major_brand minor_version compatible_brands "
    "_statistics_writing_app _statistics_writing_date_utc _statistics_tags".split()
)
_MP4_LIKE = {"mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp"}

# codec -> (quality option, default quality, default preset); quality is CRF or its equivalent.
ENCODER_DEFAULTS: dict[str, tuple[str | None, float | None, str | None]] = {
    "libx264": ("crf", 18, "medium"),
    "libx265": ("crf", 20, "medium"),
    "libsvtav1": ("crf", 30, "8"),
    "libaom-av1": ("crf", 30, None),
    "libvpx-vp9": ("crf", 31, None),
    "h264_nvenc": ("cq", 19, "p5"),
    "hevc_nvenc": ("cq", 21, "p5"),
    "av1_nvenc": ("cq", 28, "p5"),
    "ffv1": (None, None, None),
}
_NO_PRESET = {"libaom-av1", "libvpx-vp9", "ffv1"}


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


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder choice; None means the codec's default from ENCODER_DEFAULTS (pix_fmt: the input's)."""

    codec: str = "libx264"
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    gpu: int | None = None  # NVENC encoders: the GPU to encode on (the model's), else FFmpeg's default


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


def is_url(src: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src) is not None


def _err_text(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name, on one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


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


class VideoReader:
    """Demuxes and decodes the first video stream of `src`; see the module contract."""

    def __init__(
        self,
        src: str | Path,
        fmt: str | None = None,
        warn: Warn = lambda message: None,
        live: bool = False,
        hwaccel: str | None = None,
        hwaccel_device: int | None = None,
    ):
        self.src = str(src)
        self._warn = warn
        self._live = live
        self._hwaccel = hwaccel
        self._container, self._hw_attached = _open_input(self.src, fmt, hwaccel, warn, hwaccel_device)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        c = self._container
        videos = [s for s in c.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "no streams"
            raise InputError(f"{self.src}: has no video stream ({kinds}); give a video file")
        self.video = videos[0]
        self.video.thread_type = "SLICE" if self._live else "AUTO"  # frame threads delay output by a frame each
        self.passthrough = [s for s in c.streams if s.type in ("audio", "subtitle", "data")]
        self.attachments = [s for s in c.streams if s.type == "attachment"]
        self.frames_read = 0
        self._skipped_packets = 0
        self._warned: set[str] = set()
        self._last: Picture | None = None
        self._items = self._demux_decode()
        self._pending: deque = deque()
        for item in self._items:
            self._pending.append(item)
            if isinstance(item, Picture):
                break
        else:
            raise InputError(f"{self.src}: no video frame could be decoded; the file is damaged or its codec is not supported")
        self.info = self._make_info(self._first_frame)
        self.hwaccel_active = self._hwaccel_in_use()
        del self._first_frame

    def _hwaccel_in_use(self) -> bool:
        """After the first frame: whether the video really decodes on the device `hwaccel` named; warns once if not.

        `CodecContext.is_hwaccel` is only True when PyAV found a hardware config for the codec and created the
        device (av/video/codeccontext.py, `VideoCodecContext._init`: a codec without one, e.g. FFV1, is opened
        for software decoding, silently). Even then the decoder may fall back to software (an unsupported
        profile or size: `_get_hw_format` returns `sw_pix_fmt` with allow_software_fallback), so the pixel
        format the decoder chose (`codec_context.pix_fmt`, e.g. "cuda" for NVDEC) is compared with the codec's
        hardware formats as well."""
        if not self._hwaccel:
            return False
        ctx = self.video.codec_context
        hw_formats = {cfg.format.name for cfg in ctx.codec.hardware_configs if cfg.format is not None}
        if not ctx.is_hwaccel:
            why = f"FFmpeg's {ctx.name} decoder has no {self._hwaccel} support"
        elif ctx.pix_fmt not in hw_formats:
            why = "the hardware decoder refused this stream (profile, size or bit depth) and software took over"
        else:
            return True
        if self._hw_attached:  # else _open_input has already said that the device is not there
            self._warn(f"hardware decoding ({self._hwaccel}) is not used: {why}; decoding on the CPU")
        return False

    def _make_info(self, frame: av.VideoFrame) -> VideoInfo:
        s, c = self.video, self._container
        rate = s.average_rate or s.guessed_rate or None
        duration_s = float(s.duration * s.time_base) if s.duration and s.time_base else None
        if duration_s is None and c.duration:
            duration_s = c.duration / 1_000_000
        frames = s.frames or (round(duration_s * rate) if duration_s and rate else None)
        return VideoInfo(
            width=frame.width,
            height=frame.height,
            pix_fmt=self._work_fmt,
            bits=NATIVE_FORMATS[self._work_fmt][1],
            color_range=self._color_range,
            colorspace=self._colorspace,
            color_primaries=frame.color_primaries,
            color_trc=frame.color_trc,
            rotation=int(frame.rotation or 0),
            time_base=self._time_base,
            rate=Fraction(rate) if rate else None,
            frames=frames or None,
            duration_s=duration_s,
            codec=s.codec_context.name,
        )

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._container.metadata)

    @property
    def format_name(self) -> str:
        return self._container.format.name

    def chapters(self) -> list:
        try:
            return self._container.chapters()
        except (av.FFmpegError, AttributeError, ValueError):
            return []

    def read(self) -> Iterator[Picture | av.Packet]:
        """Pictures and passthrough packets in demux order, ending where the input ends or breaks."""
        while self._pending:
            yield self._pending.popleft()
        yield from self._items

    def passthrough_packets(self) -> Iterator[av.Packet]:
        """The audio, subtitle and data packets only, in demux order, without decoding the video (the joiner of
        segments copies them, as `read` + `VideoWriter.mux` do). Replaces `read`: use one or the other."""
        self._items.close()
        self._pending.clear()
        if not self.passthrough:
            return
        with av.open(self.src, **_METADATA_OPTIONS) as fresh:
            streams = [fresh.streams[s.index] for s in self.passthrough]
            for packet in fresh.demux(streams):
                if packet.size:
                    yield packet

    def read_segment(self, segment) -> Iterator[Picture]:
        """The pictures of `segment` (a `vsr.scaleout.segments.Segment`): those with `start_pts <= pts < end_pts`, in
        presentation order, decoded from its seek keyframe; passthrough packets are left out. Format, size and
        colour are the whole file's (fixed by its first frame, as for `read`). Replaces `read`: use one or the
        other. Not exactly `segment.frames` pictures raises `SegmentError` (see `vsr.scaleout.segments`)."""
        from vsr.scaleout.segments import SegmentError

        self._items.close()
        self._pending.clear()
        seek_pts, start, end = segment.seek_pts, segment.start_pts, segment.end_pts
        self._container.seek(seek_pts, stream=self.video, backward=True, any_frame=False)
        first = next((p for p in self._container.demux(self.video) if p.size), None)
        if segment.seek_pos is not None and (first is None or first.pts is None or first.pts > seek_pts or not first.is_keyframe):
            self._container.seek(
                segment.seek_pos, unsupported_byte_offset=True
            )  # no index (MPEG-TS): the timestamp seek overshoots
        else:
            self._container.seek(seek_pts, stream=self.video, backward=True, any_frame=False)
        self.video.codec_context.flush_buffers()
        got, last = 0, None
        for item in self._demux_decode():
            if not isinstance(item, Picture) or item.pts < start or (last is not None and item.pts <= last):
                continue
            if end is not None and item.pts >= end:
                break
            if got == segment.frames:
                break
            yield item
            got, last = got + 1, item.pts
        if got != segment.frames:
            raise SegmentError(
                f"{self.src}: the segment from pts {start} gave {got} frames, {segment.frames} expected "
                "(damaged or oddly muxed input)"
            )

    def _demux_decode(self) -> Iterator[Picture | av.Packet]:
        demux = self._container.demux([self.video, *self.passthrough])
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as exc:
                self._warn(
                    f"{self.src}: reading stopped at {self._position()} ({_err_text(exc)}); "
                    "the output holds the frames decoded before that point"
                )
                break
            if packet.stream_index == self.video.index:
                if packet.size:
                    yield from self._decode(packet)
            elif packet.size:  # skip the empty flush packets (dts None) demux() yields at the end
                yield packet
        yield from self._decode(None)
        if self._skipped_packets:
            self._warn(f"{self.src}: {self._skipped_packets} damaged video packet(s) could not be decoded and were skipped")
        self._check_complete()

    def _decode(self, packet: av.Packet | None) -> Iterator[Picture]:
        try:
            frames = self.video.decode(packet)
        except (av.FFmpegError, OSError) as exc:
            if packet is None:
                self._warn(f"{self.src}: the decoder failed while flushing its last frames ({_err_text(exc)})")
                return
            if not self._skipped_packets:
                self._warn(f"{self.src}: damaged video data at {self._position()} ({_err_text(exc)}); skipping it")
            self._skipped_packets += 1
            return
        for frame in frames:
            yield self._picture(frame)

    def _picture(self, frame: av.VideoFrame) -> Picture:
        if self._last is None:  # the first frame fixes the format, size and colour of the whole output
            self._first_frame = frame
            self._work_fmt = working_format(frame.format)
            self._from_rgb = frame.format.is_rgb  # RGB becomes studio-range BT.601 YUV, and is tagged so
            self._colorspace = SPC_SMPTE170M if self._from_rgb else frame.colorspace
            if self._from_rgb:
                self._color_range = RANGE_MPEG
            else:
                self._color_range = RANGE_JPEG if frame.format.name.startswith("yuvj") else frame.color_range
            self._time_base = frame.time_base or self.video.time_base or Fraction(1, 90000)
            self._size = (frame.width, frame.height)
        pts = self._timestamp(frame)
        if (frame.width, frame.height) != self._size:
            if self._warn_once("resize"):
                self._warn(
                    f"{self.src}: the picture size changes from {self._size[0]}x{self._size[1]} to "
                    f"{frame.width}x{frame.height} at {self._position()}; later frames are scaled to the first size"
                )
            frame = self._convert(frame)
        elif _FULL_RANGE_ALIASES.get(frame.format.name, frame.format.name) != self._work_fmt:
            frame = self._convert(frame)
        pic = Picture(planes=read_planes(frame), pts=pts, time_base=self._time_base)
        self._last = pic
        self.frames_read += 1
        return pic

    def _convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Reformat (and rescale, if the size changed mid-stream) to the working format, keeping the range."""
        width, height = self._size
        if frame.format.is_rgb:
            return frame.reformat(width, height, self._work_fmt, dst_colorspace="ITU601", dst_color_range=RANGE_MPEG)
        rng = RANGE_JPEG if frame.format.name.startswith("yuvj") else (frame.color_range or None)
        return frame.reformat(width, height, self._work_fmt, src_color_range=rng, dst_color_range=rng)

    def _timestamp(self, frame: av.VideoFrame) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None:
            tb = frame.time_base or self._time_base
            return pts if tb == self._time_base else round(pts * tb / self._time_base)
        if self._warn_once("pts"):
            self._warn(f"{self.src}: the input has no timestamps; frames are timed by the frame rate")
        if self._last is None:
            return 0
        rate = self.video.average_rate or self.video.guessed_rate or 25
        return self._last.pts + max(1, round(1 / (Fraction(rate) * self._time_base)))

    def _warn_once(self, key: str) -> bool:
        if key in self._warned:
            return False
        self._warned.add(key)
        return True

    def _position(self) -> str:
        if self._last is None:
            return "the start"
        return f"{float(self._last.pts * self._last.time_base):.3f} s (after frame {self.frames_read})"

    def _check_complete(self) -> None:
        """Warn when the stream ended well before the duration its header announced (a cut-off file)."""
        last = self._last
        announced = _announced_duration_s(self.video)
        if last is None or announced is None:
            return
        reached = float(last.pts * last.time_base)
        step = 1.0 / float(self.info.rate) if getattr(self, "info", None) and self.info.rate else 0.04
        if announced - reached > max(0.5, 3 * step):
            self._warn(
                f"{self.src}: the video stops at {reached:.3f} s but the file says it lasts {announced:.3f} s; "
                "it is probably cut off, the output holds what could be decoded"
            )

    def close(self) -> None:
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass


def _announced_duration_s(stream: av.video.stream.VideoStream) -> float | None:
    """End time of a stream as its header says (stream duration, or Matroska's DURATION tag), in seconds."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.lower().split("-")[0] == "duration"), None)
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag.strip()) if tag else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _open_input(
    src: str, fmt: str | None, hwaccel: str | None = None, warn: Warn = lambda message: None, device: int | None = None
) -> tuple[av.container.InputContainer, bool]:
    """Open `src` for reading -> (container, whether a hardware device was attached).

    With `hwaccel` (e.g. "cuda": NVDEC) PyAV creates the device when it opens the video stream's decoder; if it
    cannot (no GPU, no driver), the file is opened again for the CPU with a warning that gives FFmpeg's reason.
    `device` is the GPU's index. The decoder gets a CUDA context of its own, not the device's primary context
    that torch uses: FFmpeg retains the primary context only with CU_CTX_SCHED_BLOCKING_SYNC and refuses
    (ENOTSUP, "Primary context already active with incompatible flags", libavutil/hwcontext_cuda.c
    `cuda_context_init`) once torch has activated it with the default flags, which it has by the time a video
    is opened. Frames are downloaded to system memory either way.
    Needs PyAV 18: the hwaccel API (`av.codec.hwaccel.HWAccel`, `av.open(..., hwaccel=)`,
    `CodecContext.is_hwaccel`) first appears in 14.1, and before 18.0 a downloaded frame kept only its pts
    (av/video/codeccontext.py `_transfer_hwframe`: "TODO: Is there anything else to transfer?"), losing the
    colour tags vsr copies to the output; 18.0 copies them (`_copy_internal_attributes`). PyAV 17 (the newest on
    Python 3.10) therefore decodes on the CPU, with a notice."""
    if not hwaccel:
        return _open_input_with(src, fmt, {}), False
    if AV_MAJOR < 18:
        warn(
            f"hardware decoding ({hwaccel}) needs PyAV 18 or newer, which keeps the colour tags of the frames it takes "
            f"from the GPU (this is PyAV {av.__version__}; PyAV 18 needs Python 3.11 or newer); decoding on the CPU"
        )
        return _open_input_with(src, fmt, {}), False
    from av.codec.hwaccel import HWAccel, hwdevices_available

    kinds = hwdevices_available()
    if hwaccel not in kinds:  # HWAccel takes an unknown name as "any device type" (av_hwdevice_find_type_by_name)
        raise UsageError(f"--hwaccel {hwaccel}: not a hardware device type this FFmpeg knows; use one of {', '.join(kinds)}")
    accel = HWAccel(device_type=hwaccel, device=None if device is None else str(device), allow_software_fallback=True)
    try:
        return _open_input_with(src, fmt, {"hwaccel": accel}, raw_errors=True), True
    except (av.FFmpegError, OSError, ValueError) as exc:  # no such device, no driver, no permission
        if src == "-":
            raise UsageError(f"--hwaccel {hwaccel} could not open stdin ({_err_text(exc)}); drop --hwaccel") from None
        container = _open_input_with(src, fmt, {})  # a broken file fails here with its own message
        warn(f"hardware decoding ({hwaccel}) is not available here ({_err_text(exc)}); decoding on the CPU")
        return container, False


def _open_input_with(src: str, fmt: str | None, extra: dict, raw_errors: bool = False) -> av.container.InputContainer:
    options = dict(extra)
    if src == "-":
        file = sys.stdin.buffer
    elif is_url(src):
        file = src
        options["timeout"] = (30.0, 30.0)
    else:
        path = Path(src)
        if not path.exists():
            raise InputError(f"{src}: no such file; check the path")
        if path.is_dir():
            raise InputError(f"{src}: is a folder, not a video file")
        if path.stat().st_size == 0:
            raise InputError(f"{src}: the file is empty; give a video file")
        file = src
    try:
        return av.open(file, "r", format=fmt, **_METADATA_OPTIONS, **options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        if raw_errors:
            raise
        if fmt and isinstance(exc, ValueError):
            raise InputError(f"unknown input format {fmt!r}; use a name from `ffmpeg -formats`, e.g. matroska") from None
        if src == "-":
            hint = "; pass the container format of stdin, e.g. --format matroska"
        elif is_url(src):
            hint = "; check the address and that the stream is reachable"
        else:
            hint = "; is it a complete video file?"
        raise InputError(f"{src}: cannot be read as a video ({_err_text(exc)}){hint}") from None


def encoder_settings(enc: EncoderOptions, work_fmt: str) -> tuple[str, dict[str, str], str]:
    """(codec name, encoder options, pix_fmt) for `enc`, checked against what this FFmpeg build offers."""
    try:
        codec = av.codec.Codec(enc.codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        known = [c for c in ENCODER_DEFAULTS if c in av.codecs_available]
        raise UsageError(f"encoder {enc.codec!r} is not available in this FFmpeg build; try one of {', '.join(known)}") from None
    if codec.type != "video":
        raise UsageError(f"{enc.codec!r} is not a video encoder; try libx264, libx265 or libsvtav1")
    quality_key, quality, preset = ENCODER_DEFAULTS.get(codec.name, ("crf", None, None))
    options: dict[str, str] = {}
    if enc.crf is not None:
        if quality_key is None:
            raise UsageError(f"{codec.name} is lossless and takes no --crf; leave it out")
        if enc.crf < 0:
            raise UsageError(f"--crf must be 0 or more, got {enc.crf:g}")
        quality = enc.crf
    if quality is not None and quality_key:
        options[quality_key] = f"{quality:g}"
    if enc.preset is not None:
        if codec.name in _NO_PRESET:
            raise UsageError(f"{codec.name} has no --preset; leave it out")
        preset = enc.preset
    if preset is not None:
        options["preset"] = str(preset)
    if codec.name.endswith("_nvenc") and "cq" in options:
        options["rc"] = "vbr"
    if codec.name.endswith("_nvenc") and enc.gpu is not None:
        options["gpu"] = str(enc.gpu)  # nvenc.c's "gpu" option: which NVENC-capable GPU
    if codec.name == "libx265":
        options["x265-params"] = "log-level=error"
    if codec.name == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs a banner to stderr unless told errors only
    return codec.name, options, _pick_pix_fmt(codec, work_fmt, enc.pix_fmt)


def _pick_pix_fmt(codec: av.codec.Codec, work_fmt: str, requested: str | None) -> str:
    supported = [f.name for f in (codec.video_formats or [])]
    if requested is not None:
        name = _FULL_RANGE_ALIASES.get(requested, requested)  # range travels in the tags, not the format name
        try:
            av.VideoFormat(name)
        except ValueError:
            raise UsageError(f"unknown --pix-fmt {requested!r}; e.g. yuv420p, yuv420p10le, yuv444p") from None
        if supported and name not in supported:
            raise UsageError(f"{codec.name} cannot encode {requested}; it takes {', '.join(supported[:12])}")
        return name
    for name in (work_fmt, *_SEMIPLANAR_TWINS.get(work_fmt, ())):
        if not supported or name in supported:
            return name
    bits = NATIVE_FORMATS[work_fmt][1]
    raise UsageError(
        f"{codec.name} cannot encode the input's {bits}-bit {work_fmt}; pass --pix-fmt with one it takes "
        f"({', '.join(supported[:12])}) or use --codec libx265"
    )


def _clean_tags(tags: dict[str, str]) -> dict[str, str]:
    """Metadata minus tags that describe the old encode (encoder, duration, statistics)."""
    return {k: v for k, v in tags.items() if k.lower().split("-")[0] not in _STALE_TAGS}


def _copy_disposition(src: av.stream.Stream, dst: av.stream.Stream) -> None:
    try:
        dst.disposition = src.disposition
    except (AttributeError, TypeError, ValueError):
        pass


class VideoWriter:
    """Encodes Pictures and remuxes the reader's other streams into `dst` (a path, or "-" for stdout)."""

    def __init__(
        self,
        dst: str | Path,
        fmt: str | None,
        reader: VideoReader | None,
        width: int,
        height: int,
        enc: EncoderOptions,
        warn: Warn = lambda message: None,
        label: str | None = None,
        info: VideoInfo | None = None,
        template: av.video.stream.VideoStream | None = None,
        sar=None,
    ):
        self._sar = sar
        self.dst = str(dst)
        self._template = template  # copy mode: encoded packets from another file (`mux_video`), no encoder
        self._last_dts: int | None = None
        self.label = label or self.dst  # the name errors mention (the target, not its temporary file)
        if info is None:
            if reader is None:
                raise ValueError("VideoWriter needs a reader or the info of the pictures it writes")
            info = reader.info
        self.info = info
        codec, options, self.pix_fmt = encoder_settings(enc, info.pix_fmt)
        self.frames_written = 0
        self.packets_written = 0
        self._container = _open_output(self.dst, fmt, self.label)
        try:
            self._setup(reader, codec, options, width, height, warn)
        except BaseException:
            self.abort()
            raise

    @property
    def pix_fmt_label(self) -> str:
        """The pixel format as players and ffprobe name what was written: full-range 4:2:0/4:2:2/4:4:4 8-bit output
        is `yuvj420p` etc. (the same planes as `pix_fmt`, tagged full range), anything else `pix_fmt` itself."""
        if self.info.full_range:
            for alias, plain in _FULL_RANGE_ALIASES.items():
                if plain == self.pix_fmt:
                    return alias
            return f"{self.pix_fmt}, full range"
        return self.pix_fmt

    def _setup(
        self, reader: VideoReader | None, codec: str, options: dict[str, str], width: int, height: int, warn: Warn
    ) -> None:
        out, info = self._container, self.info
        try:
            if self._template is not None:
                stream = self.stream = out.add_stream_from_template(self._template, opaque=True)
            else:
                stream = self.stream = out.add_stream(codec, rate=info.rate, options=options)
        except (av.FFmpegError, ValueError) as exc:  # e.g. "'webm' format does not support 'ffv1' codec"
            name = self._template.codec_context.name if self._template is not None else codec
            raise UsageError(f"{self.label}: this output format cannot hold {name} video ({_err_text(exc)}); "
                             "choose another --codec or an .mkv output") from None  # fmt: skip
        if self._template is None:
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.codec_context.time_base = info.time_base  # frames keep their input pts in the input time base
            stream.time_base = info.time_base
            stream.codec_context.bit_rate = 0
            stream.codec_context.thread_count = 0
        ctx = stream.codec_context
        ctx.color_range = info.color_range
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = info.colorspace, info.color_primaries, info.color_trc
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self._map = {}
        if self._sar:
            ctx.sample_aspect_ratio = self._sar
        if reader is not None:
            self._copy_from_reader(reader, warn)
        try:
            if self._template is None:
                ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            if width % 2 or height % 2:
                hint = " (4:2:0/4:2:2 encoders need even sizes: use an even --scale, --pix-fmt yuv444p or --codec ffv1)"
            elif codec.endswith("_nvenc"):
                hint = " (NVENC needs an NVIDIA GPU and driver; use --codec libx264 on other machines)"
            else:
                hint = "; check --codec, --crf, --preset and --pix-fmt"
            raise UsageError(
                f"cannot start encoder {codec} for {width}x{height} {self.pix_fmt} {options}: {_err_text(exc)}{hint}"
            ) from None
        try:
            out.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(
                f"{self.label}: cannot write the {out.format.name} header: {_err_text(exc)}; "
                "check the folder is writable, or write a .mkv file"
            ) from None

    def _copy_from_reader(self, reader: VideoReader, warn: Warn) -> None:
        """Container and stream metadata, sample aspect ratio, passthrough streams, attachments and chapters."""
        out, stream = self._container, self.stream
        out.metadata.update(_clean_tags(reader.metadata))
        if reader.video.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = reader.video.sample_aspect_ratio
        stream.metadata.update(_clean_tags(dict(reader.video.metadata)))
        _copy_disposition(reader.video, stream)
        for src in reader.passthrough:
            if src.type == "data" and (src.codec_context is None or out.format.name not in reader.format_name.split(",")):
                warn(f"data stream #{src.index} is not copied: its codec is unknown or it cannot move to {out.format.name}")
                continue
            try:
                dup = out.add_stream_from_template(src)
            except (ValueError, av.FFmpegError) as exc:
                raise OutputError(
                    f"{self.label}: the {out.format.name} format cannot hold {src.type} stream #{src.index} "
                    f"({_err_text(exc)}); write a .mkv file instead"
                ) from None
            dup.metadata.update(_clean_tags(dict(src.metadata)))
            _copy_disposition(src, dup)
            self._map[src.index] = dup
        self._copy_attachments(reader, warn)
        chapters = reader.chapters()
        if chapters:
            try:
                out.set_chapters(chapters)
            except (av.FFmpegError, AttributeError, ValueError, TypeError):
                warn(f"the input's {len(chapters)} chapter(s) could not be copied to {out.format.name}")

    def _copy_attachments(self, reader: VideoReader, warn: Warn) -> None:
        if not reader.attachments:
            return
        if "matroska" not in self._container.format.name:
            warn(f"{len(reader.attachments)} attachment(s) (e.g. fonts) are not copied: only .mkv can hold them")
            return
        for att in reader.attachments:
            name = att.metadata.get("filename") or f"attachment{att.index}"
            try:
                self._container.add_attachment(name, att.mimetype or "application/octet-stream", att.data)
            except (av.FFmpegError, ValueError, AttributeError) as exc:
                warn(f"attachment {name} is not copied ({_err_text(exc)})")

    def write(self, pic: Picture) -> None:
        """Encode one picture (planes in the reader's pix_fmt, output size) with its own pts."""
        info = self.info
        frame = make_frame(pic.planes, info.pix_fmt)
        if self.pix_fmt != info.pix_fmt:
            rng = info.color_range or None
            frame = frame.reformat(format=self.pix_fmt, src_color_range=rng, dst_color_range=rng)
        frame.pts, frame.time_base = pic.pts, pic.time_base
        frame.color_range = info.color_range
        frame.colorspace, frame.color_primaries, frame.color_trc = info.colorspace, info.color_primaries, info.color_trc
        try:
            packets = self.stream.encode(frame)
            self.frames_written += 1
            self._mux_encoded(packets)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(
                f"{self.label}: encoding the frame at {float(pic.pts * pic.time_base):.3f} s failed: {_err_text(exc)}"
            ) from None

    def mux(self, packet: av.Packet) -> None:
        """Copy one packet of a passthrough stream unchanged (dropped if its stream is not copied)."""
        dup = self._map.get(packet.stream_index)
        if dup is None:
            return
        packet.stream = dup
        try:
            self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: copying a {dup.type} packet failed: {_err_text(exc)}") from None

    def mux_video(self, packet: av.Packet, time_base: Fraction) -> None:
        """Copy mode (`template`): write one encoded video packet of a part file, timestamps rescaled from
        `time_base` (the part's stream) to this stream's. Decoding timestamps must keep rising across parts."""
        packet.stream = self.stream
        tb = self.stream.time_base
        if time_base != tb:
            packet.pts = None if packet.pts is None else round(packet.pts * time_base / tb)
            packet.dts = None if packet.dts is None else round(packet.dts * time_base / tb)
        if packet.dts is not None and self._last_dts is not None and packet.dts <= self._last_dts:
            raise OutputError(
                f"{self.label}: the parts cannot be joined (decoding timestamps go back at "
                f"{float(packet.dts * tb):.3f} s); use one worker"
            )
        self._last_dts = packet.dts
        self.packets_written += 1
        try:
            self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: writing a video packet failed: {_err_text(exc)}") from None

    def _mux_encoded(self, packets: list[av.Packet]) -> None:
        self.packets_written += len(packets)
        self._container.mux(packets)

    def finish(self) -> None:
        """Flush the encoder, write the trailer and close the file."""
        try:
            if self._template is None:
                self._mux_encoded(self.stream.encode(None))
            self._container.close()
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: finishing the output failed: {_err_text(exc)}") from None

    def abort(self) -> None:
        """Close without flushing; the caller deletes the partial file."""
        try:
            self._container.close()
        except (av.FFmpegError, OSError, ValueError):
            pass


def _open_output(dst: str, fmt: str | None, label: str) -> av.container.OutputContainer:
    options = {}
    if dst == "-":
        file = sys.stdout.buffer
        fmt = fmt or "matroska"
        if fmt in _MP4_LIKE:
            options["container_options"] = {"movflags": "frag_keyframe+empty_moov"}  # streamable mp4
    else:
        file = dst
    try:
        return av.open(file, "w", format=fmt, **options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        if fmt:
            raise UsageError(f"cannot write format {fmt!r} ({_err_text(exc)}); use e.g. matroska or mp4") from None
        raise OutputError(
            f"{label}: cannot tell the container format from the name ({_err_text(exc)}); end it in .mp4, .mkv, .mov or .webm"
        ) from None
