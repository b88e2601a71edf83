"""Splitting a video into segments that can be super-resolved independently (the base of issue 13's scale-out).

Contract:
- `probe(src)` demuxes the first video stream's packets (no decoding) and returns a `Probe`: every frame's pts in
  presentation order, the keyframes' pts, the stream's time base and frame rate. None when a packet has no pts
  (raw streams, some live captures): such input is only handled by the streaming path.
- `plan(probe, seconds=10.0)` cuts the frames into `Segment`s of about `seconds` each (at least one frame):
  a segment starts at a keyframe where one lies within a segment length past the target cut, else at exactly
  the target frame; `seek_pts` is the last keyframe at or before its first frame (a file with few keyframes
  still splits: the segment decodes from that keyframe and discards the frames before its own first).
  Segments are contiguous, disjoint and cover every frame: their `frames` add up to the file's.
- `vsr.video.VideoReader.read_segment(seek_pts, start_pts, frames)` decodes one segment: exactly the `frames`
  pictures with pts >= `start_pts`, in presentation order, decoded from the keyframe before `seek_pts`; with
  the same planes and timestamps as the streaming decode of the whole file (tests/test_segments.py).
Encoding segments and joining them is `vsr.parts`; worker processes, Ray and --resume are still to come (issue 13).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import InputError


@dataclass(frozen=True)
class Probe:
    frame_pts: tuple[int, ...]  # presentation order
    keyframes: tuple[int, ...]  # sorted
    time_base: Fraction
    rate: Fraction | None


@dataclass(frozen=True)
class Segment:
    index: int
    seek_pts: int  # decode from the keyframe at or before this
    start_pts: int  # first frame of the segment
    frames: int  # how many frames, from start_pts on


def probe(src: str | Path) -> Probe | None:
    """The video stream's frame and keyframe timestamps from its packets (see the module contract)."""
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{src}: cannot be read as a video ({exc})") from None
    with container:
        videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not videos:
            raise InputError(f"{src}: has no video stream")
        video = videos[0]
        pts, keys = [], []
        for packet in container.demux(video):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        rate = video.average_rate or video.guessed_rate
        return Probe(tuple(sorted(pts)), tuple(sorted(keys)), video.time_base, Fraction(rate) if rate else None)


def plan(info: Probe, seconds: float = 10.0) -> list[Segment]:
    """Segments of about `seconds` (see the module contract)."""
    pts = info.frame_pts
    if not pts:
        return []
    if seconds <= 0:
        raise ValueError(f"segment length must be positive, got {seconds}")
    per = max(1, round(seconds * float(info.rate))) if info.rate else max(1, len(pts) // 8)
    keys = set(info.keyframes)
    starts = [0]
    while starts[-1] + per < len(pts):
        target = starts[-1] + per
        # the first keyframe at or after the target, if it is within one more segment length
        cut = next((i for i in range(target, min(target + per, len(pts))) if pts[i] in keys), target)
        starts.append(cut)
    segments = []
    for k, first in enumerate(starts):
        last = starts[k + 1] if k + 1 < len(starts) else len(pts)
        i = bisect.bisect_right(info.keyframes, pts[first]) - 1
        seek = info.keyframes[i] if i >= 0 else pts[0]
        segments.append(Segment(index=k, seek_pts=seek, start_pts=pts[first], frames=last - first))
    return segments
