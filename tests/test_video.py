"""The video path: timestamps, passthrough, colour, sizes, output safety, bad inputs, interrupts.

Every clip is made here with PyAV (tiny: 64x48, 8-30 frames), so CI needs no ffmpeg binary and no data.
The two tests on real footage skip when ../shared/data/videos is absent.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import signal
import sys
import threading
import time
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.errors import InputError, OutputError, UsageError
from vsr.media import source
from vsr.media.frames import plane_shapes, read_planes, working_format
from vsr.media.reader import VideoReader
from vsr.media.resize import imresize
from vsr.model.srcnn import SRCNN, SRCNNConfig
from vsr.pipeline.video import upscale_planes, upscale_video

from .conftest import SHARED_DATA, smooth_image

VIDEOS = SHARED_DATA / "videos"
VFR_MS = [0, 33, 67, 150, 170, 240, 300, 301, 400, 433, 500, 600]  # irregular steps, one of 1 ms


# ---------------------------------------------------------------- making media


def make_clip(
    path: Path,
    pts: list[int] = VFR_MS,
    time_base: Fraction = Fraction(1, 1000),
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    color_range: int | None = None,
    colorspace: int | None = None,
    rotation: int | None = None,
    audio: str | None = "aac",
    options: dict[str, str] | None = None,
) -> Path:
    """A small clip with the given frame timestamps and, optionally, an audio stream of ~0.6 s of noise."""
    w, h = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=30, options=options or {})
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.codec_context.time_base = v.time_base = time_base
        if color_range is not None:
            v.codec_context.color_range = color_range
        if colorspace is not None:
            v.codec_context.colorspace = v.codec_context.color_primaries = v.codec_context.color_trc = colorspace
        if rotation is not None:
            v.set_display_rotation(rotation)
        a = out.add_stream(audio, rate=48000, layout="stereo") if audio else None
        if a is not None:
            a.metadata["language"] = "deu"
        for i, p in enumerate(pts):
            rgb = np.ascontiguousarray(smooth_image(h, w, seed=i))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = p, time_base
            if color_range is not None:
                frame.color_range = color_range
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            n = a.codec_context.frame_size or 1024
            for k in range(int(0.6 * 48000) // n):
                samples = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 48000, k * n, Fraction(1, 48000)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def frames_of(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(c.streams.video[0]))


def timestamps_s(path: Path) -> list[float]:
    return [float(f.pts * f.time_base) for f in frames_of(path)]


def packets_of(path: Path, kind: str) -> list[tuple[bytes, float]]:
    """(payload, pts in seconds) of every packet of the first stream of `kind`."""
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == kind)
        return [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(stream) if p.dts is not None]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_upscaler() -> Upscaler:
    model = SRCNN(SRCNNConfig.from_arch("9-1-5", n1=16, n2=8))
    model.init_he(torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.conv3.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return Upscaler(model, "cpu")


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """VFR H.264 in Matroska (1/1000 time base) with AAC audio."""
    return make_clip(tmp_path_factory.mktemp("clip") / "vfr.mkv")


# ---------------------------------------------------------------- faithful output


@pytest.mark.parametrize("audio", ["aac", "mp2"])
@pytest.mark.parametrize("suffix,time_base,scale_pts", [(".mkv", Fraction(1, 1000), 1), (".mp4", Fraction(1, 90000), 90)])
def test_timestamps_audio_size_and_count_kept(tmp_path, audio, suffix, time_base, scale_pts):
    src = make_clip(tmp_path / f"in{suffix}", pts=[p * scale_pts for p in VFR_MS], time_base=time_base, audio=audio)
    dst = tmp_path / f"out{suffix}"
    summary = upscale_video(src, dst, 2, None)
    out = frames_of(dst)
    assert summary.frames == len(out) == len(VFR_MS)
    assert [f.pts * f.time_base for f in out] == [Fraction(p, 1000) for p in VFR_MS]  # exact, VFR kept
    assert {(f.width, f.height) for f in out} == {(128, 96)}
    assert packets_of(dst, "audio") == packets_of(src, "audio")  # byte-identical, same timestamps
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].metadata.get("language") == "deu"
    assert names(tmp_path) == {src.name, dst.name}


def test_video_y_equals_image_math(tmp_path):
    """Lossless in and out (FFV1): Y is round(clamp(upscaler(imresize(Y/255))) * 255), U/V plain bicubic."""
    src = make_clip(tmp_path / "in.mkv", pts=list(range(6)), time_base=Fraction(1, 25), codec="ffv1", audio=None)
    upscaler = tiny_upscaler()
    dst = tmp_path / "out.mkv"
    upscale_video(src, dst, 2, upscaler, codec="ffv1")
    for fin, fout in zip(frames_of(src), frames_of(dst), strict=True):
        assert fout.format.name == "yuv420p"
        y_in = fin.to_ndarray()[:48]
        y_out = fout.to_ndarray()[:96]
        with torch.no_grad():
            expected = upscaler(imresize(torch.from_numpy(y_in.astype(np.float32))[None, None] / 255, 2))
        expected = (expected[0, 0] * 255).round().clamp(0, 255).numpy().astype(np.uint8)
        np.testing.assert_array_equal(y_out, expected)
        chroma_in = fin.to_ndarray()[48:].reshape(2, 24, 32)
        chroma_out = fout.to_ndarray()[96:].reshape(2, 48, 64)
        expected_c = imresize(torch.from_numpy(chroma_in.astype(np.float32)), 2).round().clamp(0, 255).numpy()
        np.testing.assert_array_equal(chroma_out, expected_c.astype(np.uint8))


def test_upscale_planes_odd_sizes_crop_chroma():
    planes = (np.full((47, 63), 100, np.uint8), np.full((24, 32), 90, np.uint8), np.full((24, 32), 160, np.uint8))
    out = upscale_planes(planes, 3, None, 255, ((141, 189), (71, 95), (71, 95)))
    assert [p.shape for p in out] == [(141, 189), (71, 95), (71, 95)]
    assert [int(p.mean().round()) for p in out] == [100, 90, 160]  # a flat picture stays flat


def test_full_range_and_colour_tags_kept(tmp_path):
    src = make_clip(tmp_path / "in.mkv", color_range=2, colorspace=1, audio=None)  # full range BT.709
    assert frames_of(src)[0].color_range == 2
    dst = tmp_path / "out.mkv"
    summary = upscale_video(src, dst, 2, None)
    assert summary.pix_fmt == "yuvj420p"  # what the summary line names: full-range 4:2:0, as ffprobe says
    first = frames_of(dst)[0]
    assert first.color_range == 2 and first.format.name in ("yuvj420p", "yuv420p")
    assert (first.colorspace, first.color_primaries, first.color_trc) == (1, 1, 1)


def test_rotation_kept(tmp_path):
    src = make_clip(tmp_path / "in.mp4", rotation=90, audio=None)
    dst = tmp_path / "out.mp4"
    upscale_video(src, dst, 2, None)
    assert {f.rotation for f in frames_of(dst)} == {90}


def test_odd_size(tmp_path):
    """63x47 yuv420p has 32x24 chroma; x2 gives 126x94 (chroma 63x47) and every frame."""
    src = make_clip(tmp_path / "in.mkv", size=(63, 47), codec="ffv1", audio=None)  # x264 takes no odd 4:2:0
    dst = tmp_path / "out.mkv"
    assert upscale_video(src, dst, 2, None).frames == len(VFR_MS)
    out = frames_of(dst)
    assert {(f.width, f.height) for f in out} == {(126, 94)} and len(out) == len(VFR_MS)


def test_odd_output_size_needs_a_fitting_encoder(tmp_path):
    src = make_clip(tmp_path / "in.mkv", size=(63, 47), pts=list(range(4)), codec="ffv1", audio=None)
    with pytest.raises(UsageError, match="even"):
        upscale_video(src, tmp_path / "out.mkv", 3, None)  # 189x141 4:2:0 is not possible with libx264
    assert names(tmp_path) == {"in.mkv"}
    upscale_video(src, tmp_path / "out.mkv", 3, None, codec="ffv1")
    assert {(f.width, f.height) for f in frames_of(tmp_path / "out.mkv")} == {(189, 141)}


def test_ten_bit_stays_ten_bit(tmp_path):
    src = make_clip(tmp_path / "in.mkv", pix_fmt="yuv420p10le", codec="ffv1", pts=list(range(5)), audio=None)
    dst = tmp_path / "out.mkv"
    summary = upscale_video(src, dst, 2, tiny_upscaler())
    assert summary.pix_fmt == "yuv420p10le"
    out = frames_of(dst)
    assert out[0].format.name == "yuv420p10le" and len(out) == 5
    top = max(int(p.max()) for p in read_planes(out[0]))  # not to_ndarray: PyAV reads yuv420p10le so only from 18.0
    assert 255 < top <= 1023


def test_nvenc_encodes_on_the_models_gpu():
    from vsr.media.writer import EncoderOptions, encoder_settings

    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    _, options, _ = encoder_settings(EncoderOptions(codec="h264_nvenc", gpu=1), "yuv420p")
    assert options["gpu"] == "1"
    _, options, _ = encoder_settings(EncoderOptions(codec="libx264", gpu=1), "yuv420p")
    assert "gpu" not in options


def test_the_package_requires_a_pyav_with_the_hwaccel_api():
    """--hwaccel uses av.codec.hwaccel, av.open(hwaccel=) and CodecContext.is_hwaccel (PyAV 14.1 and newer) and
    needs the colour tags of downloaded frames (PyAV 18.0 and newer, see vsr.media.source._open_input), which needs Python
    3.11; on 3.10 the floor is 17.1 (Stream.set_display_rotation), where --hwaccel decodes on the CPU (next test)."""
    import importlib.metadata
    import re

    floors = {}
    for req in importlib.metadata.requires("vsr-srcnn"):
        m = re.fullmatch(r"av\s*>=\s*([\d.]+)\s*;\s*python_version\s*([<>=]+)\s*[\"']3\.11[\"']", req)
        if m:
            floors[m[2]] = tuple(int(x) for x in m[1].split("."))
    assert floors.keys() == {">=", "<"} and floors[">="] >= (18,) and floors["<"] >= (17, 1), floors
    from av.codec.hwaccel import HWAccel, hwdevices_available  # noqa: F401 - present in the installed PyAV

    assert hasattr(av.codec.context.CodecContext, "is_hwaccel")
    assert hasattr(av.video.stream.VideoStream, "set_display_rotation")


def test_hwaccel_with_a_pyav_older_than_18_decodes_on_the_cpu_and_says_why(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "in.mkv", audio=None)
    monkeypatch.setattr(source, "AV_MAJOR", 17)
    said = []
    reader = VideoReader(src, warn=said.append, hwaccel="cuda")
    try:
        assert len(list(reader.read())) == len(VFR_MS)
    finally:
        reader.close()
    assert len(said) == 1 and said[0].startswith("hardware decoding (cuda) needs PyAV 18 or newer"), said
    assert said[0].endswith("PyAV 18 needs Python 3.11 or newer); decoding on the CPU")


@pytest.mark.parametrize(
    "pix_fmt, work_fmt",
    [("nv12", "yuv420p"), ("nv16", "yuv422p"), ("nv24", "yuv444p"), ("p010le", "yuv420p10le"), ("p210le", "yuv422p10le"),
     ("p410le", "yuv444p10le"), ("yuv444p16le", "yuv444p16le"), ("p016le", "yuv420p16le"), ("p212le", "yuv422p12le")],
)  # fmt: skip
def test_semiplanar_and_16_bit_frames_keep_their_chroma_layout(pix_fmt, work_fmt):
    """What NVDEC hands out (nv12, p010, p016, yuv444p16, and nv16 / p210 / nv24 / p410 for 4:2:2 and 4:4:4 where the
    GPU decodes them) must keep its chroma layout and depth: converting by bit depth alone made all of them 4:2:0,
    and 16-bit ones became 10-bit."""
    rgb = np.ascontiguousarray(smooth_image(48, 64))
    planar = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=work_fmt)
    frame = planar.reformat(format=pix_fmt)  # as the decoder would hand it out
    assert working_format(frame.format) == work_fmt
    back = read_planes(frame.reformat(format=working_format(frame.format)))  # what VideoReader._convert does
    assert [p.shape for p in back] == list(plane_shapes(work_fmt, 64, 48))
    for got, want in zip(back, read_planes(planar), strict=True):
        assert np.array_equal(got, want)  # nothing lost on the way: same samples as the planar frame


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_other_encoders(tmp_path, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg build")
    src = make_clip(tmp_path / "in.mkv", pts=list(range(0, 320, 40)), audio=None)
    dst = tmp_path / "out.mkv"
    upscale_video(src, dst, 2, None, codec=codec, preset={"libx265": "ultrafast", "libsvtav1": "12"}[codec])
    assert [round(t * 1000) for t in timestamps_s(dst)] == list(range(0, 320, 40))


def test_encoder_options_checked(tmp_path, clip):
    for kwargs, pattern in [
        ({"codec": "nope264"}, "not available"),
        ({"codec": "ffv1", "crf": 10}, "lossless"),
        ({"pix_fmt": "yuv999p"}, "unknown --pix-fmt"),
        ({"crf": -1}, "--crf"),
        ({"preset": "warp-speed"}, "unknown --preset 'warp-speed' for libx264"),
        ({"crf": 99}, "--crf for libx264 must be 0 to 51"),
        ({"codec": "libsvtav1", "preset": "fast"}, "it takes 0 to 13"),
        ({"codec": "libvpx-vp9", "preset": "fast"}, "libvpx-vp9 has no --preset"),
    ]:
        with pytest.raises(UsageError, match=pattern):
            upscale_video(clip, tmp_path / "out.mp4", 2, None, **kwargs)
    assert names(tmp_path) == set()


def test_progress_events(tmp_path, clip):
    events = []
    summary = upscale_video(clip, tmp_path / "out.mp4", 2, None, progress=events.append)
    assert events[0]["event"] == "start" and events[0]["total_frames"] > 0  # an estimate: duration x average rate
    assert events[0]["out_size"] == (128, 96)
    assert events[-1] == {
        "event": "done",
        "frames": summary.frames,
        "elapsed_s": summary.elapsed_s,
        "fps": summary.fps,
        "dst": str(tmp_path / "out.mp4"),
    }


def test_title_and_chapters_kept(tmp_path, clip):
    src = tmp_path / "chapters.mkv"
    with av.open(str(clip)) as inp, av.open(str(src), "w") as out:
        out.metadata["title"] = "A walk"
        mapping = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        out.set_chapters(
            [
                {"id": 1, "start": 0, "end": 300, "time_base": Fraction(1, 1000), "metadata": {"title": "one"}},
                {"id": 2, "start": 300, "end": 600, "time_base": Fraction(1, 1000), "metadata": {"title": "two"}},
            ]
        )
        for packet in inp.demux():
            if packet.size:
                packet.stream = mapping[packet.stream_index]
                out.mux(packet)
    dst = tmp_path / "out.mp4"
    summary = upscale_video(src, dst, 2, None)
    with av.open(str(dst)) as c:
        assert c.metadata.get("title") == "A walk"
        chapters = [(float(ch["start"] * ch["time_base"]), ch["metadata"].get("title")) for ch in c.chapters()]
    assert chapters == [(0.0, "one"), (0.3, "two")]
    assert not summary.warnings
    summary = upscale_video(src, tmp_path / "out.ts", 2, None)  # MPEG-TS has no chapters: said, not dropped silently
    assert summary.warnings == ("the input's 2 chapter(s) are not copied: mpegts cannot hold chapters; write a .mkv",)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_url_input(tmp_path, clip):
    """An http:// URL served from this process (FFmpeg's own network input path)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(clip.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        summary = upscale_video(f"{base}/{clip.name}", tmp_path / "out.mkv", 2, None)
        with pytest.raises(InputError, match="reachable"):
            upscale_video(f"{base}/missing.mkv", tmp_path / "out2.mkv", 2, None)
    finally:
        server.shutdown()
        server.server_close()
    assert summary.frames == len(VFR_MS) and names(tmp_path) == {"out.mkv"}


class _Pipe(io.RawIOBase):
    """A non-seekable byte stream, like a shell pipe."""

    def __init__(self, data: bytes = b""):
        self._data, self._pos, self.written = data, 0, bytearray()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def write(self, data) -> int:
        self.written += bytes(data)
        return len(data)


def test_stdin_to_stdout(tmp_path, clip, monkeypatch):
    stdin, stdout = _Pipe(clip.read_bytes()), _Pipe()
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=stdin))
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=stdout))
    summary = upscale_video("-", "-", 2, None, fmt_in="matroska", fmt_out="matroska")
    out = tmp_path / "piped.mkv"
    out.write_bytes(bytes(stdout.written))
    assert summary.frames == len(VFR_MS)
    assert [round(t * 1000) for t in timestamps_s(out)] == VFR_MS
    assert packets_of(out, "audio") == packets_of(clip, "audio")


# ---------------------------------------------------------------- output safety


def test_existing_output_refused_and_kept(tmp_path, clip):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputError, match="--overwrite"):
        upscale_video(clip, dst, 2, None)
    assert dst.read_bytes() == b"precious" and names(tmp_path) == {"out.mp4"}
    upscale_video(clip, dst, 2, None, overwrite=True)
    assert len(frames_of(dst)) == len(VFR_MS) and names(tmp_path) == {"out.mp4"}


def test_output_equal_to_input_refused(tmp_path):
    src = make_clip(tmp_path / "in.mkv", pts=list(range(4)), audio=None)
    before = digest(src)
    (tmp_path / "link.mkv").symlink_to(src)
    for dst in (src, tmp_path / "." / "in.mkv", tmp_path / "link.mkv"):
        with pytest.raises(OutputError, match="is the input"):
            upscale_video(src, dst, 2, None, overwrite=True)
    assert digest(src) == before and names(tmp_path) == {"in.mkv", "link.mkv"}


def test_unusable_output_places(tmp_path, clip):
    (tmp_path / "afile").write_bytes(b"x")
    (tmp_path / "adir").mkdir()
    for dst, pattern in [
        (tmp_path / "missing" / "out.mp4", "does not exist"),
        (tmp_path / "afile" / "out.mp4", "does not exist"),
        (tmp_path / "adir", "is a folder"),
        (tmp_path / "noext", "container format"),
    ]:
        with pytest.raises(OutputError, match=pattern):
            upscale_video(clip, dst, 2, None)
    assert names(tmp_path) == {"afile", "adir"} and names(tmp_path / "adir") == set()


def test_container_that_cannot_hold_a_stream(tmp_path):
    src = make_clip(tmp_path / "in.mkv", pts=list(range(4)), audio="mp2")
    with pytest.raises(OutputError, match="mkv"):
        upscale_video(src, tmp_path / "out.webm", 2, None, codec="libsvtav1")  # WebM takes no MP2
    assert names(tmp_path) == {"in.mkv"}


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_stream_leaves_nothing(tmp_path, clip, exc, existing):
    calls = []

    def failing(y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:
            raise exc("stop")
        return y.clamp(0, 1)

    dst = tmp_path / "out.mp4"
    if existing:
        dst.write_bytes(b"old")
    with pytest.raises(exc):
        upscale_video(clip, dst, 2, failing, overwrite=True)
    assert names(tmp_path) == ({"out.mp4"} if existing else set())
    if existing:
        assert dst.read_bytes() == b"old"


def test_sigint_stops_quickly_and_cleans_up(tmp_path, clip):
    """A real SIGINT to the main thread while the SR stage works: all stages stop, no file is left."""
    seen = []

    def slow(y: torch.Tensor) -> torch.Tensor:
        seen.append(time.perf_counter())
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        return y

    before = threading.active_count()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt):
            upscale_video(clip, tmp_path / "out.mkv", 2, slow)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - seen[2] < 3.0
    assert len(seen) < len(VFR_MS)
    assert names(tmp_path) == set()
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before  # no stage thread left running


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with av.open(str(tmp_path / "song.m4a"), "w") as out:  # audio only
        a = out.add_stream("aac", rate=48000)
        for k in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, k * 1024
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    for name, pattern in [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "empty"),
        ("notes.mp4", "cannot be read as a video"),
        ("song.m4a", "no video stream"),
    ]:
        with pytest.raises(InputError, match=pattern):
            upscale_video(tmp_path / name, tmp_path / "out.mkv", 2, None)
    assert names(tmp_path) == {"empty.mp4", "notes.mp4", "song.m4a"}
    with pytest.raises(UsageError):
        upscale_video(tmp_path / "notes.mp4", tmp_path / "out.mkv", 0, None)


def test_truncated_input_gives_the_decodable_part(tmp_path):
    src = make_clip(tmp_path / "full.mkv", pts=list(range(0, 990, 33)), audio=None)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    events = []
    summary = upscale_video(cut, tmp_path / "out.mkv", 2, None, progress=events.append)
    assert 0 < summary.frames < 30
    assert any("cut off" in w for w in summary.warnings)
    assert any(e["event"] == "warning" for e in events)
    assert len(frames_of(tmp_path / "out.mkv")) == summary.frames  # a complete, playable file


def test_corrupt_middle_never_a_traceback(tmp_path):
    src = make_clip(tmp_path / "full.mkv", pts=list(range(0, 990, 33)), audio=None)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    start = len(data) // 3
    data[start : start + 400] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    try:
        summary = upscale_video(bad, tmp_path / "out.mkv", 2, None)
    except InputError:
        assert names(tmp_path) == {"full.mkv", "bad.mkv"}
    else:
        assert len(frames_of(tmp_path / "out.mkv")) == summary.frames > 0


# ---------------------------------------------------------------- real footage (skips without the data)


def excerpt(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of every stream of `src`, packets copied as they are."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(streams):  # cut in decode order, so every kept frame keeps its references
            if packet.size == 0 or (packet.dts is not None and packet.dts * packet.time_base > seconds):
                continue
            packet.stream = mapping[packet.stream_index]
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def videos() -> Path:
    if not VIDEOS.is_dir():
        pytest.skip(f"real test footage not found at {VIDEOS}")
    return VIDEOS


def test_real_mp4_with_aac(tmp_path, videos):
    src = excerpt(videos / "car-detection.mp4", tmp_path / "car.mp4", 1.2)
    dst = tmp_path / "car-x2.mp4"
    upscale_video(src, dst, 2, None, preset="ultrafast")
    fin, fout = frames_of(src), frames_of(dst)
    assert len(fout) == len(fin) > 5
    assert [f.pts * f.time_base for f in fout] == [f.pts * f.time_base for f in fin]
    assert {(f.width, f.height) for f in fout} == {(2 * fin[0].width, 2 * fin[0].height)}
    assert packets_of(dst, "audio") == packets_of(src, "audio")


def test_real_full_range_mkv(tmp_path, videos):
    src = excerpt(videos / "asl-walk.mkv", tmp_path / "asl.mkv", 0.4)
    dst = tmp_path / "asl-x2.mkv"
    upscale_video(src, dst, 2, None, preset="ultrafast")
    fin, fout = frames_of(src), frames_of(dst)
    assert fin[0].format.name == "yuvj420p" and fout[0].color_range == 2 == fin[0].color_range
    assert len(fout) == len(fin) and [f.pts for f in fout] == [f.pts for f in fin]
