"""Decoding a video with PyAV: pictures in presentation order with their own timestamps, the other streams' packets
untouched. No torch.

- `VideoReader(src, fmt)` opens a file path, a URL or "-" (stdin, `fmt` names the container format, e.g.
  "matroska"; see `vsr.media.source`) and picks the first video stream that is not cover art. It decodes the
  first frame at once, so a file without a decodable video frame fails early with `InputError`.
- `VideoReader.read()` yields, in demux order, `Picture`s (decoded frames, `vsr.media.frames`) and `av.Packet`s of
  the other streams (audio, subtitle, data), which `VideoWriter.mux` copies byte for byte. Only input without any
  timestamps gets them from the frame rate, with a warning. Damaged input is decoded as far as it goes; where
  reading stopped or packets were skipped is reported through the `warn` callback (one line each).
- `VideoReader.read_segment(segment)` decodes one segment of the file (scale-out), exactly as the whole-file
  decode gives it, or raises `SegmentError`.
- `VideoReader(..., live=True)` decodes with slice threads only, so no frame waits in frame threads (latency
  for live sources); otherwise frame and slice threads (throughput).
- `VideoReader(..., hwaccel="cuda", hwaccel_device=N)` decodes with NVDEC on GPU N where it can (see
  `vsr.media.source._open_input`); `hwaccel_active` says whether it really does, and a warning says why not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from vsr.errors import InputError
from vsr.media.frames import (
    _FULL_RANGE_ALIASES,
    NATIVE_FORMATS,
    RANGE_JPEG,
    RANGE_MPEG,
    SPC_SMPTE170M,
    Picture,
    VideoInfo,
    Warn,
    read_planes,
    working_format,
)
from vsr.media.source import _METADATA_OPTIONS, _announced_duration_s, _err_text, _open_input


class SegmentError(InputError):
    """A segment did not decode to the frames the probe listed (damaged or oddly muxed input): the file
    cannot be split, the streaming path must take it."""


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
