"""Command-line interface: the only module that imports typer and rich.

Every `VsrError` becomes one line on stderr (`vsr: error: ...`) and its exit code;
`--debug` shows the traceback instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .errors import InputError, UsageError, VsrError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Upscale videos, streams and images with SRCNN.")
out_console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


class Recipe(str, Enum):
    adam = "adam"
    paper = "paper"


class Arch(str, Enum):
    a915 = "9-1-5"
    a935 = "9-3-5"
    a955 = "9-5-5"


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _check_scale(scale: int) -> int:
    if scale < 2 or scale > 8:
        raise UsageError(f"--scale must be an integer from 2 to 8, got {scale}")
    return scale


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Training images: a dataset name (91images) or a folder.")] = "91images",
    scale: Annotated[int, typer.Option(help="Upscaling factor (2-8).")] = 3,
    arch: Annotated[Arch, typer.Option(help="Filter sizes f1-f2-f3.")] = Arch.a955,
    n1: Annotated[int, typer.Option(help="Filters of layer 1.")] = 64,
    n2: Annotated[int, typer.Option(help="Filters of layer 2.")] = 32,
    epochs: Annotated[int, typer.Option(help="Total epochs (including those already done when resuming).")] = 100,
    recipe: Annotated[Recipe, typer.Option(help="adam: modern and fast; paper: SGD as published.")] = Recipe.adam,
    batch_size: Annotated[int | None, typer.Option(help="Sub-images per step (recipe default).")] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate (recipe default).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for weights, checkpoint and log.")] = Path("runs/srcnn"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    init: Annotated[Path | None, typer.Option(help="Start from these weights (e.g. another scale's).")] = None,
    eval_data: Annotated[str, typer.Option(help="Dataset evaluated after each epoch ('none' to skip).")] = "Set5",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="One line per epoch, no progress bar.")] = False,
) -> None:
    """Train SRCNN on sub-images of still images (the paper's protocol)."""
    from .train import TrainConfig
    from .train import train as run_training

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
    )
    with Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=None, epoch="-")

        def report(event: dict) -> None:
            kind = event["event"]
            if kind == "start":
                err_console.print(
                    f"training {cfg.arch} x{cfg.scale} ({cfg.recipe}) on {event['samples']} sub-images, "
                    f"epochs {event['start_epoch'] + 1}..{event['epochs']}, {event['device']}"
                )
            elif kind == "step":
                progress.update(task, completed=event["step"], total=event["steps"], epoch=event["epoch"])
            elif kind == "epoch":
                psnr = (
                    f", {cfg.eval_data} {event['eval_psnr']:.2f} dB (bicubic {event['bicubic_psnr']:.2f})"
                    if "eval_psnr" in event
                    else ""
                )
                progress.console.print(f"epoch {event['epoch']}: loss {event['loss']:.6f}{psnr}, {event['epoch_s']:.1f} s")

        path = run_training(cfg, resume=resume, report=report)
    out_console.print(f"weights: {path}")


def _load_upscaler(weights: Path | None, scale: int, arch: str, device: str):
    from .engine import Upscaler, pick_device
    from .model import load_weights
    from .weights import default_weights

    dev = pick_device(device)
    return Upscaler(load_weights(weights or default_weights(scale, arch)), dev)


WeightsOpt = Annotated[Path | None, typer.Option(help="SRCNN weights (.safetensors); default: shipped weights for --scale.")]
ArchOpt = Annotated[Arch, typer.Option(help="Which shipped weights to use when --weights is not given.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (GPU if any), cpu or cuda.")]


@app.command()
def upscale(
    src: Annotated[str, typer.Argument(help="Image, folder of images, video file, URL, or - (stdin).", show_default=False)],
    dst: Annotated[str, typer.Argument(help="Output image, folder, video file, or - for stdout.", show_default=False)],
    scale: Annotated[int, typer.Option(help="Upscaling factor (2-8).")] = 2,
    weights: WeightsOpt = None,
    arch: ArchOpt = Arch.a955,
    device: DeviceOpt = "auto",
    codec: Annotated[str, typer.Option(help="Video encoder: libx264, libx265, libsvtav1, h264_nvenc, ...")] = "libx264",
    crf: Annotated[float | None, typer.Option(help="Video quality (CRF, or CQ for NVENC); lower is better.")] = None,
    preset: Annotated[str | None, typer.Option(help="Encoder preset (codec default: medium for x264/x265).")] = None,
    pix_fmt: Annotated[str | None, typer.Option(help="Output pixel format (default: the input's, e.g. yuv420p).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Container format for - (stdin/stdout), e.g. matroska, mpegts.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or summary.")] = False,
) -> None:
    """Upscale an image, a folder of images (PNG out, same stems), a video file, a stream URL or stdin."""
    from .imageio import is_image_path

    _check_scale(scale)
    src_path = Path(src)
    if src != "-" and (src_path.is_dir() or is_image_path(src_path)):
        _upscale_images(src_path, Path(dst), scale, weights, arch.value, device, overwrite, quiet)
        return
    from .video import is_url

    if src != "-" and not is_url(src) and not src_path.exists():
        raise InputError(f"{src}: no such file or folder; check the path")
    from .pipeline import upscale_video

    upscaler = _load_upscaler(weights, scale, arch.value, device)
    with _VideoProgress(quiet) as progress:
        summary = upscale_video(
            src,
            dst,
            scale,
            upscaler,
            codec=codec,
            crf=crf,
            preset=preset,
            pix_fmt=pix_fmt,
            fmt_in=fmt if src == "-" else None,
            fmt_out=fmt if dst == "-" else None,
            overwrite=overwrite,
            progress=progress,
        )
    if not quiet:
        (w, h), (ow, oh) = summary.in_size, summary.out_size
        err_console.print(
            f"{summary.frames} frames {w}x{h} -> {ow}x{oh} ({summary.codec}, {summary.pix_fmt}) in "
            f"{summary.elapsed_s:.1f} s, {summary.fps:.1f} fps -> {summary.dst}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _upscale_images(src: Path, dst: Path, scale: int, weights, arch: str, device: str, overwrite: bool, quiet: bool) -> None:
    import time

    from .images import image_jobs, upscale_files

    jobs = image_jobs(src, dst, overwrite)
    upscaler = _load_upscaler(weights, scale, arch, device)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("upscaling", total=len(jobs))
        upscale_files(jobs, scale, upscaler, lambda s, d: progress.advance(task))
    if not quiet:
        err_console.print(f"{len(jobs)} image(s) upscaled x{scale} in {time.perf_counter() - t0:.1f} s -> {dst}")


class _VideoProgress:
    """Rich progress for `upscale_video` events on stderr: frames, fps, ETA; a spinner when the count is unknown."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} / {task.fields[total_text]} frames"),
            TextColumn("{task.fields[fps]:.1f} fps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=quiet,
            transient=True,
        )
        self.task = None

    def __enter__(self) -> _VideoProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "warning":
            err_console.print(f"vsr: warning: {event['message']}", markup=False, highlight=False, soft_wrap=True)
        elif kind == "start":
            total = event["total_frames"]
            (w, h), (ow, oh) = event["in_size"], event["out_size"]
            desc = f"{w}x{h} -> {ow}x{oh}"
            self.task = self.progress.add_task(desc, total=total, total_text=total or "?", fps=0.0)
        elif kind == "progress" and self.task is not None:
            total = event["total_frames"]
            if total is not None and event["frames"] > total:  # the container's count was an estimate
                total = None
            self.progress.update(self.task, completed=event["frames"], total=total, fps=event["fps"], total_text=total or "?")


@app.command(name="eval")
def eval_cmd(
    data: Annotated[str, typer.Option(help="Ground-truth images: Set5, Set14 or a folder.")] = "Set5",
    scale: Annotated[int, typer.Option(help="Upscaling factor (2-8).")] = 3,
    weights: WeightsOpt = None,
    arch: ArchOpt = Arch.a955,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """PSNR/SSIM (Y, border shaved) of bicubic and SRCNN beside the paper's numbers."""
    import dataclasses

    from .data import resolve_dataset
    from .evaluate import evaluate, load_ground_truth

    _check_scale(scale)
    folder = resolve_dataset(data)
    images = load_ground_truth(folder, scale)
    result = evaluate(images, scale, _load_upscaler(weights, scale, arch.value, device), Path(data).name)
    means = {k: result.mean(k) for k in ("bicubic_psnr", "bicubic_ssim", "model_psnr", "model_ssim")}
    paper = {"bicubic_psnr": result.paper("bicubic"), "srcnn_955_psnr": result.paper("srcnn")}
    if as_json:
        doc = {
            "dataset": result.dataset,
            "scale": scale,
            "mean": means,
            "paper": paper,
            "images": [dataclasses.asdict(s) for s in result.images],
        }
        out_console.print_json(json.dumps(doc))
        return
    table = Table(title=f"{result.dataset} x{scale}: Y-PSNR (dB) / SSIM, {scale} px border shaved")
    for col in ("image", "bicubic", "SRCNN (ours)"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for s in result.images:
        table.add_row(s.name, f"{s.bicubic_psnr:.2f} / {s.bicubic_ssim:.4f}", f"{s.model_psnr:.2f} / {s.model_ssim:.4f}")
    table.add_section()
    table.add_row(
        "mean",
        f"{means['bicubic_psnr']:.2f} / {means['bicubic_ssim']:.4f}",
        f"{means['model_psnr']:.2f} / {means['model_ssim']:.4f}",
        style="bold",
    )
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    table.add_row("paper (9-5-5)", fmt(paper["bicubic_psnr"]), fmt(paper["srcnn_955_psnr"]), style="dim")
    out_console.print(table)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # returns an exit code instead of raising typer.Exit (130 on Ctrl-C)
        if isinstance(code, int) and code:
            if code == 130:
                err_console.print("vsr: interrupted", markup=False)
            sys.exit(code)
    except VsrError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"vsr: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("vsr: interrupted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
