"""Training: sub-images, learning, exact resume, and refusal of bad options."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vsr.errors import InputError, UsageError
from vsr.train.data import resolve_dataset, training_pairs
from vsr.train.training import TrainConfig, train


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), scale=3, arch="9-1-5", n1=16, n2=8, epochs=2, out=str(out), eval_data=str(data), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_pairs(image_folder):
    x, y = training_pairs(image_folder, 3)
    # 72x60 -> modcrop 72x60 -> 33x33 patches with stride 14: 3 x 2 per image.
    assert x.shape == y.shape == (4 * 3 * 2, 1, 33, 33)
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert not torch.equal(x, y)


def test_scale_augmentation_adds_downscaled_copies(image_folder):
    x1, _ = training_pairs(image_folder, 3)
    x, y = training_pairs(image_folder, 3, rescale=(1.0, 0.9, 0.6))
    # 0.9: 65x54 -> modcrop 63x54 -> 3 x 2 patches; 0.6: 44x36 -> 42x36 -> 1 x 1.
    assert x.shape == y.shape == (4 * (6 + 6 + 1), 1, 33, 33)
    assert torch.equal(x[:6], x1[:6])  # the full-size image comes first, unchanged
    labels = y * 255
    assert torch.equal(labels, labels.round())  # downscaled labels are 8-bit levels, like saved images


def test_bf16_forward_keeps_outer_layers_float32():
    from vsr.model.srcnn import SRCNN, SRCNNConfig
    from vsr.train.training import _forward_valid

    torch.manual_seed(0)
    model = SRCNN(SRCNNConfig.from_arch("9-5-5", 16, 8))
    model.init_he()
    x = torch.rand(2, 1, 33, 33)
    exact, fast = model(x, pad=False), _forward_valid(model, x, bf16=True)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape == (2, 1, 17, 17)
    err = (fast - exact).abs().max().item()
    assert 0 < err < 1e-2 * exact.abs().max().item()  # bfloat16 rounding in conv2, nothing worse


def test_bf16_scale_aug_run_learns_and_records_options(image_folder, tmp_path):
    path = train(cfg(image_folder, tmp_path / "bf", epochs=3, precision="bf16", scale_aug=True))
    log = [json.loads(line) for line in (tmp_path / "bf" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    from vsr.model.srcnn import read_metadata

    meta = read_metadata(path)
    assert meta["precision"] == "bf16" and meta["scale_aug"] is True
    with pytest.raises(UsageError, match="precision"):  # resuming must keep the options
        train(cfg(image_folder, tmp_path / "bf", epochs=4, scale_aug=True), resume=True)


def test_train_writes_weights_and_resume_is_exact(image_folder, tmp_path):
    straight = train(cfg(image_folder, tmp_path / "a", epochs=3))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all("eval_psnr" in r for r in log)
    assert log[-1]["loss"] < log[0]["loss"]

    train(cfg(image_folder, tmp_path / "b", epochs=1))
    resumed = train(cfg(image_folder, tmp_path / "b", epochs=3), resume=True)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_training_options(image_folder, tmp_path):
    with pytest.raises(UsageError):
        train(cfg(image_folder, tmp_path / "c", scale=1))
    with pytest.raises(UsageError):
        train(cfg(image_folder, tmp_path / "c", recipe="sgdx"))
    with pytest.raises(UsageError, match="precision"):
        train(cfg(image_folder, tmp_path / "c", precision="fp8"))
    with pytest.raises(UsageError):
        train(cfg(image_folder, tmp_path / "c"), resume=True)  # nothing to resume
    with pytest.raises(InputError):
        train(cfg(tmp_path / "nope", tmp_path / "c"))
    train(cfg(image_folder, tmp_path / "d", epochs=1))
    with pytest.raises(UsageError):  # refuses to clobber an existing run
        train(cfg(image_folder, tmp_path / "d", epochs=1))
    with pytest.raises(UsageError):  # resume with different options
        train(cfg(image_folder, tmp_path / "d", epochs=2, arch="9-5-5"), resume=True)


def test_dataset_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_DATA", str(tmp_path))
    monkeypatch.setenv("VSR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="VSR_DATA"):
        resolve_dataset("Set5")
    (tmp_path / "Set5").mkdir()
    assert resolve_dataset("Set5") == tmp_path / "Set5"
    with pytest.raises(InputError):
        resolve_dataset("NoSuchSet")


def test_eval_folder_auto_finds_set5_beside_the_data_or_trains_without(tmp_path, monkeypatch):
    from vsr.train.training import eval_folder

    monkeypatch.delenv("VSR_DATA", raising=False)
    monkeypatch.setenv("VSR_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data" / "91images"
    data.mkdir(parents=True)
    folder, notice = eval_folder("auto", data)
    assert folder is None and notice.startswith("no Set5 found") and "--eval-data FOLDER" in notice
    (tmp_path / "data" / "Set5").mkdir()
    assert eval_folder("auto", data) == ((tmp_path / "data" / "Set5").resolve(), None)
    assert eval_folder(None, data) == (None, None)
    with pytest.raises(InputError, match="Set14"):
        eval_folder("Set14", data)  # asked for by name: must exist


def test_resume_accepts_another_eval_data(image_folder, tmp_path):
    """Evaluation does not shape the run: a run started with one --eval-data resumes with another (or auto)."""
    train(cfg(image_folder, tmp_path / "r", epochs=1))
    train(cfg(image_folder, tmp_path / "r", epochs=2, eval_data=None), resume=True)
    assert len((tmp_path / "r" / "log.jsonl").read_text().splitlines()) == 2
