"""Inference backends behind one interface: `Upscaler`, and `make_upscaler` to pick one.

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

Backends (attribute `backend`):
- `eager`: plain PyTorch, CPU or CUDA; fp16 or fp32 on CUDA; on the CPU fp32, bf16 or a per-layer mix of the two
  (`vsr.engine.precision`), every convolution through oneDNN in channels_last (`_onednn_forward`).
- `compile`: `torch.compile` (Inductor, default mode), channels_last. No CUDA graphs
  (mode "reduce-overhead"): before torch 2.13 a compiled function with CUDA graphs fails in any
  thread but the one that imported Inductor's cudagraph trees (an assert in
  `cudagraph_trees.get_obj`, pytorch issue 123177), and the SR stage is another thread; and a
  graph is only recorded on the second call, after the warm-up. SRCNN on a frame is a handful of
  large kernels, so launch overhead, what graphs save, is small. Inductor's on-disk cache lives
  under `$VSR_CACHE/inductor` (default ~/.cache/vsr/inductor): a second run reuses the compiled
  kernels (Dynamo still traces). Also works on the CPU.
- `tensorrt`: torch-tensorrt (dynamo), FP16 or FP32, one static engine per window shape,
  built on first use and cached on disk (`vsr.engine.tensorrt`). Imported lazily; a clear
  `BackendError` says how to install it where it is missing.

`SelfEnsemble(upscaler)` is the same interface around any backend: the mean of its
outputs on the 8 flips/rotations of the input, each turned back (the "enhanced
prediction" of Timofte et al., "Seven ways to improve example-based single image super
resolution", CVPR 2016, also known as geometric self-ensemble). 8x the model's work for
about +0.1-0.2 dB; `vsr upscale` uses it for still images by default.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from vsr.engine import precision as policy
from vsr.engine.tilepool import tile_pool
from vsr.errors import BackendError, VsrError
from vsr.model.srcnn import SRCNN

BACKENDS = ("eager", "compile", "tensorrt")
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


def default_tile(device: torch.device) -> int:
    """Largest output tile side: 256 on the CPU (cache friendly; fastest for 9-5-5 at 1080p here), a 1080p frame on a GPU."""
    return 2048 if device.type == "cuda" else 256


def cache_root() -> Path:
    return Path(os.environ.get("VSR_CACHE", Path.home() / ".cache" / "vsr"))


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


_ONEDNN = torch.backends.mkldnn.is_available()


def _onednn_forward(
    model: SRCNN, x: torch.Tensor, dtypes: tuple[torch.dtype, ...], taps: torch.Tensor | None = None
) -> torch.Tensor:
    """SRCNN's valid convolutions through oneDNN, channels_last, each layer in its own dtype (fp32 or bf16; the
    weights are already in it and channels_last), whatever the thread count, so that a CPU result does not depend
    on how many threads computed it (segments in worker processes with fewer threads each must give the
    one-process output, byte for byte). `F.conv2d` picks oneDNN by a heuristic that sends a 1x1 convolution
    (9-1-5's middle layer) with batch 1 to the native path when torch has one thread, and to oneDNN with more
    ("For 1x1 filters, MKLDNN is faster than THNN when multi-threaded, but THNN is faster when single-threaded",
    aten/src/ATen/native/Convolution.cpp, ConvParams::use_mkldnn); the two round differently (up to 4e-7,
    a code value at ties). oneDNN's own results are the same for 1 to 4 threads, in fp32 and bf16
    (tests/test_engine.py). channels_last (NHWC) is oneDNN's native layout: measured on a 2-core Zen 4, 9-5-5 on
    a 1080p frame, 2.53 s NCHW whole frame -> 1.24 s (bench/cpu_layers.py). The first two layers take their ReLU
    as a oneDNN post-op (`_FUSED`), which saves a pass over their outputs.
    With `taps` (see `_taps`) the last layer runs as `_one_channel_conv`."""
    for k, conv in enumerate((model.conv1, model.conv2, model.conv3)):
        x = x.to(dtypes[k]).contiguous(memory_format=torch.channels_last)
        if k == 2 and taps is not None:
            return _one_channel_conv(x, taps, conv.bias)
        if k < 2 and _FUSED is not None:
            x = _FUSED(x, conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
            continue
        x = torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1)
        if k < 2:
            x = torch.relu_(x)
    return x.float()


# oneDNN's convolution with ReLU as a post-op (conv, bias and ReLU in one pass over the output): what Inductor's
# CPU fusion emits (torch/_inductor/fx_passes/mkldnn_fusion.py), registered by torch builds with oneDNN; looked
# up, not assumed. Measured by bench/cpu_layers.py (README, Performance).
_FUSED = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None) if _ONEDNN else None


def _taps(conv: torch.nn.Conv2d) -> torch.Tensor | None:
    """For a C -> 1 channel k x k fp32 convolution (SRCNN's last layer): its weights as a 1x1 convolution C -> k*k,
    one output channel per tap (i, j) at channel i*k + j, channels_last; None for any other convolution."""
    w = conv.weight.detach()
    if w.shape[0] != 1 or w.dtype != torch.float32 or w.shape[-1] != w.shape[-2]:
        return None
    c, k = w.shape[1], w.shape[-1]
    return w[0].permute(1, 2, 0).reshape(k * k, c, 1, 1).contiguous(memory_format=torch.channels_last)


def _one_channel_conv(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A valid C -> 1 channel k x k convolution of channels_last fp32 `x`, as oneDNN's 1x1 convolution C -> k*k
    (`taps`) and a sum of the k*k planes, each shifted by its tap: out[y, x] = bias + sum_ij z[i*k+j, y+i, x+j].
    oneDNN computes a 1-channel output in blocks of 16 channels (15 of them wasted): SRCNN's last layer took 25 %
    of a 9-5-5 frame and half of a 9-1-5 one. This way it is 3x faster (measured on a 2-core Zen 4: 6.0 -> 2.0 ms
    on a 240x216 tile), closer to float64 (1.5e-7 against oneDNN's 6.7e-7) and, like oneDNN, the same for any
    thread count (tests/test_engine.py): the sum reduces each output's k*k terms in one thread."""
    z = torch.ops.aten.mkldnn_convolution(x, taps, None, [0, 0], [1, 1], [1, 1], 1)  # n x k*k x H x W, NHWC
    n, kk, big_h, big_w = z.shape
    k = int(round(kk**0.5))
    if not z.is_contiguous(memory_format=torch.channels_last):
        z = z.contiguous(memory_format=torch.channels_last)
    h, w = big_h - k + 1, big_w - k + 1
    # view[n, y, x, i, j] = z[n, i*k + j, y + i, x + j] in NHWC memory: offset n*H*W*kk + (y+i)*W*kk + (x+j)*kk + i*k + j
    view = z.as_strided((n, h, w, k, k), (big_h * big_w * kk, big_w * kk, kk, big_w * kk + k, kk + 1))
    return (view.sum(dim=(3, 4)) + bias).unsqueeze(1)


class Upscaler:
    """Eager PyTorch backend (CPU or GPU); base of the others. `precision` is a `--precision` choice (see
    `vsr.engine.precision`: None or "auto" is fp16 on a GPU and the recorded bf16/fp32 plan on the CPU); `layers`, one
    dtype name per convolution, overrides it with an explicit plan (a CPU worker gets its parent's this way).
    After construction `precision` is the plan's label ("fp32", "bf16", "fp16", "bf16 conv2") and `layers` the
    plan."""

    backend = "eager"
    uniform_tiles = False  # pad edge tiles to the common tile shape (compiled backends)

    def __init__(
        self,
        model: SRCNN,
        device: torch.device | str = "cpu",
        precision: str | None = "fp32",
        tile: int | None = None,
        layers: tuple[str, ...] | None = None,
        notice: Notice = lambda message: None,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # cuda:N everywhere (threads set it current)
            self.device = torch.device("cuda", torch.cuda.current_device())
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
        if self.device.type == "cuda":
            # Frame shapes are fixed for a whole video, so let cuDNN time its convolution algorithms once per
            # shape and keep the fastest (off by default: then it picks by heuristics, often not the fastest).
            torch.backends.cudnn.benchmark = True
            if self.precision == "fp32":
                # fp32 means fp32: cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) on Ampere and newer by
                # default. The legacy flag exists in every torch vsr allows; from torch 2.9 it sets the new
                # per-op setting to "none", which resolves to IEEE (aten/src/ATen/Context.cpp, setAllowTF32CuDNN).
                torch.backends.cudnn.allow_tf32 = False

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
        """Upscale (see the module contract). On CUDA, with this upscaler's GPU as the current device: TensorRT
        and Inductor allocate their outputs on the current device, so cuda:N called from a thread whose current
        device is cuda:0 would write across GPUs."""
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
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


RECOMPILE_LIMIT = 1024


def _raise_recompile_limit() -> None:
    """Let Dynamo keep compiled code for many window shapes. Its cache is per code object, and every
    `CompiledUpscaler` compiles the same `_Valid.forward`: each new window shape (dynamic=False) and each new
    model adds an entry, and past `recompile_limit` (default 8) Dynamo silently runs that frame eagerly from
    then on (torch/_dynamo/config.py `recompile_limit`, checked in torch/_dynamo/convert_frame.py). `vsr bench`
    over several resolutions and models passes 8 easily. The name was `cache_size_limit` before torch 2.6;
    newer versions keep it as an alias."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
            break
    for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT * 4))
            break


class CompiledUpscaler(Upscaler):
    """`torch.compile` backend (see the module contract)."""

    backend = "compile"
    uniform_tiles = True

    def __init__(self, *args, **kwargs):  # Upscaler's parameters
        super().__init__(*args, **kwargs)
        self.onednn = False  # Inductor picks its own kernels
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        self.model = self.model.to(memory_format=torch.channels_last)
        _raise_recompile_limit()
        try:
            self._fn = torch.compile(_Valid(self.model, None if self.uniform else self.dtypes), dynamic=False)
        except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for Inductor on the CPU
            raise BackendError(f"torch.compile is not usable here ({type(exc).__name__}: {exc}); use --backend eager") from None

    def _run_valid(self, window: torch.Tensor) -> torch.Tensor:
        x = window.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self._fn(x).float()


def _build(backend: str, model: SRCNN, dev: torch.device, precision: str, tile: int | None, notice: Notice) -> Upscaler:
    if backend == "eager":
        return Upscaler(model, dev, precision, tile, notice=notice)
    if backend == "compile":
        return CompiledUpscaler(model, dev, precision, tile, notice=notice)
    if backend == "tensorrt":
        from vsr.engine.tensorrt import TensorRTUpscaler

        return TensorRTUpscaler(model, dev, precision, tile, notice=notice)
    raise BackendError(f"unknown backend {backend!r}; use one of auto, {', '.join(BACKENDS)}")


class FallbackUpscaler:
    """`--backend auto`: the first of `order` that builds and warms up; each one that fails hands over to the next
    with a one-line notice. The Upscaler interface, delegated to the backend in use (`current`)."""

    def __init__(self, order: tuple[str, ...], model: SRCNN, dev: torch.device, precision: str, tile, notice: Notice):
        self._order, self._model, self._args, self._notice = list(order), model, (dev, precision, tile), notice
        self.current = self._next(None)

    def _next(self, failure: str | None) -> Upscaler:
        while self._order:
            backend = self._order.pop(0)
            if failure is not None:
                self._notice(f"{failure}; trying the {backend} backend")
            try:
                return _build(backend, self._model, *self._args, self._notice)
            except BackendError as exc:
                if not self._order:
                    raise
                failure = str(exc)
        raise BackendError(failure or "no backend left to try")

    def warm_up(self, height: int, width: int) -> None:
        while True:
            try:
                self.current.warm_up(height, width)
                return
            except BackendError as exc:
                if not self._order:
                    raise
                self.current = self._next(str(exc).removesuffix("; use --backend eager"))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.current(y)

    def __getattr__(self, name: str):  # device, config, precision, backend, tile, ... of the backend in use
        return getattr(self.__dict__["current"], name)


def make_upscaler(
    model: SRCNN,
    backend: str = "auto",
    device: torch.device | str = "auto",
    precision: str | None = None,
    tile: int | None = None,
    notice: Notice = lambda message: None,
) -> Upscaler:
    """Pick and build a backend. auto: eager on the CPU; on CUDA a `FallbackUpscaler` over tensorrt (where
    torch-tensorrt imports), compile, eager. A named backend that cannot be built raises `BackendError`.
    precision None or "auto": fp16 on CUDA; on the CPU bf16 for the layers recorded for these weights where the
    CPU has native bf16, fp32 elsewhere (`vsr.engine.precision`)."""
    dev = pick_device(device) if isinstance(device, str) else torch.device(device)
    precision = precision or "auto"
    policy.layer_plan(model, precision, dev)  # a precision this device cannot run is one error, not a fallback chain
    if backend == "auto":
        if dev.type != "cuda":
            return Upscaler(model, dev, precision, tile, notice=notice)
        from vsr.engine import tensorrt as trt

        if trt.available():
            order = ("tensorrt", "compile", "eager")
        else:
            order = ("compile", "eager")
            notice("torch-tensorrt is not installed; using the torch.compile backend")
        return FallbackUpscaler(order, model, dev, precision, tile, notice)
    return _build(backend, model, dev, precision, tile, notice)


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
