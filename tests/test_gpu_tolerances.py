"""The GPU tests' tolerances (tests/gpu_tolerances.py), checked on the CPU: on the very inputs of those tests, what a
correct GPU may do stays well inside each tolerance and the defect each test is for falls well outside it (issue 24,
risk 9: 1e-6/1e-5 with cuDNN's benchmark mode could fail on a right GPU; 2e-3 for fp16 left 1.3x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsr.engine.base import Upscaler

from .gpu_tolerances import FP16_MAX, FP16_MEAN, FP32_VS_CPU, TILED_VS_WHOLE, fft_conv2d, forward, tf32
from .test_model import make_model


def _window(seed: int, h: int, w: int):
    model = make_model("9-5-5")
    x = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed))
    b = model.config.border
    return model, x, F.pad(x, (b, b, b, b), mode="replicate")


def test_fp32_against_the_cpu_separates_tf32_from_fp32_rounding():
    """`test_fp32_on_cuda_is_not_tf32`'s input: fp32 by other algorithms (direct, FFT) is within a tenth of the
    tolerance of vsr's CPU output; TF32 (rounded or truncated operands) is beyond ten times it."""
    model, x, window = _window(3, 96, 128)
    cpu = Upscaler(model, "cpu")(x)
    with torch.no_grad():
        for conv in (F.conv2d, fft_conv2d):
            assert (forward(model, window, conv=conv) - cpu).abs().max().item() <= FP32_VS_CPU / 10
        for rounding in ("nearest", "truncate"):
            reduced = forward(model, window, operands=lambda t, r=rounding: tf32(t, r))
            assert (reduced - cpu).abs().max().item() >= FP32_VS_CPU * 10


def test_fp16_against_fp32_separates_fp16_from_a_coarser_precision():
    """`test_fp16_close_to_fp32_on_gpu`'s input: fp16 operands and activations (the last layer in fp16 or fp32) are
    within half of both bounds; bfloat16, the nearest wrong precision, is beyond them."""
    model, x, window = _window(1, 96, 128)
    with torch.no_grad():
        fp32 = forward(model, window)

        def half(t):
            return t.half().float()

        def bf16(t):
            return t.bfloat16().float()

        for diff in (forward(model, window, half, half) - fp32, forward(model, window, half, lambda t: t) - fp32):
            assert diff.abs().max().item() <= FP16_MAX / 2 and diff.abs().mean().item() <= FP16_MEAN / 2
        coarse = (forward(model, window, bf16, bf16) - fp32).abs()
        assert coarse.max().item() >= FP16_MAX and coarse.mean().item() >= 2 * FP16_MEAN


def test_tiles_against_one_window_separate_a_short_halo_from_rounding():
    """`test_gpu_tiled_equals_untiled_fp32`'s input and tiles (128 of a 300x520 frame): a halo one pixel short is
    beyond a thousand times the tolerance; the CPU's tiles, and another algorithm for the window's shape, within a
    tenth of it."""
    model, x, window = _window(2, 300, 520)
    b, t = model.config.border, 128
    whole = Upscaler(model, "cpu", tile=1024)(x)
    assert (Upscaler(model, "cpu", tile=t)(x) - whole).abs().max().item() <= TILED_VS_WHOLE / 10
    short = torch.empty_like(x)
    with torch.no_grad():
        narrow = F.pad(x, (b - 1,) * 4, mode="replicate")
        for top in range(0, 300, t):
            for left in range(0, 520, t):
                bottom, right = min(top + t, 300), min(left + t, 520)
                tile = narrow[:, :, top : bottom + 2 * (b - 1), left : right + 2 * (b - 1)]
                short[:, :, top:bottom, left:right] = forward(model, F.pad(tile, (1, 1, 1, 1), mode="replicate"))
        assert (short - whole).abs().max().item() >= TILED_VS_WHOLE * 1000
        crop = window[:, :, : 96 + 2 * b, : 128 + 2 * b]  # FFT rounding does not grow with the frame; keep it quick
        assert (forward(model, crop, conv=fft_conv2d) - whole[:, :, :96, :128]).abs().max().item() <= TILED_VS_WHOLE / 10
