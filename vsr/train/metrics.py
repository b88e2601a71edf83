"""Image quality metrics as in the SR literature (BasicSR / MATLAB protocol).

Contract: both images are HxW arrays on the same scale with peak value `peak`
(255 for 8-bit Y); they are compared in float64 after `crop_border` pixels are
removed from every side. PSNR is in dB (inf for identical images). SSIM follows
Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
'valid' filtering, mean over the map.
"""

from __future__ import annotations

import math

import numpy as np


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 2:
        raise ValueError(f"expected HxW images, got shape {a.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if crop_border > 0:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two HxW images."""
    a, b = _prepare(a, b, crop_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    g /= g.sum()
    return g


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of HxW `img` with the 1-D kernel `g` on both axes."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, peak: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004) between two HxW images."""
    a, b = _prepare(a, b, crop_border)
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    g = _gaussian_window()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))
