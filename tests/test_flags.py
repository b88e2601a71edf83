"""cuDNN's process-global flags: an upscaler sets them only for its own call, training runs every epoch under the same
ones (a resumed run too), and scopes put back what they found, across threads and errors. CUDA branches run on the
CPU through `tests.cuda_on_cpu` (cuDNN's flags are plain fields of torch's global context on a CPU build too)."""

from __future__ import annotations

import threading

import pytest
import torch

from vsr.engine import flags
from vsr.engine.base import Upscaler
from vsr.model.srcnn import SRCNN, SRCNNConfig
from vsr.train.training import TrainConfig, train

from .cuda_on_cpu import cuda_on_cpu  # noqa: F401 - the fixture, used by name

# What CUDA training runs under (vsr/train/training.py's contract): deterministic cuDNN, no search by timing, IEEE fp32.
TRAINING = flags.Flags(benchmark=False, deterministic=True, tf32=False)


def tiny_model() -> SRCNN:
    torch.manual_seed(0)
    model = SRCNN(SRCNNConfig.from_arch("9-1-5", 8, 4))
    model.init_he()
    return model


def flags_per_epoch(data, out, epochs: int, resume: bool = False) -> dict[int, set]:
    """The cuDNN flags in effect at each training step, by epoch."""
    seen: dict[int, set] = {}

    def report(event: dict) -> None:
        if event["event"] == "step":
            seen.setdefault(event["epoch"], set()).add(flags.current())

    cfg = TrainConfig(
        data=str(data), scale=3, arch="9-1-5", n1=8, n2=4, epochs=epochs, out=str(out), eval_data=str(data), device="cuda"
    )
    train(cfg, resume=resume, report=report)
    return seen


def test_training_epochs_and_a_resumed_run_share_the_same_cuda_flags(image_folder, tmp_path, cuda_on_cpu):  # noqa: F811
    """debefaf: epoch 1 ran with cuDNN's defaults (TF32 on), and the evaluation's `Upscaler(model, device)` turned
    TF32 off and the algorithm search on for every later epoch; a resumed run started again with the defaults."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    before = flags.current()
    straight = flags_per_epoch(image_folder, tmp_path / "a", epochs=2)
    assert straight == {1: {TRAINING}, 2: {TRAINING}}
    assert flags.current() == before  # put back when train() returns

    flags_per_epoch(image_folder, tmp_path / "b", epochs=1)
    assert flags_per_epoch(image_folder, tmp_path / "b", epochs=2, resume=True) == {2: {TRAINING}}
    assert flags.current() == before


def test_cpu_training_leaves_cudnn_alone(image_folder, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(flags, "scoped", lambda wanted: seen.append(wanted))
    cfg = TrainConfig(data=str(image_folder), scale=3, arch="9-1-5", n1=8, n2=4, epochs=1, out=str(tmp_path), eval_data=None)
    train(cfg)
    assert seen == []


def recording_run_valid(monkeypatch) -> list:
    seen: list = []
    run_valid = Upscaler._run_valid

    def record(self, window):
        seen.append(flags.current())
        return run_valid(self, window)

    monkeypatch.setattr(Upscaler, "_run_valid", record)
    return seen


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_upscaler_sets_cuda_flags_for_its_call_only(cuda_on_cpu, monkeypatch, precision):  # noqa: F811
    """Building changes nothing; a call runs fp32 convolutions without TF32 and with cuDNN's algorithm search, and
    puts back the caller's flags after it."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    torch.backends.cudnn.allow_tf32 = True
    before = flags.current()
    assert before == flags.Flags(benchmark=False, deterministic=False, tf32=True)
    up = Upscaler(tiny_model(), "cuda", precision)
    assert flags.current() == before
    seen = recording_run_valid(monkeypatch)
    up(torch.rand(1, 1, 24, 20))
    assert seen == [flags.Flags(benchmark=True, deterministic=False, tf32=False)]
    assert flags.current() == before


def test_upscaler_keeps_a_deterministic_callers_algorithm_choice(cuda_on_cpu, monkeypatch):  # noqa: F811
    """Under deterministic cuDNN (training's evaluation) the search by timing stays off: it can pick another
    algorithm, so other bits, from one run to the next."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    seen = recording_run_valid(monkeypatch)
    Upscaler(tiny_model(), "cuda", "fp32")(torch.rand(1, 1, 24, 20))
    assert seen == [flags.Flags(benchmark=False, deterministic=True, tf32=False)]
    assert flags.current() == flags.Flags(benchmark=False, deterministic=True, tf32=True)


def test_cpu_upscaler_leaves_cudnn_alone(monkeypatch):
    monkeypatch.setattr(flags, "shared", lambda make: pytest.fail("a CPU upscaler set cuDNN flags"))
    Upscaler(tiny_model(), "cpu")(torch.rand(1, 1, 24, 20))


@pytest.fixture
def saved_flags():
    saved = flags._snapshot()
    yield
    flags._restore(saved)


def test_scoped_puts_back_after_an_error(saved_flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    torch.backends.cudnn.allow_tf32 = True
    with pytest.raises(RuntimeError, match="boom"), flags.scoped(flags.Flags(False, True, False)):
        assert flags.current() == flags.Flags(False, True, False)
        raise RuntimeError("boom")
    assert flags.current() == flags.Flags(True, False, True)


def test_shared_scopes_overlapping_in_threads_put_back_once_the_last_ends(saved_flags):
    """Thread A enters, B enters, A leaves (B still runs under the flags), B leaves: the flags from before come back.
    Without the count, A's exit would put back the flags while B ran, or B would put back A's."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = False, True
    before = flags.current()
    wanted = flags.Flags(benchmark=True, tf32=False)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with flags.shared(lambda found: wanted):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with flags.shared(lambda found: pytest.fail("only the first one in sets the flags")):
            b_in.set()
            a_out.wait(5)
            seen["b after a left"] = flags.current()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"b after a left": flags.Flags(benchmark=True, deterministic=False, tf32=False)}
    assert flags.current() == before


def test_tf32_through_the_legacy_flag_before_torch_2_9(saved_flags, monkeypatch):
    """torch 2.4 to 2.8 have no per-operator setting (`torch.backends.cudnn.conv`): the legacy flag is used."""
    monkeypatch.setattr(flags, "_conv_precision", lambda: None)
    torch.backends.cudnn.allow_tf32 = True
    with flags.scoped(flags.Flags(tf32=False)):
        assert torch.backends.cudnn.allow_tf32 is False and flags.current().tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="torch before 2.9 has no per-operator TF32 setting")
def test_tf32_through_the_per_operator_setting(saved_flags):
    """torch 2.9+: the conv setting only, never the legacy getter (it raises once conv and RNN differ)."""
    torch.backends.cudnn.allow_tf32 = True
    with flags.scoped(flags.Flags(tf32=False)):
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert flags.current().tf32 is False  # torch.backends.cudnn.allow_tf32 would raise here
    assert torch.backends.cudnn.conv.fp32_precision == "tf32" and torch.backends.cudnn.allow_tf32 is True
