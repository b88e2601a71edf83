"""Run code that names a CUDA device on the CPU: the `cuda_on_cpu` fixture (import it, then name it in a test).

torch reports one GPU ("Fake GPU", cuda:0), `torch.cuda.device(...)` is a no-op context, and every `Tensor.to`,
`Module.to` and `torch.zeros` given a CUDA device puts the tensor on the CPU instead. Code then takes its CUDA
branches (cuDNN flags, device guards) with real CPU arithmetic. cuDNN's flags are plain fields of torch's global
context, settable and readable on a CPU-only build too, so what a CUDA branch does to them is what it would do on a
GPU. The flags are put back when the test ends, whatever the code under test left.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from vsr.engine import flags


def _cpu(arg):
    if isinstance(arg, torch.device) and arg.type == "cuda":
        return torch.device("cpu")
    if isinstance(arg, str) and arg.startswith("cuda"):
        return "cpu"
    return arg


def _mapped(real):
    def call(*args, **kwargs):
        return real(*map(_cpu, args), **{k: _cpu(v) for k, v in kwargs.items()})

    return call


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """See the module docstring. Use it by name: `def test_x(cuda_on_cpu): ...` after importing it."""
    saved = flags._snapshot()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "to", _mapped(torch.Tensor.to))
    monkeypatch.setattr(torch.nn.Module, "to", _mapped(torch.nn.Module.to))
    monkeypatch.setattr(torch, "zeros", _mapped(torch.zeros))
    yield
    flags._restore(saved)
