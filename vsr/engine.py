"""Inference backends behind one interface: `Upscaler`.

Contract: an `Upscaler` maps bicubic-upscaled luma, a float32 tensor N x 1 x H x W in
[0, 1] on any device, to SRCNN output of the same shape on the same device, clamped
to [0, 1]. It runs the model on its own device and precision, and in tiles of at
most `tile` x `tile` pixels with a halo of the model's receptive-field radius, so
tiled output equals untiled output and memory stays bounded on large frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import BackendError
from .model import SRCNN


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BackendError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    return device


class Upscaler:
    """Eager PyTorch backend (CPU or GPU), fp32 or fp16 (fp16 only on CUDA)."""

    backend = "eager"

    def __init__(self, model: SRCNN, device: torch.device | str = "cpu", precision: str = "fp32", tile: int = 512):
        self.device = torch.device(device)
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"unknown precision {precision!r}; use fp32 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            raise BackendError("fp16 needs a CUDA GPU; use --precision fp32 on the CPU")
        if tile < 16:
            raise BackendError(f"tile size {tile} is too small; use at least 16")
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.config = model.config
        self.tile = tile

    @torch.inference_mode()
    def _run_valid(self, y: torch.Tensor) -> torch.Tensor:
        """Valid convolutions on an already padded input (output smaller by 2*border)."""
        return self.model(y.to(self.dtype), pad=False).float()

    @torch.inference_mode()
    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.device, torch.float32)
        b = self.config.border
        padded = F.pad(y, (b, b, b, b), mode="replicate")
        h, w = y.shape[-2:]
        t = self.tile
        if h <= t and w <= t:
            return self._run_valid(padded).clamp_(0.0, 1.0)
        out = torch.empty_like(y)
        for top in range(0, h, t):
            for left in range(0, w, t):
                bottom, right = min(top + t, h), min(left + t, w)
                window = padded[:, :, top : bottom + 2 * b, left : right + 2 * b]
                out[:, :, top:bottom, left:right] = self._run_valid(window)
        return out.clamp_(0.0, 1.0)
