"""Evaluation under the SR literature's protocol, beside the paper's numbers.

Contract: for each ground-truth image of a folder, modcrop to `scale`, make the LR
image with MATLAB bicubic (uint8, as a user's LR file would be), upscale it through
`upscale_image` (the same code as `vsr upscale`), and compare MATLAB-rounded Y
(`rgb2ycbcr` on uint8) with `scale` pixels shaved from every border: PSNR in dB and
SSIM. Bicubic is measured through the same path with no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsr.media.imageio import list_images, read_image
from vsr.media.resize import imresize_uint8, modcrop
from vsr.pipeline.images import YUpscaler, upscale_image
from vsr.train.data import y_uint8
from vsr.train.metrics import psnr, ssim

# Published Y-PSNR (dB): bicubic and SRCNN 9-5-5 (ImageNet), as tabulated by Kim et al. 2016.
PAPER_PSNR = {
    "Set5": {"bicubic": {2: 33.66, 3: 30.39, 4: 28.42}, "srcnn": {2: 36.66, 3: 32.75, 4: 30.48}},
    "Set14": {"bicubic": {2: 30.24, 3: 27.55, 4: 26.00}, "srcnn": {2: 32.42, 3: 29.28, 4: 27.49}},
}


@dataclass
class ImageScore:
    name: str
    bicubic_psnr: float
    bicubic_ssim: float
    model_psnr: float | None = None
    model_ssim: float | None = None


@dataclass
class EvalResult:
    dataset: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)

    def mean(self, key: str) -> float | None:
        values = [getattr(s, key) for s in self.images]
        return None if any(v is None for v in values) else float(np.mean(values))

    def paper(self, method: str) -> float | None:
        return PAPER_PSNR.get(self.dataset, {}).get(method, {}).get(self.scale)


def load_ground_truth(folder: Path, scale: int) -> list[tuple[str, np.ndarray]]:
    """(name, modcropped uint8 image) for every image of the folder."""
    return [(p.stem, modcrop(read_image(p), scale)) for p in list_images(folder)]


def score_pair(output: np.ndarray, truth: np.ndarray, scale: int) -> tuple[float, float]:
    """(PSNR, SSIM) of MATLAB-rounded Y with `scale` pixels shaved."""
    a, b = y_uint8(output), y_uint8(truth)
    return psnr(a, b, scale), ssim(a, b, scale)


def evaluate(images: list[tuple[str, np.ndarray]], scale: int, upscaler: YUpscaler | None, dataset: str = "") -> EvalResult:
    """Score bicubic and (if given) the model on modcropped ground-truth images."""
    result = EvalResult(dataset, scale)
    for name, truth in images:
        lr = imresize_uint8(truth, 1.0 / scale)
        score = ImageScore(name, *score_pair(upscale_image(lr, scale, None), truth, scale))
        if upscaler is not None:
            score.model_psnr, score.model_ssim = score_pair(upscale_image(lr, scale, upscaler), truth, scale)
        result.images.append(score)
    return result
