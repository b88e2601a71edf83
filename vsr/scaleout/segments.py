"""Splitting a video into segments that can be super-resolved independently (the base of issue 13's scale-out).

Contract:
- `probe(src)` demuxes the first video stream's packets (no decoding) and returns a `Probe`: every frame's pts in
  presentation order, the keyframes' pts, the stream's time base and frame rate. None when a packet has no pts
  (raw streams, some live captures): such input is only handled by the streaming path.
- `plan(probe, seconds=10.0)` cuts the frames into `Segment`s of about `seconds` each (at least one frame):
  a segment starts at a keyframe where one lies within a segment length past the target cut, else at exactly
  the target frame; `seek_pts` is the last keyframe at or before its first frame (a file with few keyframes
  still splits: the segment decodes from that keyframe and discards the frames before its own first; a cut
  that would discard more than 8 segment lengths moves to the next keyframe instead, so decoding stays linear).
  Segments are contiguous, disjoint and cover every frame: their `frames` add up to the file's.
- `vsr.media.reader.VideoReader.read_segment(segment)` decodes one segment: exactly the `frames` pictures with
  `start_pts <= pts < end_pts`, in presentation order, decoded from the keyframe at `seek_pts` (by byte
  position where the container has no index and the timestamp seek overshoots, e.g. MPEG-TS); with the same
  planes and timestamps as the streaming decode of the whole file (tests/test_segments.py). Fewer frames
  raise `SegmentError` (`vsr.media.reader`): the caller takes the streaming path.
Encoding segments and joining them is `vsr.scaleout.parts`; scheduling them, `vsr.scaleout.run`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vsr.errors import InputError

_MAX_LEAD = 8  # an exact-frame cut may decode at most this many segment lengths of frames it discards


@dataclass(frozen=True)
class Probe:
    frame_pts: tuple[int, ...]  # presentation order
    keyframes: tuple[int, ...]  # sorted
    time_base: Fraction
    rate: Fraction | None
    key_pos: dict = None  # keyframe pts -> byte position


@dataclass(frozen=True)
class Segment:
    index: int
    seek_pts: int  # decode from the keyframe at or before this
    start_pts: int  # first frame of the segment
    frames: int  # how many frames, from start_pts on
    end_pts: int | None = None  # the next segment's first frame (None: the last segment)
    seek_pos: int | None = None  # byte position of the seek keyframe, for formats without an index


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
        pts, keys, pos = [], [], {}
        for packet in container.demux(video):
            if not packet.size or packet.is_discard:  # an edit list's leading frames: decoded, never shown
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
                if packet.pos is not None and packet.pos >= 0:
                    pos[packet.pts] = packet.pos
        rate = video.average_rate or video.guessed_rate
        return Probe(tuple(sorted(pts)), tuple(sorted(keys)), video.time_base, Fraction(rate) if rate else None, pos)


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
        cut = next((i for i in range(target, min(target + per, len(pts))) if pts[i] in keys), None)
        if cut is None:  # an exact cut, unless it would decode too much from the keyframe before it
            k = bisect.bisect_right(info.keyframes, pts[target]) - 1
            lead = target - bisect.bisect_left(pts, info.keyframes[k]) if k >= 0 else target
            cut = target if lead <= _MAX_LEAD * per else next((i for i in range(target, len(pts)) if pts[i] in keys), None)
            if cut is None:
                break
        starts.append(cut)
    segments = []
    for k, first in enumerate(starts):
        last = starts[k + 1] if k + 1 < len(starts) else len(pts)
        i = bisect.bisect_right(info.keyframes, pts[first]) - 1
        seek = info.keyframes[i] if i >= 0 else pts[0]
        end = pts[last] if last < len(pts) else None
        pos = (info.key_pos or {}).get(seek)
        segments.append(Segment(index=k, seek_pts=seek, start_pts=pts[first], frames=last - first, end_pts=end, seek_pos=pos))
    return segments
