"""Datasets: name -> folder resolution, evaluation images, and the paper's sub-images.

Contract:
- `resolve_dataset(name_or_path)` returns an existing folder. Known names (`91images`,
  `Set5`, `Set14`) are looked up as `$VSR_DATA/<name>`, then `<cache>/datasets/<name>`
  where cache is `$VSR_CACHE` or `~/.cache/vsr` (where `vsr data get` puts them, `vsr.train.download`). Nothing
  downloads here: a missing dataset is an `InputError` that says how to get it or point at a local copy.
- `training_pairs(folder, scale)` cuts the paper's sub-images: Y of BT.601 (MATLAB
  `rgb2ycbcr`, rounded to uint8) of each modcropped image is the label; the input is
  that Y bicubic-downscaled and upscaled by `scale` in float; both are cut into
  `size` x `size` patches with stride `stride`. Returns two float32 tensors N x 1 x
  size x size with values in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vsr.cache import cache_dir
from vsr.errors import InputError
from vsr.media.color import rgb_to_y
from vsr.media.imageio import list_images, read_image
from vsr.media.resize import imresize, modcrop

KNOWN_DATASETS = ("91images", "Set5", "Set14")


def resolve_dataset(name_or_path: str | Path) -> Path:
    """A dataset name or folder path -> an existing folder of images."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name not in KNOWN_DATASETS:
        raise InputError(
            f"dataset {name!r} is neither a folder nor a known name ({', '.join(KNOWN_DATASETS)}); pass a folder of images"
        )
    candidates = []
    if os.environ.get("VSR_DATA"):
        candidates.append(Path(os.environ["VSR_DATA"]) / name)
    candidates.append(cache_dir() / "datasets" / name)
    for c in candidates:
        if c.is_dir():
            return c
    raise InputError(
        f"dataset {name!r} not found (looked in {', '.join(str(c) for c in candidates)}); get it with `vsr data get {name}`, "
        f"set VSR_DATA to a folder that contains {name}/, or pass the folder path"
    )


def as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 grey / RGB / RGBA -> uint8 HxWx3 RGB (grey replicated, alpha dropped)."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def y_uint8(img: np.ndarray) -> np.ndarray:
    """The luma the SR literature scores, HxW float64 in 0..255: MATLAB `rgb2ycbcr` of a uint8 RGB(A) image,
    rounded; a grey (single-channel) image is its own luma, as the literature's MATLAB scripts convert only
    images with three channels (Set14's `bridge`)."""
    if img.ndim == 2:
        return img.astype(np.float64)
    return np.round(rgb_to_y(img[:, :, :3] / 255.0) * 255.0)


def _patches(img: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """H x W -> N x 1 x size x size, patches at every `stride` that fit (top-left first)."""
    p = img.unfold(0, size, stride).unfold(1, size, stride)
    return p.reshape(-1, 1, size, size)


SCALE_AUGMENTATION = (1.0, 0.9, 0.8, 0.7, 0.6)


def training_pairs(
    folder: Path, scale: int, size: int = 33, stride: int = 14, rescale: tuple[float, ...] = (1.0,)
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels): the paper's sub-images of every image in `folder` (see contract)."""
    inputs, labels = [], []
    for path in list_images(folder):
        full = torch.from_numpy(y_uint8(read_image(path)) / 255.0)
        for factor in rescale:
            y = full if factor == 1.0 else (imresize(full, factor) * 255.0).round().clamp(0, 255) / 255.0
            y = modcrop(y, scale)
            if min(y.shape) < size:
                continue
            lr_up = imresize(imresize(y, 1.0 / scale), scale)
            inputs.append(_patches(lr_up, size, stride))
            labels.append(_patches(y, size, stride))
    if not inputs:
        raise InputError(f"{folder}: no image is at least {size}x{size} after modcrop; use larger training images")
    return torch.cat(inputs).float(), torch.cat(labels).float()
