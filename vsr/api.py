"""vsr as a Python library: the public API, also reachable as `vsr.load_model`, `vsr.upscale_image`, ...

    import vsr
    model = vsr.load_model(scale=3)                      # the shipped 9-5-5 x3 weights, or a .safetensors file
    up = vsr.make_upscaler(model)                        # device, backend and precision "auto", as the CLI
    big = vsr.upscale_image(image, 3, upscaler=up)       # uint8 HxW, HxWx3 (RGB) or HxWx4 -> 3x larger, same kind
    summary = vsr.upscale_video("in.mp4", "out.mp4", 3)  # what `vsr upscale` guarantees for video

Contract: the same guarantees as the `vsr` command (every frame with its timestamp, audio and colour tags kept,
atomic output, an existing output kept unless `overwrite`), with errors raised as `vsr.VsrError` subclasses whose
message is one actionable line; never `sys.exit`, never printing: the engine's notices (a backend handing over, an
emulated precision) go to the `notice` callback when one is given, warnings to the `vsr` logger, which has a
`NullHandler` (configure logging to see them). Stop signals are the caller's: install none, or use
`vsr.signals.install()` as the CLI does. This module imports torch; `import vsr` does not until the API is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vsr.engine.base import Notice, Upscaler
from vsr.engine.chain import make_upscaler as _make_upscaler
from vsr.engine.ensemble import SelfEnsemble
from vsr.errors import UsageError
from vsr.model.srcnn import SRCNN, load_weights
from vsr.model.weights import default_weights
from vsr.pipeline.images import upscale_image as _upscale_image
from vsr.pipeline.video import VideoSummary
from vsr.pipeline.video import upscale_video as _upscale_video

__all__ = ["SRCNN", "SelfEnsemble", "Upscaler", "VideoSummary", "load_model", "make_upscaler", "upscale_image", "upscale_video"]


def load_model(weights: str | Path | None = None, *, scale: int = 2, arch: str = "9-5-5") -> SRCNN:
    """The SRCNN in a safetensors weights file (its architecture is in the file), or without `weights` the shipped
    `arch` model for `scale` (9-5-5 or 9-1-5, x2-x4; `$VSR_WEIGHTS` overrides where they are found)."""
    return load_weights(Path(weights) if weights is not None else default_weights(scale, arch))


def make_upscaler(
    model: SRCNN,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    notice: Notice | None = None,
) -> Upscaler:
    """The engine `vsr upscale` would build: `backend` auto|eager|compile|tensorrt, `device` auto|cpu|cuda[:N],
    `precision` auto|fp32|bf16|fp16 (see `vsr.engine.chain.make_upscaler`)."""
    return _make_upscaler(model, backend, device, precision, notice=notice or (lambda text: None))


def _engine(upscaler, scale: int, arch: str, device: str) -> Upscaler:
    if upscaler is not None:
        return upscaler
    if int(scale) != scale or not 2 <= scale <= 8:
        raise UsageError(f"scale must be an integer from 2 to 8, got {scale}")
    return make_upscaler(load_model(scale=int(scale), arch=arch), device=device)


def upscale_image(
    image: np.ndarray,
    scale: int,
    *,
    upscaler: Upscaler | SelfEnsemble | None = None,
    arch: str = "9-5-5",
    device: str = "auto",
    ensemble: bool = True,
) -> np.ndarray:
    """`image` (numpy uint8: HxW grey, HxWx3 RGB or HxWx4 RGBA) `scale` times larger, the same kind, as `vsr upscale`
    writes it for an image file: luma through SRCNN, chroma and alpha bicubic, the self-ensemble unless
    `ensemble=False` (8x the work, +0.1-0.2 dB). Without `upscaler`, the shipped `arch` weights for `scale`."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise UsageError("image must be a numpy uint8 array: HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA)")
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise UsageError(f"image has {image.shape[2]} channels; give 1 (HxW), 3 (RGB) or 4 (RGBA)")
    engine = _engine(upscaler, scale, arch, device)
    if ensemble and not isinstance(engine, SelfEnsemble):
        engine = SelfEnsemble(engine)
    return _upscale_image(image, int(scale), engine)


def upscale_video(
    src: str | Path,
    dst: str | Path,
    scale: int,
    *,
    upscaler: Upscaler | SelfEnsemble | None = None,
    arch: str = "9-5-5",
    device: str = "auto",
    codec: str | None = None,
    crf: float | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    overwrite: bool = False,
    progress: Callable[[dict], None] | None = None,
    hwaccel: str | None = None,
) -> VideoSummary:
    """Upscale the video `src` (a file, a URL) into `dst`, as `vsr upscale SRC DST` does in one process: every frame
    with its input timestamp, the other streams copied, the output written to a temporary file and renamed when
    complete; an existing `dst` is an `OutputError` unless `overwrite`. `progress` receives the pipeline's events
    (dicts, see `vsr.pipeline.video`). Without `upscaler`, the shipped `arch` weights for `scale`."""
    from vsr.scaleout.workdir import check_stale, discard

    engine = _engine(upscaler, scale, arch, device)
    dst = str(dst)
    if not overwrite:
        check_stale(dst)  # an interrupted segmented run's parts are not dropped silently
    summary = _upscale_video(
        src, dst, scale, engine, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, overwrite=overwrite,
        progress=progress, hwaccel=hwaccel,
    )  # fmt: skip
    if overwrite:
        discard(dst, lambda text: None)
    return summary
