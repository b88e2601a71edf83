"""What `vsr.engine.gpu.GpuFrames` asks of CUDA, on the simulated GPU of tests/fake_cuda.py (which runs the real
`CudaRuntime` methods): its streams and the caching allocator, where each buffer lives, sticky errors, and that
the fake's own checks can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vsr.engine.gpu
from vsr.engine.base import Upscaler
from vsr.engine.gpu import STREAM_PRIORITY, GpuFrames
from vsr.errors import BackendError
from vsr.model.srcnn import SRCNN, SRCNNConfig

from .fake_cuda import FakeCuda, StreamPool

GPU = torch.device("cuda", 1)
SCALE, H, W = 2, 8, 12
IN_SHAPES = ((H, W), (H // 2, W // 2), (H // 2, W // 2))
OUT_SHAPES = ((H * SCALE, W * SCALE), (H, W), (H, W))
ONE_S = {"h2d": 1.0, "kernel": 1.0, "d2h": 1.0}


def _upscaler() -> Upscaler:
    torch.manual_seed(0)
    return Upscaler(SRCNN(SRCNNConfig.from_arch("9-1-5", n1=8, n2=4)), "cpu")


def _planes(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, s).astype(np.uint8) for s in IN_SHAPES)


def _gpu(fake: FakeCuda, upscaler=None) -> GpuFrames:
    return GpuFrames(upscaler or _upscaler(), SCALE, 255, IN_SHAPES, OUT_SHAPES, runtime=fake)


# ---------------------------------------------------------------- placement


def test_host_buffers_are_pinned_and_device_buffers_and_streams_are_on_the_runtimes_gpu():
    fake = FakeCuda(durations=ONE_S, device=GPU)
    gpu = _gpu(fake)
    gpu.result(gpu.submit(_planes()))
    assert not fake.errors, fake.errors
    host = [kwargs for kind, _, kwargs in fake.allocations if kind == "host"]
    device = [kwargs for kind, _, kwargs in fake.allocations if kind == "device"]
    assert len(host) == len(device) == 3 * (len(IN_SHAPES) + len(OUT_SHAPES))
    assert all(kwargs.get("pin_memory") is True and "device" not in kwargs for kwargs in host)
    assert all(torch.device(kwargs["device"]) == GPU for kwargs in device)
    assert [c for c in fake.calls if c[0] == "Stream"] == [("Stream", GPU, STREAM_PRIORITY)] * 3
    assert [c for c in fake.calls if c[0] == "current_stream"] == [("current_stream", GPU)] * 3


@pytest.mark.parametrize(
    "method, body, said",
    [
        ("host_buffer", "return torch.empty(shape, dtype=dtype)", "not pinned"),
        ("device_buffer", "return torch.empty(shape, dtype=dtype, device='cuda')", "names 'cuda'"),
        ("stream", "return torch.cuda.Stream(torch.device('cuda', 0), priority=-1)", "names device(type='cuda', index=0)"),
    ],
    ids=["unpinned", "bare-cuda", "other-gpu"],
)
def test_the_fake_refuses_unpinned_host_buffers_and_other_gpus(monkeypatch, method, body, said):
    namespace: dict = {"torch": torch}
    exec(f"def replaced(self, shape=None, dtype=None):\n    {body}", namespace)
    monkeypatch.setattr(vsr.engine.gpu.CudaRuntime, method, namespace["replaced"])
    fake = FakeCuda(durations=ONE_S, device=GPU)
    _gpu(fake)
    assert any(said in e for e in fake.errors), fake.errors


# ---------------------------------------------------------------- streams: ordering and the pool


def test_streams_wait_for_the_default_streams_work_before_touching_the_buffers():
    """The buffers may be blocks the warm-up freed on the default stream while its kernels still run there."""
    fake = FakeCuda(durations=ONE_S, device=GPU)
    fake.queue_default(5.0)  # weight casts and warm-up, still running
    gpu = _gpu(fake)
    gpu.result(gpu.submit(_planes()))
    assert not fake.errors, fake.errors
    assert min(op.start for op in fake.ops if op.stream != fake.default.name) >= 5.0


def test_the_fake_catches_a_stream_not_ordered_after_the_default_stream(monkeypatch):
    monkeypatch.setattr(FakeCuda, "follow_current", lambda self, stream: None)
    fake = FakeCuda(durations=ONE_S, device=GPU)
    fake.queue_default(5.0)
    gpu = _gpu(fake)
    gpu.result(gpu.submit(_planes()))
    assert any("is not ordered after" in e and "/default" in e for e in fake.errors), fake.errors


def test_the_pool_model_is_torchs_round_robin():
    pool = StreamPool()
    first = [pool.get(GPU, 0) for _ in range(StreamPool.PER_POOL)]
    assert len({id(s) for s in first}) == StreamPool.PER_POOL
    assert pool.get(GPU, 0) is first[0]  # the 33rd request: the first stream again (c10/cuda/CUDAStream.h)
    assert pool.get(GPU, -1) not in first and pool.get(torch.device("cuda", 0), 0) not in first


def _streams(gpu: GpuFrames) -> list:
    return [gpu.upload_stream, gpu.compute_stream, gpu.download_stream]


@pytest.mark.parametrize("engines_per_video", [0, 2], ids=["one-engine", "two-engines-a-video"])
def test_many_gpuframes_never_get_a_tensorrt_engines_stream(engines_per_video):
    """torch-tensorrt 2.5-2.12 keep a priority-0 pool stream per engine, taken at its first call (the warm-up); a
    folder of videos makes a GpuFrames each, and maybe new engines (other shapes). At priority 0 both cases collide
    (the 11th GpuFrames gets the engine's stream; with two engines a video, the 4th)."""
    pool = StreamPool()
    engines = [pool.tensorrt_engine_stream(GPU)]
    for _ in range(12):
        gpu = _gpu(FakeCuda(durations=ONE_S, device=GPU, pool=pool))
        assert len({id(s) for s in _streams(gpu)}) == 3
        assert not any(s is e for s in _streams(gpu) for e in engines)  # the engines in use while it runs
        engines += [pool.tensorrt_engine_stream(GPU) for _ in range(engines_per_video)]


def test_with_priority_0_the_streams_would_collide(monkeypatch):
    """The model can fail: at torch-tensorrt's pool level a later GpuFrames gets an engine's stream."""
    monkeypatch.setattr(vsr.engine.gpu, "STREAM_PRIORITY", 0)
    pool = StreamPool()
    engine = pool.tensorrt_engine_stream(GPU)
    made = [_gpu(FakeCuda(durations=ONE_S, device=GPU, pool=pool)) for _ in range(12)]
    assert any(s is engine for gpu in made for s in _streams(gpu))


# ---------------------------------------------------------------- errors


def test_a_sticky_error_fails_the_drain_as_one_line_or_not_at_all_after_an_error():
    fake = FakeCuda(durations=ONE_S, device=GPU)
    gpu = _gpu(fake)
    gpu.submit(_planes())
    fake.fault()
    with pytest.raises(BackendError, match=r"^the GPU failed \(\w+: CUDA error: an illegal memory access was encountered\)"):
        gpu.drain()
    assert not any(slot.busy for slot in gpu.slots)
    gpu.drain(after_error=True)  # the caller is reporting the first error: nothing raised


def test_drain_waits_for_every_stream_even_if_one_wait_fails(monkeypatch):
    fake = FakeCuda(durations=ONE_S, device=GPU)
    gpu = _gpu(fake)
    gpu.submit(_planes())
    waited = []
    real = FakeCuda.synchronize_stream

    def synchronize_stream(self, stream):
        waited.append(stream)
        if stream is gpu.upload_stream:
            raise RuntimeError("CUDA error: unspecified launch failure")
        real(self, stream)

    monkeypatch.setattr(FakeCuda, "synchronize_stream", synchronize_stream)
    with pytest.raises(BackendError, match="unspecified launch failure"):
        gpu.drain()
    assert waited == _streams(gpu)


# ---------------------------------------------------------------- the fake's other checks can fail


def test_the_fake_catches_a_host_round_trip_mid_frame():
    class Peeking:
        device = torch.device("cpu")

        def __init__(self):
            self.inner = _upscaler()

        def __call__(self, y):
            out = self.inner(y)
            float(out.max())  # a hidden .item(): the host waits for the model
            out.cpu()
            return out

    fake = FakeCuda(durations=ONE_S, device=GPU)
    gpu = _gpu(fake, Peeking())
    gpu.result(gpu.submit(_planes()))
    assert any("Tensor.__float__" in e for e in fake.errors) and any("Tensor.cpu" in e for e in fake.errors)


@pytest.mark.parametrize("recorded", [False, True])
def test_the_fake_catches_a_download_of_a_compute_temporary_without_record_stream(recorded):
    fake = FakeCuda(durations=ONE_S, device=GPU)
    compute, download = fake.stream(), fake.stream()
    dev = fake.device_buffer((4,), torch.uint8)
    host = fake.host_buffer((4,), torch.uint8)
    with fake.on(compute):
        temporary = dev + 1  # made by a kernel on the compute stream
    if recorded:
        temporary.record_stream(download)
    download.wait_stream(compute)
    fake.copy(host, temporary, download)
    said = [e for e in fake.errors if "without record_stream" in e]
    assert bool(said) != recorded, fake.errors


def test_the_fake_makes_the_runtime_read_a_copy_of_the_pinned_buffer():
    fake = FakeCuda(durations=ONE_S, device=GPU)
    host = fake.host_buffer((3,), torch.uint8)
    fake.write(host, np.arange(3, dtype=np.uint8))
    got = fake.read(host)
    fake.write(host, np.zeros(3, np.uint8))
    assert got.tolist() == [0, 1, 2]  # CudaRuntime.read: a copy, not a view the next download overwrites


def test_the_fake_catches_a_kernel_reading_an_upload_still_running(monkeypatch):
    """Without the compute stream's wait on the upload's event the model would read half-copied planes."""
    real = FakeCuda.wait
    monkeypatch.setattr(
        FakeCuda, "wait", lambda self, stream, event: None if stream is gpu.compute_stream else real(self, stream, event)
    )
    fake = FakeCuda(durations=ONE_S, device=GPU)
    gpu = _gpu(fake)
    gpu.result(gpu.submit(_planes()))
    assert any("a missing event wait" in e and "kernel" in e for e in fake.errors), fake.errors
