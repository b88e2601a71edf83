"""The `compile` backend: `torch.compile` (Inductor, default mode), channels_last. No CUDA graphs
(mode "reduce-overhead"): before torch 2.13 a compiled function with CUDA graphs fails in any
thread but the one that imported Inductor's cudagraph trees (an assert in
`cudagraph_trees.get_obj`, pytorch issue 123177), and the SR stage is another thread; and a
graph is only recorded on the second call, after the warm-up. SRCNN on a frame is a handful of
large kernels, so launch overhead, what graphs save, is small. Inductor's on-disk cache lives
under `$VSR_CACHE/inductor` (default ~/.cache/vsr/inductor): a second run reuses the compiled
kernels (Dynamo still traces). Also works on the CPU."""

from __future__ import annotations

import os

import torch

from vsr.cache import cache_dir
from vsr.engine.base import Upscaler, _Valid
from vsr.errors import BackendError

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
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
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
