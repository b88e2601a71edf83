"""`vsr.engine.gpu.GpuFrames` on a simulated GPU (tests/fake_cuda.py): copies overlap compute, nothing is reused early.

What it submits (copies, kernels, event records and waits, per stream) is scheduled on three engines (H2D
copy, compute, D2H copy) with given durations; the steady-state time per frame must be max(upload, compute,
download), not their sum. The data moves for real on the CPU, so the planes must also equal the CPU path's.
The fake runs `CudaRuntime`'s own methods and checks what they ask torch for (pinned host buffers, buffers and
streams on the runtime's GPU, the caching allocator's per-stream reuse, no host round trip mid-frame).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.engine.gpu import GpuFrames
from vsr.errors import BackendError
from vsr.model.srcnn import SRCNN, SRCNNConfig
from vsr.pipeline.video import upscale_planes

from .fake_cuda import FakeCuda

SCALE, H, W = 2, 12, 16
IN_SHAPES = ((H, W), (H // 2, W // 2), (H // 2, W // 2))
OUT_SHAPES = ((H * SCALE, W * SCALE), (H, W), (H, W))
FRAMES = 30


class _OnComputeStream:
    """The upscaler, checking that it is called with the compute stream current (its kernels go there)."""

    def __init__(self, inner: Upscaler, fake: FakeCuda):
        self.inner, self.fake, self.device = inner, fake, inner.device
        self.stream = None

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        assert self.fake.current is not None and self.fake.current is self.stream, "model run off the compute stream"
        return self.inner(y)


def _frames(dtype, peak, in_shapes=IN_SHAPES):
    rng = np.random.default_rng(7)
    return [tuple(rng.integers(0, peak + 1, s).astype(dtype) for s in in_shapes) for _ in range(FRAMES)]


def _run(durations: dict[str, float], dtype=np.uint8, peak=255, alpha=False):
    """Drive GpuFrames as the pipeline does (a FIFO of tickets; the oldest result is taken when every slot is
    in flight). Returns (fake, per-frame completion times, outputs, inputs, upscaler)."""
    in_shapes = (*IN_SHAPES, IN_SHAPES[0]) if alpha else IN_SHAPES
    out_shapes = (*OUT_SHAPES, OUT_SHAPES[0]) if alpha else OUT_SHAPES
    itemsize = np.dtype(dtype).itemsize
    frame_bytes = {
        "h2d": sum(h * w for h, w in in_shapes) * itemsize,
        "d2h": sum(h * w for h, w in out_shapes) * itemsize,
    }
    fake = FakeCuda(durations=durations, frame_bytes=frame_bytes, host_s=0.001, device=torch.device("cuda", 1))
    fake.queue_default(5.0)  # the weight casts and the warm-up, on the default stream, may still run
    torch.manual_seed(0)
    model = SRCNN(SRCNNConfig.from_arch("9-1-5"))
    upscaler = _OnComputeStream(Upscaler(model, "cpu"), fake)
    gpu = GpuFrames(upscaler, SCALE, peak, in_shapes, out_shapes, np.dtype(dtype), runtime=fake)  # the default slot count
    upscaler.stream = gpu.compute_stream
    frames = _frames(dtype, peak, in_shapes)
    pending: deque = deque()
    outputs, done_at = [], []

    def take_oldest():
        slot = pending.popleft()
        outputs.append(gpu.result(slot))
        done_at.append(fake.now)

    for planes in frames:
        if len(pending) == len(gpu.slots):
            take_oldest()
        pending.append(gpu.submit(planes))
    while pending:
        take_oldest()
    return fake, done_at, outputs, frames, upscaler


@pytest.mark.parametrize(
    "durations",
    [
        {"h2d": 1.0, "kernel": 1.0, "d2h": 1.0},  # balanced: the sum would be 3x the goal
        {"h2d": 1.0, "kernel": 3.0, "d2h": 1.0},  # compute-bound
        {"h2d": 2.0, "kernel": 1.0, "d2h": 0.5},  # upload-bound
        {"h2d": 0.5, "kernel": 1.0, "d2h": 2.0},  # download-bound
    ],
    ids=["balanced", "compute", "upload", "download"],
)
def test_steady_state_time_per_frame_is_the_slowest_engine_not_the_sum(durations):
    fake, done_at, _, _, _ = _run(durations)
    assert not fake.errors, fake.errors
    per_frame = (done_at[-1] - done_at[-11]) / 10
    goal = max(durations.values())
    assert per_frame <= goal * 1.03 + 0.02, f"{per_frame:.3f} s per frame; the slowest engine takes {goal} s"
    assert per_frame >= goal * 0.999  # the simulation is not cheating either


def test_each_engine_is_busy_with_one_frame_while_the_others_work_on_neighbours():
    fake, _, _, _, _ = _run({"h2d": 1.0, "kernel": 1.0, "d2h": 1.0})
    uploads = [op for op in fake.ops if op.kind == "h2d"]
    kernels = [op for op in fake.ops if op.kind == "kernel"]
    downloads = [op for op in fake.ops if op.kind == "d2h"]
    assert len({op.stream for op in uploads}) == 1 and len({op.stream for op in downloads}) == 1
    assert {op.stream for op in uploads} != {op.stream for op in downloads}, "one stream carries both directions"
    assert {op.stream for op in kernels}.isdisjoint({op.stream for op in uploads + downloads})
    # In the steady state some upload runs while a kernel runs, and some download while a kernel runs.
    overlap = lambda a, b: a.start < b.end and b.start < a.end  # noqa: E731
    assert any(overlap(u, k) for u in uploads[-12:] for k in kernels[-4:])
    assert any(overlap(d, k) for d in downloads[-12:] for k in kernels[-4:])


@pytest.mark.parametrize(
    "dtype, peak, alpha",
    [(np.uint8, 255, False), (np.uint16, 1023, False), (np.uint16, 4095, True), (np.uint16, 65535, False), (np.uint8, 255, True)],
)  # 16-bit values travel as int16 bits: above 32767 they read back negative unless mapped back
def test_planes_equal_the_cpu_path_and_waits_sleep(dtype, peak, alpha):
    fake, _, outputs, frames, upscaler = _run({"h2d": 1.0, "kernel": 1.0, "d2h": 1.0}, dtype, peak, alpha)
    assert not fake.errors, fake.errors  # includes: every host wait was on a blocking event
    assert len(outputs) == FRAMES
    out_shapes = (*OUT_SHAPES, OUT_SHAPES[0]) if alpha else OUT_SHAPES
    for got, planes in zip(outputs, frames, strict=True):
        want = upscale_planes(planes, SCALE, upscaler.inner, peak, out_shapes)
        assert len(got) == len(want) == len(planes)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and np.array_equal(g, w)


def test_more_tickets_than_slots_is_refused():
    fake = FakeCuda(durations={"h2d": 1.0, "kernel": 1.0, "d2h": 1.0}, frame_bytes={"h2d": 1, "d2h": 1})
    model = SRCNN(SRCNNConfig.from_arch("9-1-5"))
    gpu = GpuFrames(Upscaler(model, "cpu"), SCALE, 255, IN_SHAPES, OUT_SHAPES, slots=2, runtime=fake)
    planes = _frames(np.uint8, 255)[0]
    gpu.submit(planes)
    gpu.submit(planes)
    with pytest.raises(RuntimeError, match="every slot is in flight"):
        gpu.submit(planes)


def test_the_fake_catches_a_slot_reused_too_early():
    # The fake's own hazard check can fail: read a host buffer before its download has finished.
    fake = FakeCuda(durations={"h2d": 1.0, "kernel": 1.0, "d2h": 1.0}, frame_bytes={"h2d": 4, "d2h": 4})
    host, dev, s = fake.host_buffer((2,), torch.int16), fake.device_buffer((2,), torch.int16), fake.stream()
    fake.copy(host, dev, s)
    fake.read(host)
    assert any("before its download ended" in e for e in fake.errors)
    fake.copy(host, dev, s)
    fake.copy(host, dev, s)
    assert any("before the host read it" in e for e in fake.errors)
    fake.copy(dev, host, s)
    fake.write(host, np.zeros(2, np.int16))
    assert any("while a copy from it runs" in e for e in fake.errors)


# ---------------------------------------------------------------- the pipeline's GPU loop on the simulated GPU

GPU = torch.device("cuda", 1)  # not the default device: what names no index lands elsewhere


class _OnGpu:
    """A CPU upscaler that says it runs on cuda:1, so the pipeline takes its CUDA branch (on a simulated GPU)."""

    def __init__(self, inner, call=None):
        self.inner, self.device = inner, GPU
        self.call = call or inner

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.call(y)


def _simulated_gpu(monkeypatch, made: list, seconds: float = 0.0) -> list:
    """Run `vsr.pipeline`'s CUDA branch on a FakeCuda (each engine `seconds` per frame, after 2 s of warm-up still
    queued on the default stream): `vsr.engine.gpu.CudaRuntime` is replaced, the stage's own `_gpu_frames` runs.
    Returns the (thread name, device) of each `torch.cuda.set_device` call."""
    import threading

    import vsr.engine.gpu
    from vsr.pipeline.gpu_stage import GpuStage

    set_devices: list = []

    def runtime(device):
        made.append(FakeCuda(durations={"h2d": seconds, "kernel": seconds, "d2h": seconds}, device=device))
        made[-1].queue_default(2.0)
        return made[-1]

    real = GpuStage._gpu_frames

    def gpu_frames(run, first):
        gpu = real(run, first)
        itemsize = first.planes[0].dtype.itemsize  # copies take their share of a frame's time, by bytes
        gpu.rt.frame_bytes = {"h2d": sum(p.nbytes for p in first.planes), "d2h": sum(h * w for h, w in run.shapes) * itemsize}
        return gpu

    monkeypatch.setattr(vsr.engine.gpu, "CudaRuntime", runtime)
    monkeypatch.setattr(GpuStage, "_gpu_frames", gpu_frames)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: set_devices.append((threading.current_thread().name, device)))
    return set_devices


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuva420p", "yuv444p16le"])
def test_pipeline_gpu_loop_gives_the_cpu_output(tmp_path, monkeypatch, pix_fmt):
    from vsr.pipeline.video import upscale_video

    from .test_video import VFR_MS, frames_of, make_clip, packets_of, tiny_upscaler

    src = make_clip(tmp_path / "in.mkv", codec="ffv1", pix_fmt=pix_fmt)
    cpu = tmp_path / "cpu.mkv"
    upscale_video(src, cpu, 2, tiny_upscaler(), codec="ffv1")
    made: list = []
    set_devices = _simulated_gpu(monkeypatch, made, seconds=0.5)
    gpu = tmp_path / "gpu.mkv"
    summary = upscale_video(src, gpu, 2, _OnGpu(tiny_upscaler()), codec="ffv1")
    assert len(made) == 1 and not made[0].errors, made[0].errors
    assert set_devices == [("vsr-sr", GPU)]  # the SR thread's current device, before any stream or buffer is made
    assert summary.frames == len(VFR_MS)
    a, b = frames_of(cpu), frames_of(gpu)
    assert [f.pts for f in a] == [f.pts for f in b]
    for fa, fb in zip(a, b, strict=True):
        for pa, pb in zip(fa.planes, fb.planes, strict=True):
            assert bytes(pa) == bytes(pb)
    assert packets_of(gpu, "audio") == packets_of(src, "audio")


def test_pipeline_keeps_every_slot_in_flight(tmp_path, monkeypatch):
    """Each engine takes 1 s a frame: with all three slots in flight a frame leaves every 1 s, with one every 3 s."""
    from vsr.pipeline.video import upscale_video

    from .test_video import make_clip, tiny_upscaler

    src = make_clip(tmp_path / "in.mkv", pts=list(range(0, 24 * 40, 40)), audio=None)
    made: list = []
    _simulated_gpu(monkeypatch, made, seconds=1.0)
    upscale_video(src, tmp_path / "out.mkv", 2, _OnGpu(tiny_upscaler()), codec="ffv1")
    fake = made[0]
    assert not fake.errors, fake.errors
    assert len(fake.synced_at) == 24
    per_frame = (fake.synced_at[-1] - fake.synced_at[-11]) / 10
    assert 0.999 <= per_frame <= 1.05, f"{per_frame:.3f} s per frame; each engine takes 1 s"


BACKEND_FAILED = "the tensorrt backend failed on a frame (AcceleratorError: CUDA error: an illegal memory access)"


def _failing(at: int, how: str, made: list):
    """An upscaler whose `at`-th call fails like a CUDA kernel: "raises" (an error, not sticky), "sticky" (an error
    every later CUDA call repeats), "later" (a sticky fault the model's own call does not report: the next CUDA
    call does, as with a kernel's illegal address), "backend" (a sticky fault the upscaler reports in words of
    its own, as `vsr.engine.chain` does when no backend is left)."""
    from .test_video import tiny_upscaler

    inner, calls = tiny_upscaler(), []

    def call(y):
        calls.append(1)
        if len(calls) == at:
            if how == "raises":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            error = made[-1].fault("CUDA error: an illegal memory access was encountered")
            if how == "sticky":
                raise error
            if how == "backend":
                raise BackendError(BACKEND_FAILED)
        return inner(y)

    return _OnGpu(inner, call)


@pytest.mark.parametrize("fail_at", [1, 5])
def test_pipeline_gpu_loop_failure_drains_and_leaves_nothing(tmp_path, monkeypatch, fail_at):
    from vsr.pipeline.video import upscale_video

    from .test_video import make_clip, names

    src = make_clip(tmp_path / "in.mkv", audio=None)
    made: list = []
    _simulated_gpu(monkeypatch, made, seconds=1.0)  # copies are in flight when the model fails
    with pytest.raises(BackendError, match=r"^the GPU failed \(RuntimeError: CUDA error: an illegal memory access"):
        upscale_video(src, tmp_path / "out.mkv", 2, _failing(fail_at, "raises", made))
    fake = made[0]
    assert fake.idle(), "buffers were let go while the GPU still used them"
    assert not fake.errors, fake.errors
    assert names(tmp_path) == {"in.mkv"}


@pytest.mark.parametrize("how", ["sticky", "later", "backend"])
@pytest.mark.parametrize("fail_at", [1, 5])
def test_pipeline_sticky_cuda_error_is_one_line_not_the_drains_traceback(tmp_path, monkeypatch, fail_at, how):
    """A sticky error makes the drain's waits fail too; the error reported stays the first one, as one line."""
    from vsr.pipeline.video import upscale_video

    from .test_video import make_clip, names

    src = make_clip(tmp_path / "in.mkv", audio=None)
    made: list = []
    _simulated_gpu(monkeypatch, made, seconds=1.0)
    with pytest.raises(BackendError) as error:
        upscale_video(src, tmp_path / "out.mkv", 2, _failing(fail_at, how, made))
    kind = "AcceleratorError" if hasattr(torch, "AcceleratorError") else "RuntimeError"
    gpu_failed = (
        f"the GPU failed ({kind}: CUDA error: an illegal memory access was encountered); try --backend eager, or --device cpu"
    )
    assert str(error.value) == (BACKEND_FAILED if how == "backend" else gpu_failed)
    assert error.value.exit_code == 5
    assert not made[0].errors, made[0].errors
    assert names(tmp_path) == {"in.mkv"}


def test_the_real_runtime_makes_the_calls_the_fake_stands_for(monkeypatch):
    """CudaRuntime (what runs on a GPU) against recording stand-ins for torch.cuda: the fake's semantics above
    are only worth something if each real method is the CUDA call the fake models."""
    from vsr.engine.gpu import STREAM_PRIORITY, CudaRuntime

    calls: list = []

    class Stream:
        def __init__(self, device=None, priority=0):
            calls.append(("Stream", device, priority))

        def wait_event(self, event):
            calls.append(("wait_event", event))

        def wait_stream(self, stream):
            calls.append(("wait_stream", stream))

        def synchronize(self):
            calls.append(("stream.synchronize",))

    class Event:
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            self.blocking = blocking

        def record(self, stream):
            calls.append(("record", stream))

        def synchronize(self):
            calls.append(("event.synchronize",))

    current: list = []

    class StreamContext:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            current.append(self.stream)

        def __exit__(self, *exc):
            current.pop()

    copies: list = []

    class Tensor(torch.Tensor):
        def copy_(self, src, non_blocking=False):
            copies.append((current[-1] if current else None, non_blocking))
            return super().copy_(src)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("current", device))
    rt = CudaRuntime(torch.device("cuda", 1))
    s, e = rt.stream(), rt.event()
    assert calls[-1] == ("Stream", torch.device("cuda", 1), STREAM_PRIORITY) and e.blocking
    rt.follow_current(s)
    assert calls.pop() == ("wait_stream", ("current", torch.device("cuda", 1)))
    dst = torch.zeros(3).as_subclass(Tensor)
    rt.copy(dst, torch.ones(3), s)
    assert copies == [(s, True)] and dst.sum().item() == 3  # queued on the given stream, asynchronously
    rt.record(e, s)
    rt.wait(s, e)
    rt.synchronize(e)
    rt.synchronize_stream(s)
    assert calls[1:] == [("record", s), ("wait_event", e), ("event.synchronize",), ("stream.synchronize",)]
    with rt.on(s):
        assert current == [s]
