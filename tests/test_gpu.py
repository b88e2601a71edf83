"""Tests that need a CUDA GPU (marked `gpu`: skipped without one; `bash bench/gpu_check.sh` runs them).

They check on real hardware what the CPU tests can only simulate: the pipeline's CUDA branch against the CPU
path, one GPU of several and an explicit GPU index on one, NVDEC, TF32 left off for fp32, torch-tensorrt's engines and
their cache, TensorRT through the streaming GPU stage (GpuFrames). Tolerances and why: tests/gpu_tolerances.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.engine.chain import make_upscaler
from vsr.pipeline.video import upscale_video

from .gpu_tolerances import FP32_VS_CPU
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
    assert (gpu - cpu).abs().max().item() < FP32_VS_CPU  # TF32 is off by ~1.5e-3 (tests/gpu_tolerances.py)


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


def _frames_through_gpu_frames(up, frames, in_shapes, out_shapes):
    """The planes of `frames` through `GpuFrames` with two in flight, as the pipeline keeps them."""
    from vsr.engine.gpu import GpuFrames

    torch.cuda.set_device(up.device)  # GpuFrames' contract: the caller's current device is the upscaler's
    gpu = GpuFrames(up, 2, 255, in_shapes, out_shapes, slots=2)
    pending, results = [], []
    for f in frames:
        pending.append(gpu.submit(f))
        if len(pending) == 2:
            results.append(gpu.result(pending.pop(0)))
    results += [gpu.result(t) for t in pending]
    gpu.drain()
    return results


def test_tensorrt_through_gpu_frames_gives_its_own_one_frame_output(tmp_path, monkeypatch):
    """TensorRT in the streaming path's GPU stage (its pool streams, pinned slots, events), against the same engines
    called one frame at a time (`upscale_planes`): the same engine per window shape, so the same bytes, give or
    take one code value where the GPU stage's bicubic rounds apart."""
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed ('torch-tensorrt==X.Y.*' for torch X.Y)")
    from vsr.pipeline.video import upscale_planes

    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    in_shapes, out_shapes = ((36, 64), (18, 32), (18, 32)), ((72, 128), (36, 64), (36, 64))
    frames = [tuple(rng.integers(0, 256, s, dtype=np.uint8) for s in in_shapes) for _ in range(5)]
    up = make_upscaler(make_model("9-5-5"), "tensorrt", "cuda", "fp16")
    assert up.backend == "tensorrt"
    up.warm_up(*out_shapes[0])
    got = _frames_through_gpu_frames(up, frames, in_shapes, out_shapes)
    for f, planes in zip(frames, got, strict=True):
        want = upscale_planes(f, 2, up, 255, out_shapes, "cuda")
        for a, b in zip(planes, want, strict=True):
            diff = np.abs(a.astype(int) - b.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("backend", ["eager", "compile", "tensorrt"])
def test_an_explicit_gpu_index_runs_on_that_gpu(tmp_path, monkeypatch, backend):
    """The `cuda:N` guards (an indexed device everywhere, `torch.cuda.device(N)` around every call, the SR thread's
    `set_device`, NVDEC's device index) on one GPU: the last GPU by its index, cuda:0 on a one-GPU machine, through
    the whole pipeline with NVDEC; everything it allocates is on that GPU. (`test_second_gpu_leaves_the_first_alone`
    needs two GPUs to see a guard missing; this runs the indexed paths wherever there is a GPU.)"""
    if backend == "tensorrt":
        pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    from vsr.engine.base import pick_device

    monkeypatch.setenv("VSR_CACHE", str(tmp_path / "cache"))
    index = torch.cuda.device_count() - 1
    assert pick_device(f"cuda:{index}") == torch.device("cuda", index)
    assert pick_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    src = make_clip(tmp_path / "in.mp4", pts=[i * 1000 for i in range(6)], audio=None, size=(128, 96))
    up = make_upscaler(tiny_upscaler().model, backend, f"cuda:{index}", "fp16")
    assert up.device == torch.device("cuda", index)
    summary = upscale_video(src, tmp_path / "out.mkv", 2, up, hwaccel="cuda")
    assert summary.frames == 6 and not summary.warnings, summary.warnings
    assert torch.cuda.memory_allocated(index) > 0
    assert len(frames_of(tmp_path / "out.mkv")) == 6


def test_nvdec_on_an_explicit_gpu_index_decodes_on_the_gpu(tmp_path):
    """`hwaccel_device=N` reaches PyAV as HWAccel(device="N") (av_hwdevice_ctx_create's device string for CUDA)."""
    from vsr.media.reader import VideoReader

    src = make_clip(tmp_path / "in.mp4", pts=[i * 1000 for i in range(6)], audio=None, size=(320, 240))
    warnings: list[str] = []
    reader = VideoReader(src, warn=warnings.append, hwaccel="cuda", hwaccel_device=torch.cuda.device_count() - 1)
    try:
        assert reader.hwaccel_active, warnings
        assert len([p for p in reader.read() if hasattr(p, "planes")]) == 6
    finally:
        reader.close()
