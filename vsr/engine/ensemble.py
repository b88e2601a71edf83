"""`SelfEnsemble(upscaler)`: the `Upscaler` interface around any backend, the mean of its
outputs on the 8 flips/rotations of the input, each turned back (the "enhanced
prediction" of Timofte et al., "Seven ways to improve example-based single image super
resolution", CVPR 2016, also known as geometric self-ensemble). 8x the model's work for
about +0.1-0.2 dB; `vsr upscale` uses it for still images by default."""

from __future__ import annotations

import torch

from vsr.engine.base import Upscaler


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th (0-7) of the 8 flips/rotations of the last two dims: mirrored if k >= 4, then
    turned k % 4 quarter turns. `inverse=True` undoes it. Training's augmentation uses it too."""
    if inverse:
        x = torch.rot90(x, -(k % 4), (-2, -1))
        return x.flip(-1) if k >= 4 else x
    return torch.rot90(x.flip(-1) if k >= 4 else x, k % 4, (-2, -1))


class SelfEnsemble:
    """Mean of `upscaler` over the 8 flips/rotations of the input (see the module contract)."""

    def __init__(self, upscaler: Upscaler):
        self.upscaler = upscaler
        self.device, self.config, self.precision = upscaler.device, upscaler.config, upscaler.precision
        self.backend = f"{upscaler.backend}+ensemble"

    def warm_up(self, height: int, width: int) -> None:
        """The wrapped backend's warm-up for both orientations the quarter turns give."""
        self.upscaler.warm_up(height, width)
        if height != width:
            self.upscaler.warm_up(width, height)

    @torch.inference_mode()
    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        total = None
        for k in range(8):
            out = dihedral(self.upscaler(dihedral(y, k)), k, inverse=True)
            total = out if total is None else total.add_(out)
        return total.div_(8)
