"""vsr.scaleout.parts: segments encoded on their own and joined give the streaming path's output (issue 13's base)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from vsr.errors import OutputError
from vsr.media.writer import EncoderOptions
from vsr.pipeline.video import upscale_video
from vsr.scaleout.parts import encode_segment, join_parts
from vsr.scaleout.segments import plan, probe

from .test_segments import VFR
from .test_video import frames_of, make_clip, packets_of, tiny_upscaler


@pytest.mark.parametrize("suffix, time_base", [(".mkv", Fraction(1, 1000)), (".mp4", Fraction(1, 90000))])
def test_joined_parts_decode_as_the_streaming_output(tmp_path, suffix, time_base):
    scale = int(1 / time_base / 1000)
    x264 = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"}
    src = make_clip(tmp_path / f"in{suffix}", pts=[p * scale for p in VFR], time_base=time_base, options=x264)
    upscaler, enc = tiny_upscaler(), EncoderOptions(codec="ffv1")
    single = tmp_path / f"single{suffix}"
    upscale_video(src, single, 2, upscaler, codec="ffv1")
    segments = plan(probe(src), 0.6)
    assert len(segments) > 2
    parts = [tmp_path / f"part{s.index}{suffix}" for s in segments]
    written = [encode_segment(src, s, p, 2, upscaler, enc) for s, p in zip(segments, parts, strict=True)]
    assert written == [s.frames for s in segments]
    joined = tmp_path / f"joined{suffix}"
    join_parts(src, parts, joined, enc)
    a, b = frames_of(single), frames_of(joined)
    assert len(a) == len(b) == len(VFR)
    assert [f.pts * f.time_base for f in a] == [f.pts * f.time_base for f in b]
    for fa, fb in zip(a, b, strict=True):
        assert all(bytes(x) == bytes(y) for x, y in zip(fa.planes, fb.planes, strict=True))
    assert packets_of(joined, "audio") == packets_of(src, "audio")  # byte-identical, same timestamps
    with av.open(str(joined)) as c:
        assert c.streams.audio[0].metadata.get("language") == "deu"
    # and read back with the same packet durations (issue 25, item 7: the first audio packet's, which Matroska
    # infers from the video track's frame rate when it comes before any video) and frame rates, where PyAV lets a
    # stream made from a template carry a frame rate (`TEMPLATE_RATE`)
    if TEMPLATE_RATE or suffix != ".mkv":
        assert _timing(joined) == _timing(single)


# PyAV 18.1 copies the codec context's frame rate to a stream's avg_frame_rate when the output starts
# (av/video/stream.py, VideoStream._finalize_for_output, v18.1.0 line 67), which Matroska writes as the track's
# DefaultDuration; before 18.1 nothing sets it on a stream made by add_stream_from_template (av/container/output.py,
# v18.0.0 lines 268-330) and Python cannot (average_rate is read-only), so there the joined .mkv reads back with
# packet durations Matroska does not infer (frames, timestamps and audio bytes are the same: asserted above).
TEMPLATE_RATE = tuple(int(v) for v in av.__version__.split(".")[:2]) >= (18, 1)


def _timing(path) -> tuple[list, list]:
    """Every packet's (stream type, pts, dts, duration) as a reader sees them, and the video's average rate."""
    with av.open(str(path)) as c:
        packets = [(p.stream.type, p.pts, p.dts, p.duration) for p in c.demux() if p.size]
        return packets, [s.average_rate for s in c.streams.video]


def test_parts_whose_decoding_timestamps_go_back_are_refused(tmp_path):
    src = make_clip(tmp_path / "in.mkv", pts=VFR[:30], audio=None)
    segments = plan(probe(src), 0.3)
    enc = EncoderOptions(codec="ffv1")
    parts = [tmp_path / f"p{s.index}.mkv" for s in segments]
    for s, p in zip(segments, parts, strict=True):
        encode_segment(src, s, p, 2, None, enc)
    with pytest.raises(OutputError, match="cannot be joined"):
        join_parts(src, [parts[1], parts[0], *parts[2:]], tmp_path / "out.mkv", enc)
    assert np.all([p.exists() for p in parts])


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_x264_parts_with_b_frames_join_with_rising_decoding_timestamps(tmp_path, suffix):
    """Matroska stores no decoding timestamps, so its demuxer leaves the encoder's first B-frame-delayed packets of
    each part without one; the joiner gives them the ticks before the first known one. Lossy parts are not the
    streaming output bit for bit, but frames, timestamps and audio are."""
    src = make_clip(tmp_path / "in.mkv", pts=VFR)
    single = tmp_path / f"single{suffix}"
    upscale_video(src, single, 2, None)
    segments = plan(probe(src), 0.6)
    parts = [tmp_path / f"part{s.index}{suffix}" for s in segments]
    for s, p in zip(segments, parts, strict=True):
        encode_segment(src, s, p, 2, None, EncoderOptions())
    joined = tmp_path / f"joined{suffix}"
    join_parts(src, parts, joined, EncoderOptions())
    a, b = frames_of(single), frames_of(joined)
    assert len(a) == len(b) == len(VFR)
    assert [f.pts * f.time_base for f in a] == [f.pts * f.time_base for f in b]
    assert packets_of(joined, "audio") == packets_of(src, "audio")
    with av.open(str(joined)) as c:
        dts = [p.dts for p in c.demux(c.streams.video[0]) if p.size and p.dts is not None]
    assert all(x < y for x, y in zip(dts, dts[1:], strict=False))
