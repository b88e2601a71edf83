"""What users bring: a matrix of real encoder output, made by FFmpeg's own command-line tool (not vsr, not PyAV), each
family upscaled by 2 with the defaults into the same container, and checked against its input with ffprobe:
frames, timestamps, size, bit depth, chroma layout, alpha, colour tags, rotation and audio kept, or a notice that
says what was lost. The expected encoder and pixel format per family are the table in docs/video.md.

Needs `ffmpeg` and `ffprobe` (tests/run.sh installs them as root on Debian/Ubuntu); skips without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs ffmpeg and ffprobe (apt-get install ffmpeg; tests/run.sh does it as root)",
)

RATE, SECONDS = 10, 0.5  # 5 frames


@dataclass(frozen=True)
class Family:
    name: str  # file name: its extension is the container
    video: str  # ffmpeg output options of the video stream
    want: tuple[str, str]  # (codec, pix_fmt) of the output, as vsr writes them and ffprobe names them
    size: str = "48x32"
    audio: str | None = None  # ffmpeg encoder of the sine-wave audio stream
    source: str = "format=yuv420p"  # filter after testsrc2 (alpha, RGB)
    lost: str | None = None  # what the notice must name, where the container can't keep it all
    remux: str | None = None  # ffmpeg options of a second, stream-copy pass (rotation)
    probed: str | None = None  # the pixel format ffprobe reports, where it differs from what was encoded


X265 = "-c:v libx265 -x265-params log-level=error"  # x265 3.5 (Debian 12) corrupts its heap below 64x48
ALPHA = "format=yuva420p,geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':a='8*X+2*Y'"
RGBA = "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='8*X+2*Y'"
FAMILIES = [
    Family("h264_baseline.mp4", "-c:v libx264 -profile:v baseline -pix_fmt yuv420p", ("h264", "yuv420p"), audio="aac"),
    Family("h264_high.mp4", "-c:v libx264 -profile:v high -pix_fmt yuv420p", ("h264", "yuv420p"), audio="aac"),
    Family("h264_422.mp4", "-c:v libx264 -pix_fmt yuv422p", ("h264", "yuv422p")),
    Family("h264_444.mp4", "-c:v libx264 -pix_fmt yuv444p", ("h264", "yuv444p")),
    Family("h264_10bit.mp4", "-c:v libx264 -pix_fmt yuv420p10le", ("h264", "yuv420p10le"), audio="aac"),
    Family("h264_10bit_422.mkv", "-c:v libx264 -pix_fmt yuv422p10le", ("h264", "yuv422p10le"), audio="libopus"),
    Family("h265_8bit.mp4", f"{X265} -pix_fmt yuv420p", ("h264", "yuv420p"), audio="aac", size="64x48"),
    Family("h265_10bit.mp4", f"{X265} -pix_fmt yuv420p10le", ("h264", "yuv420p10le"), size="64x48"),
    Family("h265_12bit.mkv", f"{X265} -pix_fmt yuv420p12le", ("hevc", "yuv420p12le"), audio="aac", size="64x48"),
    Family("h265_422_12bit.mp4", f"{X265} -pix_fmt yuv422p12le", ("hevc", "yuv422p12le"), size="64x48"),
    Family("h265_444.mp4", f"{X265} -pix_fmt yuv444p", ("h264", "yuv444p"), size="64x48"),
    Family("h265_444_12bit.mov", f"{X265} -pix_fmt yuv444p12le", ("hevc", "yuv444p12le"), audio="aac", size="64x48"),
    Family("h265_gbrp.mp4", f"{X265} -pix_fmt gbrp", ("hevc", "gbrp"), source="format=gbrp", size="64x48"),
    Family("vp8.webm", "-c:v libvpx -b:v 1M", ("vp9", "yuv420p"), audio="libopus"),
    Family(
        "vp8_bt709.webm", "-c:v libvpx -b:v 1M -colorspace bt709 -color_primaries bt709 -color_trc bt709", ("vp9", "yuv420p")
    ),  # fmt: skip
    Family("vp9_profile0.webm", "-c:v libvpx-vp9 -pix_fmt yuv420p", ("vp9", "yuv420p"), audio="libopus"),
    Family("vp9_profile1.webm", "-c:v libvpx-vp9 -pix_fmt yuv444p", ("vp9", "yuv444p")),
    Family("vp9_profile2.webm", "-c:v libvpx-vp9 -pix_fmt yuv420p10le", ("av1", "yuv420p10le"), audio="libopus"),
    Family("vp9_profile3.webm", "-c:v libvpx-vp9 -pix_fmt yuv444p10le", ("av1", "yuv420p10le"), lost="4:4:4 chroma"),
    Family("vp9_gbrp.webm", "-c:v libvpx-vp9 -pix_fmt gbrp", ("vp9", "gbrp"), source="format=gbrp"),
    Family("vp9_in.mp4", "-c:v libvpx-vp9 -pix_fmt yuv420p", ("h264", "yuv420p"), audio="aac"),
    Family("av1_8bit.webm", "-c:v libsvtav1 -pix_fmt yuv420p", ("vp9", "yuv420p"), size="64x64", audio="libopus"),
    Family("av1_10bit.webm", "-c:v libsvtav1 -pix_fmt yuv420p10le", ("av1", "yuv420p10le"), size="64x64"),
    Family("av1_8bit.mp4", "-c:v libsvtav1 -pix_fmt yuv420p", ("h264", "yuv420p"), size="64x64", audio="aac"),
    Family("av1_10bit.mp4", "-c:v libsvtav1 -pix_fmt yuv420p10le", ("h264", "yuv420p10le"), size="64x64"),
    Family("vp8_alpha.webm", "-c:v libvpx -b:v 1M -auto-alt-ref 0", ("vp9", "yuva420p"), source=ALPHA),
    Family("vp9_alpha.webm", "-c:v libvpx-vp9", ("vp9", "yuva420p"), source=ALPHA, audio="libopus"),
    Family(
        "prores4444_alpha.mov",
        "-c:v prores_ks -profile:v 4444 -pix_fmt yuva444p10le",
        ("prores", "yuva444p10le"),
        source=ALPHA,
        lost="12-bit depth",
        probed="yuva444p12le",
    ),  # fmt: skip
    Family("rotate90.mp4", "-c:v libx264", ("h264", "yuv420p"), remux="-metadata:s:v:0 rotate=90", audio="aac"),
    Family("rotate270.mp4", "-c:v libx264", ("h264", "yuv420p"), remux="-metadata:s:v:0 rotate=270"),
    Family(
        "pq_bt2020.mp4",
        f"{X265} -pix_fmt yuv420p10le -color_primaries bt2020 -color_trc smpte2084 -colorspace bt2020nc",
        ("h264", "yuv420p10le"),
        audio="aac",
        size="64x48",
    ),  # fmt: skip
    Family(
        "hlg_bt2020.webm",
        "-c:v libvpx-vp9 -pix_fmt yuv420p10le -color_primaries bt2020 -color_trc arib-std-b67 -colorspace bt2020nc",
        ("av1", "yuv420p10le"),
        audio="libopus",
    ),  # fmt: skip
    Family("odd_size.mp4", "-c:v libx264 -pix_fmt yuv444p", ("h264", "yuv444p"), size="65x37", audio="aac"),
    Family("odd_size.webm", "-c:v libvpx-vp9 -pix_fmt yuv420p", ("vp9", "yuv420p"), size="65x37"),
    # What a review of the first version found: RGBA, palette and grey pictures, full range, other depths and layouts,
    # other containers.
    Family("rgba_qtrle.mov", "-c:v qtrle", ("prores", "yuva444p10le"), source=RGBA, probed="yuva444p12le"),
    Family("rgba_ffv1.mkv", "-c:v ffv1", ("ffv1", "gbrap10le"), source=RGBA),
    Family("rgb_qtrle.mov", "-c:v qtrle", ("hevc", "gbrp"), source="format=rgb24", size="64x48"),
    Family("gbrp_ffv1.mkv", "-c:v ffv1", ("hevc", "gbrp"), source="format=gbrp", size="64x48"),
    Family("pal8_png.mkv", "-c:v png", ("ffv1", "gbrap10le"), source="format=pal8"),
    Family("gray_png.mov", "-c:v png", ("h264", "yuvj420p"), source="format=gray"),
    Family("gray_alpha_png.mkv", "-c:v png", ("vp9", "yuva420p"), source="format=ya8"),
    Family("mjpeg_full_range.avi", "-c:v mjpeg", ("h264", "yuvj422p"), source="format=yuvj422p"),
    Family("yuv440p_ffv1.mkv", "-c:v ffv1", ("h264", "yuv444p"), source="format=yuv440p"),
    Family("yuv420p9_ffv1.mkv", "-c:v ffv1", ("h264", "yuv420p10le"), source="format=yuv420p9le"),
    Family("yuv444p16_ffv1.mkv", "-c:v ffv1", ("ffv1", "yuv444p16le"), source="format=yuv444p16le"),
    Family("prores422.mov", "-c:v prores_ks -profile:v hq -pix_fmt yuv422p10le", ("h264", "yuv422p10le"), audio="aac"),
    Family("h264.ts", "-c:v libx264", ("h264", "yuv420p"), audio="aac"),
    Family("mpeg4.avi", "-c:v mpeg4 -q:v 2", ("h264", "yuv420p")),
    Family("vp9.ivf", "-c:v libvpx-vp9", ("vp9", "yuv420p")),
]


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-2000:]}"
    return r.stdout


def make(family: Family, folder: Path) -> Path:
    """`family`'s file, made by ffmpeg."""
    path = folder / family.name
    first = path.with_name("pre_" + family.name) if family.remux else path
    video = f"testsrc2=size={family.size}:rate={RATE}:duration={SECONDS},{family.source}"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video]
    if family.audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}", "-c:a", family.audio]
    _run([*cmd, *family.video.split(), "-shortest", str(first)])
    if family.remux:
        _run(["ffmpeg", "-v", "error", "-y", "-i", str(first), "-c", "copy", *family.remux.split(), str(path)])
    return path


def probe(path: Path) -> dict:
    out = _run(["ffprobe", "-v", "error", "-show_streams", "-show_frames", "-of", "json", str(path)])
    doc = json.loads(out)
    video = next(s for s in doc["streams"] if s["codec_type"] == "video")
    frames = [f for f in doc["frames"] if f.get("media_type") == "video"]
    audio = [s for s in doc["streams"] if s["codec_type"] == "audio"]
    rotation = next((d.get("rotation") for d in video.get("side_data_list", []) if "rotation" in d), 0)
    times = [float(f.get("best_effort_timestamp_time", f.get("pkt_dts_time", "nan"))) for f in frames]  # AVI: no pts
    return {"video": video, "times": times, "audio": audio,
            "rotation": rotation}  # fmt: skip


def _decoder(path: Path) -> list[str]:
    """ffmpeg's options to decode `path`'s video with its alpha (libvpx for VP8/VP9, whose alpha FFmpeg's own
    decoders skip)."""
    codec = probe(path)["video"]["codec_name"]
    return {"vp8": ["-c:v", "libvpx"], "vp9": ["-c:v", "libvpx-vp9"]}.get(codec, [])


def mean_rgb(path: Path, size: dict) -> np.ndarray:
    """The mean R, G, B of the first frame as ffmpeg decodes and shows it, at the input's size (`size`)."""
    width, height = size["width"], size["height"]
    vf = f"scale={width}:{height}:flags=area,format=rgb24"
    cmd = ["ffmpeg", "-v", "error", *_decoder(path), "-i", str(path), "-frames:v", "1", "-vf", vf, "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, capture_output=True, timeout=60, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).reshape(-1, 3).mean(axis=0)


def alpha_plane(path: Path, width: int, height: int) -> np.ndarray:
    """The first frame's alpha as ffmpeg decodes it."""
    cmd = ["ffmpeg", "-v", "error", *_decoder(path), "-i", str(path), "-frames:v", "1", "-vf", "format=rgba,alphaextract"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(cmd, capture_output=True, timeout=60, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width)


@pytest.fixture(scope="module")
def engine():
    import vsr

    return vsr.make_upscaler(vsr.load_model(scale=2, arch="9-1-5"), device="cpu")


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_family_kept_or_said(family, tmp_path, engine):
    import vsr

    src = make(family, tmp_path)
    dst = tmp_path / ("out_" + family.name)
    summary = vsr.upscale_video(src, dst, 2, upscaler=engine)
    got, want = probe(dst), probe(src)
    v, w = got["video"], want["video"]
    assert (v["codec_name"], summary.pix_fmt.split(",")[0]) == family.want  # "yuva420p, full range": no yuvja
    assert _pix_fmt(dst, v) == (family.probed or family.want[1])  # FFmpeg decodes ProRes 4444 at 12 bits
    assert (v["width"], v["height"]) == (2 * w["width"], 2 * w["height"])
    assert len(got["times"]) == len(want["times"]) == RATE * SECONDS
    if not family.name.endswith(".avi"):  # AVI has no presentation times: with B-frames (ffmpeg's libx264 output
        assert got["times"] == pytest.approx(want["times"], abs=1.5e-3)  # too) ffprobe cannot tell them
    for tag in ("color_space", "color_primaries", "color_transfer", "color_range"):
        default = "tv" if tag == "color_range" else "unknown"  # x264 writes no range flag for studio range: the default
        if w.get(tag, "unknown") not in ("unknown", "reserved"):
            assert v.get(tag, default) == w[tag], (tag, v.get(tag), w[tag])
    if v.get("color_space") == "gbr":  # the GBR matrix tag belongs on RGB pictures only
        assert v["pix_fmt"].startswith("gbr"), v["pix_fmt"]
    assert got["rotation"] == want["rotation"]
    assert [a["codec_name"] for a in got["audio"]] == [a["codec_name"] for a in want["audio"]]
    # The colours as ffmpeg shows them, input and output alike: a range or matrix read wrongly moves the mean by
    # 6 levels or more here; SR, chroma resampling and lossy coding of these tiny pictures by up to 2.5.
    a, b = mean_rgb(src, w), mean_rgb(dst, w)
    assert np.abs(a - b).max() < 3.5, (a, b)
    notices = [m for m in summary.warnings if "cannot keep" in m]
    if family.lost:
        assert len(notices) == 1 and family.lost in notices[0] and "keeps it" in notices[0], summary.warnings
    else:
        assert not notices, notices
    if "yuva" in family.want[1] or "gbra" in family.want[1]:
        _check_alpha(src, dst, w, v)


def _pix_fmt(path: Path, stream: dict) -> str:
    """ffprobe's pixel format, with alpha where the WebM/Matroska stream carries it beside the frames."""
    fmt = stream["pix_fmt"]
    if stream.get("tags", {}).get("alpha_mode", stream.get("tags", {}).get("ALPHA_MODE")) == "1":
        fmt = fmt.replace("yuv", "yuva", 1)
    return fmt


def _check_alpha(src: Path, dst: Path, w: dict, v: dict) -> None:
    """The output's alpha is the input's, upscaled (bicubic, then lossy coded): its 2x2 means within a few levels of
    the input's alpha, its full range kept (a flat opaque plane, or alpha squeezed into 16..235, fails)."""
    a_in = alpha_plane(src, w["width"], w["height"]).astype(np.float64)
    a_out = alpha_plane(dst, v["width"], v["height"]).astype(np.float64)
    if a_in.std() < 1:  # an opaque input (the palette, grey+alpha test pictures): opaque out
        assert a_out.min() >= 250, a_out.min()
        return
    h, w2 = a_in.shape
    means = a_out[: 2 * h, : 2 * w2].reshape(h, 2, w2, 2).mean(axis=(1, 3))
    err = np.abs(means - a_in)[1:-1, 1:-1].mean()  # the border: bicubic's edge handling differs from ffmpeg's
    assert err < 3, err
    assert a_out.min() <= a_in.min() + 3 and a_out.max() >= a_in.max() - 3, (a_out.min(), a_out.max())


def test_cli_defaults_write_webm(tmp_path):
    """The trial's first finding: every .webm output was refused (libx264 default). With the defaults it is VP9."""
    family = next(f for f in FAMILIES if f.name == "vp9_profile0.webm")
    src = make(family, tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "vsr", "upscale", str(src), str(tmp_path / "out.webm"), "--scale", "2", "--arch", "9-1-5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert probe(tmp_path / "out.webm")["video"]["codec_name"] == "vp9"
    assert "(libvpx-vp9, yuv420p)" in r.stderr


def test_explicit_codec_reduces_with_a_notice(tmp_path, engine):
    """--codec libvpx-vp9 on 10-bit input (this PyAV's VP9 is 8-bit only) is written 8-bit with one notice naming
    what keeps the depth, instead of the refusal the trial met."""
    import vsr

    src = make(next(f for f in FAMILIES if f.name == "hlg_bt2020.webm"), tmp_path)
    summary = vsr.upscale_video(src, tmp_path / "out.webm", 2, upscaler=engine, codec="libvpx-vp9")
    (notice,) = [m for m in summary.warnings if "cannot keep" in m]
    assert "10-bit depth" in notice and "--codec libsvtav1 keeps it" in notice
    got = probe(tmp_path / "out.webm")["video"]
    assert (got["codec_name"], got["pix_fmt"], got["color_transfer"]) == ("vp9", "yuv420p", "arib-std-b67")


def test_alpha_into_mp4_is_said(tmp_path, engine):
    """MP4 holds no encoder with alpha here: the alpha is dropped with one notice that names a container keeping it."""
    import vsr

    src = make(next(f for f in FAMILIES if f.name == "vp9_alpha.webm"), tmp_path)
    summary = vsr.upscale_video(src, tmp_path / "out.mp4", 2, upscaler=engine)
    (notice,) = [m for m in summary.warnings if "cannot keep" in m]
    assert "alpha" in notice and "a .mkv output (libvpx-vp9) keeps it" in notice
    assert probe(tmp_path / "out.mp4")["video"]["pix_fmt"] == "yuv420p"


def test_a_bad_option_for_any_file_of_a_folder_is_one_line_before_any_work(tmp_path):
    """--preset slow suits the .mp4's libx264 but not the .webm's VP9: refused before the first file is written."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_h264_high.mp4", "b_vp9_profile0.webm"):
        family = next(f for f in FAMILIES if f.name == name.split("_", 1)[1])
        make(family, folder).rename(folder / name)
    r = subprocess.run(
        [sys.executable, "-m", "vsr", "upscale", str(folder), str(tmp_path / "out"), "--scale", "2", "--arch", "9-1-5",
         "--preset", "slow"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["vsr: error: libvpx-vp9 has no --preset; leave it out"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # no file written


@pytest.mark.parametrize(
    "name, out, options, want",
    [
        ("h264_high.mp4", "out.mkv", {"codec": "libx265", "pix_fmt": "gbrp"}, ("hevc", "gbrp", "pc")),
        ("h264_high.mp4", "out.mp4", {"pix_fmt": "yuvj420p"}, ("h264", "yuvj420p", "pc")),
        ("vp9_profile0.webm", "out.webm", {"pix_fmt": "yuv420p10le"}, ("av1", "yuv420p10le", "tv")),
    ],
)
def test_pix_fmt_asked_for_keeps_the_colours(tmp_path, engine, name, out, options, want):
    """--pix-fmt converts with the input's own matrix and range (gbrp from studio-range YUV, full range asked for
    with yuvj*), and with --codec auto the container's first encoder that takes the format writes it."""
    import vsr

    src = make(next(f for f in FAMILIES if f.name == name), tmp_path)
    vsr.upscale_video(src, tmp_path / out, 2, upscaler=engine, **options)
    got, w = probe(tmp_path / out)["video"], probe(src)["video"]
    assert (got["codec_name"], got["pix_fmt"], got.get("color_range", "tv")) == want
    a, b = mean_rgb(src, w), mean_rgb(tmp_path / out, w)
    assert np.abs(a - b).max() < 3.5, (a, b)


def test_webcam_shows_and_records_an_alpha_source(tmp_path):
    """A file source with alpha (yuva420p) through `vsr webcam`: the SR thread carries the alpha plane along."""
    src = make(next(f for f in FAMILIES if f.name == "vp9_alpha.webm"), tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "vsr", "webcam", "--source", str(src), "--no-window", "--frames", "3", "--device", "cpu",
         "--arch", "9-1-5", "--record", str(tmp_path / "rec.mkv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert probe(tmp_path / "rec.mkv")["video"]["codec_name"]
