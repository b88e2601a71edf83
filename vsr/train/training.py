"""Training SRCNN on the paper's sub-images: `train(config) -> weights path`.

Contract:
- Data: `data.training_pairs` (33x33 sub-images, stride 14, LR = bicubic down+up);
  `scale_aug` adds copies of every image downscaled by 0.9/0.8/0.7/0.6 (FSRCNN's
  augmentation of the 91 images: 3.3x the sub-images). Loss: MSE between the valid
  (unpadded) output and the label's centre.
- Precision: `fp32`, or `bf16`: the mapping layer (conv2, about 87% of the 9-5-5
  arithmetic) runs in bfloat16 under autocast while conv1, conv3, the loss and the
  weights stay float32. About 2x faster on this project's AMX CPU; the weights are
  float32 either way.
- Recipes: `paper` = SGD, momentum 0.9, lr 1e-4 for layers 1-2 and 1e-5 for layer 3,
  Gaussian init (std 1e-3), batch 128, as in the paper; `adam` (default) = Adam with
  lr 1e-3 (layer 3: 1e-4) decayed by a cosine over `epochs` to 1% of it, He init,
  random flips/rotations of each batch, batch 64.
- Files in `out`: `srcnn_<arch>_x<scale>.safetensors` (the weights, rewritten after
  every epoch, with the training metadata), `checkpoint.safetensors` (weights,
  optimizer and RNG state: `resume=True` continues bit-for-bit as if never stopped,
  given the same config), `log.jsonl` (one line per epoch).
- A stop signal (Ctrl-C, SIGTERM: `vsr.signals`) never splits an epoch's three writes: checkpoint,
  weights and log line are written together (each file atomically), so `resume` continues from the
  last finished epoch with a log that matches it.
- Deterministic for a seed on a given device and library version. On CUDA every epoch runs under the same
  cuDNN flags (`TRAIN_FLAGS`, set for the run and put back when `train` returns): deterministic algorithms only,
  no algorithm search by timing (it may pick another algorithm, so other bits, from run to run), and fp32
  convolutions in IEEE fp32, not TF32 (the CPU's arithmetic, and what `--precision fp32` means elsewhere in vsr;
  `bf16` is the fast choice). The evaluation after each epoch changes none of them (`vsr.engine.base.cuda_flags`
  leaves the search off under deterministic cuDNN and restores what it finds), so epoch 1, later epochs and a
  resumed run train alike. No CLI code here: progress goes to the `report` callback as dicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vsr.engine import flags
from vsr.engine.base import Upscaler, pick_device
from vsr.engine.ensemble import dihedral
from vsr.errors import UsageError, VsrError
from vsr.media.atomic import atomic_path
from vsr.model.srcnn import SRCNN, SRCNNConfig, load_weights, save_weights
from vsr.signals import check as check_stop
from vsr.signals import deferred
from vsr.train.data import SCALE_AUGMENTATION, resolve_dataset, training_pairs
from vsr.train.evaluate import evaluate, load_ground_truth

RECIPES = ("adam", "paper")
PRECISIONS = ("fp32", "bf16")
TRAIN_FLAGS = flags.Flags(benchmark=False, deterministic=True, tf32=False)  # cuDNN on CUDA (see the contract)


@dataclass
class TrainConfig:
    data: str = "91images"
    scale: int = 3
    arch: str = "9-5-5"
    n1: int = 64
    n2: int = 32
    recipe: str = "adam"
    epochs: int = 100
    batch_size: int | None = None  # recipe default: 64 (adam), 128 (paper)
    lr: float | None = None  # recipe default: 1e-3 (adam), 1e-4 (paper)
    seed: int = 0
    out: str = "runs/srcnn"
    init: str | None = None  # start from these weights (e.g. another scale's)
    eval_data: str | None = "auto"  # "auto": Set5 if found (see `eval_folder`), a name or folder, or None
    device: str = "auto"
    precision: str = "fp32"
    scale_aug: bool = False

    def validate(self) -> None:
        if self.scale < 2 or self.scale > 8:
            raise UsageError(f"--scale must be an integer from 2 to 8, got {self.scale}")
        if self.recipe not in RECIPES:
            raise UsageError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        try:
            SRCNNConfig.from_arch(self.arch, self.n1, self.n2)
        except ValueError as exc:
            raise UsageError(f"--arch: {exc}") from None

    @property
    def weights_name(self) -> str:
        return f"srcnn_{self.arch}_x{self.scale}.safetensors"

    def resolved_batch_size(self) -> int:
        return self.batch_size or (64 if self.recipe == "adam" else 128)

    def base_lr(self) -> float:
        return self.lr or (1e-3 if self.recipe == "adam" else 1e-4)


def _make_optimizer(model: SRCNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    lr = cfg.base_lr()
    groups = [
        {"params": [*model.conv1.parameters(), *model.conv2.parameters()], "lr": lr},
        {"params": list(model.conv3.parameters()), "lr": lr * 0.1},
    ]
    if cfg.recipe == "paper":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.Adam(groups, lr=lr)


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rates during `epoch` (0-based)."""
    if cfg.recipe == "paper":
        return 1.0
    floor = 0.01
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


def _augment(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips/rotations of the square, the same for input and label."""
    return dihedral(x, k), dihedral(y, k)


def _forward_valid(model: SRCNN, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The training forward pass (valid convolutions), conv2 in bfloat16 if `bf16`."""
    if not bf16:
        return model(x, pad=False)
    h = F.relu(model.conv1(x))
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        h = F.relu(model.conv2(h))
    return model.conv3(h.float())


def _save_checkpoint(path: Path, model: SRCNN, opt: torch.optim.Optimizer, gen: torch.Generator, state: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, s in opt.state_dict()["state"].items():
        for key, v in s.items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng"] = gen.get_state()
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"state": json.dumps(state)})


def _checkpoint_state(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["state"])
    except Exception as exc:  # any corruption: one line, not a traceback
        raise UsageError(f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}); start a new --out") from None


def _check_same_run(saved: dict, cfg: TrainConfig) -> None:
    """Resuming needs the options that shape the run (all but epochs, device, out, eval_data)."""
    now = dataclasses.asdict(cfg)
    free = ("epochs", "device", "out", "eval_data")  # evaluation reads the model only: it does not shape the run
    diff = [f"{k}={v!r}" for k, v in saved.items() if k not in free and now.get(k) != v]
    if diff:
        raise UsageError(f"--resume: the checkpoint was trained with {', '.join(diff)}; pass the same options to resume")


def eval_folder(eval_data: str | None, data_dir: Path) -> tuple[Path | None, str | None]:
    """(folder evaluated after each epoch or None, notice for the user or None). "auto" looks for Set5 where
    `resolve_dataset` does ($VSR_DATA, the cache), then beside the training folder (`<data>/../Set5`, as in
    ../shared/data); without one it trains without periodic evaluation and says so. A name or folder given
    explicitly must exist."""
    if eval_data is None:
        return None, None
    if eval_data != "auto":
        return resolve_dataset(eval_data), None
    try:
        return resolve_dataset("Set5"), None
    except VsrError:
        beside = data_dir.resolve().parent / "Set5"
        if beside.is_dir():
            return beside, None
    return None, (
        f"no Set5 found ($VSR_DATA, the cache, or {beside}): training without evaluation after each epoch; "
        "pass --eval-data FOLDER to evaluate"
    )


def _load_checkpoint(path: Path, model: SRCNN, opt: torch.optim.Optimizer, gen: torch.Generator, device) -> dict:
    from safetensors.torch import load_file

    state = _checkpoint_state(path)
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state = opt.state_dict()
    opt_state["state"] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            opt_state["state"].setdefault(int(i), {})[key] = v if key == "step" else v.to(device)
    opt.load_state_dict(opt_state)
    gen.set_state(tensors["rng"])
    return state


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def train(cfg: TrainConfig, resume: bool = False, report: Callable[[dict], None] = lambda e: None) -> Path:
    """Train (or resume) and return the path of the weights file (see module contract)."""
    cfg.validate()
    device = pick_device(cfg.device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.safetensors"
    if resume and not ckpt_path.is_file():
        raise UsageError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start training")
    if not resume and ckpt_path.exists():
        raise UsageError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume:
        _check_same_run(_checkpoint_state(ckpt_path)["config"], cfg)
    data_dir = resolve_dataset(cfg.data)
    eval_dir, notice = eval_folder(cfg.eval_data, data_dir)
    if notice:
        report({"event": "notice", "message": notice})
    eval_images = load_ground_truth(eval_dir, cfg.scale) if eval_dir else None
    eval_name = eval_dir.name if eval_dir else None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    report({"event": "loading", "data": str(data_dir)})
    inputs, labels = training_pairs(data_dir, cfg.scale, rescale=SCALE_AUGMENTATION if cfg.scale_aug else (1.0,))
    inputs, labels = inputs.to(device), labels.to(device)
    bf16 = cfg.precision == "bf16"

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SRCNN(SRCNNConfig.from_arch(cfg.arch, cfg.n1, cfg.n2))
    if cfg.recipe == "paper":
        model.init_gaussian(1e-3, generator=gen)
    else:
        model.init_he(generator=gen)
    if cfg.init and not resume:
        start = load_weights(Path(cfg.init))
        if start.config != model.config:
            raise UsageError(f"--init {cfg.init}: its architecture {start.config.arch} differs from --arch {cfg.arch}")
        model.load_state_dict(start.state_dict())
    model.to(device)
    if bf16:  # oneDNN's bfloat16 convolutions are fastest on NHWC tensors
        model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(model, cfg)
    state = {"epoch": 0, "elapsed_s": 0.0, "history": [], "config": dataclasses.asdict(cfg)}
    if resume:
        saved = _load_checkpoint(ckpt_path, model, opt, gen, device)
        state.update(epoch=saved["epoch"], elapsed_s=saved["elapsed_s"], history=saved["history"])

    border = model.config.border
    batch = cfg.resolved_batch_size()
    n = inputs.shape[0]
    steps = math.ceil(n / batch)
    weights_path = out / cfg.weights_name
    report(
        {
            "event": "start",
            "samples": n,
            "steps_per_epoch": steps,
            "epochs": cfg.epochs,
            "start_epoch": state["epoch"],
            "device": hardware_name(device),
        }
    )
    with flags.scoped(TRAIN_FLAGS) if device.type == "cuda" else nullcontext():  # every epoch alike (contract)
        for epoch in range(state["epoch"], cfg.epochs):
            t0 = time.perf_counter()
            factor = _lr_factor(cfg, epoch)
            base = cfg.base_lr()
            for group, lr in zip(opt.param_groups, (base, base * 0.1), strict=True):
                group["lr"] = lr * factor
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
            for step in range(steps):
                idx = perm[step * batch : (step + 1) * batch]
                x, y = inputs[idx], labels[idx]
                if cfg.recipe == "adam":
                    x, y = _augment(x, y, int(torch.randint(8, (1,), generator=gen)))
                if bf16:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = F.mse_loss(_forward_valid(model, x, bf16), y[:, :, border:-border, border:-border])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                check_stop()  # a stop signal some callback swallowed (vsr.signals)
                total += loss.detach() * idx.numel()
                report({"event": "step", "epoch": epoch + 1, "step": step + 1, "steps": steps})
            epoch_s = round(time.perf_counter() - t0, 2)
            record = {"epoch": epoch + 1, "loss": total.item() / n, "lr": base * factor, "epoch_s": epoch_s}
            model.eval()
            if eval_images is not None:
                res = evaluate(eval_images, cfg.scale, Upscaler(model, device), eval_name)
                record["eval_psnr"] = round(res.mean("model_psnr"), 4)
                record["bicubic_psnr"] = round(res.mean("bicubic_psnr"), 4)
                model.to(device)
            with deferred():  # the epoch's checkpoint, weights and log line are written together or not at all
                state["elapsed_s"] += time.perf_counter() - t0
                state["epoch"] = epoch + 1
                state["history"].append(record)
                _save_checkpoint(ckpt_path, model, opt, gen, state)
                meta = {
                    "recipe": cfg.recipe,
                    "precision": cfg.precision,
                    "scale_aug": cfg.scale_aug,
                    "epochs": epoch + 1,
                    "train_s": round(state["elapsed_s"], 1),
                    "data": cfg.data,
                    "scale": cfg.scale,
                    "seed": cfg.seed,
                    "hardware": hardware_name(device),
                    "torch": torch.__version__,
                    "eval": {eval_name: record.get("eval_psnr")} if eval_name else {},
                }
                save_weights(model, weights_path, meta)
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            report({"event": "epoch", "eval_data": eval_name, **record})
    return weights_path


__all__ = ["TrainConfig", "train", "RECIPES", "VsrError"]
