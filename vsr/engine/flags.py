"""cuDNN's process-global flags, set for a scope and put back: what an upscaler's call and a training run need.

Contract:
- `Flags(benchmark, deterministic, tf32)`: cuDNN's algorithm search by timing, its deterministic algorithms only, and
  whether fp32 convolutions may run in TF32 (10-bit mantissa, Ampere and newer). `current()` reads them.
- `scoped(flags)`: a context that sets `flags` (a field left None is left as it is) and puts back exactly what it
  found when it ends, also after an error. `shared(make)`: the same for scopes that may overlap in several threads
  (an upscaler called from SR threads at once): the first one in sets `make()` (a function of the flags it finds),
  the last one out puts them back; a lock orders them, so no thread puts back another's settings.
- The flags live in `at::globalContext()`, one set per process, not per thread: while a scope is open every thread's
  cuDNN convolutions run under them (vsr runs none outside the scopes at those times).
- TF32 is the per-operator setting where torch has one (`torch.backends.cudnn.conv.fp32_precision`, found by
  attribute, not by version: the new TF32 API of torch 2.9, whose Python attribute came with the convolutions'
  per-operator query, `allowTF32CuDNN(Float32Op::CONV)` in aten/src/ATen/native/Convolution.cpp; "conv" as a
  string in its first form), else the legacy `torch.backends.cudnn.allow_tf32` (torch 2.4 to 2.8). The legacy flag
  is never touched where the new one exists: its getter raises once conv and RNN were set apart
  (aten/src/ATen/Context.cpp, `Context::allowTF32CuDNN` without an operator), its setter warns there (the first
  form's `warn_deprecated_fp32_precision_api`) and writes "none", which defers to the cuda and generic settings
  and is TF32 again if a user set either to "tf32". The per-operator getter resolves "none" through those parents
  (`Context::float32Precision`), so a restore writes back the value in effect; one in effect already is left as
  stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Flags:
    benchmark: bool | None = None
    deterministic: bool | None = None
    tf32: bool | None = None  # fp32 convolutions in TF32


def _conv_precision():
    """torch 2.9+'s per-operator TF32 setting for cuDNN convolutions, or None on older torch."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv if conv is not None and hasattr(conv, "fp32_precision") else None


def _get_tf32_raw():
    conv = _conv_precision()
    return conv.fp32_precision if conv is not None else torch.backends.cudnn.allow_tf32


def _set_tf32_raw(value) -> None:
    conv = _conv_precision()
    if conv is not None:
        conv.fp32_precision = value
    else:
        torch.backends.cudnn.allow_tf32 = value


def _raw_tf32(allow: bool):
    return ("tf32" if allow else "ieee") if _conv_precision() is not None else allow


def current() -> Flags:
    raw = _get_tf32_raw()
    tf32 = raw == "tf32" if isinstance(raw, str) else bool(raw)
    return Flags(torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, tf32)


def _snapshot() -> tuple:
    return torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, _get_tf32_raw()


def _restore(saved: tuple) -> None:
    benchmark, deterministic, tf32 = saved
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = deterministic
    if _get_tf32_raw() != tf32:  # unchanged: left alone (the getter resolves "none", see the contract)
        _set_tf32_raw(tf32)


def _apply(flags: Flags) -> None:
    if flags.benchmark is not None:
        torch.backends.cudnn.benchmark = flags.benchmark
    if flags.deterministic is not None:
        torch.backends.cudnn.deterministic = flags.deterministic
    if flags.tf32 is not None and current().tf32 != flags.tf32:  # as it is: left alone, stored word and all
        _set_tf32_raw(_raw_tf32(flags.tf32))


@contextmanager
def scoped(flags: Flags) -> Iterator[None]:
    """Run the block under `flags`, then put back what was there (see the module contract)."""
    saved = _snapshot()
    try:
        _apply(flags)
        yield
    finally:
        _restore(saved)


_lock = threading.Lock()
_depth = 0
_saved: tuple | None = None


@contextmanager
def shared(make: Callable[[Flags], Flags]) -> Iterator[None]:
    """`scoped` for blocks that may overlap across threads: the first in applies `make(current())`, the last out
    restores (see the module contract)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            saved = _snapshot()
            try:
                _apply(make(current()))
            except BaseException:
                _restore(saved)
                raise
            _saved = saved
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                saved, _saved = _saved, None
                _restore(saved)
