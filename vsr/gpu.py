"""Frames through a CUDA GPU with copies overlapped with compute: pinned host slots, two streams.

Contract:
- `GpuFrames(upscaler, scale, peak, in_shapes, out_shapes, slots=2)` super-resolves one video
  frame's planes (Y, U, V: uint8, or uint16 holding 10-bit values) exactly as
  `vsr.pipeline.upscale_planes` does (MATLAB bicubic of every plane on the GPU, SRCNN on Y,
  round, clip, chroma cropped to `out_shapes`), with only the integer planes crossing PCIe.
- `submit(planes) -> ticket` copies the planes into the next pinned host slot and queues, on a
  copy stream, the upload and, on a compute stream, the resize + model, then, back on the copy
  stream, the download into that slot's pinned output. It returns at once, so the caller can
  submit frame i+1 (its upload overlaps frame i's compute) before `result(ticket)`, which waits
  for that frame's download and returns numpy copies of its planes. At most `slots` tickets may
  be outstanding; `submit` raises `RuntimeError` beyond that (the caller keeps a FIFO).
- Persistent device buffers per slot, so the caching allocator never hands a buffer in use by
  one stream to the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .resize import imresize


def _torch_dtype(np_dtype: np.dtype) -> torch.dtype:
    return torch.uint8 if np_dtype == np.uint8 else torch.int16  # 10-bit values fit in int16


@dataclass
class _Slot:
    host_in: list[torch.Tensor]
    host_out: list[torch.Tensor]
    dev_in: list[torch.Tensor]
    dev_out: list[torch.Tensor]
    uploaded: torch.cuda.Event
    computed: torch.cuda.Event
    downloaded: torch.cuda.Event
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
        slots: int = 2,
    ):
        self.upscaler, self.scale, self.peak = upscaler, scale, peak
        self.device = upscaler.device
        self.out_shapes = out_shapes
        self.np_dtype = np.dtype(dtype)
        tdtype = _torch_dtype(self.np_dtype)
        self.copy_stream = torch.cuda.Stream(self.device)
        self.compute_stream = torch.cuda.Stream(self.device)
        self.slots = [
            _Slot(
                host_in=[torch.empty(s, dtype=tdtype, pin_memory=True) for s in in_shapes],
                host_out=[torch.empty(s, dtype=tdtype, pin_memory=True) for s in out_shapes],
                dev_in=[torch.empty(s, dtype=tdtype, device=self.device) for s in in_shapes],
                dev_out=[torch.empty(s, dtype=tdtype, device=self.device) for s in out_shapes],
                uploaded=torch.cuda.Event(),
                computed=torch.cuda.Event(),
                downloaded=torch.cuda.Event(),
            )
            for _ in range(slots)
        ]
        self._next = 0

    @torch.inference_mode()
    def submit(self, planes: tuple[np.ndarray, ...]) -> _Slot:
        slot = self.slots[self._next]
        if slot.busy:
            raise RuntimeError("GpuFrames: every slot is in flight; call result() first")
        self._next = (self._next + 1) % len(self.slots)
        slot.busy = True
        for host, plane in zip(slot.host_in, planes, strict=True):
            host.numpy()[...] = plane.view(np.int16) if plane.dtype == np.uint16 else plane
        with torch.cuda.stream(self.copy_stream):
            for dev, host in zip(slot.dev_in, slot.host_in, strict=True):
                dev.copy_(host, non_blocking=True)
            slot.uploaded.record(self.copy_stream)
        with torch.cuda.stream(self.compute_stream):
            self.compute_stream.wait_event(slot.uploaded)
            self._compute(slot)
            slot.computed.record(self.compute_stream)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(slot.computed)
            for host, dev in zip(slot.host_out, slot.dev_out, strict=True):
                host.copy_(dev, non_blocking=True)
            slot.downloaded.record(self.copy_stream)
        return slot

    def _compute(self, slot: _Slot) -> None:
        peak = self.peak
        y = slot.dev_in[0].float().div_(peak)
        y = imresize(y[None, None], self.scale)
        y = self.upscaler(y)
        oh, ow = self.out_shapes[0]
        slot.dev_out[0].copy_(y[0, 0, :oh, :ow].mul_(peak).round_().clamp_(0, peak))
        chroma = torch.stack([p.float() for p in slot.dev_in[1:]])
        chroma = imresize(chroma, self.scale)
        ch, cw = self.out_shapes[1]
        for dev, plane in zip(slot.dev_out[1:], chroma, strict=True):
            dev.copy_(plane[:ch, :cw].round_().clamp_(0, peak))

    def result(self, slot: _Slot) -> tuple[np.ndarray, ...]:
        slot.downloaded.synchronize()
        out = tuple(h.numpy().copy() for h in slot.host_out)
        slot.busy = False
        if self.np_dtype == np.uint16:
            out = tuple(p.view(np.uint16) for p in out)
        return out
