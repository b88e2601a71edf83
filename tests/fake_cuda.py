"""A recording stand-in for `vsr.engine.gpu.CudaRuntime` that schedules what it is given on a simulated GPU.

The GPU has three engines that work in parallel, as NVIDIA GPUs do: an H2D copy engine, the compute engine
(SMs) and a D2H copy engine. Each stream runs its work in order; an engine runs one piece of work at a time,
in the order it was queued. Every queued operation is timed when it is queued (the host's clock is known
then): it starts once the host has queued it, the previous work on its stream is done, the events its stream
waits for have fired and its engine is free, and it lasts the duration given for its kind. Host time moves
by `host_s` per call and by waits (`synchronize`).

CUDA's rules the fake enforces (each one a failure, not a silent pass):
- `wait` on an event never recorded is a no-op in CUDA (cudaStreamWaitEvent), i.e. a missing dependency:
  refused here.
- Events must be blocking (`cudaEventBlockingSync`), so that a host wait sleeps instead of spinning.
- A host buffer must be pinned memory for `non_blocking` copies to be asynchronous: only buffers made by
  `host_buffer` may be copied to or from the device.
- The host does not rewrite a host buffer (`write`) while a copy from it may still be in flight, does not
  read one (`read`) before the copy into it has finished, and no device-to-host copy into a host buffer is
  queued before the host has read its previous contents.

Data moves for real (CPU tensors), at once, so results can be compared with the CPU path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from unittest import mock

import torch

from vsr.engine.gpu import CudaRuntime


@dataclass
class Stream:
    name: str
    tail: float = 0.0  # when the last queued work on it finishes


@dataclass
class Event:
    enable_timing: bool = False  # torch.cuda.Event's arguments and defaults (torch/cuda/streams.py)
    blocking: bool = False
    interprocess: bool = False
    time: float | None = None  # None: never recorded


@dataclass
class Op:
    kind: str  # "h2d", "kernel", "d2h"
    stream: str
    start: float
    end: float
    buffer: int | None = None  # id of the host buffer a copy reads or writes


@dataclass
class FakeCuda:
    """See the module docstring. `durations` maps "h2d", "kernel", "d2h" to seconds per frame (copies are
    split over a frame's planes in proportion to their bytes); `frame_bytes` is the bytes of one frame in and
    out, to do that split."""

    durations: dict[str, float]
    frame_bytes: dict[str, int]
    host_s: float = 0.0
    device: torch.device = torch.device("cpu")
    now: float = 0.0
    ops: list[Op] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    engine_free: dict[str, float] = field(default_factory=lambda: {"h2d": 0.0, "kernel": 0.0, "d2h": 0.0})
    current: Stream | None = None
    _host: dict[int, torch.Tensor] = field(default_factory=dict)
    _unread: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def _tick(self) -> None:
        self.now += self.host_s

    def _queue(self, kind: str, stream: Stream, duration: float, buffer: int | None = None) -> Op:
        start = max(self.now, stream.tail, self.engine_free[kind])
        op = Op(kind, stream.name, start, start + duration, buffer)
        stream.tail = self.engine_free[kind] = op.end
        self.ops.append(op)
        return op

    # ---- the CudaRuntime interface

    def stream(self) -> Stream:
        s = Stream(f"s{len(self.streams)}")
        self.streams.append(s)
        return s

    def event(self) -> Event:
        """The event the real runtime makes: `CudaRuntime.event` runs with `torch.cuda.Event` standing for ours."""
        with mock.patch.object(torch.cuda, "Event", Event):
            return CudaRuntime.event(self)

    @contextlib.contextmanager
    def on(self, stream: Stream):
        self._tick()
        previous, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = previous
        self._queue("kernel", stream, self.durations["kernel"])

    def host_buffer(self, shape, dtype) -> torch.Tensor:
        t = torch.empty(shape, dtype=dtype)
        self._host[id(t)] = t
        return t

    def device_buffer(self, shape, dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype)

    def write(self, host: torch.Tensor, array) -> None:
        self._tick()
        if id(host) not in self._host:
            raise AssertionError("write() into a buffer that host_buffer() did not make")
        if any(op.kind == "h2d" and op.buffer == id(host) and op.end > self.now for op in self.ops):
            self.errors.append(f"host buffer {id(host)} rewritten at {self.now:.3f} while a copy from it runs")
        host.numpy()[...] = array

    def read(self, host: torch.Tensor):
        self._tick()
        if any(op.kind == "d2h" and op.buffer == id(host) and op.end > self.now for op in self.ops):
            self.errors.append(f"host buffer {id(host)} read at {self.now:.3f} before its download ended")
        self._unread.discard(id(host))
        return host.numpy().copy()

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: Stream) -> None:
        self._tick()
        if id(src) in self._host and id(dst) not in self._host:
            kind, buffer, nbytes = "h2d", id(src), src.numel() * src.element_size()
        elif id(dst) in self._host and id(src) not in self._host:
            kind, buffer, nbytes = "d2h", id(dst), dst.numel() * dst.element_size()
            if buffer in self._unread:
                self.errors.append(f"host buffer {buffer} overwritten at {self.now:.3f} before the host read it")
            self._unread.add(buffer)
        else:
            raise AssertionError("a copy must go between a pinned host buffer and the device")
        dst.copy_(src)
        self._queue(kind, stream, self.durations[kind] * nbytes / self.frame_bytes[kind], buffer)

    def record(self, event: Event, stream: Stream) -> None:
        self._tick()
        event.time = stream.tail

    def wait(self, stream: Stream, event: Event) -> None:
        self._tick()
        if event.time is None:
            self.errors.append("a stream waits on an event that was never recorded (a no-op in CUDA)")
            return
        stream.tail = max(stream.tail, event.time)

    def synchronize_stream(self, stream: Stream) -> None:
        self.now = max(self.now, stream.tail)

    def idle(self) -> bool:
        """Whether every queued operation has finished by the host's clock."""
        return all(op.end <= self.now for op in self.ops)

    def synchronize(self, event: Event) -> None:
        if not event.blocking:
            self.errors.append("a host wait on a non-blocking event spins a CPU core")
        if event.time is None:
            self.errors.append("synchronize on an event that was never recorded returns at once")
            return
        self.now = max(self.now, event.time)
