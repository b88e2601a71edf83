"""`vsr upscale --workers N` (vsr.scaleout): same output as one process, nothing left behind (issue 13, partly)."""

from __future__ import annotations

import signal
import sys
import time

import av
import pytest

from .conftest import spawn
from .test_cli import vsr
from .test_segments import VFR
from .test_video import frames_of, make_clip, names, packets_of


def _decoded(path):
    with av.open(str(path)) as c:
        return [(f.pts, [bytes(p) for p in f.planes]) for f in c.decode(video=0)]


def test_two_workers_give_the_single_process_output(tmp_path, weights):
    """FFV1, VFR with AAC audio, a keyframe every 20 frames, 0.6 s segments. SRCNN's oneDNN convolutions round
    differently with other thread counts, so the single run uses the workers' one thread (OMP_NUM_THREADS=1, as
    each of two workers on CI's two cores): then the output is the same, byte for byte."""
    x264 = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"}
    src = make_clip(tmp_path / "in.mkv", pts=VFR, options=x264)
    common = ["--scale", 2, "--weights", weights, "--codec", "ffv1"]
    r = vsr("upscale", src, tmp_path / "one.mkv", *common, OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    r = vsr("upscale", src, tmp_path / "two.mkv", *common, "--workers", 2, "--segment", 0.6, OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    assert _decoded(tmp_path / "one.mkv") == _decoded(tmp_path / "two.mkv")
    assert packets_of(tmp_path / "two.mkv", "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"in.mkv", "one.mkv", "two.mkv"}  # the work folder is gone


def test_a_clip_too_short_to_split_takes_the_streaming_path(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv", audio=None)
    r = vsr("upscale", src, tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--workers", 2)
    assert r.returncode == 0, r.stderr
    assert "not split (it is shorter than two segments); one process upscales it" in r.stderr
    assert len(frames_of(tmp_path / "out.mkv")) == len(frames_of(src))


@pytest.mark.parametrize("args", [["-", "out.mkv"], ["in.mkv", "-"]])
def test_workers_need_files(tmp_path, weights, args):
    make_clip(tmp_path / "in.mkv", audio=None)
    r = vsr("upscale", *[tmp_path / a if a != "-" else a for a in args], "--weights", weights, "--workers", 2)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "--workers needs a video file in and a file out" in r.stderr


def test_sigterm_stops_the_workers_and_leaves_nothing(tmp_path, weights):
    src = make_clip(tmp_path / "long.mkv", pts=list(range(0, 240 * 40, 40)), size=(160, 120), audio=None)
    out = tmp_path / "out.mkv"
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, out, "--scale", 2, "--weights", weights, "--workers", 2,
                  "--segment", 1, "--arch", "9-5-5"])  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".out.mkv.vsr-parts") for p in tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)  # the workers are busy
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vsr: interrupted by SIGTERM; no partial file was left", err
    assert names(tmp_path) == {"long.mkv"}
