"""Encoding segments into part files and joining the parts into the output (scheduled by `vsr.scaleout.run`).

Contract:
- `encode_segment(src, segment, part, scale, upscaler, enc)` decodes one `vsr.scaleout.segments.Segment` of `src`
  (`VideoReader.read_segment`), super-resolves each frame and encodes it into `part`, a file of the output's
  container format (its suffix): the encoder starts the part with a keyframe, and the part's timestamps are
  rounded by that format exactly as the output's would be. Returns the number of frames written. The work is the
  streaming path's, on every device (`vsr.pipeline.video`): the upscaler is warmed up on a frame of the output
  size before the part is opened (compiled backends build there; under `--backend auto` a backend that fails
  there or at its first frame hands over to the next, `vsr.engine.chain.FallbackUpscaler`), then decode, SR and
  encode run in their own threads, on a GPU with every `vsr.engine.gpu.GpuFrames` slot in flight.
- `join_parts(src, parts, dst, enc, segments)` writes `dst` (a finished path; atomic writes are the caller's job) with the
  parts' video packets in order, unchanged, and the source's audio, subtitle and data packets, its metadata,
  attachments and chapters, as the streaming path writes them (`VideoWriter` in copy mode). Decoding timestamps
  must keep rising from part to part (always so for intra-only codecs such as FFV1); otherwise `OutputError`.
  Video and passthrough packets are interleaved by time, so memory stays bounded.
With a lossless codec the joined output decodes to the same planes and timestamps as the streaming path's
(tests/test_parts.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import torch

from vsr.errors import OutputError
from vsr.media.frames import plane_shapes
from vsr.media.reader import VideoReader
from vsr.media.resize import output_length
from vsr.media.writer import EncoderOptions, VideoWriter
from vsr.pipeline.video import _Run, run_stages, warm_up
from vsr.scaleout.segments import Segment

YUpscaler = Callable[[torch.Tensor], torch.Tensor]


def encode_segment(
    src: str | Path,
    segment: Segment,
    part: str | Path,
    scale: float,
    upscaler: YUpscaler | None,
    enc: EncoderOptions,
    *,
    fmt: str | None = None,
    label: str | None = None,
    warn=lambda message: None,
    stop=None,
) -> int:
    """Super-resolve and encode one segment into `part` (see the module contract). `fmt` is the output's
    container format when `part`'s suffix does not say it; `label` names the output in errors; `warn` gets
    the reader's and writer's warnings (from the stage threads); `stop` (a `threading.Event`), once set, ends the
    work within a fraction of a second with `Stopped` (the part is left for the caller to delete)."""
    reader = VideoReader(src, warn=warn)
    try:
        info = reader.info
        out_w, out_h = output_length(info.width, scale), output_length(info.height, scale)
        warm_up(upscaler, out_h, out_w)  # before the part is opened, as the streaming path does before its output
        sar = reader.video.sample_aspect_ratio  # the part's encoder must carry it: copy mode cannot add it later
        writer = VideoWriter(part, fmt, None, out_w, out_h, enc, warn=warn, label=label or str(part), info=info, sar=sar)
    except BaseException:
        reader.close()
        raise
    run = _Run(reader, writer, scale, upscaler, plane_shapes(info.pix_fmt, out_w, out_h), info.peak, segment)

    def tick() -> None:
        if stop is not None and stop.is_set():
            raise Stopped()

    try:
        run_stages(run, tick)
    except BaseException:
        run.abandon()  # the decode stage closes the reader, the encode stage aborts the part
        raise
    return writer.frames_written


class Stopped(Exception):
    """`encode_segment` was asked to stop."""


def _video_packets(parts: list[Path], starts=None, src_tb=None) -> Iterator[tuple[av.Packet, object]]:
    """Every part's video packets in order, each with a decoding timestamp. Matroska stores none: its demuxer
    leaves the first packets of a stream with B-frames without one (the encoder's delay) and the joined stream
    needs them; they get the ticks just before the first known one, which keeps them rising and <= their pts."""
    for n, part in enumerate(parts):
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            head: list[av.Packet] = []
            last = None
            shift = None
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if shift is None:
                    shift = 0
                    if starts is not None and packet.pts is not None:  # the part starts with its first frame
                        shift = round(starts[n] * src_tb / stream.time_base) - packet.pts
                if shift:
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts = None if packet.dts is None else packet.dts + shift
                if packet.dts is None and last is None:
                    head.append(packet)
                    continue
                if packet.dts is None:
                    packet.dts = last + 1
                for k, early in enumerate(head):
                    early.dts = min(early.pts, packet.dts - (len(head) - k))
                    yield early, stream.time_base
                head = []
                last = packet.dts
                yield packet, stream.time_base
            for early in head:  # no packet had a decoding timestamp: intra-only, decoding order is display order
                early.dts = early.pts
                yield early, stream.time_base


def _time(packet: av.Packet, time_base) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * time_base) if ts is not None else float("-inf")


def join_parts(
    src: str | Path,
    parts: list[Path],
    dst: str | Path,
    enc: EncoderOptions,
    segments: list[Segment] | None = None,
    *,
    fmt: str | None = None,
    label: str | None = None,
    warn=lambda message: None,
) -> int:
    """Join encoded parts and the source's other streams into `dst` (see the module contract); returns video
    packets. With `segments`, each part's timestamps are put back on its segment's start (a part's own
    container may have rounded or shifted them: mp4 edit lists, MPEG-TS's offset)."""
    reader = VideoReader(src, warn=warn)
    starts = [s.start_pts for s in segments] if segments is not None else None
    try:
        with av.open(str(parts[0])) as first:
            if not first.streams.video:
                raise OutputError(f"{label or dst}: the parts hold no video stream this format can carry; choose mkv or mp4")
            template = first.streams.video[0]
            width, height = template.codec_context.width, template.codec_context.height
            writer = VideoWriter(dst, fmt, reader, width, height, enc, warn=warn, label=label or str(dst), template=template)
        try:
            src_tb = reader.video.time_base
            video = ((_time(p, tb), 0, n, ("v", p, tb)) for n, (p, tb) in enumerate(_video_packets(parts, starts, src_tb)))
            other = ((_time(p, p.time_base), 1, n, ("o", p, None)) for n, p in enumerate(reader.passthrough_packets()))
            for _, _, _, (kind, packet, tb) in heapq.merge(video, other):
                if kind == "v":
                    writer.mux_video(packet, tb)
                else:
                    writer.mux(packet)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        return writer.packets_written
    finally:
        reader.close()
