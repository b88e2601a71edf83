"""The synthetic sample clip used by the quick start and `vsr bench`."""

from __future__ import annotations

import av
import numpy as np

from vsr.synth import make_clip


def test_clip_is_deterministic_with_audio(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 96, 64, frames=12, fps=25)
    b = make_clip(tmp_path / "b.mp4", 96, 64, frames=12, fps=25)
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        fa = [f.to_ndarray() for f in ca.decode(video=0)]
        fb = [f.to_ndarray() for f in cb.decode(video=0)]
    assert len(fa) == 12 and fa[0].shape == (96, 96)  # yuv420p as one array: H * 3/2 rows
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not np.array_equal(fa[0], fa[-1])  # it pans
    with av.open(str(a)) as c:
        assert len(c.streams.audio) == 1 and c.streams.video[0].codec_context.name == "h264"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]
