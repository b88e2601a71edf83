"""TensorRT backend through torch-tensorrt (dynamo frontend), with an on-disk engine cache.

UNTESTED on a GPU: TensorRT cannot be installed in this project's environment. The calls are checked
against torch-tensorrt's own source for every release the `[tensorrt]` extra allows (2.4.0 to 2.14.0:
`pip download --no-deps torch-tensorrt==X`, read the wheel's Python), and tests/test_trt_versions.py runs
`compile_engine` and `save_engine` against fakes that enforce each release family's argument rules.

Contract:
- `available()` is True when `torch_tensorrt` imports and CUDA is available.
- `TensorRTUpscaler(model, device, precision, tile, notice)` is an `Upscaler` (see `vsr.engine.base`) whose windows
  run in a static-shape TensorRT engine, one per window shape, FP16 or FP32, `min_block_size=1` so the whole
  network is one TensorRT block, built on `device` (cuda:N) and run there.
- Precision (`build_kwargs`): the model and its `Input` are already half for FP16. torch-tensorrt 2.4-2.9 build
  "weakly typed" networks, where FP16 kernels are used only if `enabled_precisions` holds torch.half
  (dynamo/conversion/_TRTInterpreter.py sets BuilderFlag.FP16 from it). 2.10-2.12 default to
  `use_explicit_typing=True` (dynamo/_defaults.py) and assert when `enabled_precisions` holds anything but
  float32 (dynamo/_compiler.py: "enabled_precisions should not be used when use_explicit_typing=True");
  2.13 and 2.14 have no such argument: networks are always strongly typed, so the half model gives an FP16
  engine. Which case applies is read from the signature of `torch_tensorrt.dynamo.compile` (undecorated in
  every release): `enabled_precisions={dtype}` is passed exactly when it has that parameter and no
  `use_explicit_typing` defaulting to True. FP32 engines pass `disable_tf32=True` (TensorRT enables TF32 by
  default; fp32 means fp32 in vsr).
- Device: `device=torch.device("cuda", N)` (an index-less device or "cuda" fails in torch_tensorrt/_Device.py)
  and the build, load and save run under `torch.cuda.device(N)`: no torch-tensorrt release sets the device
  itself, and the TensorRT builder uses the current one.
- Engines are built on first use of a shape (`notice` says so: a build takes tens of seconds) and saved under
  `$VSR_CACHE/engines/` (default ~/.cache/vsr/engines) as `.pt2` (what torch.export expects) with a name keyed
  by the model's weights hash, the input shape, the precision, vsr's build settings (`BUILD_SETTINGS`, bumped
  when the build call changes), the torch, torch-tensorrt and TensorRT versions and the GPU's name and compute
  capability: a changed model, build, library or GPU never reuses a stale engine. Writes are atomic.
- A cached engine is code: `torch.export.load` may unpickle it (torch/_export/serde/serialize.py falls back to
  `torch.load(weights_only=False)`; torch-tensorrt 2.13+ pickles its engine objects). vsr therefore loads only
  engine files in a cache folder owned by the current user and writable by no one else (as ssh treats its
  keys), and loads and runs each once before use; one that fails either check is rebuilt with a notice.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import stat
from pathlib import Path

import torch

from vsr.cache import cache_dir
from vsr.engine.base import Notice, Upscaler, _Valid
from vsr.errors import BackendError
from vsr.media.atomic import atomic_path
from vsr.model.srcnn import SRCNN, weights_hash

CHECKED = ((2, 4), (2, 14))  # the first and last torch-tensorrt minor releases the [tensorrt] extra allows


def install_advice(torch_version: str = torch.__version__) -> str:
    """How to install torch-tensorrt for this torch, for messages. Every torch-tensorrt release requires the torch of
    its own minor version (wheel METADATA: 2.4.0 `torch<2.5.0,>=2.4.0`, 2.6.x `torch==2.6.0`, 2.14.0
    `torch<2.15.0,>=2.14.0`), so `pip install 'torch-tensorrt<2.15,>=2.4'` (what the [tensorrt] extra says) takes
    the newest, 2.14.0, and replaces any other torch with a 2.14 to fit it. `torch-tensorrt==X.Y.*` for torch X.Y
    keeps the torch that is there; no release vsr was checked against fits a torch outside 2.4-2.14."""
    major, minor = (int(part) for part in torch_version.split("+")[0].split(".")[:2])
    if not CHECKED[0] <= (major, minor) <= CHECKED[1]:
        first, last = (".".join(map(str, v)) for v in CHECKED)
        return f"no torch-tensorrt release vsr was checked against ({first} to {last}) fits torch {major}.{minor}"
    return f"`pip install 'torch-tensorrt=={major}.{minor}.*'` installs the release for your torch {major}.{minor}"


INSTALL_HINT = (
    f"torch-tensorrt is not installed; {install_advice()} (it needs an NVIDIA GPU and TensorRT for your CUDA "
    "version), or use --backend compile"
)


def _import():
    try:
        return importlib.import_module("torch_tensorrt")
    except Exception:  # noqa: BLE001 - ImportError, or a broken TensorRT install failing at import
        return None


def available() -> bool:
    return torch.cuda.is_available() and _import() is not None


BUILD_SETTINGS = 2  # bump when compile_engine's call changes: engines built the old way are not reused


def build_kwargs(tt, precision: str, device: torch.device) -> dict:
    """The keyword arguments of `tt.compile` for this torch-tensorrt release (see the module contract)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    params = inspect.signature(tt.dynamo.compile).parameters
    typing = params.get("use_explicit_typing")
    strongly_typed = "enabled_precisions" not in params or (typing is not None and typing.default is True)
    kwargs: dict = {"ir": "dynamo", "min_block_size": 1, "device": torch.device("cuda", device.index)}
    if not strongly_typed:
        kwargs["enabled_precisions"] = {dtype}
    if precision == "fp32":
        kwargs["disable_tf32"] = True
    return kwargs


def compile_engine(tt, module: torch.nn.Module, shape: tuple[int, ...], precision: str, device: torch.device):
    """Build one static-shape engine of `module` (already on `device`, in `precision`) for inputs of `shape`."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    return tt.compile(module, inputs=[tt.Input(shape=list(shape), dtype=dtype)], **build_kwargs(tt, precision, device))


def save_engine(tt, engine, path: str, example: torch.Tensor) -> None:
    """Save an engine as an ExportedProgram. `inputs=` is accepted by every release (an alias of `arg_inputs`
    from 2.5) and needed where `retrace` defaults to True (2.10+) and in 2.4/2.5 (torch_tensorrt/_compile.py)."""
    tt.save(engine, path, inputs=[example])


def _trusted(path: Path) -> bool:
    """Whether `path` and its folder belong to this user and no one else can write them (see the contract)."""
    for p in (path.parent, path):
        st = p.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


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
        "build": BUILD_SETTINGS,
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
        precision: str | tuple[str, ...] = "fp16",
        tile: int | None = None,
        notice: Notice = lambda message: None,
    ):
        self._tt = _import()
        if self._tt is None:
            raise BackendError(INSTALL_HINT)
        device = torch.device(device)
        if device.type != "cuda":
            raise BackendError("the tensorrt backend needs a CUDA GPU; use --backend eager on the CPU")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(model, device, precision, tile)
        self.notice = notice
        self.model_hash = weights_hash(model)
        self.folder = cache_dir() / "engines"
        self._engines: dict[tuple[int, ...], torch.nn.Module] = {}

    def _engine(self, shape: tuple[int, ...]) -> torch.nn.Module:
        if shape in self._engines:
            return self._engines[shape]
        key = engine_key(self.model_hash, shape, self.precision, self.device)
        size = "x".join(map(str, shape))
        path = self.folder / f"srcnn-{self.config.arch}-{size}-{self.precision}-{key}.pt2"
        example = torch.zeros(shape, dtype=self.dtype, device=self.device)
        engine = None
        if path.is_file():
            if not _trusted(path):
                self.notice(
                    f"not loading the cached TensorRT engine {path}: it or its folder is not yours alone; building it again"
                )
            else:
                try:
                    engine = self._load(path, example)
                except Exception as exc:  # noqa: BLE001 - a truncated, foreign or stale file: build a new one
                    self.notice(f"could not load the cached TensorRT engine {path} ({type(exc).__name__}); building it again")
        if engine is None:
            self.notice(f"building a TensorRT engine for {size} {self.precision} (once; cached at {path})")
            engine = self._build(shape, example, path)
        self._engines[shape] = engine
        return engine

    def _load(self, path: Path, example: torch.Tensor) -> torch.nn.Module:
        """A cached engine, checked on one call (a file that loads but cannot run is as useless as a broken one).
        The TensorRT op it calls (`tensorrt::execute_engine`) is registered by importing torch_tensorrt (done in
        __init__)."""
        with torch.cuda.device(self.device):
            engine = torch.export.load(str(path)).module()
            engine(example)
            torch.cuda.synchronize(self.device)  # a failure on the GPU surfaces here, not in the SR thread later
        return engine

    def _build(self, shape: tuple[int, ...], example: torch.Tensor, path: Path) -> torch.nn.Module:
        tt = self._tt
        try:
            with torch.cuda.device(self.device):
                engine = compile_engine(tt, _Valid(self.model).eval(), shape, self.precision, self.device)
        except Exception as exc:  # noqa: BLE001 - surface TensorRT build failures as one line
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
            raise BackendError(f"TensorRT could not build an engine ({reason}); use --backend compile") from None
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_path(path) as tmp, torch.cuda.device(self.device):
                save_engine(tt, engine, tmp, example)
        except Exception as exc:  # noqa: BLE001 - the engine works even if caching it fails
            self.notice(f"could not cache the TensorRT engine ({type(exc).__name__}: {exc})")
        return engine

    def _run_valid(self, window: torch.Tensor) -> torch.Tensor:
        x = window.to(self.dtype).contiguous()
        return self._engine(tuple(x.shape))(x).float()
