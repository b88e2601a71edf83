"""Super-resolution of still images: Y through SRCNN, chroma and alpha bicubic.

Contract: `upscale_image(img, scale, upscaler)` takes a uint8 image (HxW grey, HxWx3
RGB or HxWx4 RGBA) and returns uint8 of the same kind, `scale` times larger. Colour
images go to BT.601 studio-range YCbCr; Y is bicubic-upscaled (MATLAB kernel) and
refined by the upscaler, Cb/Cr (and alpha) are bicubic-upscaled; the result is
converted back, rounded and clipped. A grey (single-channel) image is luma as it is:
its values go through SRCNN directly and come back as grey, as the SR literature's
MATLAB scripts treat single-channel images (no studio-range mapping).
`upscaler=None` gives plain MATLAB bicubic (the baseline), through the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vsr.errors import InputError, OutputError
from vsr.media.color import rgb_to_ycbcr, ycbcr_to_rgb
from vsr.media.imageio import is_image_path, list_images, read_image, write_image
from vsr.media.resize import imresize
from vsr.signals import check as check_stop

YUpscaler = Callable[[torch.Tensor], torch.Tensor]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def upscale_image(img: np.ndarray, scale: int, upscaler: YUpscaler | None) -> np.ndarray:
    """Upscale a uint8 grey/RGB/RGBA image by an integer factor (see module contract)."""
    if img.ndim == 2:
        planes = (img / 255.0)[None]
    else:
        planes = rgb_to_ycbcr(img[:, :, :3] / 255.0).transpose(2, 0, 1)
        if img.shape[2] == 4:
            planes = np.concatenate([planes, img[None, :, :, 3] / 255.0])
    up = imresize(torch.from_numpy(np.ascontiguousarray(planes)).float(), scale)
    if upscaler is not None:
        up[0] = upscaler(up[0][None, None])[0, 0].to("cpu")
    up = up.double().numpy()
    if img.ndim == 2:
        return _to_uint8(up[0])
    rgb = _to_uint8(ycbcr_to_rgb(up[:3].transpose(1, 2, 0)))
    if img.shape[2] == 4:
        return np.concatenate([rgb, _to_uint8(up[3])[:, :, None]], axis=2)
    return rgb


def _check_target(dst: Path, overwrite: bool) -> None:
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst} already exists; pass --overwrite to replace it or choose another output")
    if not dst.parent.is_dir():
        raise OutputError(f"{dst.parent}: output folder does not exist; create it first")


def image_jobs(src: Path, dst: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """(input, output) pairs for an image file or a folder of images, checked before any work.

    A file goes to `dst` (its suffix picks the format); a folder's images go to
    `dst/<stem>.png`, creating `dst`. Raises before anything is written if an input is
    missing, an output exists without `overwrite`, or an output would replace an input.
    """
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; check the path")
    if src.is_dir():
        files = list_images(src)
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            raise InputError(f"{src}: several images share a name stem (e.g. a.png and a.jpg); outputs would collide")
        jobs = [(p, dst / f"{p.stem}.png") for p in files]
        output_folder(src, dst, [out for _, out in jobs], overwrite)
        return jobs
    if not is_image_path(dst):
        raise OutputError(f"{dst}: unsupported image suffix {dst.suffix!r}; use .png, .jpg, .bmp, .tif or .webp")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output is the input file; choose another output path")
    _check_target(dst, overwrite)
    return [(src, dst)]


def output_folder(src: Path, dst: Path, outputs: list[Path], overwrite: bool) -> None:
    """Check the outputs `outputs` in folder `dst` of the inputs in folder `src` (not the input folder, none
    existing without `overwrite`), then create `dst`."""
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"{dst}: input is a folder, so the output must be a folder too")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output folder is the input folder; choose another output folder")
    for out in outputs:
        if out.exists() and not overwrite:
            raise OutputError(f"{out} already exists; pass --overwrite to replace it or choose another output folder")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{dst}: cannot create the output folder ({exc.strerror})") from None


def upscale_files(jobs: list[tuple[Path, Path]], scale: int, upscaler: YUpscaler | None, on_done=lambda src, dst: None) -> None:
    """Run `image_jobs` pairs: read, upscale, write atomically."""
    for src, dst in jobs:
        check_stop()  # a stop signal some callback swallowed (vsr.signals)
        write_image(dst, upscale_image(read_image(src), scale, upscaler))
        on_done(src, dst)
