"""`vsr upscale --workers N` (vsr.scaleout.run): same output as one process, nothing left behind (issue 13, partly)."""

from __future__ import annotations

import json
import os
import re
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
    """FFV1, VFR with AAC audio, a keyframe every 20 frames, 0.6 s segments, 9-1-5 (whose 1x1 convolution once
    rounded differently with fewer threads: vsr.engine.onednn._onednn_forward): the single run with all the machine's
    threads and two workers with half of them each give the same output, byte for byte."""
    x264 = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"}
    src = make_clip(tmp_path / "in.mkv", pts=VFR, options=x264)
    common = ["--scale", 2, "--arch", "9-1-5", "--codec", "ffv1"]
    r = vsr("upscale", src, tmp_path / "one.mkv", *common, OMP_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    r = vsr("upscale", src, tmp_path / "two.mkv", *common, "--workers", 2, "--segment", 0.6, OMP_NUM_THREADS="2")
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


@pytest.mark.parametrize("flag", [["--workers", 2], ["--resume"], ["--ray", "local"]])
@pytest.mark.parametrize("args", [["-", "out.mkv"], ["in.mkv", "-"]])
def test_segmented_runs_need_files(tmp_path, weights, args, flag):
    make_clip(tmp_path / "in.mkv", audio=None)
    r = vsr("upscale", *[tmp_path / a if a != "-" else a for a in args], "--weights", weights, *flag)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--workers, --ray and --resume need video files in and out" in r.stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("out", "args", "message"),
    [
        ("out.mkv", ["--codec", "nope"], "encoder 'nope' is not available"),
        ("out.webm", ["--codec", "ffv1"], "out.webm: this output format cannot hold ffv1 video"),
    ],
)
def test_option_errors_come_at_once_as_one_line(tmp_path, weights, workers, out, args, message):
    src = make_clip(tmp_path / "in.mkv", audio=None)
    r = vsr("upscale", src, tmp_path / out, "--weights", weights, "--workers", workers, *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert names(tmp_path) == {"in.mkv"}


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path, weights):
    """The workers get Ctrl-C too; they block it from birth (vsr.scaleout.run._sigint_blocked), not only once torch is
    imported."""
    src = make_clip(tmp_path / "in.mkv", pts=LONG, size=(96, 64), options=GOP)
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, tmp_path / "out.mkv", "--weights", weights,
                  "--workers", 2, "--segment", 0.4], start_new_session=True)  # fmt: skip
    assert _wait_for(lambda: (tmp_path / ".out.mkv.vsr-work").is_dir(), 60)
    time.sleep(0.3)  # the workers are importing torch
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert names(tmp_path) <= {"in.mkv", ".out.mkv.vsr-work"}
    said = err.strip().splitlines()[-2]
    if (tmp_path / ".out.mkv.vsr-work").exists():  # a segment finished after all (a very slow start)
        assert "segments are done and kept in" in said, err
    else:  # nothing kept, and the user is told so (issue 23)
        assert said == f"vsr: {tmp_path / 'out.mkv'}: stopped before any segment finished; nothing kept to resume", err


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _parts_done(work) -> int:
    try:
        return len(json.loads((work / "manifest.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


LONG = list(range(0, 120 * 40, 40))  # 120 frames at 25 fps
GOP = {"x264-params": "keyint=10:min-keyint=10:scenecut=0"}


@pytest.mark.parametrize("mode", [["--workers", 2], ["--resume"]], ids=["workers", "in-process"])
def test_sigint_keeps_the_finished_segments_and_resume_finishes_the_same_file(tmp_path, weights, mode):
    """Two worker processes; or, with --resume from the first run on and no --workers, segments in the CLI's own
    process (vsr.scaleout.run.InProcessWorkers, which also serves a GPU)."""
    src = make_clip(tmp_path / "in.mkv", pts=LONG, size=(96, 64), options=GOP)
    common = ["--scale", 2, "--weights", weights, "--codec", "ffv1", *mode, "--segment", 0.4]
    out, work = tmp_path / "out.mkv", tmp_path / ".out.mkv.vsr-work"
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, out, *common])
    assert _wait_for(lambda: _parts_done(work) >= 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1] == "vsr: interrupted; no partial file was left", err
    assert "segments are done and kept in" in lines[-2] and "--resume continues" in lines[-2]
    kept = _parts_done(work)
    assert names(tmp_path) == {"in.mkv", work.name} and kept >= 2
    assert not [p for p in work.iterdir() if ".writing" in p.name]
    for plain in (["--workers", 2], []):  # without --resume, split or not: refused, nothing touched
        r = vsr("upscale", src, out, "--scale", 2, "--weights", weights, *plain)
        assert r.returncode == 3 and "add --resume to reuse them" in r.stderr, r.stderr
    r = vsr("upscale", src, out, *common, "--resume")
    assert r.returncode == 0, r.stderr
    assert re.search(f"reusing {kept} of [0-9]+ segments from an earlier run", r.stderr), r.stderr
    r = vsr("upscale", src, tmp_path / "whole.mkv", *common)
    assert r.returncode == 0, r.stderr
    assert _decoded(out) == _decoded(tmp_path / "whole.mkv")
    assert packets_of(out, "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"in.mkv", "out.mkv", "whole.mkv"}


def test_a_killed_worker_process_is_replaced_and_the_run_completes(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv", pts=LONG, size=(96, 64), options=GOP, audio=None)
    out, work = tmp_path / "out.mkv", tmp_path / ".out.mkv.vsr-work"
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, out, "--scale", 2, "--weights", weights, "--codec",
                  "ffv1", "--workers", 2, "--segment", 0.4])  # fmt: skip
    assert _wait_for(lambda: _parts_done(work) >= 1)
    victims = _children(proc.pid)
    assert victims
    os.kill(max(victims), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(frames_of(out)) == len(LONG) and names(tmp_path) == {"in.mkv", "out.mkv"}


def test_a_folder_of_videos(tmp_path, weights):
    (tmp_path / "in").mkdir()
    a = make_clip(tmp_path / "in" / "a.mkv", pts=LONG[:60], options=GOP)
    b = make_clip(tmp_path / "in" / "b.mp4", pts=LONG[:40], size=(48, 32), options=GOP, audio=None)
    r = vsr("upscale", tmp_path / "in", tmp_path / "out", "--scale", 2, "--weights", weights, "--workers", 2,
            "--segment", 0.4, "--codec", "ffv1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Each file is timed from when its first segment went to a worker, not from the start of the run (which includes
    # starting the worker processes): the second file's time is well below the total's.
    times = dict(re.findall(r"in ([\d.]+) s, [\d.]+ fps -> (\S+)", r.stderr)[i][::-1] for i in range(3))
    b_time, total = float(times[str(tmp_path / "out" / "b.mp4")]), float(times[str(tmp_path / "out")])
    assert b_time < 0.6 * total, r.stderr
    assert names(tmp_path / "out") == {"a.mkv", "b.mp4"}
    assert len(frames_of(tmp_path / "out" / "a.mkv")) == 60 and len(frames_of(tmp_path / "out" / "b.mp4")) == 40
    assert packets_of(tmp_path / "out" / "a.mkv", "audio") == packets_of(a, "audio")
    with av.open(str(tmp_path / "out" / "b.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (96, 64)
    assert b.exists()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    r = vsr("upscale", tmp_path / "in", tmp_path / "out", "--scale", 2, "--weights", weights, "--workers", 2, "--resume")
    assert r.returncode == 0, r.stderr  # an interrupted folder run goes on: finished videos are left as they are
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
    r = vsr("upscale", tmp_path / "in", tmp_path / "out2", "--scale", 2, "--weights", weights)  # one process
    assert r.returncode == 0, r.stderr
    assert names(tmp_path / "out2") == {"a.mkv", "b.mp4"}


def test_sigterm_stops_the_workers_and_leaves_nothing_at_the_target(tmp_path, weights):
    src = make_clip(tmp_path / "long.mkv", pts=list(range(0, 240 * 40, 40)), size=(160, 120), audio=None)
    out = tmp_path / "out.mkv"
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, out, "--scale", 2, "--weights", weights, "--workers", 2,
                  "--segment", 1, "--arch", "9-5-5"])  # fmt: skip
    assert _wait_for(lambda: (tmp_path / ".out.mkv.vsr-work").is_dir(), 60)
    time.sleep(1.0)  # the workers are busy
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vsr: interrupted by SIGTERM; no partial file was left", err
    assert names(tmp_path) <= {"long.mkv", ".out.mkv.vsr-work"}
    assert not _children(proc.pid)


def test_a_users_folder_at_the_work_folder_name_is_left_untouched(tmp_path, weights):
    """vsr deletes only what it can prove it wrote (issue 23): a split run refuses a folder without vsr's manifest
    in one line, --overwrite included; the one-process path leaves it alone with a notice."""
    src = make_clip(tmp_path / "in.mkv", pts=LONG[:60], size=(48, 32), options=GOP, audio=None)
    out, work = tmp_path / "out.mkv", tmp_path / ".out.mkv.vsr-work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("my notes\n")
    (work / "sub" / "keep.txt").write_text("keep me\n")
    before = {str(p.relative_to(work)): p.is_dir() or p.read_bytes() for p in work.rglob("*")}
    common = ["--scale", 2, "--weights", weights, "--codec", "ffv1", "--segment", 0.4]
    for flags in (["--workers", 2], ["--resume", "--overwrite"]):
        r = vsr("upscale", src, out, *common, *flags)
        assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"vsr: error: {out}: {work} is not a vsr work folder (it holds no vsr manifest)"), r.stderr
        assert "move or remove it" in r.stderr and names(tmp_path) == {"in.mkv", work.name}
    for flags in ([], ["--overwrite"]):  # one process: the folder is none of its business
        r = vsr("upscale", src, out, *common, *flags)
        assert r.returncode == 0, r.stderr
        assert f"vsr: {out}: leaving {work} untouched: it is not a vsr work folder (it holds no vsr manifest)" in r.stderr
    assert {str(p.relative_to(work)): p.is_dir() or p.read_bytes() for p in work.rglob("*")} == before
    assert names(tmp_path) == {"in.mkv", "out.mkv", work.name}
