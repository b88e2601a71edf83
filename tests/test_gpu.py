"""Tests that need a CUDA GPU (marked `gpu`: skipped without one; `bash bench/gpu_check.sh` runs them).

They check on real hardware what the CPU tests can only simulate: the pipeline's CUDA branch against the CPU
path, one GPU of several, NVDEC, TF32 left off for fp32, torch-tensorrt's engines and their cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.engine.chain import make_upscaler
from vsr.pipeline.video import upscale_video

from .test_model import make_model
from .test_video import VFR_MS, frames_of, make_clip, packets_of, tiny_upscaler

pytestmark = pytest.mark.gpu


def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(bytes(p), np.uint8) for p in frame.planes]


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_pipeline_on_cuda_gives_the_cpu_output(tmp_path, backend):
    """fp32 on the GPU (TF32 off) against the CPU, lossless out: same frames, timestamps and audio; samples may
    differ by one step where the two sums round differently."""
    src = make_clip(tmp_path / "in.mkv", codec="ffv1")
    upscale_video(src, tmp_path / "cpu.mkv", 2, tiny_upscaler(), codec="ffv1")
    gpu = make_upscaler(tiny_upscaler().model, backend, "cuda", "fp32")
    upscale_video(src, tmp_path / "gpu.mkv", 2, gpu, codec="ffv1")
    a, b = frames_of(tmp_path / "cpu.mkv"), frames_of(tmp_path / "gpu.mkv")
    assert len(a) == len(b) == len(VFR_MS) and [f.pts for f in a] == [f.pts for f in b]
    for fa, fb in zip(a, b, strict=True):
        for pa, pb in zip(_planes(fa), _planes(fb), strict=True):
            diff = np.abs(pa.astype(int) - pb.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert packets_of(tmp_path / "gpu.mkv", "audio") == packets_of(src, "audio")


def test_fp32_on_cuda_is_not_tf32():
    x = torch.rand(1, 1, 96, 128, generator=torch.Generator().manual_seed(3))
    cpu = Upscaler(make_model("9-5-5"), "cpu")(x)
    gpu = Upscaler(make_model("9-5-5"), "cuda", "fp32")(x.cuda()).cpu()
    assert (gpu - cpu).abs().max().item() < 1e-5  # TF32 (10-bit mantissa) is off by ~1e-3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", ["eager", "compile", "tensorrt"])
def test_second_gpu_leaves_the_first_alone(tmp_path, backend):
    """cuda:1 from the main thread (warm-up, current device cuda:0) and the SR thread: nothing lands on GPU 0."""
    if backend == "tensorrt":
        pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    src = make_clip(tmp_path / "in.mkv", audio=None)
    torch.cuda.set_device(0)
    torch.cuda.synchronize(0)
    before = torch.cuda.memory_allocated(0)
    up = make_upscaler(tiny_upscaler().model, backend, "cuda:1", "fp16")
    up.warm_up(96, 128)
    upscale_video(src, tmp_path / "out.mkv", 2, up)
    assert torch.cuda.memory_allocated(0) == before
    assert torch.cuda.memory_allocated(1) > 0


def test_nvdec_with_the_model_already_on_the_gpu(tmp_path):
    """The order users run: the model is on the GPU (torch's primary context is active) before NVDEC opens."""
    src = make_clip(tmp_path / "in.mp4", pts=[i * 1000 for i in range(12)], audio=None, size=(320, 240))
    up = make_upscaler(tiny_upscaler().model, "eager", "cuda", "fp16")
    up(torch.zeros(1, 1, 64, 64, device="cuda"))
    summary = upscale_video(src, tmp_path / "out.mkv", 2, up, hwaccel="cuda")
    assert summary.frames == 12 and not summary.warnings, summary.warnings


def test_nvdec_decodes_on_the_gpu_and_gives_the_cpu_planes(tmp_path):
    from vsr.media.reader import VideoReader

    src = make_clip(tmp_path / "in.mp4", pts=[i * 1000 for i in range(12)], audio=None, size=(320, 240))
    warnings: list[str] = []
    hw = VideoReader(src, warn=warnings.append, hwaccel="cuda")
    cpu = VideoReader(src)
    try:
        assert hw.hwaccel_active, warnings
        a = [p for p in hw.read() if hasattr(p, "planes")]
        b = [p for p in cpu.read() if hasattr(p, "planes")]
    finally:
        hw.close()
        cpu.close()
    assert len(a) == len(b) == 12 and [p.pts for p in a] == [p.pts for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(pa.planes, pb.planes, strict=True))  # H.264 decoding is exact


def test_tensorrt_engine_matches_eager_and_its_cache_is_rebuilt_when_broken(tmp_path, monkeypatch):
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed ('torch-tensorrt==X.Y.*' for torch X.Y)")
    from vsr.engine.tensorrt import TensorRTUpscaler

    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    x = torch.rand(1, 1, 120, 160, generator=torch.Generator().manual_seed(4)).cuda()
    eager = Upscaler(make_model("9-5-5"), "cuda", "fp16")(x)
    notices: list[str] = []
    built = TensorRTUpscaler(make_model("9-5-5"), "cuda", "fp16", notice=notices.append)
    assert (built(x) - eager).abs().max().item() < 5e-3
    engines = list((tmp_path / "engines").glob("*.pt2"))
    assert len(engines) == 1 and any("building" in n for n in notices)
    notices.clear()
    loaded = TensorRTUpscaler(make_model("9-5-5"), "cuda", "fp16", notice=notices.append)
    assert (loaded(x) - eager).abs().max().item() < 5e-3 and not notices  # from the cache, silently
    engines[0].write_bytes(b"not an engine")
    broken = TensorRTUpscaler(make_model("9-5-5"), "cuda", "fp16", notice=notices.append)
    assert (broken(x) - eager).abs().max().item() < 5e-3
    assert any("could not load" in n for n in notices)
