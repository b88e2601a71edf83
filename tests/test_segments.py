"""vsr.scaleout.segments: planning cuts and decoding one segment exactly as the whole-file decode does (issue 13's base)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from vsr.media.frames import Picture
from vsr.media.reader import VideoReader
from vsr.scaleout.segments import Probe, plan, probe

from .test_video import make_clip

STEPS = [33, 34, 33, 50, 17, 33, 34, 100, 33, 1]  # irregular frame durations (ms), repeated: VFR
VFR = [sum((STEPS * 10)[:i]) for i in range(72)]


def _whole(src) -> list[Picture]:
    reader = VideoReader(src)
    try:
        return [p for p in reader.read() if isinstance(p, Picture)]
    finally:
        reader.close()


def _segment(src, seg) -> list[Picture]:
    reader = VideoReader(src)
    try:
        return list(reader.read_segment(seg))
    finally:
        reader.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segments")
    x264 = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"}
    return {
        "gop20": make_clip(folder / "gop20.mkv", pts=VFR, codec="libx264", options=x264),
        "one_key": make_clip(
            folder / "one.mp4",
            pts=[p * 90 for p in VFR],
            time_base=Fraction(1, 90000),
            codec="libx264",
            options={"x264-params": "keyint=1000:min-keyint=1000:scenecut=0:bframes=2"},
        ),  # fmt: skip
    }


@pytest.mark.parametrize("name", ["gop20", "one_key"])
@pytest.mark.parametrize("seconds", [0.3, 0.75, 100.0])
def test_segments_cover_every_frame_and_decode_as_the_whole_file(clips, name, seconds):
    src = clips[name]
    info = probe(src)
    whole = _whole(src)
    assert info is not None and list(info.frame_pts) == [p.pts for p in whole]
    segments = plan(info, seconds)
    assert sum(s.frames for s in segments) == len(whole)
    assert len(segments) == (1 if seconds == 100.0 else len(segments)) and (seconds == 100.0 or len(segments) > 1)
    position = 0
    for seg in segments:
        assert seg.start_pts == whole[position].pts  # contiguous, in order
        assert seg.seek_pts <= seg.start_pts and seg.seek_pts in info.keyframes
        got = _segment(src, seg)
        want = whole[position : position + seg.frames]
        assert [p.pts for p in got] == [p.pts for p in want]  # first and last frame of each segment included
        for a, b in zip(got, want, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a.planes, b.planes, strict=True))
        position += seg.frames


def test_cuts_prefer_keyframes_and_fall_back_to_exact_frames(clips):
    gop = plan(probe(clips["gop20"]), 0.6)  # 18 frames at 30 fps: a keyframe lies within reach of every cut
    keys = set(probe(clips["gop20"]).keyframes)
    assert all(s.start_pts in keys for s in gop)  # a keyframe every 20 frames: every cut lands on one
    one = plan(probe(clips["one_key"]), 0.3)
    assert len(one) > 2 and all(s.seek_pts == 0 for s in one)  # one keyframe: decode from it, discard before


def test_plan_by_hand():
    info = Probe(frame_pts=tuple(range(0, 100, 2)), keyframes=(0, 24, 60), time_base=Fraction(1, 50), rate=Fraction(25))
    segments = plan(info, 0.4)  # 10 frames a segment
    assert [(s.seek_pts, s.start_pts, s.frames) for s in segments] == [
        (0, 0, 12),  # the cut after 10 frames moves on to the keyframe at frame 12 (pts 24)
        (24, 24, 18),  # the next target, frame 22, has the keyframe at frame 30 (pts 60) within 10 frames
        (60, 60, 10),  # no keyframe within frames 40-49: cut at exactly frame 40
        (60, 80, 10),  # decoded from keyframe 60 (frame 30), its frames before pts 80 discarded
    ]
    assert plan(Probe((), (), Fraction(1, 25), Fraction(25)), 1.0) == []


def test_exact_cuts_decode_at_most_eight_segment_lengths_for_nothing():
    """Keyframes at frames 0 and 150 only, 10-frame segments: exact cuts up to frame 80 (80 frames decoded and
    dropped), then the next cut moves on to the keyframe at 150, so decoding stays linear in the file's length."""
    info = Probe(frame_pts=tuple(range(200)), keyframes=(0, 150), time_base=Fraction(1, 25), rate=Fraction(25))
    starts = [s.start_pts for s in plan(info, 0.4)]
    assert starts == [0, 10, 20, 30, 40, 50, 60, 70, 80, 150, 160, 170, 180, 190]
    assert all(s.seek_pts == (150 if s.start_pts >= 150 else 0) for s in plan(info, 0.4))
    assert sum(s.frames for s in plan(info, 0.4)) == 200


def test_a_segment_that_cannot_be_decoded_whole_is_an_error(clips):
    from vsr.media.reader import SegmentError

    src = clips["gop20"]
    last = plan(probe(src), 0.6)[-1]
    reader = VideoReader(src)
    try:
        with pytest.raises(SegmentError, match=f"gave {last.frames} frames, {last.frames + 1} expected"):
            list(reader.read_segment(dataclasses.replace(last, frames=last.frames + 1)))
    finally:
        reader.close()
