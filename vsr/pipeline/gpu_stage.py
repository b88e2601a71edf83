"""The SR stage of the streaming path on CUDA: frames in flight in `vsr.engine.gpu.GpuFrames` (pinned buffers, copy
and compute streams), the oldest result taken when all slots are busy, items leaving in the order they came. Mixed
into the pipeline's stages (`vsr.pipeline.video`), whose `_upscale` hands over to `_upscale_gpu` when the upscaler is
on a CUDA device; the stage reports a CUDA failure as one line (`gpu_failure`) and drains the streams either way,
a failed drain never replacing the error being reported (a sticky CUDA error fails the drain's waits too).
"""

from __future__ import annotations

import time

import torch

from vsr.media.frames import Picture
from vsr.pipeline.stages import END


class GpuStage:
    """`_uses_gpu`, `_gpu_frames` and `_upscale_gpu` for a `Stages` subclass with `upscaler`, `device`, `scale`,
    `peak`, `shapes` and `frames_sr`."""

    def _uses_gpu(self) -> bool:
        return getattr(self.device, "type", self.device) == "cuda" and self.upscaler is not None

    def _gpu_frames(self, first: Picture):
        """The `vsr.engine.gpu.GpuFrames` for frames shaped like `first`, with this thread on the upscaler's device
        (the current CUDA device is per thread: without this, cuda:N would allocate streams and buffers on
        cuda:0). Tests replace this method to run the loop below on a simulated GPU."""
        from vsr.engine.gpu import GpuFrames

        torch.cuda.set_device(self.device)
        in_shapes = tuple(p.shape for p in first.planes)
        return GpuFrames(self.upscaler, self.scale, self.peak, in_shapes, self.shapes, first.planes[0].dtype)

    def _upscale_gpu(self) -> None:
        """The SR stage on CUDA: up to `len(gpu.slots)` frames in flight (`vsr.engine.gpu.GpuFrames`), the oldest
        result taken when all slots are busy; items leave in the order they came, passthrough packets included."""
        from collections import deque

        gpu = None
        pending: deque = deque()  # (ticket or None, item), oldest first
        ended = False  # all items through: a failed drain is this stage's error, else another error is reported

        def emit_oldest() -> bool:
            ticket, item = pending.popleft()
            if ticket is not None:
                t0 = time.perf_counter()
                item = Picture(planes=gpu.result(ticket), pts=item.pts, time_base=item.time_base)
                self.busy_s["sr"] += time.perf_counter() - t0
                self.frames_sr += 1
                self.frames_stage["sr"] += 1
            return self._put(self.upscaled, item, "sr")

        from vsr.engine.gpu import gpu_failure

        try:
            while (item := self._get(self.decoded, "sr", "decoded")) is not END:
                ticket = None
                if isinstance(item, Picture):
                    if gpu is None:
                        gpu = self._gpu_frames(item)
                    while sum(t is not None for t, _ in pending) >= len(gpu.slots):
                        if not emit_oldest():
                            return
                    t0 = time.perf_counter()
                    ticket = gpu.submit(item.planes)
                    self.busy_s["sr"] += time.perf_counter() - t0
                pending.append((ticket, item))
                while pending and pending[0][0] is None:  # packets ahead of any frame in flight go on at once
                    if not emit_oldest():
                        return
            while pending:
                if not emit_oldest():
                    return
            ended = not self.stop.is_set()
            if ended:
                self._put(self.upscaled, END, "sr")
        except RuntimeError as exc:  # CUDA, cuDNN, TensorRT: one line, not a traceback from this thread
            raise gpu_failure(exc) from exc
        finally:
            if gpu is not None:  # after an error, copies may still be in flight into buffers about to be freed
                gpu.drain(after_error=not ended)
