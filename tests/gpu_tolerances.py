"""The tolerances of the GPU tests, and the CPU emulations that show each one separates what its test guards from
what a correct GPU may do (tests/test_gpu_tolerances.py checks the margins on the CPU).

A GPU test compares outputs that a correct GPU computes differently: `Upscaler` turns on `cudnn.benchmark`, so
cuDNN times its algorithms (implicit GEMM, FFT, Winograd, ...) for each input shape and keeps the fastest; a tile and
a whole frame, or the GPU and the CPU (oneDNN), then sum in other orders, and an FFT algorithm rounds in the
frequency domain. Each tolerance sits between that rounding and the smallest defect its test is for:
- FP32_VS_CPU (fp32 on the GPU against the CPU, `test_fp32_on_cuda_is_not_tf32`): the defect is TF32 (cuDNN rounds
  fp32 operands to a 10-bit mantissa, on Ampere and newer by default): ~1.5e-3 on that input; fp32 by any
  algorithm: ~2e-6. 1e-4 leaves more than 10x on both sides (1e-5 left 5x to the rounding).
- TILED_VS_WHOLE (fp32 tiles against one window, `test_gpu_tiled_equals_untiled_fp32`): the defect is a halo or
  placement error at a tile's edge: a halo one pixel short is already off by ~0.1; fp32 rounding of other
  algorithms per shape ~2e-6. 1e-6 was at the rounding itself.
- FP16_MAX / FP16_MEAN (fp16 against fp32, `test_fp16_close_to_fp32_on_gpu`): fp16 operands and activations give
  max ~1.5e-3, mean ~2.7e-4 on that input (2e-3 left 1.3x); the defect is another precision or a wrong cast:
  bfloat16 (7-bit mantissa) gives max ~1e-2, mean ~1.8e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP32_VS_CPU = 1e-4
TILED_VS_WHOLE = 1e-4
FP16_MAX = 5e-3
FP16_MEAN = 7e-4


def tf32(t: torch.Tensor, rounding: str = "nearest") -> torch.Tensor:
    """fp32 values with the mantissa cut to TF32's 10 bits (13 low bits dropped), by rounding or truncation."""
    bits = t.float().contiguous().view(torch.int32)
    if rounding == "nearest":
        bits = bits + 0x1000
    return (bits & ~0x1FFF).view(torch.float32)


def fft_conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation through the FFT in x's dtype: how cuDNN's FFT algorithms round."""
    kh, kw = w.shape[-2:]
    size = x.shape[-2:]
    spectrum = torch.einsum("nchw,ochw->nohw", torch.fft.rfft2(x, s=size), torch.fft.rfft2(torch.flip(w, (-2, -1)), s=size))
    return torch.fft.irfft2(spectrum, s=size)[:, :, kh - 1 :, kw - 1 :] + b.view(1, -1, 1, 1)


def forward(model, window: torch.Tensor, operands=lambda t: t, activations=lambda t: t, conv=F.conv2d) -> torch.Tensor:
    """The SRCNN of `model` on a padded window (valid convolutions), float32 sums, with `operands` applied to each
    layer's input, weights and bias (the precision the hardware multiplies in) and `activations` to each layer's
    output (the precision it stores), clamped to [0, 1] as `Upscaler` does."""
    x = window.float()
    for k, layer in enumerate((model.conv1, model.conv2, model.conv3)):
        x = activations(conv(operands(x), operands(layer.weight.float()), operands(layer.bias.float())))
        if k < 2:
            x = F.relu(x)
    return x.clamp(0.0, 1.0)
