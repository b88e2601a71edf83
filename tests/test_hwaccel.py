"""Hardware decoding and encoding on the CPU: what vsr asks of FFmpeg when `--hwaccel` or NVENC is requested, checked
against FFmpeg's own rules (cited below), and the lines it says when the hardware cannot.

No GPU is needed: PyAV's codec contexts are real (they keep what vsr sets on them), and where a device would be
attached the opening is stood in for.
"""

from __future__ import annotations

import dataclasses
import types
from fractions import Fraction

import av
import pytest

from vsr.errors import UsageError
from vsr.media import source
from vsr.media.encoders import EncoderOptions
from vsr.media.frames import plain_info
from vsr.media.reader import VideoReader
from vsr.media.writer import VideoWriter, nvenc_hint

from .test_video import VFR_MS, make_clip

ThreadType = av.codec.context.ThreadType


def nvdec_surfaces(ctx, refs: int, reorder: int, cores: int) -> int:
    """The surfaces FFmpeg asks NVDEC for when it opens an H.264 decoder with `ctx`'s thread settings on a host with
    `cores` cores, for a stream of `refs` reference and `reorder` reorder frames:
    - nvdec_h264.c `nvdec_h264_frame_params`: dpb = ref_frame_count + num_reorder_frames;
    - nvdec.c `ff_nvdec_frame_params`: initial_pool_size = dpb + 2;
    - decode.c `avcodec_get_hw_frames_parameters`: += thread_count when active_thread_type has FF_THREAD_FRAME
      (H.264 supports frame threads, so asking for them makes them active when there is more than one thread);
    - pthread_frame.c `ff_frame_thread_init`: thread_count 0 means min(cores + 1, MAX_AUTO_THREADS = 16);
    - nvdec.c `nvdec_init_hwframes`: += 3; `ff_nvdec_decode_init` passes it as ulNumDecodeSurfaces, and more
      than 32 fails ("Using more than 32 (%d) decode surfaces might cause nvdec to fail")."""
    surfaces = refs + reorder + 2 + 3
    if _thread_type(ctx) & ThreadType.FRAME:
        threads = ctx.thread_count or min(cores + 1, 16)
        if threads > 1:
            surfaces += threads
    return surfaces


def _attached(monkeypatch):
    """`_open_input` as on a machine where NVDEC's device opened: the container as for the CPU, reported attached."""
    real = source._open_input

    def opened(src, fmt, hwaccel=None, warn=lambda m: None, device=None, stdin=None):
        return real(src, fmt, None, warn, device, stdin)[0], True

    monkeypatch.setattr(source, "_open_input", opened)


class _Stream:
    """A video stream that records what vsr sets on it: PyAV's `Stream.__setattr__` hands any other attribute to its
    codec context (av/stream.py, "Convenience setter for codec context properties"). `is_hwaccel`: whether PyAV
    attached the device to this decoder (a decoder with a config for the device type)."""

    type, disposition, index = "video", 0, 0

    def __init__(self, is_hwaccel: bool):
        ctx = types.SimpleNamespace(is_hwaccel=is_hwaccel, thread_type=ThreadType.SLICE.value, thread_count=0)
        object.__setattr__(self, "codec_context", ctx)  # PyAV's own defaults: SLICE, 0 (av/codec/context.py _init)

    def __setattr__(self, name, value):
        setattr(self.codec_context, name, value)


class _Streams(list):
    @property
    def video(self):
        return [s for s in self if s.type == "video"]


def _opened_with_a_device(monkeypatch, is_hwaccel: bool) -> types.SimpleNamespace:
    """InputStreams' container, as where the device opened: one video stream, whose decoder has the device or not."""
    container = types.SimpleNamespace(streams=_Streams([_Stream(is_hwaccel)]), close=lambda: None)
    monkeypatch.setattr(source, "_open_input", lambda *args: (container, True))
    return container


def _thread_type(ctx) -> ThreadType:
    value = ctx.thread_type
    return ThreadType[value] if isinstance(value, str) else ThreadType(value)


def test_nvdec_gets_no_frame_threads_so_a_16_reference_stream_fits_its_32_surfaces(tmp_path, monkeypatch):
    """Risk 5 of issue 24: with frame threads and FFmpeg's automatic count, a 16-reference H.264 on a 16-core host
    needs 39 surfaces, NVDEC fails to open and the stream silently decodes on the CPU. Where the device is on the
    decoder vsr asks for slice threads only; a decoder without it (FFV1 has no NVDEC) and files without --hwaccel
    keep frame threads (throughput)."""
    src = make_clip(tmp_path / "in.mkv", audio=None)
    cpu = source.InputStreams(str(src), None, lambda m: None)
    try:
        assert _thread_type(cpu.video.codec_context) == ThreadType.AUTO
    finally:
        cpu.close()
    container = _opened_with_a_device(monkeypatch, is_hwaccel=True)
    source.InputStreams(str(src), None, lambda m: None, hwaccel="cuda")
    ctx = container.streams[0].codec_context
    assert nvdec_surfaces(ctx, refs=16, reorder=2, cores=16) <= 32, (ctx.thread_type, ctx.thread_count)
    assert nvdec_surfaces(ctx, refs=16, reorder=2, cores=64) <= 32
    assert not _thread_type(ctx) & ThreadType.FRAME
    container = _opened_with_a_device(monkeypatch, is_hwaccel=False)
    source.InputStreams(str(src), None, lambda m: None, hwaccel="cuda")
    assert _thread_type(container.streams[0].codec_context) == ThreadType.AUTO


def test_the_decoder_threads_are_set_before_it_opens_and_it_decodes_every_frame(tmp_path, monkeypatch):
    """PyAV refuses thread settings once the codec is open (av/codec/context.py `thread_type` setter: "Cannot change
    thread_type after codec is open", PyAV 17.1 to 19): vsr sets them before the first decode, and the whole clip
    decodes (here PyAV's real context: no device on it, so frame threads)."""
    src = make_clip(tmp_path / "in.mkv", audio=None)
    _attached(monkeypatch)
    said: list[str] = []
    reader = VideoReader(src, warn=said.append, hwaccel="cuda")
    try:
        assert reader.video.codec_context.is_open
        assert _thread_type(reader.video.codec_context) == ThreadType.AUTO
        assert len([p for p in reader.read() if hasattr(p, "planes")]) == len(VFR_MS)
    finally:
        reader.close()


def test_live_input_decodes_with_slice_threads():
    assert source.decoder_threads(live=True, hardware=False) == "SLICE"
    assert source.decoder_threads(live=False, hardware=True) == "SLICE"
    assert source.decoder_threads(live=False, hardware=False) == "AUTO"


def _refused_stream(hwaccel: str) -> source.InputStreams:
    """InputStreams whose hardware decoder opened and then handed a 10-bit H.264 to software: PyAV's context says
    is_hwaccel (a device config was found) while the pixel format it decodes to is the software one."""
    streams = object.__new__(source.InputStreams)
    ctx = types.SimpleNamespace(
        is_hwaccel=True,
        pix_fmt="yuv420p10le",
        name="h264",
        profile="High 10",
        coded_width=1920,
        coded_height=1088,
        width=1920,
        height=1080,
        codec=types.SimpleNamespace(hardware_configs=[types.SimpleNamespace(format=types.SimpleNamespace(name=hwaccel))]),
    )
    streams.video = types.SimpleNamespace(codec_context=ctx)
    streams._hwaccel, streams._hw_attached = hwaccel, True
    return streams


def test_a_stream_the_hardware_decoder_refused_is_said_with_what_is_known_of_it():
    """The reason is FFmpeg's log only; vsr names the stream (codec, profile, pixel format, coded size), the limits
    that refuse such a stream, and that the CPU now decodes with slice threads only."""
    said: list[str] = []
    streams = _refused_stream("cuda")
    streams._warn = said.append
    assert streams.hwaccel_in_use() is False
    assert len(said) == 1 and "\n" not in said[0]
    line = said[0]
    assert line.startswith("hardware decoding (cuda) is not used: the hardware decoder refused this stream ")
    assert "(h264 High 10, yuv420p10le, 1920x1088: " in line and "32 surfaces" in line
    assert line.endswith("decoding on the CPU with slice threads only (drop --hwaccel for all threads)")


@pytest.mark.skipif(source.AV_MAJOR < 18, reason="PyAV before 18 decodes on the CPU before any device type is looked at")
def test_a_device_type_this_ffmpeg_build_lacks_falls_back_to_the_cpu_with_one_line(tmp_path, monkeypatch):
    """Risk 10: `--hwaccel cuda` with a PyAV whose FFmpeg was built without CUDA was a usage error, although the help
    says it falls back. A type FFmpeg has (av.codec.hwaccel.HWDeviceType) but this build lacks
    (`hwdevices_available()`, av_hwdevice_iterate_types) now decodes on the CPU with a warning; a name FFmpeg has no
    type for is still refused (a typo)."""
    import av.codec.hwaccel

    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["vaapi", "drm"])
    src = make_clip(tmp_path / "in.mkv", audio=None)
    said: list[str] = []
    reader = VideoReader(src, warn=said.append, hwaccel="cuda")
    try:
        assert not reader.hwaccel_active
        assert len([p for p in reader.read() if hasattr(p, "planes")]) == len(VFR_MS)
    finally:
        reader.close()
    assert len(said) == 1, said
    assert said[0].startswith("hardware decoding (cuda) is not available here (this FFmpeg build")
    assert "has no cuda support; its device types: vaapi, drm); decoding on the CPU" in said[0]
    with pytest.raises(UsageError, match=r"--hwaccel nvdec: not a hardware device type this FFmpeg knows; use one of vaapi"):
        VideoReader(src, hwaccel="nvdec")


@pytest.mark.skipif(source.AV_MAJOR < 18, reason="PyAV before 18 decodes on the CPU before any device is asked for")
@pytest.mark.parametrize("index", [None, 0, 1])
def test_the_nvdec_device_index_reaches_pyav(tmp_path, monkeypatch, index):
    """`hwaccel_device=N` becomes HWAccel(device="N"), which PyAV hands to av_hwdevice_ctx_create as the CUDA device
    (av/codec/hwaccel.py: `device_id = int(device)` for cuda); None leaves FFmpeg's default (GPU 0)."""
    src = make_clip(tmp_path / "in.mkv", audio=None)
    seen = []
    real = source._open_input_with

    def capture(src, fmt, extra, raw_errors=False, stdin=None):
        seen.append(extra.get("hwaccel"))
        return real(src, fmt, {}, raw_errors, stdin)

    monkeypatch.setattr(source, "_open_input_with", capture)
    container, attached = source._open_input(str(src), None, "cuda", device=index)
    container.close()
    assert attached and len(seen) == 1 and seen[0].device_id == (index or 0)


# ---------------------------------------------------------------- NVENC


def test_nvenc_hint_names_the_gpus_without_encoders_and_the_formats_before_blackwell():
    """Risk 10: "NVENC needs an NVIDIA GPU and driver" is wrong on A100/H100 (NVIDIA GPUs without NVENC) and for
    10-bit h264_nvenc before Blackwell (nvenc.c: "10 bit encode not supported")."""
    plain = nvenc_hint("h264_nvenc", "yuv420p")
    assert "A100 and H100 lack" in plain and "Blackwell" not in plain and plain.endswith("--codec libx264 or libx265)")
    deep = nvenc_hint("h264_nvenc", "p010le")
    assert "h264_nvenc writes 10-bit on Blackwell GPUs (RTX 50) and newer only: --codec hevc_nvenc keeps 10 bits" in deep
    assert "10-bit" not in nvenc_hint("hevc_nvenc", "p010le")  # HEVC NVENC writes 10 bits from Pascal on
    assert "hevc_nvenc writes 4:2:2 on Blackwell" in nvenc_hint("hevc_nvenc", "p210le")
    assert "av1_nvenc writes no 4:2:2" in nvenc_hint("av1_nvenc", "yuv422p") and "Ada" in nvenc_hint("av1_nvenc", "yuv420p")
    assert all("\n" not in nvenc_hint(c, f) for c in ("h264_nvenc", "av1_nvenc") for f in ("yuv420p", "p210le"))


@pytest.mark.skipif("h264_nvenc" not in av.codecs_available, reason="this FFmpeg build has no h264_nvenc")
def test_an_nvenc_encoder_that_cannot_open_is_one_line_with_the_hint(tmp_path):
    """Here (no NVIDIA driver) h264_nvenc fails to open; 10-bit pictures get the Blackwell line as well."""
    info = dataclasses.replace(plain_info(64, 48, Fraction(25)), pix_fmt="yuv420p10le", bits=10)
    with pytest.raises(UsageError) as err:
        VideoWriter(tmp_path / "out.mkv", None, None, 64, 48, EncoderOptions(codec="h264_nvenc"), info=info)
    text = str(err.value)
    assert text.startswith("cannot start encoder h264_nvenc for 64x48 ") and "\n" not in text
    assert "which A100 and H100 lack" in text and "h264_nvenc writes 10-bit on Blackwell" in text
