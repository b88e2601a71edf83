"""Backends behind `Upscaler`: eager, compile (runs on the CPU too), tensorrt (skips where absent), and GPU checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from vsr.engine import base as engine
from vsr.engine import tensorrt as trt
from vsr.engine.base import Upscaler
from vsr.engine.chain import FallbackUpscaler, make_upscaler
from vsr.engine.ensemble import SelfEnsemble
from vsr.engine.onednn import _one_channel_conv, _taps
from vsr.engine.precision import cpu_bf16
from vsr.errors import BackendError
from vsr.pipeline.video import upscale_planes

from .gpu_tolerances import FP16_MAX, FP16_MEAN, TILED_VS_WHOLE
from .test_model import make_model

CUDA = pytest.mark.gpu


def test_auto_on_cpu_is_eager_fp32_for_weights_without_a_precision_record():
    up = make_upscaler(make_model("9-1-5"), "auto", "cpu")
    assert (up.backend, up.precision, up.device.type) == ("eager", "fp32", "cpu")


BF16 = ("bf16",) * 3
MIXED = ("fp32", "bf16", "fp32")


@pytest.mark.parametrize("arch", ["9-1-5", "9-5-5"])
@pytest.mark.parametrize("layers", [("fp32",) * 3, MIXED, BF16])
@pytest.mark.parametrize("size,tile", [((180, 320), 64), ((60, 80), 256)])  # x2: 60 tiles of 64; one tile
@pytest.mark.parametrize("pool", [True, False])
def test_cpu_results_do_not_depend_on_the_thread_count(monkeypatch, arch, layers, size, tile, pool):
    """Segments in worker processes with fewer threads must give the one-process output byte for byte
    (issue 13). F.conv2d's 1x1 convolution (9-1-5) takes another path with one thread than with two; vsr runs
    every CPU convolution through oneDNN (vsr.engine.onednn._onednn_forward), in fp32 and bf16 plans alike, and the
    last layer's tap sum reduces each output in one thread. Tiles one per thread (vsr.engine.tilepool) or each over
    all threads, and a frame of one tile, all give the same bytes. The shipped weights, x2."""
    from vsr.media.resize import imresize
    from vsr.model.srcnn import load_weights
    from vsr.model.weights import default_weights

    if "bf16" in layers and not cpu_bf16()["onednn"]:
        pytest.skip("oneDNN runs no bf16 convolutions on this CPU")
    if not pool:
        monkeypatch.setattr(engine, "tile_pool", lambda threads: None)
    model = load_weights(default_weights(2, arch))
    y = imresize(torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(0)), 2)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(Upscaler(model, "cpu", layers=layers, tile=tile)(y))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_a_tile_per_thread_gives_the_same_bytes(monkeypatch):
    """vsr.engine.tilepool against tiles one after another, each over all threads: the same output."""
    from vsr.engine.tilepool import tile_pool

    if torch.get_num_threads() < 2 or tile_pool(torch.get_num_threads()) is None:
        pytest.skip("one thread here, or no OpenMP runtime to make workers single-threaded")
    model = make_model("9-5-5")
    y = torch.rand(1, 1, 200, 300, generator=torch.Generator().manual_seed(2))
    up = Upscaler(model, "cpu", tile=32)
    pooled = up(y)
    monkeypatch.setattr(engine, "tile_pool", lambda threads: None)
    assert torch.equal(pooled, up(y))


@pytest.mark.parametrize("shape,k", [((1, 32, 40, 52), 5), ((2, 32, 23, 17), 5), ((1, 8, 30, 30), 3)])
def test_one_channel_conv_is_the_convolution(shape, k):
    """The last layer as a 1x1 convolution to k*k taps and a shifted sum equals the convolution (float64
    reference), at least as closely as oneDNN's own 1-channel convolution."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(shape[1], 1, k)
    with torch.no_grad():
        conv.weight.normal_(0, 0.05, generator=g)
    got = _one_channel_conv(x, _taps(conv), conv.bias.detach())
    want = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double())
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got.double() - want).abs().max() < 1e-6


def test_cpu_last_layer_uses_the_tap_sum_in_fp32_only():
    model = make_model("9-5-5")
    assert Upscaler(model, "cpu").taps is not None
    if cpu_bf16()["onednn"]:
        assert Upscaler(model, "cpu", layers=MIXED).taps is not None
        assert Upscaler(model, "cpu", layers=BF16).taps is None  # bf16 conv3: oneDNN's own convolution


def test_mixed_plan_is_close_to_fp32_and_not_equal():
    if not cpu_bf16()["onednn"]:
        pytest.skip("oneDNN runs no bf16 convolutions on this CPU")
    from vsr.media.resize import imresize
    from vsr.model.srcnn import load_weights
    from vsr.model.weights import default_weights

    model = load_weights(default_weights(3, "9-5-5"))
    y = imresize(torch.rand(1, 1, 60, 80, generator=torch.Generator().manual_seed(0)), 3)
    fp32, mixed = Upscaler(model, "cpu")(y), Upscaler(model, "cpu", layers=MIXED)(y)
    assert not torch.equal(fp32, mixed)  # bf16 did run
    assert (fp32 - mixed).abs().max() < 2 / 255  # within 2 code values
    assert (fp32 - mixed).abs().mean() < 0.1 / 255


def test_bad_backend_and_precision():
    with pytest.raises(BackendError, match="unknown backend"):
        make_upscaler(make_model("9-1-5"), "magic", "cpu")
    with pytest.raises(BackendError, match="fp16 needs a CUDA GPU"):
        make_upscaler(make_model("9-1-5"), "eager", "cpu", "fp16")


@pytest.mark.skipif(trt.available(), reason="torch-tensorrt is installed here")
def test_tensorrt_missing_is_one_clear_error():
    with pytest.raises(BackendError, match=re.escape(trt.install_advice())):
        make_upscaler(make_model("9-1-5"), "tensorrt", "cpu")


def _turn(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if k >= 4 else x, k % 4, (-2, -1))


def test_self_ensemble_is_equivariant_and_not_one_pass():
    """Averaging over the 8 flips/rotations makes the result turn with its input, which one pass does not."""
    single = Upscaler(make_model("9-5-5"), "cpu", tile=24)  # tiles, so transposed inputs tile differently
    ens = SelfEnsemble(single)
    assert (ens.backend, ens.device, ens.config) == ("eager+ensemble", single.device, single.config)
    x = torch.rand(1, 1, 30, 41, generator=torch.Generator().manual_seed(5))
    out = ens(x)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    for k in range(8):
        torch.testing.assert_close(ens(_turn(x, k)), _turn(out, k), atol=1e-6, rtol=0)
    assert not torch.allclose(single(_turn(x, 1)), _turn(single(x), 1), atol=1e-4)
    assert (out - single(x)).abs().max() > 1e-4


def test_edge_tiles_padded_to_one_shape_equal_untiled():
    model = make_model("9-5-5")
    x = torch.rand(2, 1, 70, 101, generator=torch.Generator().manual_seed(3))
    whole = Upscaler(model, "cpu", tile=512)(x)
    shapes = []
    tiled = Upscaler(model, "cpu", tile=32)
    tiled.uniform_tiles = True
    run = tiled._run_valid
    tiled._run_valid = lambda w: shapes.append(tuple(w.shape)) or run(w)
    # oneDNN picks its fp32 kernel by shape, and kernels sum in different orders: equal up to float rounding
    torch.testing.assert_close(tiled(x), whole, atol=1e-5, rtol=0)
    assert set(shapes) == {(2, 1, 24 + 16, 26 + 16)}  # balanced: 70 rows -> 3 x 24, 101 columns -> 4 x 26
    exact = Upscaler(model, "cpu", tile=32)
    torch.testing.assert_close(exact(x), whole, atol=1e-5, rtol=0)


def test_compile_backend_matches_eager_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    model = make_model("9-1-5")
    x = torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(0))
    ref = Upscaler(make_model("9-1-5"), "cpu")(x)
    compiled = make_upscaler(model, "compile", "cpu")
    assert compiled.backend == "compile"
    torch.testing.assert_close(compiled(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled(x), ref, atol=1e-5, rtol=0)  # second call: same shape, no recompile needed


def test_compile_keeps_compiling_past_dynamos_default_recompile_limit(monkeypatch):
    """Dynamo's cache is per code object (every CompiledUpscaler compiles `_Valid.forward`) and holds 8 entries by
    default; past that it runs eagerly without a word. 12 window shapes must all be compiled."""
    import torch._dynamo
    import torch._dynamo.config as dynamo_config

    import vsr.engine.compiled

    compiled_shapes = []

    def counting_backend(gm, example_inputs):
        compiled_shapes.append(tuple(example_inputs[-1].shape))
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counting_backend, dynamic=False))
    new = hasattr(dynamo_config, "recompile_limit")  # `cache_size_limit` before torch 2.6 (see vsr.engine.compiled)
    limits = ("recompile_limit", "accumulated_recompile_limit") if new else ("cache_size_limit", "accumulated_cache_size_limit")
    for name, default in zip(limits, (8, 256), strict=True):  # torch's defaults
        monkeypatch.setattr(dynamo_config, name, default)
    torch._dynamo.reset()
    try:
        up = vsr.engine.compiled.CompiledUpscaler(make_model("9-1-5"), "cpu")
        for k in range(12):
            up(torch.rand(1, 1, 20 + k, 24))
        assert len(compiled_shapes) == 12, compiled_shapes
    finally:
        torch._dynamo.reset()


# ---------------------------------------------------------------- GPU (skipped without CUDA)


@CUDA
def test_fp16_close_to_fp32_on_gpu():
    x = torch.rand(1, 1, 96, 128, generator=torch.Generator().manual_seed(1)).cuda()
    fp32 = Upscaler(make_model("9-5-5"), "cuda", "fp32")(x)
    fp16 = Upscaler(make_model("9-5-5"), "cuda", "fp16")(x)
    diff = (fp16 - fp32).abs()  # the bounds and why: tests/gpu_tolerances.py
    assert diff.max().item() < FP16_MAX and diff.mean().item() < FP16_MEAN


@CUDA
def test_gpu_tiled_equals_untiled_fp32():
    x = torch.rand(1, 1, 300, 520, generator=torch.Generator().manual_seed(2)).cuda()
    whole = Upscaler(make_model("9-5-5"), "cuda", "fp32", tile=1024)(x)
    tiled = Upscaler(make_model("9-5-5"), "cuda", "fp32", tile=128)(x)
    torch.testing.assert_close(tiled, whole, atol=TILED_VS_WHOLE, rtol=0)  # cuDNN's algorithm per shape: gpu_tolerances


@CUDA
@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_gpu_frames_equal_one_frame_at_a_time(backend):
    from vsr.engine.gpu import GpuFrames

    rng = np.random.default_rng(0)
    frames = [tuple(rng.integers(0, 256, s, dtype=np.uint8) for s in ((36, 64), (18, 32), (18, 32))) for _ in range(5)]
    out_shapes = ((72, 128), (36, 64), (36, 64))
    up = make_upscaler(make_model("9-1-5"), backend, "cuda", "fp32")
    gpu = GpuFrames(up, 2, 255, ((36, 64), (18, 32), (18, 32)), out_shapes, slots=2)
    pending, results = [], []
    for f in frames:  # keep two in flight, as the pipeline does
        pending.append(gpu.submit(f))
        if len(pending) == 2:
            results.append(gpu.result(pending.pop(0)))
    results += [gpu.result(t) for t in pending]
    for f, got in zip(frames, results, strict=True):
        want = upscale_planes(f, 2, up, 255, out_shapes, "cuda")
        for a, b in zip(got, want, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= (1 if backend == "compile" else 0)


def test_auto_falls_back_through_the_chain_with_one_line_notices(tmp_path):
    """--backend auto's chain (tensorrt -> compile -> eager), forced on the CPU: torch-tensorrt missing (import) and
    Inductor without a C++ compiler (first call, caught by the warm-up) each hand over with one notice line."""
    code = """
import torch
from vsr.engine.chain import FallbackUpscaler
from tests.test_model import make_model
notices = []
up = FallbackUpscaler(("tensorrt", "compile", "eager"), make_model("9-1-5"), torch.device("cpu"), "fp32", None, notices.append)
up.warm_up(20, 24)
out = up(torch.rand(1, 1, 20, 24))
print(up.backend, tuple(out.shape))
print("\\n".join(notices))
"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": "/bin/false", "VSR_CACHE": str(tmp_path / "cache")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "eager (1, 1, 20, 24)"
    assert len(lines) == 3, lines
    assert lines[1].endswith("; trying the compile backend") and "torch-tensorrt" in lines[1]
    assert lines[2].startswith("the compile backend failed on a 24x20 frame (") and lines[2].endswith(
        "; trying the eager backend"
    )


def test_fallback_raises_when_the_last_backend_fails():
    up = FallbackUpscaler(("eager",), make_model("9-1-5"), torch.device("cpu"), "fp32", None, lambda m: None)
    assert up.backend == "eager" and up.device == torch.device("cpu")
    with pytest.raises(BackendError, match="tile size"):
        FallbackUpscaler(("eager",), make_model("9-1-5"), torch.device("cpu"), "fp32", 4, lambda m: None)


class _Failing(Upscaler):
    """An Upscaler that fails at its first window the way a real backend does (see `_injected`)."""

    def __init__(self, backend: str, error: Exception | None):
        super().__init__(make_model("9-1-5"), "cpu")
        self.backend, self.error = backend, error

    def _run_valid(self, window):
        if self.error is not None:
            raise self.error
        return super()._run_valid(window)


def _injected(failures: dict[str, str]):
    """A stand-in for vsr.engine.chain._build: backend -> where it fails ("import", "build", "first call")."""

    def build(backend, model, dev, precision, tile, notice):
        where = failures.get(backend)
        if where == "import":
            raise BackendError(trt.INSTALL_HINT if backend == "tensorrt" else "torch.compile is not usable here (ImportError)")
        if where == "build":  # TensorRT builds its engine at the first window: BackendError from inside the call
            return _Failing(backend, BackendError("TensorRT could not build an engine (RuntimeError: out of memory)"))
        if where == "first call":  # Inductor/Triton fail at the first call with their own exception types
            return _Failing(backend, RuntimeError("InductorError: CppCompileError: C++ compile error"))
        return _Failing(backend, None)

    return build


@pytest.mark.parametrize("trt_fails", ["import", "build", "first call"])
@pytest.mark.parametrize("compile_fails", [None, "import", "build", "first call"])
def test_auto_chain_hands_over_at_every_failure_point(monkeypatch, trt_fails, compile_fails):
    import vsr.engine.chain

    failures = {"tensorrt": trt_fails, "compile": compile_fails}
    monkeypatch.setattr(vsr.engine.chain, "_build", _injected(failures))
    notices: list[str] = []
    chain = ("tensorrt", "compile", "eager")
    up = FallbackUpscaler(chain, make_model("9-1-5"), torch.device("cpu"), "fp32", None, notices.append)
    up.warm_up(20, 24)
    want = "eager" if compile_fails else "compile"
    assert up.backend == want
    assert up(torch.rand(1, 1, 20, 24)).shape == (1, 1, 20, 24)
    assert len(notices) == (2 if compile_fails else 1) and all("\n" not in n for n in notices)
    assert notices[0].endswith("; trying the compile backend")
    if compile_fails:
        assert notices[1].endswith("; trying the eager backend")


def test_a_named_backend_that_fails_is_an_error_not_a_fallback(monkeypatch):
    import vsr.engine.chain

    monkeypatch.setattr(vsr.engine.chain, "_build", _injected({"compile": "first call"}))
    up = make_upscaler(make_model("9-1-5"), "compile", "cpu")
    with pytest.raises(BackendError, match=r"^the compile backend failed on a 24x20 frame \(RuntimeError: InductorError"):
        up.warm_up(20, 24)
