"""Frames through a CUDA GPU with copies overlapped with compute: pinned host slots, three streams.

Contract:
- `GpuFrames(upscaler, scale, peak, in_shapes, out_shapes, dtype, slots=3)` super-resolves one video frame's
  planes (Y, U, V and, with alpha, A: uint8, or uint16 holding 10- to 16-bit values) exactly as
  `vsr.pipeline.video.upscale_planes` does (MATLAB bicubic of every plane on the GPU, SRCNN on Y, round, clip,
  chroma cropped to `out_shapes`), with only the integer planes crossing PCIe. uint16 planes travel as int16 (the
  same bits; values above 32767 read back as negative and are mapped back, `_as_float` / `_store`).
  `with_bicubic=True` adds a last output plane: the bicubic Y the model was given, rounded and clipped the same
  way (`vsr webcam`'s comparison).
- `submit(planes) -> ticket` copies the planes into the next pinned host slot and queues the upload on the
  upload stream, the resize + model on the compute stream (after the upload's event), and the download into
  that slot's pinned output on the download stream (after the compute's event). It returns at once.
  `result(ticket)` waits for that frame's download and returns numpy copies of its planes. At most `slots`
  tickets may be outstanding; `submit` raises `RuntimeError` beyond that (the caller keeps a FIFO and takes
  the oldest result first).
- Overlap: H2D and D2H copies run on the GPU's two copy engines, each on its own stream, so frame i+1's
  upload is never queued behind frame i's download (which waits for frame i's compute). With three slots the
  steady-state time per frame is max(upload, compute, download) plus the host's own per-frame work, not their
  sum (tests/test_gpu_timeline.py schedules what this class submits on a simulated GPU and checks it).
- No host slot is rewritten while a copy from it is in flight, and no device buffer is rewritten while a
  kernel or copy reads it: a slot is reused only after `result()` has waited for its download, which comes
  after its compute, which comes after its upload. Device buffers are persistent per slot, so the caching
  allocator never hands a buffer in use on one stream to another while this object lives, and nothing made on
  the compute stream is copied on another (no `record_stream` needed).
- Ordered after what came before: the device buffers are allocated on the thread's current stream (the default
  stream), where the weight casts and the warm-up ran; the caching allocator hands a block freed there to a new
  allocation at once, safe only for work on that same stream (torch/_tensor_docs.py, `record_stream`: "The
  caching allocator is aware of only the stream where a tensor was allocated"). The constructor therefore makes
  each of the three streams wait for everything queued so far on the current stream (`CudaRuntime.follow_current`:
  `Stream.wait_stream`, which records an event there and waits for it, torch/cuda/streams.py `wait_stream`).
- Errors: `drain()` waits for all three streams before the buffers go (after an error, too). A sticky CUDA error
  (an illegal address, a device-side assert) fails every later call of the process the same way, the drain's
  waits included: `drain(after_error=True)`, for a caller already reporting the first failure, drops such a
  second report, so the user sees one line (`gpu_failure`), not the drain's traceback.
- Waits sleep instead of spinning a CPU core (that core belongs to the decoder and the encoder): events are
  created with `blocking=True`, i.e. `cudaEventBlockingSync` (torch/csrc/cuda/Event.cpp, `THCPEvent_pynew`),
  so `Event.synchronize()` blocks the thread rather than polling.
- Streams: `torch.cuda.Stream(device, priority)` does not create a stream; it takes the next of 32 per device
  and priority level, round robin (c10/cuda/CUDAStream.h, "Stream pool note": the 33rd request returns the
  first stream again). torch-tensorrt 2.5 to 2.12 run each engine on a stream of its own, taken from the
  priority-0 pool at the engine's first call and kept (core/runtime/execute_engine.cpp, v2.8.0 lines 282-285:
  `getStreamFromPool(false, ...)` when its stream is still the default one; the caller's stream only waits for
  it, lines 299-300 and 330-331; the Python runtime likewise takes `torch.cuda.Stream()`,
  dynamo/runtime/_PythonTorchTensorRTModule.py v2.8.0 line 518); 2.4 runs on the caller's current stream
  (v2.4.0 line 208), 2.13 (and the 2.14 branch) on the caller's stream unless that is the default stream
  (v2.13.0 lines 265-276). Drawn from the same pool, after ten or so `GpuFrames` in one process (a folder of videos, `vsr
  bench`) one of these streams would be the engine's, and downloads or uploads would queue behind the model.
  So the streams come from the priority -1 level (`STREAM_PRIORITY`), which torch-tensorrt never draws from
  (`getStreamFromPool(false)` and `torch.cuda.Stream()` are priority 0; c10/cuda/CUDAStream.cpp
  `getStreamFromPool`: one pool per level, `-priority` clamped to the levels the GPU has, at least two:
  CUDAStream.h `priority_range` asserts a greatest priority <= -1; so since torch 2.1, pytorch PR 101956, and
  before it a low (0) and a high (-1) pool). The priority itself changes no schedule
  here: it orders kernels competing for the SMs, and the compute stream and TensorRT's stream each wait for
  the other (copies run on copy engines, where stream priority does not apply).
- All CUDA calls go through a `CudaRuntime` (the real one, by default); a test passes a recording fake.
  The caller's thread must have `upscaler.device` as its current CUDA device (`torch.cuda.set_device`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vsr.errors import BackendError
from vsr.media.resize import imresize

STREAM_PRIORITY = -1  # a pool level torch-tensorrt never draws from (see the module contract, "Streams")


def gpu_failure(exc: RuntimeError) -> BackendError:
    """One line for a CUDA, cuDNN or TensorRT runtime error raised while frames were on the GPU (a traceback from
    the SR thread otherwise; the CLI prints a `VsrError` as one line)."""
    lines = str(exc).strip().splitlines()
    first = lines[0][:200] if lines else type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return BackendError(f"the GPU ran out of memory ({first}); close other programs on it, or use --device cpu")
    return BackendError(f"the GPU failed ({type(exc).__name__}: {first}); try --backend eager, or --device cpu")


def _torch_dtype(np_dtype: np.dtype) -> torch.dtype:
    return torch.uint8 if np_dtype == np.uint8 else torch.int16  # uint16's bits (torch's uint16 lacks most kernels)


def _as_float(plane: torch.Tensor) -> torch.Tensor:
    """The values of a uint8 plane, or of uint16 bits held in int16, as float32."""
    out = plane.float()
    if plane.dtype == torch.int16:
        out += (out < 0) * 65536.0
    return out


def _store(dst: torch.Tensor, values: torch.Tensor) -> None:
    """Write rounded, clipped values (0..peak) into a uint8 plane, or into int16 holding uint16 bits."""
    if dst.dtype == torch.int16:
        values = values - (values > 32767) * 65536.0
    dst.copy_(values)


class CudaRuntime:
    """The CUDA calls `GpuFrames` makes, on one device (a test substitutes a fake with the same methods)."""

    def __init__(self, device: torch.device):
        self.device = device

    def stream(self) -> torch.cuda.Stream:
        return torch.cuda.Stream(self.device, priority=STREAM_PRIORITY)

    def follow_current(self, stream: torch.cuda.Stream) -> None:
        """Order all later work on `stream` after the work queued so far on this thread's current stream."""
        stream.wait_stream(torch.cuda.current_stream(self.device))

    def event(self) -> torch.cuda.Event:
        return torch.cuda.Event(blocking=True)  # synchronize() sleeps (cudaEventBlockingSync), see the contract

    def on(self, stream: torch.cuda.Stream):
        """Context in which kernels are queued on `stream`."""
        return torch.cuda.stream(stream)

    def host_buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def device_buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)

    def write(self, host: torch.Tensor, array: np.ndarray) -> None:
        """Fill a pinned host buffer from the CPU."""
        host.numpy()[...] = array

    def read(self, host: torch.Tensor) -> np.ndarray:
        """A copy of a pinned host buffer, for the CPU."""
        return host.numpy().copy()

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: torch.cuda.Stream) -> None:
        """Queue `dst <- src` on `stream` (asynchronous: one side is pinned host memory)."""
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)

    def record(self, event: torch.cuda.Event, stream: torch.cuda.Stream) -> None:
        event.record(stream)

    def wait(self, stream: torch.cuda.Stream, event: torch.cuda.Event) -> None:
        stream.wait_event(event)

    def synchronize(self, event: torch.cuda.Event) -> None:
        event.synchronize()

    def synchronize_stream(self, stream: torch.cuda.Stream) -> None:
        stream.synchronize()


@dataclass
class _Slot:
    host_in: list[torch.Tensor]
    host_out: list[torch.Tensor]
    dev_in: list[torch.Tensor]
    dev_out: list[torch.Tensor]
    uploaded: object  # events
    computed: object
    downloaded: object
    busy: bool = False


class GpuFrames:
    """Overlapped GPU super-resolution of YUV planes (see the module contract)."""

    def __init__(
        self,
        upscaler,
        scale: float,
        peak: int,
        in_shapes: tuple[tuple[int, int], ...],
        out_shapes: tuple[tuple[int, int], ...],
        dtype: np.dtype = np.dtype(np.uint8),
        slots: int = 3,
        runtime: CudaRuntime | None = None,
        with_bicubic: bool = False,
    ):
        self.upscaler, self.scale, self.peak = upscaler, scale, peak
        self.device = upscaler.device
        self.out_shapes = out_shapes
        self.np_dtype = np.dtype(dtype)
        self.with_bicubic = with_bicubic
        if with_bicubic:
            out_shapes = (*out_shapes, out_shapes[0])
        rt = self.rt = runtime or CudaRuntime(self.device)
        tdtype = _torch_dtype(self.np_dtype)
        self.upload_stream, self.compute_stream, self.download_stream = rt.stream(), rt.stream(), rt.stream()
        self.slots = [
            _Slot(
                host_in=[rt.host_buffer(s, tdtype) for s in in_shapes],
                host_out=[rt.host_buffer(s, tdtype) for s in out_shapes],
                dev_in=[rt.device_buffer(s, tdtype) for s in in_shapes],
                dev_out=[rt.device_buffer(s, tdtype) for s in out_shapes],
                uploaded=rt.event(),
                computed=rt.event(),
                downloaded=rt.event(),
            )
            for _ in range(slots)
        ]
        for stream in (self.upload_stream, self.compute_stream, self.download_stream):
            rt.follow_current(stream)  # after the weight casts and warm-up, whose freed blocks the buffers may be
        self._next = 0

    @torch.inference_mode()
    def submit(self, planes: tuple[np.ndarray, ...]) -> _Slot:
        rt, slot = self.rt, self.slots[self._next]
        if slot.busy:
            raise RuntimeError("GpuFrames: every slot is in flight; call result() first")
        self._next = (self._next + 1) % len(self.slots)
        slot.busy = True
        for host, plane in zip(slot.host_in, planes, strict=True):
            rt.write(host, plane.view(np.int16) if plane.dtype == np.uint16 else plane)
        for dev, host in zip(slot.dev_in, slot.host_in, strict=True):
            rt.copy(dev, host, self.upload_stream)
        rt.record(slot.uploaded, self.upload_stream)
        rt.wait(self.compute_stream, slot.uploaded)
        with rt.on(self.compute_stream):
            self._compute(slot)
        rt.record(slot.computed, self.compute_stream)
        rt.wait(self.download_stream, slot.computed)
        for host, dev in zip(slot.host_out, slot.dev_out, strict=True):
            rt.copy(host, dev, self.download_stream)
        rt.record(slot.downloaded, self.download_stream)
        return slot

    def _compute(self, slot: _Slot) -> None:
        peak = self.peak
        y = _as_float(slot.dev_in[0]).div_(peak)
        y = imresize(y[None, None], self.scale)
        oh, ow = self.out_shapes[0]
        if self.with_bicubic:
            _store(slot.dev_out[-1], (y[0, 0, :oh, :ow] * peak).round_().clamp_(0, peak))
        y = self.upscaler(y)
        _store(slot.dev_out[0], y[0, 0, :oh, :ow].mul_(peak).round_().clamp_(0, peak))
        chroma = torch.stack([_as_float(p) for p in slot.dev_in[1:3]])
        chroma = imresize(chroma, self.scale)
        ch, cw = self.out_shapes[1]
        for dev, plane in zip(slot.dev_out[1:3], chroma, strict=True):
            _store(dev, plane[:ch, :cw].round_().clamp_(0, peak))
        if len(self.out_shapes) > 3:  # alpha: bicubic like chroma, at the luma size
            alpha = imresize(_as_float(slot.dev_in[3])[None], self.scale)[0]
            _store(slot.dev_out[3], alpha[:oh, :ow].round_().clamp_(0, peak))

    def drain(self, after_error: bool = False) -> None:
        """Wait until the GPU is done with every buffer (results in flight are dropped): call before the buffers
        go away. Whole streams, not the slots' events: a `submit` that failed half way (e.g. in the model) has
        queued an upload but recorded no download event to wait for. Every stream is waited for even if a wait
        fails; a failure is raised as `gpu_failure`, or dropped with `after_error` (see the module contract)."""
        failure = None
        for stream in (self.upload_stream, self.compute_stream, self.download_stream):
            try:
                self.rt.synchronize_stream(stream)
            except RuntimeError as exc:  # torch.AcceleratorError (torch 2.8+) is a RuntimeError
                failure = failure or exc
        for slot in self.slots:
            slot.busy = False
        if failure is not None and not after_error:
            raise gpu_failure(failure) from failure

    def result(self, slot: _Slot) -> tuple[np.ndarray, ...]:
        self.rt.synchronize(slot.downloaded)
        out = tuple(self.rt.read(h) for h in slot.host_out)
        slot.busy = False
        if self.np_dtype == np.uint16:
            out = tuple(p.view(np.uint16) for p in out)
        return out
