"""Decoding a video with PyAV: pictures in presentation order with their own timestamps, the other streams' packets
untouched. No torch.

- `VideoReader(src, fmt)` opens a file path, a URL or "-" (stdin, `fmt` names the container format, e.g.
  "matroska"; see `vsr.media.source`) and picks the first video stream that is not cover art. It decodes the
  first frame at once, so a file without a decodable video frame fails early with `InputError`. While it waits
  for stdin, a stop signal raises `vsr.signals.Interrupted` (`vsr.media.stdin`); `cancel()` (any thread) ends a
  later wait for stdin, so `read()` ends where the input stopped.
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
from vsr.media.frames import Picture, PictureMaker, VideoInfo, Warn, declared_tags, traits
from vsr.media.source import _METADATA_OPTIONS, InputStreams, _announced_duration_s, _err_text


class SegmentError(InputError):
    """A segment did not decode to the frames the probe listed (damaged or oddly muxed input): the file
    cannot be split, the streaming path must take it."""


class VideoReader:
    """Demuxes and decodes the first video stream of `src`; see the module contract. The input and its streams are
    an `InputStreams` (`vsr.media.source`), the pictures come from a `PictureMaker` set up by the first frame."""

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
        self._streams = InputStreams(self.src, fmt, warn, live, hwaccel, hwaccel_device)
        self._container = self._streams.container
        self.video, self.passthrough, self.attachments = self._streams.video, self._streams.passthrough, self._streams.attachments
        self._declared = declared_tags(self.video)  # before the decoder rewrites them (VP8: always BT.470BG)
        self._decoder = alpha_decoder(self.video, warn) or self.video.codec_context
        self.frames_read = 0
        self._skipped_packets = 0
        self._last: Picture | None = None
        self._maker: PictureMaker | None = None
        try:
            self._items = self._demux_decode()
            self._pending: deque = deque()
            for item in self._items:
                self._pending.append(item)
                if isinstance(item, Picture):
                    break
            else:
                self._streams.raise_stop()  # the input ended because a stop signal ended the wait for stdin
                raise InputError(
                    f"{self.src}: no video frame could be decoded; the file is damaged or its codec is not supported"
                )
            self._streams.raise_stop()
            self.info = self._make_info(self._first_frame)
            self.hwaccel_active = self._streams.hwaccel_in_use()
            del self._first_frame
        except BaseException:
            self.close()
            raise

    def _make_info(self, frame: av.VideoFrame) -> VideoInfo:
        s, c, m = self.video, self._container, self._maker
        rate = s.average_rate or s.guessed_rate or None
        duration_s = float(s.duration * s.time_base) if s.duration and s.time_base else None
        if duration_s is None and c.duration:
            duration_s = c.duration / 1_000_000
        frames = s.frames or (round(duration_s * rate) if duration_s and rate else None)
        return VideoInfo(
            width=frame.width,
            height=frame.height,
            pix_fmt=m.work_fmt,
            bits=traits(m.work_fmt).bits,
            color_range=m.color_range,
            colorspace=m.colorspace,
            color_primaries=m.color_primaries,
            color_trc=m.color_trc,
            rotation=int(frame.rotation or 0),
            time_base=m.time_base,
            rate=Fraction(rate) if rate else None,
            frames=frames or None,
            duration_s=duration_s,
            codec=s.codec_context.name,
            from_rgb=m.from_rgb,
            source_fmt=m.source_fmt,
        )

    @property
    def metadata(self) -> dict[str, str]:
        return self._streams.metadata

    @property
    def format_name(self) -> str:
        return self._streams.format_name

    def chapters(self) -> list:
        return self._streams.chapters()

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
        self._decoder.flush_buffers()
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
            frames = self._decoder.decode(packet)
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
        if self._maker is None:  # the first frame fixes the format, size and colour of the whole output
            self._first_frame = frame
            rate = self.video.average_rate or self.video.guessed_rate or 25
            self._maker = PictureMaker(frame, self.video.time_base, rate, self.src, self._warn, self._declared)
        pic = self._maker.picture(frame, self._last, self._position)
        self._last = pic
        self.frames_read += 1
        return pic

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

    def cancel(self) -> None:
        """Any thread: stop waiting for stdin, so that `read()` ends within a fraction of a second (see
        `InputStreams.cancel`). For files and URLs nothing changes."""
        self._streams.cancel()

    def close(self) -> None:
        self._streams.close()


# FFmpeg's own VP8/VP9 decoders skip the alpha plane Matroska/WebM stores beside each frame (BlockAdditional, stream
# tag alpha_mode=1); libvpx's decoders read it (libavcodec/libvpxdec.c: the AV_PKT_DATA_MATROSKA_BLOCKADDITIONAL side
# data is decoded by a second vpx decoder into yuva420p), as `ffmpeg -c:v libvpx-vp9 -i in.webm` does.
_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


def alpha_decoder(stream: av.video.stream.VideoStream, warn: Warn) -> av.CodecContext | None:
    """A libvpx decoder for a VP8/VP9 stream that carries alpha (see above), or None (the stream's own decoder
    serves). Without libvpx in this FFmpeg build the alpha plane is lost, and `warn` says so."""
    name = _ALPHA_DECODERS.get(stream.codec_context.name)
    if name is None or str(stream.metadata.get("alpha_mode", stream.metadata.get("ALPHA_MODE", ""))).strip() != "1":
        return None
    try:
        ctx = av.CodecContext.create(name, "r")
    except (av.FFmpegError, ValueError):
        warn(f"the input's alpha channel is dropped: this FFmpeg build has no {name} decoder to read it")
        return None
    ctx.thread_count = 0
    return ctx
