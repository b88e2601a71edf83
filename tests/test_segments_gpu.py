"""Segments on a GPU (`--resume` in this process, `--ray` GPU tasks; issue 24, defect 1), proven on the CPU.

A segment is the streaming path's work: warm-up before its part is opened, then decode, SR and encode in their own
threads, on CUDA through `vsr.engine.gpu.GpuFrames` with every slot in flight (here on the simulated GPU of
tests/fake_cuda.py, as tests/test_gpu_timeline.py runs the streaming path), and under `--backend auto` a backend
that fails at its warm-up or its first frame hands over (tensorrt -> compile -> eager) with a one-line notice.

The failing backends raise what the libraries raise:
- TensorRT: an engine that cannot be built ends torch-tensorrt's build in `assert serialized_engine` (2.8.0,
  torch_tensorrt/dynamo/conversion/_TRTInterpreter.py:739-742, `builder.build_serialized_network` returning None),
  which vsr's own `TensorRTUpscaler._build` (run here, against tests/test_trt_versions.py's fake of the 2.8 family)
  turns into `BackendError`. The build runs at the first window of a shape, i.e. at the warm-up or the first frame.
- torch.compile: Dynamo compiles at the first call and wraps what the compiler raised in `BackendCompilerFailed`
  (torch/_dynamo/exc.py; Inductor's `InductorError` is a subclass), a `RuntimeError`.
"""

from __future__ import annotations

import contextlib
import threading
import types

import av
import numpy as np
import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.engine.chain import FallbackUpscaler
from vsr.engine.gpu import GpuFrames
from vsr.errors import BackendError
from vsr.media.writer import EncoderOptions
from vsr.scaleout.parts import encode_segment
from vsr.scaleout.segments import plan, probe

from .fake_cuda import FakeCuda
from .test_model import make_model
from .test_segments import VFR
from .test_video import make_clip, names

FFV1 = EncoderOptions(codec="ffv1")
CHAIN = ("tensorrt", "compile", "eager")


# ---------------------------------------------------------------- the simulated GPU and the failing backends


class _Counting(GpuFrames):
    """GpuFrames counting the frames in flight (submitted, result not yet taken) and when each result was taken."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = self.most = 0
        self.done_at: list[float] = []

    def submit(self, planes):
        ticket = super().submit(planes)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        return ticket

    def result(self, slot):
        out = super().result(slot)
        self.in_flight -= 1
        self.done_at.append(self.rt.now)
        return out


def _simulated_gpu(monkeypatch, seconds: float = 1.0) -> list:
    """Route the pipeline's CUDA branch (segments included) to `_Counting` on a FakeCuda whose engines take `seconds`
    per frame each; returns the list of (fake, GpuFrames) made, one per segment."""
    from vsr.pipeline import video

    made: list = []

    def gpu_frames(run, first):
        in_shapes = tuple(p.shape for p in first.planes)
        size = first.planes[0].dtype.itemsize
        frame_bytes = {"h2d": sum(h * w for h, w in in_shapes) * size, "d2h": sum(h * w for h, w in run.shapes) * size}
        durations = {"h2d": seconds, "kernel": seconds, "d2h": seconds}
        fake = FakeCuda(durations=durations, frame_bytes=frame_bytes, host_s=0.001)
        gpu = _Counting(run.upscaler, run.scale, run.peak, in_shapes, run.shapes, first.planes[0].dtype, runtime=fake)
        made.append((fake, gpu))
        return gpu

    monkeypatch.setattr(video._Run, "_uses_gpu", lambda run: True)
    monkeypatch.setattr(video._Run, "_gpu_frames", gpu_frames)
    return made


def _trt_build_failure(model) -> BackendError:
    """What `TensorRTUpscaler` raises when TensorRT cannot build an engine: its own `_build`, run against the fake
    torch-tensorrt 2.8 of tests/test_trt_versions.py (which checks the call), whose builder then fails as 2.8.0's
    does (`assert serialized_engine`, _TRTInterpreter.py:742)."""
    from vsr.engine.tensorrt import TensorRTUpscaler

    from .test_trt_versions import fake_torch_tensorrt

    tt = fake_torch_tensorrt("2.8")
    checked = tt.compile

    def compile(*args, **kwargs):  # noqa: A001 - torch_tensorrt.compile
        checked(*args, **kwargs)  # the arguments pass the 2.8 family's rules
        raise AssertionError  # `assert serialized_engine`: build_serialized_network returned None

    tt.compile = compile
    stand_in = types.SimpleNamespace(_tt=tt, model=model, precision="fp32", device=torch.device("cuda", 0))
    example = torch.zeros(1, 1, 20, 24)
    with _no_cuda_device():
        try:
            TensorRTUpscaler._build(stand_in, (1, 1, 20, 24), example, None)
        except BackendError as exc:
            return exc
    raise AssertionError("TensorRTUpscaler._build did not fail")


@contextlib.contextmanager
def _no_cuda_device():
    """`torch.cuda.device(...)` as a no-op: there is no GPU here."""
    saved = torch.cuda.device
    torch.cuda.device = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.cuda.device = saved


def _compile_failure() -> RuntimeError:
    """What torch.compile raises when Inductor fails at the first call (torch/_dynamo/exc.py)."""
    from torch._dynamo.exc import BackendCompilerFailed

    inner = RuntimeError("CppCompileError: C++ compile error")
    try:
        return BackendCompilerFailed(_compile_failure, inner, None)
    except TypeError:  # torch before first_useful_frame
        return BackendCompilerFailed(_compile_failure, inner)


class _Backend(Upscaler):
    """A tensorrt or compile backend on the CPU that fails as the real one does: at `where` "warm-up" on every call
    (the warm-up is the first), at "first frame" on calls in the SR stage's thread (a backend that passes the
    warm-up in the caller's thread and fails on the frames, as on GpuFrames' compute stream), or never (None)."""

    def __init__(self, backend: str, model, where: str | None):
        super().__init__(model, "cpu")
        self.backend, self.where = backend, where

    def _run_valid(self, window):
        if self.where == "warm-up" or (self.where == "first frame" and threading.current_thread().name == "vsr-sr"):
            raise _trt_build_failure(self.model) if self.backend == "tensorrt" else _compile_failure()
        return super()._run_valid(window)


def _chain(monkeypatch, failures: dict, notices: list, order=CHAIN) -> FallbackUpscaler:
    """`--backend auto` on the CPU with tensorrt and compile replaced by `_Backend`s failing as `failures` says."""
    import vsr.engine.chain

    def build(backend, model, dev, precision, tile, notice):
        if backend == "eager":
            return Upscaler(model, dev, precision, tile, notice=notice)
        return _Backend(backend, model, failures.get(backend))

    monkeypatch.setattr(vsr.engine.chain, "_build", build)
    return FallbackUpscaler(order, _model(), torch.device("cpu"), "fp32", None, notices.append)


def _model():
    return make_model("9-1-5")


def _decoded(path):
    with av.open(str(path)) as c:
        return [(f.pts, [bytes(p) for p in f.planes]) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """72 VFR frames of FFV1 4:2:0 with audio, cut into 0.6 s segments (four)."""
    src = make_clip(tmp_path_factory.mktemp("segments-gpu") / "in.mkv", pts=VFR, codec="ffv1")
    segments = plan(probe(src), 0.6)
    assert len(segments) >= 3
    return src, segments


def _cpu_parts(tmp_path, src, segments, suffix=".mkv"):
    """The parts as the CPU path encodes them (eager fp32 of `_model()`), decoded."""
    out = []
    for s in segments:
        part = tmp_path / f"cpu{s.index}{suffix}"
        encode_segment(src, s, part, 2, Upscaler(_model(), "cpu"), FFV1)
        out.append(_decoded(part))
    return out


# ---------------------------------------------------------------- GpuFrames, every slot in flight


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le"])
def test_a_cuda_segment_goes_through_gpu_frames_with_every_slot_in_flight_and_gives_the_cpu_bytes(tmp_path, monkeypatch, pix_fmt):
    src = make_clip(tmp_path / "in.mkv", pts=VFR, codec="ffv1", pix_fmt=pix_fmt)
    segments = plan(probe(src), 0.6)
    want = _cpu_parts(tmp_path, src, segments)
    made = _simulated_gpu(monkeypatch, seconds=1.0)
    for s, reference in zip(segments, want, strict=True):
        part = tmp_path / f"gpu{s.index}.mkv"
        assert encode_segment(src, s, part, 2, Upscaler(_model(), "cpu"), FFV1) == s.frames
        assert _decoded(part) == reference  # same planes, same timestamps
    assert len(made) == len(segments), "a segment did not go through GpuFrames"
    for (fake, gpu), s in zip(made, segments, strict=True):
        assert not fake.errors, fake.errors
        assert fake.idle() and not any(slot.busy for slot in gpu.slots)
        assert gpu.most == len(gpu.slots) == 3, f"{gpu.most} frame(s) in flight at most"
        # upload, compute and download 1 s each: with every slot in flight a frame takes max (1 s), not the sum (3 s)
        per_frame = (gpu.done_at[-1] - gpu.done_at[0]) / (s.frames - 1)
        assert per_frame < 1.1, f"{per_frame:.2f} s per frame"


def test_the_segment_stages_run_in_their_own_threads_and_do_not_touch_the_signal_state(tmp_path, monkeypatch, clip):
    """Decode, SR and encode overlap (three threads); the segment's own thread (InProcessWorkers') is not the main
    thread, so it must not hold vsr.signals' state (`held()`), which the main thread's handler uses."""
    import vsr.pipeline.stages as stages

    src, segments = clip
    threads: set[str] = set()
    upscaler = Upscaler(_model(), "cpu")
    inner = upscaler._call

    def call(y):
        threads.add(threading.current_thread().name)
        return inner(y)

    monkeypatch.setattr(upscaler, "_call", call)
    held: list[str] = []
    real_held = stages.held

    def recording_held():
        held.append(threading.current_thread().name)
        return real_held()

    monkeypatch.setattr(stages, "held", recording_held)
    worker = threading.Thread(
        target=encode_segment, args=(src, segments[1], tmp_path / "p.mkv", 2, upscaler, FFV1), name="vsr-segment"
    )
    worker.start()
    worker.join(60)
    assert threads == {"vsr-sr"}
    assert held == []
    assert (tmp_path / "p.mkv").is_file()


# ---------------------------------------------------------------- warm-up before the part, and hand-over


def test_the_upscaler_is_warmed_up_on_the_output_size_before_the_part_is_opened(tmp_path, monkeypatch, clip):
    import vsr.scaleout.parts as parts

    src, segments = clip
    events: list = []
    upscaler = Upscaler(_model(), "cpu")
    upscaler.warm_up = lambda h, w: events.append(("warm_up", h, w))
    real = parts.VideoWriter

    def writer(path, *args, **kwargs):
        events.append(("open", path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(parts, "VideoWriter", writer)
    encode_segment(src, segments[0], tmp_path / "p.mkv", 2, upscaler, FFV1)
    assert events == [("warm_up", 96, 128), ("open", tmp_path / "p.mkv")]


def test_a_named_backend_failing_at_its_warm_up_is_one_error_and_opens_no_part(tmp_path, monkeypatch, clip):
    src, segments = clip
    backend = _Backend("compile", _model(), "warm-up")
    with pytest.raises(BackendError, match=r"^the compile backend failed on a 128x96 frame \(BackendCompilerFailed: "):
        encode_segment(src, segments[0], tmp_path / "p.mkv", 2, backend, FFV1)
    assert names(tmp_path) == set()


@pytest.mark.parametrize(
    "failures",
    [
        {"tensorrt": "warm-up"},
        {"tensorrt": "first frame"},
        {"tensorrt": "warm-up", "compile": "first frame"},
        {"tensorrt": "first frame", "compile": "warm-up"},
        {"tensorrt": "first frame", "compile": "first frame"},
    ],
    ids=lambda f: ", ".join(f"{k} at {v}" for k, v in f.items()),
)
def test_a_backend_failing_at_warm_up_or_first_frame_hands_over_on_the_gpu(tmp_path, monkeypatch, clip, failures):
    """`--backend auto` in a segment on the (simulated) GPU: each failing backend hands over with one notice line, the
    run goes on, and the parts equal the CPU's (the chain ends in eager fp32 here)."""
    src, segments = clip
    want = _cpu_parts(tmp_path, src, segments[:2])
    made = _simulated_gpu(monkeypatch, seconds=0.01)
    notices: list[str] = []
    up = _chain(monkeypatch, failures, notices)
    for s, reference in zip(segments[:2], want, strict=True):
        part = tmp_path / f"gpu{s.index}.mkv"
        encode_segment(src, s, part, 2, up, FFV1)
        assert _decoded(part) == reference
    assert len(made) == 2 and not any(fake.errors for fake, _ in made)
    assert up.backend == ("eager" if "compile" in failures else "compile")
    assert len(notices) == len(failures) and all("\n" not in n for n in notices), notices
    assert notices[0].startswith("TensorRT could not build an engine (AssertionError: ")
    assert notices[0].endswith("); trying the compile backend")
    if "compile" in failures:
        assert notices[1].startswith("the compile backend failed on a 128x96 frame (BackendCompilerFailed: ")
        assert notices[1].endswith("); trying the eager backend")


def test_resume_in_this_process_with_tensorrt_failing_at_the_first_frame_finishes_the_run(tmp_path, monkeypatch, clip):
    """The whole `--resume` path (`InProcessWorkers`, the CLI's own upscaler): a TensorRT build failure at the first
    frame of the first segment is a notice and the compile backend finishes the output, which equals the streaming
    path's on the CPU."""
    from vsr.pipeline.video import upscale_video
    from vsr.scaleout.run import InProcessWorkers, spec_for, upscale_segmented

    src, _ = clip
    upscale_video(src, tmp_path / "reference.mkv", 2, Upscaler(_model(), "cpu"), codec="ffv1")
    _simulated_gpu(monkeypatch, seconds=0.01)
    notices: list[str] = []
    up = _chain(monkeypatch, {"tensorrt": "first frame"}, notices)
    workers = lambda: InProcessWorkers(up, spec_for(up, 1, cpu_only=False))  # noqa: E731
    (summary,) = upscale_segmented(
        [(src, tmp_path / "out.mkv")], 2, workers, upscaler=up, enc=FFV1, seconds=0.6, resume=True, notice=notices.append
    )
    assert summary.frames == len(VFR)
    assert _decoded(tmp_path / "out.mkv") == _decoded(tmp_path / "reference.mkv")
    handed = [n for n in notices if "trying the" in n]
    assert len(handed) == 1 and handed[0].startswith("TensorRT could not build an engine"), notices
    assert up.backend == "compile"


def test_a_gpu_worker_built_from_a_spec_warms_up_and_hands_over(tmp_path, monkeypatch, clip):
    """What a Ray GPU task runs (`vsr.scaleout.raytasks._ray_segment`: `build_upscaler` then `run_task`): the upscaler
    is `make_upscaler`'s chain, warmed up in the task, and its hand-over notice comes back with the task's warnings."""
    import dataclasses

    import vsr.engine.chain
    from vsr.scaleout.run import SegmentTask, build_upscaler, run_task, spec_for

    src, segments = clip
    _simulated_gpu(monkeypatch, seconds=0.01)
    asked: list = []

    def make_upscaler(model, backend, device, precision, notice):
        asked.append((backend, device))
        return _chain(monkeypatch, {"tensorrt": "warm-up"}, types.SimpleNamespace(append=notice))

    monkeypatch.setattr(vsr.engine.chain, "make_upscaler", make_upscaler)
    spec = dataclasses.replace(spec_for(Upscaler(_model(), "cpu"), 1, cpu_only=False), device="cuda", backend="auto")
    notices: list[str] = []
    threads = torch.get_num_threads()
    try:
        up = build_upscaler(spec, notice=notices.append)
    finally:
        torch.set_num_threads(threads)
    assert asked == [("auto", "cuda")] and notices == []
    task = SegmentTask(str(src), segments[0], str(tmp_path / "p.mkv"), 2, FFV1, None, "out.mkv")
    frames, _ = run_task(task, up)
    assert frames == segments[0].frames and up.backend == "compile"
    assert len(notices) == 1 and notices[0].endswith("; trying the compile backend")


def test_in_process_gpu_segments_name_the_auto_chain_not_the_backend_it_starts_with():
    """A work folder's engine names what computed its parts: under --backend auto the first backend may hand over in
    the first segment, so the folder says "auto" (as a Ray GPU task's `WorkerSpec.engine` does)."""
    from vsr.scaleout.run import InProcessWorkers, WorkerSpec

    up = object.__new__(FallbackUpscaler)
    up.current = types.SimpleNamespace(device=torch.device("cuda", 0), precision="fp16", backend="tensorrt")
    spec = WorkerSpec(b"w", "9-1-5", 64, 32, ensemble=False, threads=1)
    workers = InProcessWorkers(up, spec)
    try:
        assert workers.engine == "cuda-fp16-auto" == WorkerSpec(b"w", "9-1-5", 64, 32, False, 0, "cuda", "auto").engine
    finally:
        workers.close()


# ---------------------------------------------------------------- FallbackUpscaler.__call__ on its own


def test_the_chain_hands_over_at_the_first_call_without_a_warm_up(monkeypatch):
    notices: list[str] = []
    up = _chain(monkeypatch, {"tensorrt": "warm-up", "compile": "warm-up"}, notices)
    y = torch.rand(1, 1, 20, 24)
    with torch.inference_mode():  # as GpuFrames calls it
        out = up(y)
    assert up.backend == "eager" and torch.equal(out, Upscaler(_model(), "cpu")(y))
    assert len(notices) == 2
    assert notices[0].startswith("TensorRT could not build an engine (AssertionError: ")
    assert notices[0].endswith("); trying the compile backend") and "use --backend" not in notices[0]
    assert notices[1] == (
        "the compile backend failed on a 24x20 frame (BackendCompilerFailed: backend='_compile_failure' raised:); "
        "trying the eager backend"
    )
    assert not up.current.model.conv1.weight.is_inference()  # built as at the start, not as an inference tensor


def test_once_a_backend_has_given_a_frame_it_stays_and_its_failures_are_raised(monkeypatch):
    notices: list[str] = []
    up = _chain(monkeypatch, {}, notices)
    y = torch.rand(1, 1, 20, 24)
    up(y)
    assert up.backend == "tensorrt"
    up.current.where = "warm-up"  # fails from now on
    with pytest.raises(BackendError, match="TensorRT could not build an engine"):
        up(y)
    assert up.backend == "tensorrt" and notices == []


def test_the_last_backend_failing_at_its_first_call_raises_its_own_error(monkeypatch):
    """The SR stage maps a CUDA error to one line itself (`vsr.engine.gpu.gpu_failure`): it must get it as it is."""
    notices: list[str] = []
    up = _chain(monkeypatch, {"compile": "first frame"}, notices, order=("compile",))
    failure: list = []
    thread = threading.Thread(target=lambda: failure.append(_raised(up, torch.rand(1, 1, 20, 24))), name="vsr-sr")
    thread.start()
    thread.join(30)
    assert len(failure) == 1 and type(failure[0]).__name__ == "BackendCompilerFailed" and notices == []


def _raised(up, y):
    try:
        up(y)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_the_simulated_gpu_is_really_used(tmp_path, monkeypatch, clip):
    """Guard for the tests above: without the simulated GPU a segment runs `upscale_planes` (the CPU branch)."""
    import vsr.pipeline.video as video

    src, segments = clip
    calls: list = []
    real = video.upscale_planes
    monkeypatch.setattr(video, "upscale_planes", lambda *a, **k: calls.append(1) or real(*a, **k))
    encode_segment(src, segments[0], tmp_path / "cpu.mkv", 2, Upscaler(_model(), "cpu"), FFV1)
    assert len(calls) == segments[0].frames
    calls.clear()
    _simulated_gpu(monkeypatch, seconds=0.01)
    encode_segment(src, segments[0], tmp_path / "gpu.mkv", 2, Upscaler(_model(), "cpu"), FFV1)
    assert calls == []
    assert np.all([p.is_file() for p in (tmp_path / "cpu.mkv", tmp_path / "gpu.mkv")])
