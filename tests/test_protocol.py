"""Resize, colour and metrics: the evaluation protocol, including golden bicubic numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vsr.media.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from vsr.media.imageio import list_images, read_image
from vsr.media.resize import imresize, modcrop
from vsr.train.data import y_uint8
from vsr.train.evaluate import PAPER_PSNR, evaluate, load_ground_truth
from vsr.train.metrics import psnr, ssim

from .conftest import smooth_image


def test_constant_image_stays_constant():
    x = torch.full((2, 7, 9), 0.37, dtype=torch.float64)
    for s in (2, 3, 1 / 3, 0.5, 1.7):
        y = imresize(x, s)
        assert y.shape[-2:] == (math.ceil(7 * s - 1e-9), math.ceil(9 * s - 1e-9))
        assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-12)


def test_linear_ramp_interior_is_exact_for_integer_upscale():
    # Bicubic reproduces linear functions away from the borders; MATLAB's sample positions
    # for x3 are (i + 0.5) / 3 - 0.5 in source pixels.
    x = torch.arange(20, dtype=torch.float64)[None].repeat(5, 1)
    y = imresize(x, 3)
    pos = (torch.arange(60, dtype=torch.float64) + 0.5) / 3 - 0.5
    assert torch.allclose(y[2, 6:-6], pos[6:-6], atol=1e-12)


def test_batched_equals_single_and_dtype_kept():
    x = torch.rand(3, 2, 17, 11, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    y = imresize(x, 2)
    assert y.dtype == torch.float32 and y.shape == (3, 2, 34, 22)
    assert torch.allclose(y[1, 0], imresize(x[1, 0], 2), atol=1e-6)


def _reference_resize(x: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic of a 2-D array in float64 straight from the tap table (rows, then columns)."""
    from vsr.media.resize import _taps_np

    for axis in (0, 1):
        n = x.shape[axis]
        w, idx = _taps_np(n, n * scale, float(scale), True)
        x = np.moveaxis((np.moveaxis(x, axis, -1)[..., idx] * w).sum(-1), -1, axis)
    return x


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_integer_upscale_runs_no_convolution_and_matches_the_taps(monkeypatch, scale):
    # A cuDNN convolution would run in TF32 on Ampere+ GPUs (torch's default), which changes 8- and 10-bit
    # samples; the polyphase path must not call one (vsr.media.resize._upscale_int_last), on any device.
    def refuse(*args, **kwargs):
        raise AssertionError("imresize called a convolution")

    for name in ("conv1d", "conv2d"):
        monkeypatch.setattr(torch.nn.functional, name, refuse)
        monkeypatch.setattr(torch, name, refuse)
    rng = np.random.default_rng(scale)
    for peak in (255, 1023):
        plane = rng.integers(0, peak + 1, (23, 31)).astype(np.float64)
        got = imresize(torch.from_numpy(plane).float()[None] / peak, scale)[0].double().numpy()
        want = _reference_resize(plane / peak, scale)
        assert np.abs(got - want).max() < 2e-6
        assert np.array_equal(np.clip(np.round(got * peak), 0, peak), np.clip(np.round(want * peak), 0, peak))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    for peak in (255, 1023):
        x = torch.randint(0, peak + 1, (1, 1, 40, 50)).float() / peak
        gpu, cpu = imresize(x.cuda(), 3).cpu(), imresize(x, 3)
        assert torch.allclose(gpu, cpu, atol=1e-6)  # TF32 would be off by ~1e-3
        flips = ((gpu * peak).round() != (cpu * peak).round()).float().mean().item()
        assert flips < 1e-3  # FMA vs separate multiply-add may move a rounded sample only at an exact tie


def test_modcrop():
    assert modcrop(np.zeros((10, 11, 3)), 3).shape == (9, 9, 3)
    assert modcrop(np.zeros((12, 12)), 4).shape == (12, 12)


def test_colour_round_trip_and_range():
    rgb = smooth_image(8, 8) / 255.0
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235 / 255)
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16 / 255)


def test_psnr_and_ssim():
    a = np.zeros((10, 10))
    b = a + 1.0
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2))
    assert psnr(a, a) == math.inf
    c = a.copy()
    c[0, 0] = 100  # only on the border: cropped away
    assert psnr(a, c, crop_border=1) == math.inf
    img = smooth_image(40, 40, channels=1).astype(np.float64)
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = img + np.random.default_rng(0).normal(0, 10, img.shape)
    s = ssim(img, noisy)
    assert 0 < s < 1 and s == pytest.approx(ssim(noisy, img))
    with pytest.raises(ValueError):
        psnr(a, np.zeros((3, 3)))


def test_grey_image_is_its_own_luma():
    """A single-channel image is scored and super-resolved as Y itself (no 16 + 219/255 v studio mapping), as the
    literature's MATLAB scripts do; grey in gives grey out."""
    from vsr.pipeline.images import upscale_image

    grey = smooth_image(12, 15, channels=1)
    np.testing.assert_array_equal(y_uint8(grey), grey.astype(np.float64))
    out = upscale_image(grey, 2, None)
    assert out.ndim == 2 and out.dtype == np.uint8 and out.shape == (24, 30)
    expected = np.clip(np.round(imresize(torch.from_numpy(grey / 255.0), 2).numpy() * 255), 0, 255)
    np.testing.assert_array_equal(out, expected)
    seen = []
    identity = lambda y: seen.append(float(y.max())) or y  # noqa: E731
    upscale_image(np.full((8, 8), 255, np.uint8), 2, identity)
    assert seen == [pytest.approx(1.0)]  # white reaches the model as 1.0, not 235/255


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_golden_bicubic(shared_data, dataset, scale):
    """Bicubic baselines under the protocol must match the published numbers within 0.02 dB (Set14 includes the
    single-channel `bridge`, scored as its own luma)."""
    published = PAPER_PSNR[dataset]["bicubic"][scale]
    # 1) The file path users get (RGB uint8 LR, RGB uint8 output), as `vsr eval` measures it.
    res = evaluate(load_ground_truth(shared_data / dataset, scale), scale, None, dataset)
    assert abs(res.mean("bicubic_psnr") - published) <= 0.02
    # 2) The original SRCNN MATLAB code: uint8 Y, float imresize down and up, rounded.
    values = []
    for path in list_images(shared_data / dataset):
        y = modcrop(y_uint8(read_image(path)), scale) / 255.0
        up = imresize(imresize(torch.from_numpy(y), 1 / scale), scale).numpy()
        values.append(psnr(np.round(np.clip(up, 0, 1) * 255), y * 255, scale))
    assert abs(float(np.mean(values)) - published) <= 0.02
