"""The machinery of the streaming path's three stage threads (decode, SR, encode), apart from what each does.

Contract: `Stages` starts one daemon thread per body (`_decode`, `_upscale`, `_encode`, given by the subclass), joins
them by two bounded queues (`decoded`, `upscaled`, `QUEUE_SIZE` items each: back-pressure, bounded memory) through
`_put` and `_get`, which give up when `stop` is set (then `_get` returns `END`). The first exception of any stage,
Ctrl-C included, is kept for the caller (`raise_error`) and stops the others. `start()` starts all three or none as
far as vsr's stop signals go (they are held while it runs, and raised by the caller's next `vsr.signals.check()`),
and `join()` passes over a thread that never started (Ctrl-C without `vsr.signals`), so a stop there ends cleanly.
Per-stage counters (busy and waiting seconds, frames, queue fill; each written only by its own stage's thread)
become `stage_figures` for `vsr bench`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

from vsr.signals import held

QUEUE_SIZE = 16  # items (frames or passthrough packets) per queue
JOIN_TIMEOUT_S = 10.0
END = object()  # the end of a queue's items


class Stages:
    """The three stage threads, their queues, counters and first error."""

    def __init__(self) -> None:
        self.decoded: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.upscaled: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.started = False
        # Stage counters (seconds, frames), each written only by its own stage's thread; see `stage_figures`.
        self.busy_s = {"decode": 0.0, "sr": 0.0, "encode": 0.0}
        self.wait_in_s = {"decode": 0.0, "sr": 0.0, "encode": 0.0}
        self.wait_out_s = {"decode": 0.0, "sr": 0.0, "encode": 0.0}
        self.frames_stage = {"decode": 0, "sr": 0, "encode": 0}
        self.fill_sum = {"decoded": 0, "upscaled": 0}
        self.fill_samples = {"decoded": 0, "upscaled": 0}
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._stage, args=(self._decode,), name="vsr-decode", daemon=True),
            threading.Thread(target=self._stage, args=(self._upscale,), name="vsr-sr", daemon=True),
            threading.Thread(target=self._stage, args=(self._encode,), name="vsr-encode", daemon=True),
        ]

    def _decode(self) -> None:
        raise NotImplementedError

    def _upscale(self) -> None:
        raise NotImplementedError

    def _encode(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        # A stop arriving here is raised by the caller's next check(), once all three run. Signals reach the main
        # thread only: another caller (a segment in `vsr.scaleout.run.InProcessWorkers`' thread) cannot be cut
        # short, and must not touch vsr.signals' state, which the main thread's handler and `deferred()` use.
        with held() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():
            self.started = True
            for t in self.threads:
                t.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in self.threads:
            if t.ident is not None:  # started
                t.join(max(0.0, deadline - time.monotonic()))

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _stage(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - any failure, Ctrl-C included, goes to the caller
            with self._lock:
                if self.error is None:
                    self.error = exc
            self.stop.set()
            self.finished.set()

    def stage_figures(self, elapsed_s: float) -> dict:
        """Per-stage busy time, waits, fps and utilisation, and mean queue fill (see the module contract)."""
        figures: dict = {}
        for name, busy_s in self.busy_s.items():
            frames = self.frames_stage[name]
            figures[name] = {
                "frames": frames,
                "busy_s": busy_s,
                "wait_in_s": self.wait_in_s[name],
                "wait_out_s": self.wait_out_s[name],
                "fps": frames / busy_s if busy_s > 0 else None,
                "utilisation": busy_s / elapsed_s if elapsed_s > 0 else None,
            }
        for name in ("decoded", "upscaled"):
            n = self.fill_samples[name]
            figures[name] = {"capacity": QUEUE_SIZE, "mean_fill": self.fill_sum[name] / n if n else None}
        return figures

    def _put(self, q: queue.Queue, item: object, stage: str) -> bool:
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self.wait_out_s[stage] += time.perf_counter() - t0

    def _get(self, q: queue.Queue, stage: str, queue_name: str) -> object:
        self.fill_sum[queue_name] += q.qsize()
        self.fill_samples[queue_name] += 1
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    continue
            return END
        finally:
            self.wait_in_s[stage] += time.perf_counter() - t0
