"""`vsr webcam`'s CUDA branch (`vsr.live.feed.Feed._upscale_pair_gpu`) on the simulated GPU of tests/fake_cuda.py:
the SR thread makes its GPU current, a CUDA failure is one line after a drain (nothing left in flight), and a
sticky error, which fails the drain's waits too, does not replace the error being reported."""

from __future__ import annotations

import threading

import pytest
import torch

import vsr.engine.gpu
from vsr.engine.base import Upscaler
from vsr.errors import BackendError
from vsr.live.webcam import WebcamOptions, run_webcam
from vsr.model.srcnn import SRCNN, SRCNNConfig
from vsr.synth import make_clip

from .fake_cuda import FakeCuda

GPU = torch.device("cuda", 1)
FRAMES = 6
ILLEGAL = "CUDA error: an illegal memory access was encountered"
BACKEND_FAILED = "the tensorrt backend failed on a frame (AcceleratorError: CUDA error: an illegal memory access)"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("gpu-webcam") / "small.mkv", 64, 48, FRAMES, 25, audio=False)


class _OnGpu:
    """A CPU upscaler that says it runs on cuda:1 (the session takes its CUDA branch); its `fail_at`-th call fails
    as `_failing` in tests/test_gpu_timeline.py describes, or with "chain" as the fallback chain reports a failure
    that is not sticky (`vsr.engine.chain`: a BackendError, not a RuntimeError)."""

    def __init__(self, made: list, fail_at: int | None = None, how: str = "raises"):
        model = SRCNN(SRCNNConfig.from_arch("9-1-5", n1=8, n2=4))
        model.init_he(torch.Generator().manual_seed(0))
        self.inner, self.device, self.made = Upscaler(model), GPU, made
        self.fail_at, self.how, self.calls = fail_at, how, 0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            if self.how == "raises":
                raise RuntimeError(ILLEGAL)
            if self.how == "chain":
                raise BackendError(BACKEND_FAILED)
            error = self.made[-1].fault(ILLEGAL)
            if self.how == "sticky":
                raise error
            if self.how == "backend":
                raise BackendError(BACKEND_FAILED)
        return self.inner(y)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _simulated_gpu(monkeypatch, made: list) -> list:
    set_devices: list = []

    def runtime(device):
        made.append(FakeCuda(durations={"h2d": 1.0, "kernel": 1.0, "d2h": 1.0}, device=device))
        made[-1].queue_default(2.0)  # the warm-up, still queued on the default stream
        return made[-1]

    monkeypatch.setattr(vsr.engine.gpu, "CudaRuntime", runtime)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: set_devices.append((threading.current_thread().name, device)))
    return set_devices


def test_webcam_gpu_branch_names_its_gpu_in_the_sr_thread(tmp_path, clip, monkeypatch):
    made: list = []
    set_devices = _simulated_gpu(monkeypatch, made)
    opts = WebcamOptions(source=str(clip), window=False, record=str(tmp_path / "out.mkv"))
    assert run_webcam(opts, _OnGpu(made)).frames == FRAMES
    assert len(made) == 1 and not made[0].errors, made[0].errors
    assert set_devices == [("vsr-sr", GPU)]


@pytest.mark.parametrize("how", ["raises", "chain"])
@pytest.mark.parametrize("fail_at", [1, 3])
def test_webcam_gpu_failure_drains_and_is_one_line(tmp_path, clip, monkeypatch, fail_at, how):
    made: list = []
    _simulated_gpu(monkeypatch, made)
    opts = WebcamOptions(source=str(clip), window=False, record=str(tmp_path / "out.mkv"))
    with pytest.raises(BackendError) as error:
        run_webcam(opts, _OnGpu(made, fail_at, how))
    want = BACKEND_FAILED if how == "chain" else f"the GPU failed (RuntimeError: {ILLEGAL}); try --backend eager, or --device cpu"
    assert str(error.value) == want
    assert made[0].idle(), "the session let the buffers go while copies and kernels were still queued"
    assert not made[0].errors, made[0].errors
    assert not any(tmp_path.iterdir())  # the recording was aborted


@pytest.mark.parametrize("how", ["sticky", "later", "backend"])
def test_webcam_sticky_cuda_error_is_the_first_error_as_one_line(tmp_path, clip, monkeypatch, how):
    made: list = []
    _simulated_gpu(monkeypatch, made)
    opts = WebcamOptions(source=str(clip), window=False)
    with pytest.raises(BackendError) as error:
        run_webcam(opts, _OnGpu(made, 2, how))
    kind = "AcceleratorError" if hasattr(torch, "AcceleratorError") else "RuntimeError"
    want = BACKEND_FAILED if how == "backend" else f"the GPU failed ({kind}: {ILLEGAL}); try --backend eager, or --device cpu"
    assert str(error.value) == want
    assert not made[0].errors, made[0].errors
