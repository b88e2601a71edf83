"""BT.601 studio-range colour conversion for images (the SR literature's protocol).

Contract: RGB arrays/tensors hold float values in [0, 1]; Y/Cb/Cr are returned in
[0, 1] as well, i.e. the MATLAB `rgb2ycbcr` studio-range values divided by 255:
    Y  = (16  + 65.481 R + 128.553 G + 24.966 B) / 255
    Cb = (128 - 37.797 R -  74.203 G + 112.0  B) / 255
    Cr = (128 + 112.0  R -  93.786 G -  18.214 B) / 255
Channels are the last axis for numpy (HxWx3) and axis -3 for torch (...x3xHxW).
"""

from __future__ import annotations

import numpy as np

_RGB2YCBCR = (
    np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ],
        dtype=np.float64,
    )
    / 255.0
)
_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCBCR2RGB = np.linalg.inv(_RGB2YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 float RGB in [0,1] -> HxWx3 float64 YCbCr in [0,1] (studio range)."""
    return rgb.astype(np.float64) @ _RGB2YCBCR.T + _OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_ycbcr`; result is not clipped."""
    return (ycbcr.astype(np.float64) - _OFFSET) @ _YCBCR2RGB.T


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 float RGB in [0,1] -> HxW float64 Y in [16/255, 235/255]."""
    return rgb.astype(np.float64) @ _RGB2YCBCR[0] + _OFFSET[0]
