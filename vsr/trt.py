"""TensorRT backend through torch-tensorrt (dynamo frontend), with an on-disk engine cache.

UNTESTED in this project's environment: TensorRT cannot be installed here. Written against
torch-tensorrt's documented API (`torch_tensorrt.compile(..., ir="dynamo")`,
`torch_tensorrt.Input`, `torch_tensorrt.save`, `torch.export.load(...).module()`).

Contract:
- `available()` is True when `torch_tensorrt` imports and CUDA is available.
- `TensorRTUpscaler(model, device, precision, tile, notice)` is an `Upscaler` (see `vsr.engine`)
  whose windows run in a static-shape TensorRT engine, one per window shape, FP16 (`precision`
  fp16: `enabled_precisions={torch.half}`, half inputs) or FP32, `min_block_size=1` so the whole
  network is one TensorRT block.
- Engines are built on first use of a shape (`notice` says so: a build takes tens of seconds)
  and saved under `$VSR_CACHE/engines/` (default ~/.cache/vsr/engines) with a name keyed by
  the model's weights hash, the input shape, the precision, the torch, torch-tensorrt and
  TensorRT versions and the GPU's name and compute capability: a changed model, library or
  GPU never reuses a stale engine. A cached engine is loaded with `torch.export.load`
  (no pickled code). Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import torch

from .atomic import atomic_path
from .engine import Notice, Upscaler, _Valid, cache_root
from .errors import BackendError
from .model import SRCNN, weights_hash

INSTALL_HINT = (
    "torch-tensorrt is not installed; install it with `pip install 'vsr[tensorrt]'` (needs an NVIDIA GPU and "
    "TensorRT for your CUDA version), or use --backend compile"
)


def _import():
    try:
        return importlib.import_module("torch_tensorrt")
    except Exception:  # noqa: BLE001 - ImportError, or a broken TensorRT install failing at import
        return None


def available() -> bool:
    return torch.cuda.is_available() and _import() is not None


def engine_key(model_hash: str, shape: tuple[int, ...], precision: str, device: torch.device) -> str:
    """The cache key: everything an engine depends on (see the module contract)."""
    tt = _import()
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except Exception:  # noqa: BLE001
        trt_version = "unknown"
    props = torch.cuda.get_device_properties(device)
    parts = {
        "model": model_hash,
        "shape": list(shape),
        "precision": precision,
        "torch": torch.__version__,
        "torch_tensorrt": getattr(tt, "__version__", "unknown"),
        "tensorrt": trt_version,
        "gpu": props.name,
        "cc": f"{props.major}.{props.minor}",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class TensorRTUpscaler(Upscaler):
    """torch-tensorrt backend (see the module contract)."""

    backend = "tensorrt"
    uniform_tiles = True

    def __init__(
        self,
        model: SRCNN,
        device: torch.device | str = "cuda",
        precision: str = "fp16",
        tile: int | None = None,
        notice: Notice = lambda message: None,
    ):
        self._tt = _import()
        if self._tt is None:
            raise BackendError(INSTALL_HINT)
        if torch.device(device).type != "cuda":
            raise BackendError("the tensorrt backend needs a CUDA GPU; use --backend eager on the CPU")
        super().__init__(model, device, precision, tile)
        self.notice = notice
        self.model_hash = weights_hash(model)
        self.folder = cache_root() / "engines"
        self._engines: dict[tuple[int, ...], torch.nn.Module] = {}

    def _engine(self, shape: tuple[int, ...]) -> torch.nn.Module:
        if shape in self._engines:
            return self._engines[shape]
        key = engine_key(self.model_hash, shape, self.precision, self.device)
        path = self.folder / f"srcnn-{self.config.arch}-{'x'.join(map(str, shape))}-{self.precision}-{key}.ep"
        example = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if path.is_file():
            engine = torch.export.load(str(path)).module()
        else:
            self.notice(f"building a TensorRT engine for {'x'.join(map(str, shape))} {self.precision} (once; cached at {path})")
            engine = self._build(shape, example, path)
        self._engines[shape] = engine
        return engine

    def _build(self, shape: tuple[int, ...], example: torch.Tensor, path: Path) -> torch.nn.Module:
        tt = self._tt
        try:
            engine = tt.compile(
                _Valid(self.model).eval(),
                ir="dynamo",
                inputs=[tt.Input(shape=list(shape), dtype=self.dtype)],
                enabled_precisions={self.dtype},
                min_block_size=1,
            )
        except Exception as exc:  # noqa: BLE001 - surface TensorRT build failures as one line
            reason = f"{type(exc).__name__}: {exc}"
            raise BackendError(f"TensorRT could not build an engine ({reason}); use --backend compile") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(path) as tmp:
                tt.save(engine, tmp, inputs=[example])
        except Exception as exc:  # noqa: BLE001 - the engine works even if caching it fails
            self.notice(f"could not cache the TensorRT engine ({type(exc).__name__}: {exc})")
        return engine

    def _run_valid(self, window: torch.Tensor) -> torch.Tensor:
        x = window.to(self.dtype).contiguous()
        return self._engine(tuple(x.shape))(x).float()
