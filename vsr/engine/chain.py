"""Picking a backend: `make_upscaler` builds the one asked for, or under `--backend auto` a `FallbackUpscaler` that
hands over (tensorrt, compile, eager) with a one-line notice when one cannot build, warm up or run its first frame.
The precision plan is resolved here, once, and handed to the backend built."""

from __future__ import annotations

import re

import torch

from vsr.engine import precision as policy
from vsr.engine.base import Notice, Upscaler, pick_device
from vsr.engine.compiled import CompiledUpscaler
from vsr.errors import BackendError
from vsr.model.srcnn import SRCNN

BACKENDS = ("eager", "compile", "tensorrt")


def _build(
    backend: str, model: SRCNN, dev: torch.device, precision: str | tuple[str, ...], tile: int | None, notice: Notice
) -> Upscaler:
    if backend == "eager":
        return Upscaler(model, dev, precision, tile, notice=notice)
    if backend == "compile":
        return CompiledUpscaler(model, dev, precision, tile, notice=notice)
    if backend == "tensorrt":
        from vsr.engine.tensorrt import TensorRTUpscaler

        return TensorRTUpscaler(model, dev, precision, tile, notice=notice)
    raise BackendError(f"unknown backend {backend!r}; use one of auto, {', '.join(BACKENDS)}")


def _failure(backend: str, y: torch.Tensor, exc: Exception) -> str:
    """One line for a backend's failure at its first frame, without the advice to pick another backend (the
    notice says which one is tried next)."""
    if isinstance(exc, BackendError):  # e.g. TensorRT's engine build, which runs at the first frame of a shape
        why = str(exc).strip()
    else:  # BackendCompilerFailed, InductorError, torch.AcceleratorError, ...: a RuntimeError, or an AssertionError
        lines = str(exc).strip().splitlines()
        why = f"the {backend} backend failed on a {y.shape[-1]}x{y.shape[-2]} frame ({type(exc).__name__}: "
        why += f"{lines[0][:200] if lines else ''})"
    return _ADVICE.sub("", why)


_ADVICE = re.compile(r"; use --backend \w+$")


class FallbackUpscaler:
    """`--backend auto`: the first of `order` that builds, warms up and runs its first frame; each one that fails at
    any of these hands over to the next with a one-line notice, and the last one's failure is raised as it is. The
    first frame counts as well as the warm-up: a backend can pass the warm-up (the caller's thread, the default
    CUDA stream) and fail on the frames (the SR thread, `vsr.engine.gpu.GpuFrames`' compute stream), and a caller
    that never warms up still gets the chain. Once a backend has upscaled a frame it stays: a later failure is raised
    as it is, so a video is never finished by another backend than began it. The Upscaler interface, delegated to
    the backend in use (`current`). One caller at a time (the SR stage's thread)."""

    def __init__(self, order: tuple[str, ...], model: SRCNN, dev: torch.device, precision: str, tile, notice: Notice):
        self._order, self._model, self._args, self._notice = list(order), model, (dev, precision, tile), notice
        self._proven = False  # the backend in use has upscaled a frame
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
                self.current = self._next(_ADVICE.sub("", str(exc).strip()))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        while not self._proven:
            try:
                out = self.current(y)
            except Exception as exc:  # noqa: BLE001 - whatever the backend raises at its first frame
                if not self._order:
                    raise
                why = _failure(self.current.backend, y, exc)
                with torch.inference_mode(False):  # built as at the start, whatever mode the caller runs in
                    self.current = self._next(why)
                continue
            self._proven = True
            return out
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
    # once, here: a precision this device cannot run is one error (not a fallback chain), its notice is said once,
    # and every backend tried gets the same plan
    plan = policy.layer_plan(model, precision or "auto", dev, notice)
    if backend == "auto":
        if dev.type != "cuda":
            return Upscaler(model, dev, plan, tile, notice=notice)
        from vsr.engine import tensorrt as trt

        if trt.available():
            order = ("tensorrt", "compile", "eager")
        else:
            order = ("compile", "eager")
            notice("torch-tensorrt is not installed; using the torch.compile backend")
        return FallbackUpscaler(order, model, dev, plan, tile, notice)
    return _build(backend, model, dev, plan, tile, notice)
