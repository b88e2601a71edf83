"""`vsr train`: the paper's training on sub-images of still images (vsr.train.training)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    TextColumn,
    TimeRemainingColumn,
)

from vsr.cli.common import Arch, PlainProgress, err_console, notice, out_console, progress_bar


class Recipe(str, Enum):
    adam = "adam"
    paper = "paper"


class TrainPrecision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


def train(
    data: Annotated[str, typer.Option(help="Training images: a dataset name (91images) or a folder.")] = "91images",
    scale: Annotated[int, typer.Option(help="Upscaling factor (2-8).")] = 3,
    arch: Annotated[Arch, typer.Option(metavar="NAME", help="Filter sizes f1-f2-f3: 9-5-5, 9-3-5 or 9-1-5.")] = Arch.a955,
    n1: Annotated[int, typer.Option(help="Filters of layer 1.")] = 64,
    n2: Annotated[int, typer.Option(help="Filters of layer 2.")] = 32,
    epochs: Annotated[int, typer.Option(help="Total epochs (including those already done when resuming).")] = 100,
    recipe: Annotated[
        Recipe, typer.Option(metavar="NAME", help="adam (modern and fast) or paper (SGD as published).")
    ] = Recipe.adam,
    batch_size: Annotated[int | None, typer.Option(help="Sub-images per step; default: 64 (adam), 128 (paper).")] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate; default: 1e-3 (adam), 1e-4 (paper).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for weights, checkpoint and log.")] = Path("runs/srcnn"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    init: Annotated[
        Path | None, typer.Option(help="Start from these weights (e.g. another scale's); default: random weights.")
    ] = None,
    eval_data: Annotated[
        str,
        typer.Option(
            help="Evaluated after each epoch: a dataset name or folder, none, or auto (Set5 from $VSR_DATA or beside --data; "
            "else no evaluation, with a notice)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu or cuda.")] = "auto",
    precision: Annotated[
        TrainPrecision,
        typer.Option(metavar="NAME", help="fp32, or bf16: the mapping layer in bfloat16 (about 2x faster on CPUs with AMX)."),
    ] = TrainPrecision.fp32,
    scale_aug: Annotated[
        bool, typer.Option("--scale-aug", help="Also train on copies downscaled by 0.9-0.6 (FSRCNN's augmentation).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or notices; still one line per epoch and the weights' path.")
    ] = False,
) -> None:
    """Train SRCNN on sub-images of still images (the paper's protocol)."""
    from vsr.train.training import TrainConfig
    from vsr.train.training import train as run_training

    cfg = TrainConfig(
        data=data,
        scale=scale,
        arch=arch.value,
        n1=n1,
        n2=n2,
        recipe=recipe.value,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        out=str(out),
        init=str(init) if init else None,
        eval_data=None if eval_data.lower() == "none" else eval_data,
        device=device,
        precision=precision.value,
        scale_aug=scale_aug,
    )
    plain = PlainProgress(quiet, "steps")
    with progress_bar(quiet, TextColumn("[bold]epoch {task.fields[epoch]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=None, epoch="-")

        def report(event: dict) -> None:
            kind = event["event"]
            if kind == "start" and not quiet:
                err_console.print(
                    f"training {cfg.arch} x{cfg.scale} ({cfg.recipe}) on {event['samples']} sub-images, "
                    f"epochs {event['start_epoch'] + 1}..{event['epochs']}, {event['device']}"
                )
            elif kind == "notice":
                notice(event["message"], quiet)
            elif kind == "step":
                progress.update(task, completed=event["step"], total=event["steps"], epoch=event["epoch"])
                plain(event["step"], event["steps"], f"epoch {event['epoch']}/{cfg.epochs}: ")
            elif kind == "epoch":
                plain.start = plain.clock()  # the next epoch's step rate and ETA are its own
                psnr = (
                    f", {event['eval_data']} {event['eval_psnr']:.2f} dB (bicubic {event['bicubic_psnr']:.2f})"
                    if "eval_psnr" in event
                    else ""
                )
                progress.console.print(f"epoch {event['epoch']}: loss {event['loss']:.6f}{psnr}, {event['epoch_s']:.1f} s")

        path = run_training(cfg, resume=resume, report=report)
    out_console.print(f"weights: {path}")
