"""The webcam session's input: a capture thread and an SR thread, handing frames on through queues.

Contract (see `vsr.live.webcam` for the whole preview): `Feed` reads its source in one thread and super-resolves in
another (`upscale_pair`, or `vsr.engine.gpu.GpuFrames` on CUDA); the main thread takes `Result`s from `results`.
Live sources keep only the newest item (a replaced one counts in `dropped`, pauses excluded); files pass every frame
through bounded queues. A worker's exception stops both threads and is re-raised in the main thread by `raise_error`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vsr.live.capture import Frame
from vsr.live.preview import planes_to_bgr
from vsr.media.frames import VideoInfo, plane_shapes
from vsr.media.resize import imresize, output_length

YUpscaler = Callable[[torch.Tensor], torch.Tensor]

FILE_QUEUE = 4
END = object()


# ---------------------------------------------------------------- per-frame work


def upscale_pair(
    planes: tuple[np.ndarray, ...],
    scale: int,
    upscaler: YUpscaler,
    peak: int,
    shapes: tuple[tuple[int, int], ...],
    device: torch.device | str = "cpu",
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(bicubic planes, SRCNN planes) of one frame's (Y, U, V[, A]), sharing the bicubic chroma and alpha
    (`vsr.live.webcam`)."""
    dtype = planes[0].dtype
    rows, cols = shapes[0]
    y = torch.from_numpy(planes[0].astype(np.float32)).to(device) / peak
    y = imresize(y[None], scale)
    sr = upscaler(y[None])[0]

    def to_plane(t: torch.Tensor) -> np.ndarray:
        t = (t * peak).round_().clamp_(0, peak)[0, :rows, :cols]
        return np.ascontiguousarray(t.cpu().numpy().astype(dtype))

    ch, cw = shapes[1]
    chroma = torch.from_numpy(np.stack(planes[1:3]).astype(np.float32)).to(device)
    chroma = imresize(chroma, scale)[:, :ch, :cw].round_().clamp_(0, peak).cpu().numpy().astype(dtype)
    uv = tuple(np.ascontiguousarray(c) for c in chroma)
    if len(planes) > 3:  # alpha: bicubic like chroma, at the luma size
        alpha = imresize(torch.from_numpy(planes[3].astype(np.float32)).to(device)[None], scale)
        uv += (to_plane(alpha / peak),)
    return (to_plane(y), *uv), (to_plane(sr), *uv)


# ---------------------------------------------------------------- hand-over between threads


class Newest:
    """A one-item mailbox: `put` replaces an item not yet taken, which counts as dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: object) -> bool:
        with self._cond:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify_all()
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout_s: float) -> object:
        """The newest item, `END` once closed and empty, or None after `timeout_s`."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout_s)
            if self._full:
                item, self._item, self._full = self._item, None, False
                return item
            return END if self._closed else None


class Ordered:
    """A bounded FIFO: `put` waits for room (back-pressure) until `stop`; nothing is dropped."""

    dropped = 0

    def __init__(self, size: int, stop: threading.Event):
        import queue

        self._queue: queue.Queue = queue.Queue(size)
        self._full, self._empty = queue.Full, queue.Empty
        self.stop = stop

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except self._full:
                continue
        return False

    def close(self) -> None:
        self.put(END)

    def get(self, timeout_s: float) -> object:
        try:
            return self._queue.get(timeout=timeout_s)
        except self._empty:
            return None


@dataclass
class Result:
    frame: Frame
    bicubic: np.ndarray  # BGR
    sr: np.ndarray  # BGR
    sr_planes: tuple[np.ndarray, ...]
    sr_s: float


# ---------------------------------------------------------------- the threads


class Feed:
    """Capture and SR threads of one session, their queues, pause, pacing, dropped frames and errors."""

    def __init__(self, source, upscaler: YUpscaler, scale: int):
        self.source, self.upscaler = source, upscaler
        self.info: VideoInfo = source.info
        self.live = source.live
        self.scale = scale
        self.out_w, self.out_h = output_length(self.info.width, self.scale), output_length(self.info.height, self.scale)
        self.shapes = plane_shapes(self.info.pix_fmt, self.out_w, self.out_h)
        self.device = torch.device(getattr(upscaler, "device", "cpu"))
        self._gpu = None  # vsr.engine.gpu.GpuFrames, made by the SR thread on its first CUDA frame
        config = getattr(upscaler, "config", None)
        self.sr_label = f"SRCNN {config.arch}" if config is not None else "SRCNN"
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.captured = Newest() if self.live else Ordered(FILE_QUEUE, self.stop)
        self.results = Newest() if self.live else Ordered(2, self.stop)
        self.errors: list[BaseException] = []
        self.dropped_paused = 0
        self._paused_at: int | None = None
        self._pace_offset_s: float | None = None
        self.threads = [
            threading.Thread(target=self._guard, args=(self._capture,), name="vsr-capture", daemon=True),
            threading.Thread(target=self._guard, args=(self._super_resolve,), name="vsr-sr", daemon=True),
        ]

    # ---- worker threads

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            self.errors.append(exc)
            self.stop.set()

    def _capture(self) -> None:
        try:
            for frame in self.source.frames(self.stop):
                if self.stop.is_set() or not self.captured.put(frame):
                    return
            self.captured.close()
        finally:
            self.source.close()

    def _super_resolve(self) -> None:
        while not self.stop.is_set():
            if self.paused.is_set():
                self.stop.wait(0.02)
                continue
            frame = self.captured.get(0.1)
            if frame is None:
                continue
            if frame is END:
                self.results.close()
                return
            t0 = time.perf_counter()
            if not self.live:
                frame = dataclasses.replace(frame, captured_s=t0)
            info = self.info
            if self.device.type == "cuda":  # see _upscale_pair_gpu
                bic_planes, sr_planes = self._upscale_pair_gpu(frame.planes)
            else:
                bic_planes, sr_planes = upscale_pair(frame.planes, self.scale, self.upscaler, info.peak, self.shapes, self.device)
            bicubic, sr = planes_to_bgr(bic_planes, info), planes_to_bgr(sr_planes, info)
            result = Result(frame, bicubic, sr, sr_planes, time.perf_counter() - t0)
            if not self.results.put(result):
                return

    def _upscale_pair_gpu(self, planes: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """`upscale_pair` on CUDA through `vsr.engine.gpu.GpuFrames` (pinned slots, one wait per frame instead of three
        blocking `.cpu()` copies from pageable memory); one frame in flight, as latency comes first here. A CUDA
        failure is one line (`gpu_failure`), after a drain whose own failure (a sticky error) does not replace it."""
        from vsr.engine.gpu import GpuFrames, gpu_failure

        try:
            if self._gpu is None:
                torch.cuda.set_device(self.device)  # per thread, as in vsr.pipeline.gpu_stage
                in_shapes = tuple(p.shape for p in planes)
                dtype = planes[0].dtype
                self._gpu = GpuFrames(self.upscaler, self.scale, self.info.peak, in_shapes, self.shapes, dtype, with_bicubic=True)
            y_sr, *rest, y_bicubic = self._gpu.result(self._gpu.submit(planes))  # rest: U, V and alpha if any
        except BaseException as exc:  # noqa: BLE001 - drained whatever failed (e.g. a BackendError of the chain)
            if self._gpu is not None:
                self._gpu.drain(after_error=True)  # copies may be in flight into buffers about to be freed
            if isinstance(exc, RuntimeError):
                raise gpu_failure(exc) from exc
            raise
        return (y_bicubic, *rest), (y_sr, *rest)

    def raise_error(self) -> None:
        if self.errors:
            raise self.errors[0]

    # ---- main thread

    @property
    def dropped(self) -> int:
        return self.captured.dropped + self.results.dropped - self.dropped_paused

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _set_paused(self, paused: bool) -> None:
        if paused and not self.paused.is_set():
            self.paused.set()
            self._paused_at = self.captured.dropped + self.results.dropped
        elif not paused and self.paused.is_set():
            self.dropped_paused += self.captured.dropped + self.results.dropped - (self._paused_at or 0)
            self._pace_offset_s = None
            self.paused.clear()

    def _pace(self, frame: Frame) -> float:
        """Seconds to wait before showing a file's frame at its own time (never faster than real time)."""
        media_s = float(frame.pts * self.info.time_base)
        now = time.perf_counter()
        if self._pace_offset_s is None or now - (media_s + self._pace_offset_s) > 0.1:  # first frame, or late: re-anchor
            self._pace_offset_s = now - media_s
        return media_s + self._pace_offset_s - now

    def close(self) -> None:
        """Stop the threads (each closes what it opened)."""
        self.stop.set()
        for t in self.threads:
            if t.ident is not None:
                t.join(10.0)
