"""Which GPU each CUDA-facing call names, checked on the CPU by recording it: the upscaler and TensorRT's build, save
and load run with their GPU current (`torch.cuda.device`), NVDEC opens on the model's GPU, and a hardware decoder
that handed the stream to software is said. With cuda:1 as the GPU, so that "the current device" (cuda:0 in a
fresh thread) would be the wrong one."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.model.srcnn import SRCNN, SRCNNConfig

GPU = torch.device("cuda", 1)


@pytest.fixture
def current(monkeypatch) -> list:
    """The stack of devices made current by `torch.cuda.device(...)` (what torch would switch to)."""
    stack: list = []

    @contextlib.contextmanager
    def device(d):
        stack.append(torch.device(d))
        try:
            yield
        finally:
            stack.pop()

    monkeypatch.setattr(torch.cuda, "device", device)
    return stack


def _model() -> SRCNN:
    return SRCNN(SRCNNConfig.from_arch("9-1-5", n1=8, n2=4))


def test_upscaler_runs_its_model_with_its_gpu_current(monkeypatch, current):
    """TensorRT and Inductor allocate on the current device: called from a thread whose current device is cuda:0,
    an upscaler on cuda:1 must make cuda:1 current itself (vsr.engine.base, `Upscaler.__call__`)."""
    up = Upscaler(_model(), "cpu")
    up.device = GPU  # as made on cuda:1; what runs inside is recorded, not run
    seen: list = []
    monkeypatch.setattr(up, "_call", lambda y: seen.append(list(current)) or y)
    up(torch.zeros(1, 1, 4, 4))
    assert seen == [[GPU]]


def test_tensorrt_builds_saves_and_loads_with_the_engines_gpu_current(monkeypatch, tmp_path, current):
    """No torch-tensorrt release sets the device itself; the builder and `torch.export.load` use the current one
    (vsr.engine.tensorrt's contract). Recorded through stand-ins for the build, save, load and run."""
    from vsr.engine import tensorrt as trt

    up = trt.TensorRTUpscaler.__new__(trt.TensorRTUpscaler)  # the CUDA-only constructor skipped
    up.device, up.precision, up.dtype, up.model = GPU, "fp16", torch.float16, _model()
    up._tt, up.notice, up.folder = SimpleNamespace(), lambda message: None, tmp_path
    seen: list = []

    def save(tt, engine, path, example):
        seen.append(("save", list(current)))
        Path(path).write_bytes(b"engine")

    monkeypatch.setattr(trt, "compile_engine", lambda *args: seen.append(("build", list(current))) or "engine")
    monkeypatch.setattr(trt, "save_engine", save)
    example = torch.zeros(1, 1, 8, 8)
    assert up._build((1, 1, 8, 8), example, tmp_path / "e.pt2") == "engine"
    loaded = SimpleNamespace(module=lambda: lambda x: seen.append(("run", list(current))))
    monkeypatch.setattr(torch.export, "load", lambda path: seen.append(("load", list(current))) or loaded)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(("synchronize", device)))
    up._load(tmp_path / "e.pt2", example)
    assert seen == [
        ("build", [GPU]),
        ("save", [GPU]),
        ("load", [GPU]),
        ("run", [GPU]),
        ("synchronize", GPU),
    ]


# ---------------------------------------------------------------- NVDEC


needs_pyav18 = pytest.mark.skipif(int(av.__version__.split(".")[0]) < 18, reason="--hwaccel needs PyAV 18")


@needs_pyav18
def test_nvdec_opens_on_the_gpu_that_runs_the_model(monkeypatch, tmp_path):
    """`upscale_video` with an upscaler on cuda:1 and --hwaccel cuda asks PyAV for NVDEC on device "1"."""
    import av.codec.hwaccel

    import vsr.engine.gpu
    from vsr.media import source
    from vsr.pipeline.video import upscale_video

    from .fake_cuda import FakeCuda
    from .test_gpu_timeline import _OnGpu
    from .test_video import make_clip, tiny_upscaler

    src = make_clip(tmp_path / "in.mkv", audio=None)  # before HWAccel is replaced: PyAV's own modules import it
    asked: list = []
    monkeypatch.setattr(av.codec.hwaccel, "HWAccel", lambda **kwargs: asked.append(kwargs) or kwargs)
    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["cuda"])
    real = source._open_input_with  # opened for the CPU: there is no NVDEC here

    def open_input_with(src, fmt, extra, *args, **kwargs):
        return real(src, fmt, {k: v for k, v in extra.items() if k != "hwaccel"}, *args, **kwargs)

    monkeypatch.setattr(source, "_open_input_with", open_input_with)
    instant = {"h2d": 0.0, "kernel": 0.0, "d2h": 0.0}
    monkeypatch.setattr(vsr.engine.gpu, "CudaRuntime", lambda device: FakeCuda(durations=instant, device=device))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    upscale_video(src, tmp_path / "out.mkv", 2, _OnGpu(tiny_upscaler()), codec="ffv1", hwaccel="cuda")
    assert [a["device"] for a in asked] == ["1"] and asked[0]["device_type"] == "cuda"


def _decoding(is_hwaccel: bool, pix_fmt: str):
    """An InputStreams after its first frame, with the codec context a decoder reports (PyAV's attributes)."""
    from vsr.media.source import InputStreams

    streams = InputStreams.__new__(InputStreams)
    said: list = []
    cfg = SimpleNamespace(format=SimpleNamespace(name="cuda"))
    ctx = SimpleNamespace(
        is_hwaccel=is_hwaccel, pix_fmt=pix_fmt, name="h264", profile="High", coded_width=64, coded_height=48,
        width=64, height=48, codec=SimpleNamespace(hardware_configs=[cfg]),
    )  # fmt: skip
    streams._hwaccel, streams._hw_attached, streams._warn = "cuda", True, said.append
    streams.video = SimpleNamespace(codec_context=ctx)
    return streams, said


def test_a_hardware_decoder_that_handed_over_to_software_is_said():
    """NVDEC attached but the decoder chose a software format (allow_software_fallback: an unsupported profile or
    size; av/video/codeccontext.py `_get_hw_format`): not in use, and said."""
    streams, said = _decoding(True, "yuv420p")
    assert streams.hwaccel_in_use() is False
    assert len(said) == 1 and "not used" in said[0]
    streams, said = _decoding(True, "cuda")
    assert streams.hwaccel_in_use() is True and not said
