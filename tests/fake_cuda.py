"""A simulated GPU under the real `vsr.engine.gpu.CudaRuntime`: its methods run against stand-ins for torch's CUDA.

What runs for real: each `FakeCuda` method calls `CudaRuntime`'s own method of that name (`read` and `write`
included), with torch's CUDA entry points (`torch.cuda.Stream`, `Event`, `stream`, `current_stream`,
`synchronize`) replaced by the simulated ones below for the duration of the call, and `torch.empty` recorded
(`allocations`: its arguments, `pin_memory` and `device` among them) and then made on the CPU. Device memory is
CPU memory in a tensor subclass (`DeviceTensor`) that sees every torch call made on it, so the data moves for
real and results can be compared with the CPU path, while copies, host reads and allocator hazards are checked.

Timing: the GPU has three engines that work in parallel, as NVIDIA GPUs do: an H2D copy engine, the compute
engine (SMs) and a D2H copy engine. Each stream runs its work in order; an engine runs one piece of work at a time,
in the order it was queued. Every queued operation is timed when it is queued (the host's clock is known then):
it starts once the host has queued it, the previous work on its stream is done, the events its stream waits for
have fired and its engine is free, and it lasts the duration given for its kind (a copy: its share of the frame's
bytes). Host time moves by `host_s` per call and by waits (`synchronize`). A `with on(stream)` block is one
kernel on that stream (queued also when the block fails: the kernels launched before a failure still run).

CUDA's and torch's rules the fake enforces (each one a failure in `errors`, not a silent pass):
- `wait` on an event never recorded is a no-op in CUDA (cudaStreamWaitEvent), i.e. a missing dependency.
- Host waits sleep: events waited on by the host are blocking (`cudaEventBlockingSync`).
- Host buffers are pinned (`torch.empty(..., pin_memory=True)`): from pageable memory a `non_blocking` copy is
  staged through a pinned bounce buffer and returns only once the source has been read (CUDA Runtime API,
  "API synchronization behavior"), so nothing would overlap. Copies go between such a buffer and the device,
  `non_blocking=True`, on the stream the runtime was given.
- Placement: device buffers, streams and the current-stream query name the runtime's own indexed device
  (`cuda:N`, never a bare "cuda", which is whatever device the calling thread has current).
- Host hazards: no host buffer is rewritten (`write`) while a copy from it may run, read (`read`) before the copy
  into it has finished, or downloaded into again before the host read its previous contents.
- Device hazards: no two operations (copies, kernels) use one device buffer at the same time: a kernel reading an
  upload still running, or a download of a kernel's output still being written, is a missing event wait.
- The caching allocator (torch/_tensor_docs.py, `record_stream`: "The caching allocator is aware of only the
  stream where a tensor was allocated"): a block freed on a stream is handed to the next allocation on that
  stream at once, while work queued there may still use it; safe on that stream, not on others. So a device
  buffer allocated on stream A is given `ready_at` = A's queued work at that moment, and its first use on another
  stream must start after that (that stream ordered after A: `wait_stream` or an event). A tensor a kernel made on
  stream A (a temporary) used by a copy on stream B needs `record_stream(B)`.
- No host round trip in the middle of a frame: `.item()`, `.cpu()`, `.tolist()`, `.numpy()`, `bool()`,
  `float()`, `int()` of a device tensor, or `torch.cuda.synchronize()`, would make the host wait for the GPU.
- Sticky errors: after `fault(message)`, every CUDA call (stream, event and buffer creation, copies, kernels,
  records, waits, synchronizations) raises `torch.AcceleratorError` (a RuntimeError; torch 2.8+, RuntimeError
  before) with that message, as CUDA reports an illegal address or a device-side assert from every later call
  of the process.
- Streams come from `StreamPool`, torch's pools (32 per device and priority level, round robin): two requests
  that land on the same slot get the same `Stream`, as in torch.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import torch

from vsr.engine.gpu import CudaRuntime

AcceleratorError = getattr(torch, "AcceleratorError", RuntimeError)
_PATCH = threading.RLock()  # one simulated torch.cuda at a time
_HOST_READS = {"item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"}


class StreamPool:
    """torch's per-device stream pools: c10/cuda/CUDAStream.h ("Stream pool note": 32 streams per pool, handed out
    round robin, the 33rd request gets the first again) and CUDAStream.cpp `getStreamFromPool(int priority, device)`
    (one pool per priority level: level -priority, clamped to the levels torch uses, `max_compile_time_stream_priorities`
    = 4 on a GPU with that many; `getStreamFromPool(false)` and `torch.cuda.Stream()` are priority 0)."""

    PER_POOL = 32
    LEVELS = 4

    def __init__(self) -> None:
        self.counters: dict[tuple, int] = {}
        self.streams: dict[tuple, Stream] = {}

    def get(self, device: torch.device, priority: int = 0) -> Stream:
        level = min(max(-priority, 0), self.LEVELS - 1)
        n = self.counters.get((device, level), 0)
        self.counters[(device, level)] = n + 1
        slot = (device, level, n % self.PER_POOL)
        if slot not in self.streams:
            self.streams[slot] = Stream(f"{device}/level{level}/{n % self.PER_POOL}")
        return self.streams[slot]

    def tensorrt_engine_stream(self, device: torch.device) -> Stream:
        """What torch-tensorrt 2.5-2.12 take for an engine at its first call and keep: `getStreamFromPool(false,
        device)` (core/runtime/execute_engine.cpp, v2.8.0 line 285)."""
        return self.get(device, 0)


@dataclass(eq=False)
class Stream:
    """The surface of `torch.cuda.Stream` that vsr uses; `wait_stream` and `record_event` as torch writes them
    (torch/cuda/streams.py)."""

    name: str
    tail: float = 0.0  # when the last queued work on it finishes
    fake: FakeCuda | None = None

    def wait_event(self, event: Event) -> None:
        event.wait(self)

    def wait_stream(self, stream: Stream) -> None:
        self.wait_event(stream.record_event())

    def record_event(self, event: Event | None = None) -> Event:
        if event is None:
            event = Event(fake=self.fake)
        event.record(self)
        return event

    def synchronize(self) -> None:
        self.fake.now = max(self.fake.now, self.tail)


@dataclass(eq=False)
class Event:
    enable_timing: bool = False  # torch.cuda.Event's arguments and defaults (torch/cuda/streams.py)
    blocking: bool = False
    interprocess: bool = False
    fake: FakeCuda | None = None
    time: float | None = None  # None: never recorded

    def record(self, stream: Stream) -> None:
        self.time = stream.tail

    def wait(self, stream: Stream) -> None:
        if self.time is None:
            self.fake.errors.append("a stream waits on an event that was never recorded (a no-op in CUDA)")
            return
        stream.tail = max(stream.tail, self.time)

    def synchronize(self) -> None:
        fake = self.fake
        if not self.blocking:
            fake.errors.append("a host wait on a non-blocking event spins a CPU core")
        if self.time is None:
            fake.errors.append("synchronize on an event that was never recorded returns at once")
            return
        fake.now = max(fake.now, self.time)
        fake.synced_at.append(fake.now)


@dataclass
class Op:
    kind: str  # "h2d", "kernel", "d2h"
    stream: str
    start: float
    end: float
    buffer: int | None = None  # id of the host buffer a copy reads or writes


class DeviceTensor(torch.Tensor):
    """Device memory of one `FakeCuda` (a subclass per fake sets `fake`): CPU data, every torch call seen."""

    fake: FakeCuda

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return cls.fake._torch_call(cls, func, types, args, kwargs or {})

    def record_stream(self, stream) -> None:  # torch's own refuses a simulated stream before __torch_function__
        if not hasattr(self, "_fake_uses"):
            self._fake_uses = set()
        self._fake_uses.add(stream)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


@dataclass
class FakeCuda:
    """See the module docstring. `durations` maps "h2d", "kernel", "d2h" to seconds per frame; `frame_bytes` is the
    bytes of one frame in ("h2d") and out ("d2h"), to split a frame's copy time over its planes (None: each plane's
    copy takes the whole duration). `device` is the GPU the runtime stands for (indexed)."""

    durations: dict[str, float]
    frame_bytes: dict[str, int] | None = None
    host_s: float = 0.0
    device: torch.device = torch.device("cuda", 0)
    pool: StreamPool = field(default_factory=StreamPool)
    now: float = 0.0
    ops: list[Op] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    engine_free: dict[str, float] = field(default_factory=lambda: {"h2d": 0.0, "kernel": 0.0, "d2h": 0.0})
    current: Stream | None = None
    errors: list[str] = field(default_factory=list)
    allocations: list[tuple[str, tuple, dict]] = field(default_factory=list)  # ("host"/"device", args, kwargs)
    calls: list[tuple] = field(default_factory=list)  # ("Stream", device, priority), ("current_stream", device)
    synced_at: list[float] = field(default_factory=list)  # host time after each event wait (a frame's result)
    sticky: str | None = None
    _host: dict[int, torch.Tensor] = field(default_factory=dict)
    _device: dict[int, tuple] = field(default_factory=dict)  # id -> (tensor, stream allocated on, ready_at)
    _last_use: dict[int, Op] = field(default_factory=dict)  # device buffer id -> the op using it that ends last
    _unread: set[int] = field(default_factory=set)
    _touched: list | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.default = Stream(f"{self.device}/default", fake=self)
        self._tensor_cls = type("DeviceTensor", (DeviceTensor,), {"fake": self})

    # ---- test hooks

    def fault(self, message: str = "CUDA error: an illegal memory access was encountered") -> AcceleratorError:
        """From now on every CUDA call fails with this error (a sticky error); returns one to raise."""
        self.sticky = message
        return AcceleratorError(message)

    def queue_default(self, seconds: float) -> None:
        """Work on the default stream (weight casts, a warm-up) queued before the runtime is used."""
        self._queue("kernel", self.default, seconds)

    def idle(self) -> bool:
        """Whether every queued operation has finished by the host's clock."""
        return all(op.end <= self.now for op in self.ops)

    # ---- simulated torch.cuda

    def _call(self) -> None:
        if self.sticky is not None:
            raise AcceleratorError(self.sticky)
        self.now += self.host_s

    def _check_device(self, what: str, device) -> None:
        named = torch.device(device) if device is not None else None
        if named is None or named.index is None or named != self.device:
            self.errors.append(f"{what} names {device!r}, not the runtime's GPU {self.device}")

    def _new_stream(self, device=None, priority=0) -> Stream:
        self.calls.append(("Stream", device, priority))
        self._check_device("torch.cuda.Stream", device)
        stream = self.pool.get(self.device, priority)
        stream.fake = self
        self.streams.append(stream)
        return stream

    def _current_stream(self, device=None) -> Stream:
        self.calls.append(("current_stream", device))
        self._check_device("torch.cuda.current_stream", device)
        return self.current or self.default

    @contextlib.contextmanager
    def _stream_context(self, stream: Stream):
        previous, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = previous

    def _device_synchronize(self, device=None) -> None:
        self.errors.append("torch.cuda.synchronize() mid-frame: the host waits for the whole GPU")
        self.now = max([self.now, *(op.end for op in self.ops)])

    @contextlib.contextmanager
    def _cuda(self):
        """torch.cuda's entry points, simulated, while the real runtime's method runs."""
        names = {
            "Stream": self._new_stream,
            "Event": lambda enable_timing=False, blocking=False, interprocess=False: Event(
                enable_timing, blocking, interprocess, fake=self
            ),
            "stream": self._stream_context,
            "current_stream": self._current_stream,
            "synchronize": self._device_synchronize,
        }
        with _PATCH:
            saved = {name: getattr(torch.cuda, name) for name in names}
            for name, value in names.items():
                setattr(torch.cuda, name, value)
            try:
                yield
            finally:
                for name, value in saved.items():
                    setattr(torch.cuda, name, value)

    @contextlib.contextmanager
    def _recorded_empty(self, kind: str):
        """`torch.empty` recorded (this thread's calls), then made on the CPU without `pin_memory` and `device`."""
        real, owner = torch.empty, threading.get_ident()

        def empty(*args, **kwargs):
            if threading.get_ident() != owner:
                return real(*args, **kwargs)
            self.allocations.append((kind, args, dict(kwargs)))
            kwargs.pop("pin_memory", None)
            kwargs.pop("device", None)
            return real(*args, **kwargs)

        with _PATCH:
            torch.empty = empty
            try:
                yield
            finally:
                torch.empty = real

    def _queue(self, kind: str, stream: Stream, duration: float, buffer: int | None = None) -> Op:
        start = max(self.now, stream.tail, self.engine_free[kind])
        op = Op(kind, stream.name, start, start + duration, buffer)
        stream.tail = self.engine_free[kind] = op.end
        self.ops.append(op)
        return op

    def _check_block(self, t: torch.Tensor, stream: Stream, op: Op) -> None:
        """The caching allocator's rule for device tensor `t` used by `op` on `stream` (see the module docstring)."""
        if id(t) in self._device:
            _, alloc, ready_at = self._device[id(t)]
            last = self._last_use.get(id(t))
            if last is not None and last is not op and op.start < last.end:
                self.errors.append(
                    f"a device buffer used by a {op.kind} on {op.stream} from {op.start:.3f} while a {last.kind} on "
                    f"{last.stream} uses it until {last.end:.3f} (a missing event wait)"
                )
            if last is None or op.end > last.end:
                self._last_use[id(t)] = op
            if stream is not alloc and op.start < ready_at:
                self.errors.append(
                    f"a device buffer allocated on {alloc.name}, whose block work queued there may use until "
                    f"{ready_at:.3f}, is used on {stream.name} at {op.start:.3f}: {stream.name} is not ordered after "
                    f"{alloc.name} (wait_stream)"
                )
            return
        alloc = getattr(t, "_fake_alloc", None)
        if alloc is not None and alloc is not stream and stream not in t._fake_uses:
            self.errors.append(
                f"a copy on {stream.name} from a tensor made on {alloc.name} without record_stream: once freed, its "
                f"block goes to the next allocation on {alloc.name} while the copy may still read it"
            )

    def _torch_call(self, cls, func, types, args, kwargs):
        """Every torch call on a DeviceTensor (see DeviceTensor)."""
        name = getattr(func, "__name__", "")
        if name in _HOST_READS:
            self.errors.append(f"Tensor.{name} of a device tensor: the host waits for the GPU mid-frame")
        if name == "copy_":
            dst, src = args[0], args[1]
            if id(dst) in self._host or id(src) in self._host:
                non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
                return self._host_copy(dst, src, non_blocking)
        if self._touched is not None:
            self._touched.extend(t for t in _tensors(args) if id(t) in self._device)
        ret = torch.Tensor.__torch_function__.__func__(cls, func, types, args, kwargs)
        for t in _tensors(ret):
            if isinstance(t, DeviceTensor) and not hasattr(t, "_fake_alloc"):
                t._fake_alloc, t._fake_uses = self.current or self.default, set()
        return ret

    def _host_copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> torch.Tensor:
        stream = self.current or self.default
        if not non_blocking:
            self.errors.append("a copy between host and device without non_blocking=True blocks the host")
        if id(src) in self._host and isinstance(dst, DeviceTensor):
            kind, host, dev = "h2d", src, dst
        elif id(dst) in self._host and isinstance(src, DeviceTensor):
            kind, host, dev = "d2h", dst, src
            if id(dst) in self._unread:
                self.errors.append(f"host buffer {id(dst)} overwritten at {self.now:.3f} before the host read it")
            self._unread.add(id(dst))
        else:
            raise AssertionError("a copy must go between a pinned host buffer and the device")
        with torch._C.DisableTorchFunctionSubclass():
            dst.copy_(src)
        duration = self.durations[kind]
        if self.frame_bytes is not None:
            duration *= host.numel() * host.element_size() / self.frame_bytes[kind]
        op = self._queue(kind, stream, duration, id(host))
        self._check_block(dev, stream, op)
        return dst

    # ---- the CudaRuntime interface: each calls the real method

    def stream(self) -> Stream:
        self._call()
        with self._cuda():
            return CudaRuntime.stream(self)

    def follow_current(self, stream: Stream) -> None:
        self._call()
        with self._cuda():
            CudaRuntime.follow_current(self, stream)

    def event(self) -> Event:
        self._call()
        with self._cuda():
            return CudaRuntime.event(self)

    @contextlib.contextmanager
    def on(self, stream: Stream):
        self._call()
        self._touched = []
        try:
            with self._cuda(), CudaRuntime.on(self, stream):
                yield
        finally:
            op = self._queue("kernel", stream, self.durations["kernel"])
            for t in self._touched:
                self._check_block(t, stream, op)
            self._touched = None

    def host_buffer(self, shape, dtype) -> torch.Tensor:
        self._call()
        with self._recorded_empty("host"):
            t = CudaRuntime.host_buffer(self, shape, dtype)
        kwargs = self.allocations[-1][2]
        if kwargs.get("pin_memory") is not True:
            self.errors.append(f"host buffer {tuple(shape)} not pinned: a non_blocking copy from it is synchronous")
        if kwargs.get("device") not in (None, "cpu", torch.device("cpu")):
            self.errors.append(f"host buffer {tuple(shape)} made on {kwargs['device']!r}")
        self._host[id(t)] = t
        return t

    def device_buffer(self, shape, dtype) -> torch.Tensor:
        self._call()
        with self._recorded_empty("device"):
            t = CudaRuntime.device_buffer(self, shape, dtype)
        self._check_device(f"device buffer {tuple(shape)}", self.allocations[-1][2].get("device"))
        t = t.as_subclass(self._tensor_cls)
        alloc = self.current or self.default
        self._device[id(t)] = (t, alloc, alloc.tail)
        return t

    def write(self, host: torch.Tensor, array) -> None:
        self.now += self.host_s  # host memory: no CUDA call, so no sticky error either
        if id(host) not in self._host:
            raise AssertionError("write() into a buffer that host_buffer() did not make")
        if any(op.kind == "h2d" and op.buffer == id(host) and op.end > self.now for op in self.ops):
            self.errors.append(f"host buffer {id(host)} rewritten at {self.now:.3f} while a copy from it runs")
        CudaRuntime.write(self, host, array)

    def read(self, host: torch.Tensor):
        self.now += self.host_s
        if any(op.kind == "d2h" and op.buffer == id(host) and op.end > self.now for op in self.ops):
            self.errors.append(f"host buffer {id(host)} read at {self.now:.3f} before its download ended")
        self._unread.discard(id(host))
        return CudaRuntime.read(self, host)

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: Stream) -> None:
        self._call()
        with self._cuda():
            CudaRuntime.copy(self, dst, src, stream)

    def record(self, event: Event, stream: Stream) -> None:
        self._call()
        CudaRuntime.record(self, event, stream)

    def wait(self, stream: Stream, event: Event) -> None:
        self._call()
        CudaRuntime.wait(self, stream, event)

    def synchronize(self, event: Event) -> None:
        self._call()
        CudaRuntime.synchronize(self, event)

    def synchronize_stream(self, stream: Stream) -> None:
        self._call()
        CudaRuntime.synchronize_stream(self, stream)
