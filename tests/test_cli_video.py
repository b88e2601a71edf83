"""`vsr upscale` on videos as a user runs it: files, stdin/stdout, bad inputs, Ctrl-C / SIGTERM / SIGHUP."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from vsr import cli

from .conftest import spawn
from .test_cli import digest, vsr
from .test_video import VFR_MS, frames_of, make_clip, names, packets_of, timestamps_s


def test_file_to_file_with_summary(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv")
    r = vsr("upscale", src, tmp_path / "out.mp4", "--scale", 2, "--weights", weights, "--preset", "ultrafast")
    assert r.returncode == 0, r.stderr
    assert f"{len(VFR_MS)} frames 64x48 -> 128x96" in r.stderr and "fps" in r.stderr
    out = frames_of(tmp_path / "out.mp4")
    assert len(out) == len(VFR_MS) and (out[0].width, out[0].height) == (128, 96)
    assert timestamps_s(tmp_path / "out.mp4") == pytest.approx(timestamps_s(src), abs=1e-3)
    assert packets_of(tmp_path / "out.mp4", "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"in.mkv", "out.mp4"}


def test_stdin_to_stdout(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv")
    with open(src, "rb") as stdin, open(tmp_path / "piped.mkv", "wb") as stdout:
        r = subprocess.run(
            [sys.executable, "-m", "vsr", "upscale", "-", "-", "--format", "matroska", "--scale", "3", "--weights", str(weights)],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert r.returncode == 0, r.stderr
    out = frames_of(tmp_path / "piped.mkv")
    assert len(out) == len(VFR_MS) and (out[0].width, out[0].height) == (192, 144)
    assert timestamps_s(tmp_path / "piped.mkv") == pytest.approx(timestamps_s(src), abs=1e-3)


def test_bad_video_inputs_one_line_and_nothing_lost(tmp_path, weights):
    make_clip(tmp_path / "clip.mkv")
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"old output")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    make_clip(tmp_path / "song.mkv", pts=[], audio="aac")  # audio only
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 300)
    inputs = sorted(tmp_path.iterdir())
    before = {p: digest(p) for p in inputs}
    w = ("--weights", weights)
    cases = [
        ("missing.mp4", "o.mp4", *w),
        ("empty.mp4", "o.mp4", *w),
        ("notes.mp4", "o.mp4", *w),
        ("song.mkv", "o.mp4", *w),
        ("clip.mkv", "clip.mkv", "--overwrite", *w),
        ("clip.mkv", "existing.mp4", *w),
        ("clip.mkv", "o.mp4", "--scale", "0", *w),
        ("clip.mkv", "o.mp4", "--scale", "-2", *w),
        ("clip.mkv", "o.mp4", "--weights", garbage),
        ("clip.mkv", "no/such/dir/o.mp4", *w),
        ("clip.mkv", "o.mp4", "--codec", "nosuchcodec", *w),
        ("clip.mkv", "o.mp4", "--pix-fmt", "nosuchfmt", *w),
    ]
    for src, dst, *opts in cases:
        r = vsr("upscale", tmp_path / src, tmp_path / dst, *opts)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode != 0, (src, dst, opts)
        assert len(lines) == 1 and "Traceback" not in r.stderr, (src, dst, opts, r.stderr)
        assert lines[0].startswith("vsr: error:") or "Error" in lines[0], (src, dst, opts, r.stderr)
        assert sorted(tmp_path.iterdir()) == inputs, (src, dst, opts)
    assert {p: digest(p) for p in inputs} == before


def _start_long_upscale(tmp_path, *extra) -> subprocess.Popen:
    """`vsr upscale` of a 200-frame clip with the shipped 9-5-5 weights, returned once its temporary output exists."""
    src = make_clip(tmp_path / "long.mkv", pts=list(range(0, 200 * 40, 40)), size=(320, 240), audio=None)
    proc = spawn([sys.executable, "-m", "vsr", "upscale", src, tmp_path / "out.mkv", "--scale", "2", "-q", *extra])
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):  # the temporary output exists
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(0.5)
    return proc


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, " by SIGTERM"), (signal.SIGHUP, 129, " by SIGHUP")],
)
def test_stop_signal_exits_and_leaves_nothing(tmp_path, signum, code, said):
    """Ctrl-C, SIGTERM (kill, timeout, docker stop) and SIGHUP during a long upscale: exit 128 + signal within seconds,
    one line on stderr, nothing at or beside the target."""
    proc = _start_long_upscale(tmp_path)
    proc.send_signal(signum)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"vsr: interrupted{said}; no partial file was left"], err
    assert names(tmp_path) == {"long.mkv"}


def test_stale_partial_file_of_a_killed_run_is_removed_by_the_next(tmp_path, weights):
    """SIGKILL leaves the temporary output behind; the next run on the same target removes it with a warning and
    never takes it for output. A partial file whose writer still runs is named, not touched."""
    proc = _start_long_upscale(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    (stale,) = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    live = f".out.vsr-{stale.split('-')[1]}-{os.getpid()}-abcdef.part.mkv"  # this test process is alive
    (tmp_path / live).write_bytes(b"someone else's")
    r = vsr("upscale", tmp_path / "long.mkv", tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--preset", "ultrafast")
    assert r.returncode == 0, r.stderr
    assert f"vsr: warning: removed {tmp_path / stale}, a partial file left by an interrupted vsr run" in r.stderr
    assert f"vsr: warning: {tmp_path / live} is a partial file of another vsr run (process {os.getpid()}" in r.stderr
    assert names(tmp_path) == {"long.mkv", "out.mkv", live}
    assert len(frames_of(tmp_path / "out.mkv")) == 200


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA; the fallback is not taken")
def test_hwaccel_falls_back_to_cpu_with_a_notice(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv")
    r = vsr("upscale", src, tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--hwaccel", "cuda")
    assert r.returncode == 0, r.stderr
    assert "vsr: warning: hardware decoding (cuda) is not available here (" in r.stderr
    assert len(frames_of(tmp_path / "out.mkv")) == len(VFR_MS)


def test_hwaccel_not_used_for_the_stream_is_said(tmp_path, weights):
    """FFV1 has no NVDEC decoder: PyAV opens it for the CPU without a word (codec_context.is_hwaccel False);
    vsr says so. The same branch reports a hardware decoder that handed over to software."""
    src = make_clip(tmp_path / "in.mkv", codec="ffv1", audio=None)
    r = vsr("upscale", src, tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--hwaccel", "cuda")
    assert r.returncode == 0, r.stderr
    want = "vsr: warning: hardware decoding (cuda) is not used: FFmpeg's ffv1 decoder has no cuda support; decoding on the CPU"
    assert want in r.stderr
    assert "not available here" not in r.stderr
    assert len(frames_of(tmp_path / "out.mkv")) == len(VFR_MS)


def test_hwaccel_unknown_device_type_is_refused(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv", audio=None)
    r = vsr("upscale", src, tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--hwaccel", "nvdec")
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "--hwaccel nvdec: not a hardware device type this FFmpeg knows; use one of" in r.stderr and "cuda" in r.stderr
    assert names(tmp_path) == {"in.mkv"}


def test_video_is_one_pass_unless_ensemble_is_asked(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv")
    for out, flags in (("one.mkv", []), ("ens.mkv", ["--ensemble"])):
        r = vsr("upscale", src, tmp_path / out, "--scale", 2, "--weights", weights, "--preset", "ultrafast", "-q", *flags)
        assert r.returncode == 0, r.stderr
    one, ens = frames_of(tmp_path / "one.mkv"), frames_of(tmp_path / "ens.mkv")
    assert len(one) == len(ens) == len(VFR_MS)
    assert any((a.to_ndarray() != b.to_ndarray()).any() for a, b in zip(one, ens, strict=True))


def test_compile_backend_that_cannot_build_is_one_line_before_any_output(tmp_path, weights):
    """torch.compile is lazy: without a C++ compiler Inductor fails at the first call. The warm-up runs that call
    before the output is opened, so an explicitly named backend that cannot work is one line, exit 5, no file."""
    src = make_clip(tmp_path / "in.mkv")
    r = vsr(
        "upscale", src, tmp_path / "out.mkv", "--scale", 2, "--weights", weights, "--backend", "compile",
        CXX="/bin/false", VSR_CACHE=str(tmp_path / "cache"),
    )  # fmt: skip
    assert r.returncode == 5, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsr: error: the compile backend failed on a 128x96 frame"), r.stderr
    assert lines[0].endswith("use --backend eager")
    assert names(tmp_path) == {"in.mkv", "cache"} or names(tmp_path) == {"in.mkv"}


_LINE = re.compile(r"^(\d+) frames \S+ -> \S+ \(.+\) in ([\d.]+) s, ([\d.]+) fps -> (.+)$")


def test_folder_of_videos_each_timed_alone_then_a_total(tmp_path, monkeypatch, capsys):
    """A folder of two videos: each line is timed from that file's own start (the second, short one is faster
    than the first, long one; timed from the run's start it would be slower), then a total line: files, frames,
    the run's time and fps. The model is a stand-in that takes 50 ms a frame, so the times are the frames'."""
    upscale_cli = importlib.import_module("vsr.cli.upscale")  # `vsr.cli.upscale` the attribute is the command
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a_long.mkv", pts=[33 * i for i in range(20)], audio=None)
    make_clip(src / "b_short.mkv", pts=[0, 33], audio=None)

    def slow_identity(y):
        time.sleep(0.05)
        return y

    monkeypatch.setattr(upscale_cli, "load_upscaler", lambda *args, **kwargs: slow_identity)
    monkeypatch.setattr(sys, "argv", ["vsr", "upscale", str(src), str(tmp_path / "out"), "--preset", "ultrafast"])
    cli.main()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    files = [_LINE.match(line) for line in lines[:2]]
    assert all(files), lines
    (a_frames, a_s, _, a_dst), (b_frames, b_s, _, b_dst) = (m.groups() for m in files)
    assert (a_frames, b_frames) == ("20", "2") and a_dst.endswith("a_long.mkv") and b_dst.endswith("b_short.mkv")
    assert float(a_s) >= 1.0 and float(b_s) < float(a_s), lines
    total = re.fullmatch(r"total: 2 videos, 22 frames in ([\d.]+) s, ([\d.]+) fps -> (.+)", lines[2])
    assert total and total.group(3) == str(tmp_path / "out"), lines[2]
    assert float(total.group(1)) >= float(a_s) + float(b_s) - 0.1
    assert float(total.group(2)) == pytest.approx(22 / float(total.group(1)), rel=0.1)


def test_quiet_drops_progress_notices_and_summaries_not_warnings(tmp_path, weights):
    """--quiet: no notice (here: a clip too short to split is upscaled by one process) and no summary line, but
    warnings (here: hardware decoding asked for and not used) and errors still print."""
    src = make_clip(tmp_path / "in.mkv", codec="ffv1", audio=None)
    w = ("--weights", weights, "--scale", 2)
    loud = vsr("upscale", src, tmp_path / "a.mkv", "--workers", 2, *w)
    assert loud.returncode == 0, loud.stderr
    assert "vsr: " in loud.stderr and "not split" in loud.stderr and " fps -> " in loud.stderr
    quiet = vsr("upscale", src, tmp_path / "b.mkv", "--workers", 2, "-q", *w)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    warned = vsr("upscale", src, tmp_path / "c.mkv", "--hwaccel", "cuda", "-q", *w)
    assert warned.returncode == 0, warned.stderr
    lines = warned.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsr: warning: hardware decoding (cuda) is not "), warned.stderr
    failed = vsr("upscale", src, tmp_path / "c.mkv", "-q", *w)  # exists: an error
    assert failed.returncode != 0 and failed.stderr.startswith("vsr: error: "), failed.stderr


def test_a_warning_reported_as_a_notice_still_prints_under_quiet(capsys):
    """The segmented path reports a streamed file's warnings as notices; --quiet drops notices, so the summary's
    warnings that were not printed are printed at the end, once (and not again where the notice was shown)."""
    from vsr.pipeline.video import VideoSummary

    upscale_cli = importlib.import_module("vsr.cli.upscale")
    summary = VideoSummary(12, 0.5, 24.0, (64, 48), (128, 96), "libx264", "yuv420p", "out.mkv", ("chapters lost",))
    for quiet in (True, False):
        with upscale_cli._VideoProgress(quiet) as progress:
            progress({"event": "notice", "message": "chapters lost"})
            progress.summary(summary)
        err = capsys.readouterr().err
        if quiet:
            assert err == "vsr: warning: chapters lost\n"
        else:
            assert err.splitlines() == ["vsr: chapters lost", upscale_cli.summary_line(summary)]
