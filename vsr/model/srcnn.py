"""SRCNN (Dong et al., TPAMI 2016) and its weights file format.

Contract:
- `SRCNN.forward(x)` takes float NCHW, C = `config.channels` (1 = Y), values in [0, 1],
  already bicubic-upscaled to the target size. With `pad=False` (training) the three
  convolutions are 'valid' and the output is smaller by `config.border` on every side;
  with `pad=True` (inference, the default) the input is first replicate-padded by
  `border`, so the output has the input's size. Padding the input once (not each
  layer) means a tile processed with a halo of `border` real pixels gives exactly the
  pixels of the whole frame.
- Weights files are safetensors: tensors `conv{1,2,3}.{weight,bias}` and the config
  (and free-form training metadata) as JSON strings in the header metadata. Loading
  never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vsr.errors import WeightsError
from vsr.media.atomic import atomic_path


@dataclass(frozen=True)
class SRCNNConfig:
    """Filter sizes f1-f2-f3 and widths n1, n2 of the three layers (paper notation)."""

    f1: int = 9
    f2: int = 5
    f3: int = 5
    n1: int = 64
    n2: int = 32
    channels: int = 1

    @classmethod
    def from_arch(cls, arch: str, n1: int = 64, n2: int = 32, channels: int = 1) -> SRCNNConfig:
        """Parse the paper's 'f1-f2-f3' notation, e.g. '9-5-5'."""
        try:
            f1, f2, f3 = (int(p) for p in arch.split("-"))
        except ValueError:
            raise ValueError(f"architecture {arch!r} is not of the form f1-f2-f3, e.g. 9-5-5") from None
        cfg = cls(f1, f2, f3, n1, n2, channels)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("f1", "f2", "f3"):
            v = getattr(self, name)
            if v < 1 or v % 2 == 0:
                raise ValueError(f"{name} must be a positive odd filter size, got {v}")
        for name in ("n1", "n2", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def arch(self) -> str:
        return f"{self.f1}-{self.f2}-{self.f3}"

    @property
    def border(self) -> int:
        """Pixels lost on each side by the valid convolutions (the receptive-field radius)."""
        return (self.f1 + self.f2 + self.f3 - 3) // 2

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per output pixel (weights only)."""
        c = self.channels
        return self.f1**2 * c * self.n1 + self.f2**2 * self.n1 * self.n2 + self.f3**2 * self.n2 * c


class SRCNN(nn.Module):
    """Three convolutions: patch extraction, non-linear mapping, reconstruction."""

    def __init__(self, config: SRCNNConfig = SRCNNConfig()):
        super().__init__()
        config.validate()
        self.config = config
        self.conv1 = nn.Conv2d(config.channels, config.n1, config.f1)
        self.conv2 = nn.Conv2d(config.n1, config.n2, config.f2)
        self.conv3 = nn.Conv2d(config.n2, config.channels, config.f3)

    def forward(self, x: torch.Tensor, pad: bool = True) -> torch.Tensor:
        if pad:
            b = self.config.border
            x = F.pad(x, (b, b, b, b), mode="replicate")
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.conv3(x)

    def init_gaussian(self, std: float = 1e-3, generator: torch.Generator | None = None) -> None:
        """The paper's initialisation: weights ~ N(0, std^2), biases 0."""
        for conv in (self.conv1, self.conv2, self.conv3):
            with torch.no_grad():
                conv.weight.normal_(0.0, std, generator=generator)
                conv.bias.zero_()

    def init_he(self, generator: torch.Generator | None = None) -> None:
        """He (Kaiming) normal init for the ReLU layers, N(0, 1e-3^2) for the last, biases 0."""
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                conv.bias.zero_()
            self.conv3.weight.normal_(0.0, 1e-3, generator=generator)
            self.conv3.bias.zero_()


def save_weights(model: SRCNN, path: Path, metadata: dict | None = None) -> None:
    """Write the model's config and weights (and JSON-able metadata) as safetensors."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "vsr-srcnn-1", "config": json.dumps(dataclasses.asdict(model.config))}
    if metadata:
        meta["training"] = json.dumps(metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def read_metadata(path: Path) -> dict:
    """The training metadata stored with a weights file ({} when there is none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("training", "{}"))


def load_weights(path: Path, device: torch.device | str = "cpu") -> SRCNN:
    """Rebuild an SRCNN from a weights file written by `save_weights` (eval mode)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; pass --weights with a .safetensors file from `vsr train`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        config = SRCNNConfig(**json.loads(meta["config"]))
        model = SRCNN(config)
        model.load_state_dict(tensors)
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
        raise WeightsError(
            f"{path}: not a valid vsr weights file ({type(exc).__name__}); use a .safetensors file written by `vsr train`"
        ) from exc
    return model.to(device).eval()


def weights_hash(model: SRCNN) -> str:
    """A short hash of the config and parameter values (engine cache keys)."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(model.config), sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
