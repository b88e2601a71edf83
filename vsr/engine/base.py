"""The `Upscaler` contract and the eager backend that every other backend builds on.

Contract: an `Upscaler` maps bicubic-upscaled luma, a float32 tensor N x 1 x H x W in
[0, 1] on any device, to SRCNN output of the same shape on the same device as the
upscaler (`.device`), clamped to [0, 1]. It runs the model on its own device and
precision, in tiles of at most `tile` x `tile` output pixels with a halo of the model's
receptive-field radius (`border`), so tiled output equals untiled output up to float rounding
(oneDNN picks its kernels by shape: within 1e-5; the same tiles always give the same bytes) and memory
stays bounded on large frames. Tiles are balanced (a 1080-row frame with tile 512 gets three rows
of 360). For compiled backends (`uniform_tiles`) the few smaller edge windows are padded to
the common window shape (replicate; the extra output is discarded), so they see one shape
per frame size.

Process-wide state: building an upscaler changes none. On CUDA each call runs with the upscaler's GPU as the
current device and under `cuda_flags` (fp32 convolutions without TF32, cuDNN's algorithm search on unless the caller
asked for determinism), set for the call and put back after it (`vsr.engine.flags`).

Backends (attribute `backend`):
- `eager` (here): plain PyTorch, CPU or CUDA; fp16 or fp32 on CUDA; on the CPU fp32, bf16 or a per-layer mix of
  the two (`vsr.engine.precision`), every convolution through oneDNN in channels_last (`vsr.engine.onednn`).
- `compile`: `torch.compile` (`vsr.engine.compiled`).
- `tensorrt`: torch-tensorrt (`vsr.engine.tensorrt`).
`vsr.engine.chain.make_upscaler` picks one (with the fallback chain of `--backend auto`); no backend imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vsr.engine import flags
from vsr.engine import precision as policy
from vsr.engine.onednn import _ONEDNN, _onednn_forward, _taps
from vsr.engine.tilepool import tile_pool
from vsr.errors import BackendError, VsrError
from vsr.model.srcnn import SRCNN

Notice = Callable[[str], None]


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given. A CUDA device comes back with
    its index ('cuda' is the current device, normally cuda:0)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BackendError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError("CUDA was requested but no CUDA GPU is available; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is None:  # indexed from here on: streams, engines and worker threads name their GPU
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise BackendError(f"there is no GPU {name}: this machine has {count} (cuda:0 to cuda:{count - 1})")
    return device


def cuda_flags(found: flags.Flags) -> flags.Flags:
    """The cuDNN flags an upscaler's call runs under on CUDA, given those it finds (`vsr.engine.flags.shared` sets
    them for the call and puts back the caller's after it: nothing outside the call changes, e.g. the training
    loop that evaluates between epochs).
    - TF32 off: fp32 means fp32 (cuDNN runs fp32 convolutions in TF32, a 10-bit mantissa, on Ampere and newer by
      default); fp16 convolutions do not read the flag.
    - Algorithm search by timing (`benchmark`) on: frame shapes are fixed for a whole video, so cuDNN times its
      algorithms once per shape and keeps the fastest (off, it picks by heuristics, often not the fastest). Left as
      found when the caller asked for deterministic cuDNN or deterministic algorithms: timing can pick a different
      algorithm, so different bits, from one run to the next."""
    deterministic = found.deterministic or torch.are_deterministic_algorithms_enabled()
    return flags.Flags(benchmark=None if deterministic else True, tf32=False)


def default_tile(device: torch.device) -> int:
    """Largest output tile side: 256 on the CPU (cache friendly; fastest for 9-5-5 at 1080p here), a 1080p frame on a GPU."""
    return 2048 if device.type == "cuda" else 256


class _Valid(torch.nn.Module):
    """The model with valid (unpadded) convolutions: what the backends compile. With `dtypes` (one per layer, a
    mixed CPU plan) each layer's input is cast to its layer's dtype first."""

    def __init__(self, model: SRCNN, dtypes: tuple[torch.dtype, ...] | None = None):
        super().__init__()
        self.model = model
        self.dtypes = dtypes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtypes is None:
            return self.model(x, pad=False)
        m = self.model
        x = F.relu(m.conv1(x.to(self.dtypes[0])))
        x = F.relu(m.conv2(x.to(self.dtypes[1])))
        return m.conv3(x.to(self.dtypes[2]))


class Upscaler:
    """Eager PyTorch backend (CPU or GPU); base of the others. `precision` is a `--precision` choice (see
    `vsr.engine.precision`: None or "auto" is fp16 on a GPU and the recorded bf16/fp32 plan on the CPU), or a plan
    already resolved (one dtype name per convolution: `make_upscaler` resolves it once for every backend it builds);
    `layers`, a plan too, overrides it (a CPU worker gets its parent's this way).
    After construction `precision` is the plan's label ("fp32", "bf16", "fp16", "bf16 conv2") and `layers` the
    plan."""

    backend = "eager"
    uniform_tiles = False  # pad edge tiles to the common tile shape (compiled backends)

    def __init__(
        self,
        model: SRCNN,
        device: torch.device | str = "cpu",
        precision: str | tuple[str, ...] | None = "fp32",
        tile: int | None = None,
        layers: tuple[str, ...] | None = None,
        notice: Notice = lambda message: None,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # cuda:N everywhere (threads set it current)
            self.device = torch.device("cuda", torch.cuda.current_device())
        if layers is None and isinstance(precision, tuple):
            layers = precision
        if layers is None:
            layers = policy.layer_plan(model, precision, self.device, notice)
        elif len(layers) != len(policy.LAYERS) or any(d not in policy.DTYPES for d in layers):
            raise BackendError(f"bad layer precisions {layers!r}; give one of fp32, bf16, fp16 per layer")
        else:
            policy.check_plan(tuple(layers), self.device)
        tile = default_tile(self.device) if tile is None else tile
        if tile < 16:
            raise BackendError(f"tile size {tile} is too small; use at least 16")
        self.layers = tuple(layers)
        self.precision = policy.label(self.layers)
        self.dtypes = tuple(policy.DTYPES[d] for d in self.layers)
        self.dtype = self.dtypes[0]  # the input's dtype
        self.uniform = len(set(self.dtypes)) == 1
        self.model = copy.deepcopy(model).to(self.device, torch.float32).eval()  # the caller's model stays as it is
        self.onednn = self.device.type == "cpu" and _ONEDNN
        for conv, dtype in zip((self.model.conv1, self.model.conv2, self.model.conv3), self.dtypes, strict=True):
            conv.to(dtype)
            if self.onednn:  # oneDNN's native layout (see _onednn_forward)
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        self.taps = _taps(self.model.conv3) if self.onednn else None
        self.config = model.config
        self.tile = tile

    def _run_valid(self, window: torch.Tensor) -> torch.Tensor:
        """Valid convolutions on an already padded window (output smaller by 2*border), float32 out."""
        if self.onednn:
            return _onednn_forward(self.model, window, self.dtypes, self.taps)
        if self.uniform:
            return self.model(window.to(self.dtype), pad=False).float()
        return _Valid(self.model, self.dtypes)(window).float()

    def warm_up(self, height: int, width: int) -> None:
        """Run one blank frame of this size (bicubic-upscaled luma) through a compiled backend, so that compiling
        and engine building happen now, before any output is opened, and a failure (no C++ compiler for Inductor,
        Triton refusing the GPU, a failed engine build) is one `BackendError` line instead of a traceback from the
        SR thread. torch.compile is lazy: it fails at the first call, not when built. Eager needs no warm-up."""
        if self.backend == "eager":
            return
        try:
            self(torch.zeros(1, 1, height, width, device=self.device))
        except VsrError:
            raise
        except Exception as exc:  # noqa: BLE001 - BackendCompilerFailed, InductorError, RuntimeError, ...
            lines = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
            raise BackendError(
                f"the {self.backend} backend failed on a {width}x{height} frame ({why}); use --backend eager"
            ) from None

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Upscale (see the module contract). On CUDA, with this upscaler's GPU as the current device (TensorRT
        and Inductor allocate their outputs on the current device, so cuda:N called from a thread whose current
        device is cuda:0 would write across GPUs) and under `cuda_flags` for the call only."""
        if self.device.type == "cuda":
            with torch.cuda.device(self.device), flags.shared(cuda_flags):
                return self._call(y)
        return self._call(y)

    @torch.inference_mode()
    def _call(self, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.device, torch.float32)
        b = self.config.border
        padded = F.pad(y, (b, b, b, b), mode="replicate")
        h, w = y.shape[-2:]
        t = self.tile
        if h <= t and w <= t:
            return self._run_valid(padded).clamp_(0.0, 1.0)
        th, tw = -(-h // -(-h // t)), -(-w // -(-w // t))  # balanced tiles: ceil(h / number of tiles)
        out = torch.empty_like(y)

        def tile(corner: tuple[int, int]) -> None:
            top, left = corner
            bottom, right = min(top + th, h), min(left + tw, w)
            window = padded[:, :, top : bottom + 2 * b, left : right + 2 * b]
            short_h, short_w = th + 2 * b - window.shape[-2], tw + 2 * b - window.shape[-1]
            if self.uniform_tiles and (short_h or short_w):  # one shape for compiled code; extra pixels discarded
                window = F.pad(window, (0, short_w, 0, short_h), mode="replicate")
            out[:, :, top:bottom, left:right] = self._run_valid(window)[:, :, : bottom - top, : right - left]

        corners = [(top, left) for top in range(0, h, th) for left in range(0, w, tw)]
        threads = torch.get_num_threads()
        # a tile per thread only with at least two tiles per thread (a last round part-filled leaves threads idle;
        # measured on 2 cores only): else each tile over all threads
        pool = tile_pool(threads) if self.onednn and len(corners) >= 2 * threads else None
        if pool is not None:  # a tile per thread (vsr.engine.tilepool); the same bytes as one tile at a time
            pool.map(tile, corners)
        else:
            for corner in corners:
                tile(corner)
        return out.clamp_(0.0, 1.0)
