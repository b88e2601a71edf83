"""MATLAB-compatible bicubic resize (`imresize(..., 'bicubic')`) in torch, and modcrop.

Contract:
- `imresize(x, scale)` takes a float tensor of shape (..., H, W) on any device (CPU or
  CUDA, float16/32/64) and returns (..., ceil(H*scale), ceil(W*scale)) of the same
  dtype and device. The kernel is Keys' cubic with a = -0.5, widened and scaled
  (antialiased) when downscaling, with MATLAB's symmetric border handling; rows are
  resized first, then columns, as MATLAB does for equal factors. Values are not
  clamped or rounded: `imresize_uint8` does the uint8 round trip MATLAB does.
- Filter taps are computed once per (length, scale, device, dtype) and cached. Each
  output sample is a sum of a few gathered inputs (4 taps for upscaling), so the
  cost is linear in the output size; no dense resize matrix is formed. Integer
  upscales (the SR case) are polyphase: per axis and phase, 5 shifted views times
  fixed taps over a symmetric border, which gives the same values (the kernel depends
  only on the phase) much faster. No cuDNN convolution, so no TF32 on GPUs: CPU and
  CUDA agree to float32 rounding.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def output_length(in_length: int, scale: float) -> int:
    """MATLAB's output size for a scale factor: ceil(in * scale)."""
    return int(math.ceil(in_length * scale - 1e-9))


@functools.lru_cache(maxsize=256)
def _taps_np(in_length: int, out_length: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(weights, indices), both out_length x P: 0-based source index and weight per tap."""
    kernel_width = 4.0
    wide = scale < 1 and antialias
    if wide:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # source position, 1-based
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if wide else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    keep = np.any(weights != 0, axis=0)
    weights, idx = weights[:, keep], idx[:, keep].astype(np.int64) - 1
    period = 2 * in_length  # symmetric padding: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    m = np.mod(idx, period)
    idx = np.where(m < in_length, m, period - 1 - m)
    return weights, idx


@functools.lru_cache(maxsize=256)
def _taps(in_length: int, out_length: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype):
    weights, idx = _taps_np(in_length, out_length, scale, antialias)
    w = torch.from_numpy(np.ascontiguousarray(weights.T)).to(device=device, dtype=dtype)
    i = torch.from_numpy(np.ascontiguousarray(idx.T)).to(device=device)
    return w, i  # P x out_length each


@functools.lru_cache(maxsize=64)
def _polyphase(scale: int) -> tuple[tuple[float, ...], ...]:
    """Taps of an integer upscale: phase p (output s*j+p) is sum_k taps[p][k] * input[j-2+k], k = 0..4."""
    weights, idx = _taps_np(16, 16 * scale, float(scale), True)
    kernel = np.zeros((scale, 5))
    for p in range(scale):
        x = 8 * scale + p  # an interior output sample of phase p
        for w, i in zip(weights[x], idx[x], strict=True):
            kernel[p, i - 8 + 2] += w
    return tuple(tuple(float(w) for w in row) for row in kernel)


def _upscale_int_last(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Integer upscale along the last axis: per phase, 5 scaled shifted views summed (symmetric 2-sample border).

    Elementwise on purpose, not `conv1d`: cuDNN runs float32 convolutions in TF32 on Ampere and newer GPUs by
    default (`torch.backends.cudnn.allow_tf32` is True), which rounds inputs and taps to 10 mantissa bits and
    changes 8- and 10-bit samples; flipping that flag is process-wide, not per call. Multiply-adds in the
    tensor's own precision agree across devices to the last bit or so (a GPU may fuse them into FMAs), which
    can move a rounded sample by one only at an exact tie; and they are 1.4-7x faster than conv1d on the CPU."""
    n = x.shape[-1]
    padded = torch.cat([x[..., 1:2], x[..., :1], x, x[..., -1:], x[..., -2:-1]], dim=-1)
    out = x.new_empty(*x.shape[:-1], n, scale)
    for phase, taps in enumerate(_polyphase(scale)):
        o = out[..., phase]
        torch.mul(padded[..., 0:n], taps[0], out=o)
        for k in range(1, 5):
            o.add_(padded[..., k : k + n], alpha=taps[k])
    return out.reshape(*x.shape[:-1], n * scale)


def _resize_last(x: torch.Tensor, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    n = x.shape[-1]
    if scale >= 2 and scale == int(scale) and out_length == n * int(scale) and n >= 3:
        return _upscale_int_last(x, int(scale))
    w, idx = _taps(n, out_length, scale, antialias, x.device, x.dtype)
    out = x.index_select(-1, idx[0]) * w[0]
    for k in range(1, idx.shape[0]):
        out = out + x.index_select(-1, idx[k]) * w[k]
    return out


def imresize(x: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB `imresize(x, scale, 'bicubic')` of a (..., H, W) float tensor."""
    if not torch.is_floating_point(x):
        raise TypeError(f"imresize needs a float tensor, got {x.dtype}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = x.shape[-2:]
    out_h, out_w = output_length(h, scale), output_length(w, scale)
    y = _resize_last(x.transpose(-1, -2), out_h, scale, antialias).transpose(-1, -2)
    return _resize_last(y, out_w, scale, antialias)


def imresize_uint8(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize` of a uint8 HxW or HxWxC image: resize in float, round, clip."""
    t = torch.from_numpy(np.ascontiguousarray(img)).to(torch.float64)
    if img.ndim == 3:
        t = t.permute(2, 0, 1)
    out = imresize(t, scale)
    if img.ndim == 3:
        out = out.permute(1, 2, 0)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HxW[xC] image so that H and W are multiples of `scale` (bottom/right)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
