"""The eager backend's CPU path: SRCNN's valid convolutions through oneDNN in channels_last, each layer in its own
dtype, with ReLU fused and the last layer as a 1x1 convolution to its taps plus a shifted sum (`_onednn_forward`);
results do not depend on the thread count."""

from __future__ import annotations

import torch

from vsr.model.srcnn import SRCNN

_ONEDNN = torch.backends.mkldnn.is_available()


def _onednn_forward(
    model: SRCNN, x: torch.Tensor, dtypes: tuple[torch.dtype, ...], taps: torch.Tensor | None = None
) -> torch.Tensor:
    """SRCNN's valid convolutions through oneDNN, channels_last, each layer in its own dtype (fp32 or bf16; the
    weights are already in it and channels_last), whatever the thread count, so that a CPU result does not depend
    on how many threads computed it (segments in worker processes with fewer threads each must give the
    one-process output, byte for byte). `F.conv2d` picks oneDNN by a heuristic that sends a 1x1 convolution
    (9-1-5's middle layer) with batch 1 to the native path when torch has one thread, and to oneDNN with more
    ("For 1x1 filters, MKLDNN is faster than THNN when multi-threaded, but THNN is faster when single-threaded",
    aten/src/ATen/native/Convolution.cpp, ConvParams::use_mkldnn); the two round differently (up to 4e-7,
    a code value at ties). oneDNN's own results are the same for 1 to 4 threads, in fp32 and bf16
    (tests/test_engine.py). channels_last (NHWC) is oneDNN's native layout: measured on a 2-core Zen 4, 9-5-5 on
    a 1080p frame, 2.53 s NCHW whole frame -> 1.24 s (bench/cpu_layers.py). The first two layers take their ReLU
    as a oneDNN post-op (`_FUSED`), which saves a pass over their outputs.
    With `taps` (see `_taps`) the last layer runs as `_one_channel_conv`."""
    for k, conv in enumerate((model.conv1, model.conv2, model.conv3)):
        x = x.to(dtypes[k]).contiguous(memory_format=torch.channels_last)
        if k == 2 and taps is not None:
            return _one_channel_conv(x, taps, conv.bias)
        if k < 2 and _FUSED is not None:
            x = _FUSED(x, conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
            continue
        x = torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1)
        if k < 2:
            x = torch.relu_(x)
    return x.float()


# oneDNN's convolution with ReLU as a post-op (conv, bias and ReLU in one pass over the output): what Inductor's
# CPU fusion emits (torch/_inductor/fx_passes/mkldnn_fusion.py), registered by torch builds with oneDNN; looked
# up, not assumed. Measured by bench/cpu_layers.py (docs/performance.md).
_FUSED = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None) if _ONEDNN else None


def _taps(conv: torch.nn.Conv2d) -> torch.Tensor | None:
    """For a C -> 1 channel k x k fp32 convolution (SRCNN's last layer): its weights as a 1x1 convolution C -> k*k,
    one output channel per tap (i, j) at channel i*k + j, channels_last; None for any other convolution."""
    w = conv.weight.detach()
    if w.shape[0] != 1 or w.dtype != torch.float32 or w.shape[-1] != w.shape[-2]:
        return None
    c, k = w.shape[1], w.shape[-1]
    return w[0].permute(1, 2, 0).reshape(k * k, c, 1, 1).contiguous(memory_format=torch.channels_last)


def _one_channel_conv(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A valid C -> 1 channel k x k convolution of channels_last fp32 `x`, as oneDNN's 1x1 convolution C -> k*k
    (`taps`) and a sum of the k*k planes, each shifted by its tap: out[y, x] = bias + sum_ij z[i*k+j, y+i, x+j].
    oneDNN computes a 1-channel output in blocks of 16 channels (15 of them wasted): SRCNN's last layer took 25 %
    of a 9-5-5 frame and half of a 9-1-5 one. This way it is 3x faster (measured on a 2-core Zen 4: 6.0 -> 2.0 ms
    on a 240x216 tile), closer to float64 (1.5e-7 against oneDNN's 6.7e-7) and, like oneDNN, the same for any
    thread count (tests/test_engine.py): the sum reduces each output's k*k terms in one thread."""
    z = torch.ops.aten.mkldnn_convolution(x, taps, None, [0, 0], [1, 1], [1, 1], 1)  # n x k*k x H x W, NHWC
    n, kk, big_h, big_w = z.shape
    k = int(round(kk**0.5))
    if not z.is_contiguous(memory_format=torch.channels_last):
        z = z.contiguous(memory_format=torch.channels_last)
    h, w = big_h - k + 1, big_w - k + 1
    # view[n, y, x, i, j] = z[n, i*k + j, y + i, x + j] in NHWC memory: offset n*H*W*kk + (y+i)*W*kk + (x+j)*kk + i*k + j
    view = z.as_strided((n, h, w, k, k), (big_h * big_w * kk, big_w * kk, kk, big_w * kk + k, kk + 1))
    return (view.sum(dim=(3, 4)) + bias).unsqueeze(1)
