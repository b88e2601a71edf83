"""SRCNN shapes, weight files (no pickle), and the tiled engine."""

from __future__ import annotations

import pickle

import pytest
import torch

from vsr.engine.base import Upscaler
from vsr.errors import BackendError, WeightsError
from vsr.model.srcnn import SRCNN, SRCNNConfig, load_weights, read_metadata, save_weights, weights_hash


def make_model(arch: str = "9-5-5", seed: int = 0) -> SRCNN:
    m = SRCNN(SRCNNConfig.from_arch(arch))
    m.init_he(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # a non-trivial output
        m.conv3.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return m


@pytest.mark.parametrize("arch,border", [("9-1-5", 6), ("9-3-5", 7), ("9-5-5", 8)])
def test_shapes(arch, border):
    m = make_model(arch)
    x = torch.rand(2, 1, 33, 33)
    assert m.config.border == border
    assert m(x, pad=False).shape == (2, 1, 33 - 2 * border, 33 - 2 * border)
    assert m(x).shape == x.shape


def test_config_validation():
    assert SRCNNConfig.from_arch("9-5-5", n1=32).n1 == 32
    for bad in ("9-5", "a-b-c", "9-4-5"):
        with pytest.raises(ValueError):
            SRCNNConfig.from_arch(bad)


def test_save_load_round_trip(tmp_path):
    m = make_model("9-1-5")
    path = tmp_path / "w.safetensors"
    save_weights(m, path, {"epochs": 3})
    m2 = load_weights(path)
    assert m2.config == m.config
    assert weights_hash(m2) == weights_hash(m)
    assert read_metadata(path) == {"epochs": 3}
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(m2(x), m.eval()(x))


def test_garbage_and_pickled_weights_are_refused(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a weights file" * 10)
    pickled = tmp_path / "model.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    pickled.write_bytes(pickle.dumps({"x": Boom()}))
    for path in (garbage, pickled, tmp_path / "missing.safetensors"):
        with pytest.raises(WeightsError):
            load_weights(path)


def test_tiled_equals_untiled():
    m = make_model("9-5-5")
    y = torch.rand(2, 1, 70, 53, generator=torch.Generator().manual_seed(0))
    whole = Upscaler(m, "cpu", tile=512)(y)
    tiled = Upscaler(m, "cpu", tile=16)(y)
    # oneDNN picks its fp32 kernel by shape, and kernels sum in different orders: equal up to float rounding (as in
    # test_engine.py), 1.3e-6 to 1.6e-6 here for torch 2.5, 2.13 and 2.15 alike; a seam (too small a halo) is 1e-2
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert whole.min() >= 0 and whole.max() <= 1


def test_fp16_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(BackendError):
        Upscaler(make_model(), "cpu", precision="fp16")
