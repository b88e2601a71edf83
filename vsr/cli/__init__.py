"""Command-line interface: the only module that imports typer and rich.

Every `VsrError` becomes one line on stderr (`vsr: error: ...`) and its exit code;
`--debug` shows the traceback instead. Ctrl-C, SIGTERM and SIGHUP stop any command
alike (`vsr.signals`): clean-up, one line, exit 130 / 143 / 129. Warnings that library
modules log to the `vsr` logger are printed as `vsr: warning: ...`.
"""

from __future__ import annotations

import json
import logging
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

from vsr.errors import InputError, UsageError, VsrError
from vsr.signals import Interrupted, acknowledge, exit_code, install, restore


class _PlainHelp:
    """Plain help: no `<bool>` type beside flags (it invites `--overwrite true`, which fails) and arguments named
    SRC DST in capitals without braces (current typer writes `{src} {dst}` in the usage line)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif isinstance(param, typer.core.TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_PlainHelp, typer.core.TyperCommand):
    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


class _Group(_PlainHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(cls=_Group, add_completion=False, help="Upscale videos, streams and images with SRCNN.")
out_console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


class Recipe(str, Enum):
    adam = "adam"
    paper = "paper"


class TrainPrecision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class Arch(str, Enum):
    a915 = "9-1-5"
    a935 = "9-3-5"
    a955 = "9-5-5"


def _version(value: bool) -> None:
    if value:
        from vsr import __version__

        out_console.print(f"vsr {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print vsr's version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug
    _help_without_command(ctx)


def _help_without_command(ctx: typer.Context) -> None:
    """Bare `vsr` (or `vsr data`): the help, exit 0. Click's `no_args_is_help` raises an error with an empty message
    from 8.2 on, which printed `vsr: error: ;` under the help and exited 2."""
    if ctx.invoked_subcommand is None:
        out_console.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit()


def _passive_openmp() -> None:
    """Threads waiting for work sleep instead of spinning. The video commands run decode, SR and encode threads
    on the same cores, and spinning OpenMP workers steal them: measured on 2 cores, 9-5-5 320x180 x2, end-to-end
    6.6 -> 6.8 fps (OMP_WAIT_POLICY=ACTIVE: 3.7). Must run before torch is imported; a user's setting wins."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _live_display(quiet: bool) -> bool:
    """Progress bars only on a terminal: piped or logged stderr gets the one-line summaries and errors alone
    (rich would leave an empty line behind there)."""
    return not quiet and err_console.is_terminal


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _PlainProgress:
    """Progress where stderr is not a terminal (nohup, a log file, CI): a plain line every `interval_s`, e.g.
    `vsr: 1200 / 5000 frames (24%), 12.3 frames/s, ETA 5 min 09 s`, instead of silence until the end."""

    INTERVAL_S = 30.0

    def __init__(self, quiet: bool, unit: str, interval_s: float = INTERVAL_S, clock=None):
        import time

        self.enabled = not quiet and not err_console.is_terminal
        self.unit, self.interval_s = unit, interval_s
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()

    def __call__(self, done: int, total: int | None, prefix: str = "") -> None:
        now = self.clock()
        if not self.enabled or now - self.last < self.interval_s:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"vsr: {prefix}{done} / {total or '?'} {self.unit}"
        if total:
            text += f" ({100 * done / total:.0f}%)"
        text += f", {rate:.2f} {self.unit}/s"
        if total and rate > 0 and done <= total:
            text += f", ETA {_duration((total - done) / rate)}"
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _bar(quiet: bool, label: TextColumn, *extra) -> Progress:
    """A transient progress bar on stderr: label, bar, done/total, elapsed, then `extra` columns."""
    return Progress(
        label,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=err_console,
        disable=not _live_display(quiet),
        transient=True,
    )


def _check_scale(scale: int) -> int:
    if scale < 2 or scale > 8:
        raise UsageError(f"--scale must be an integer from 2 to 8, got {scale}")
    return scale


@app.command(cls=_Command)
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
    eval_data: Annotated[
        str,
        typer.Option(
            help="Evaluated after each epoch: a dataset name or folder, none, or auto (Set5 from $VSR_DATA or beside --data; "
            "else no evaluation, with a notice)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        TrainPrecision, typer.Option(help="bf16: the mapping layer in bfloat16 (about 2x faster on CPUs with AMX).")
    ] = TrainPrecision.fp32,
    scale_aug: Annotated[
        bool, typer.Option("--scale-aug", help="Also train on copies downscaled by 0.9-0.6 (FSRCNN's augmentation).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="One line per epoch, no progress bar.")] = False,
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
    plain = _PlainProgress(quiet, "steps")
    with _bar(quiet, TextColumn("[bold]epoch {task.fields[epoch]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=None, epoch="-")

        def report(event: dict) -> None:
            kind = event["event"]
            if kind == "start":
                err_console.print(
                    f"training {cfg.arch} x{cfg.scale} ({cfg.recipe}) on {event['samples']} sub-images, "
                    f"epochs {event['start_epoch'] + 1}..{event['epochs']}, {event['device']}"
                )
            elif kind == "notice":
                progress.console.print(f"vsr: {event['message']}", markup=False, highlight=False, soft_wrap=True)
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


def _load_upscaler(
    weights: Path | None,
    scale: int,
    arch: str,
    device: str,
    backend: str = "eager",
    precision: str | None = None,
    ensemble: bool = False,
):
    from vsr.engine.base import SelfEnsemble, make_upscaler
    from vsr.model.srcnn import load_weights
    from vsr.model.weights import default_weights

    notice = lambda text: err_console.print(f"vsr: {text}", markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    model = load_weights(weights or default_weights(scale, arch))
    upscaler = make_upscaler(model, backend, device, precision, notice=notice)
    return SelfEnsemble(upscaler) if ensemble else upscaler


class Backend(str, Enum):
    auto = "auto"
    eager = "eager"
    compile = "compile"
    tensorrt = "tensorrt"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="auto: fp16 on a GPU; on a CPU with native bf16 (AVX512_BF16 or AMX) bf16 for the layers where it costs "
        "at most 0.01 dB (measured per shipped model, vsr/model/weights/cpu_precision.json), fp32 elsewhere. "
        "bf16: every layer (CPU). fp16: GPU only."
    ),
]


WeightsOpt = Annotated[Path | None, typer.Option(help="SRCNN weights (.safetensors); default: shipped weights for --scale.")]
ScaleOpt = Annotated[
    int, typer.Option(help="Upscaling factor, 2-8. Shipped weights cover 2, 3 and 4; other factors need --weights FILE.")
]
ArchOpt = Annotated[
    Arch,
    typer.Option(
        help="Shipped weights to use without --weights: 9-5-5 (best) or 9-1-5 (fastest), each for x2, x3, x4; "
        "9-3-5 needs --weights FILE."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto (GPU if any), cpu or cuda.")]
EnsembleOpt = Annotated[
    bool | None,
    typer.Option(
        "--ensemble/--no-ensemble",
        help="Average SRCNN over the 8 flips/rotations (+0.1-0.2 dB, 8x the model's work). "
        "Default: on for images, off for video.",
        show_default=False,
    ),
]


@app.command(cls=_Command)
def upscale(
    src: Annotated[str, typer.Argument(help="Image, folder of images, video file, URL, or - (stdin).", show_default=False)],
    dst: Annotated[str, typer.Argument(help="Output image, folder, video file, or - for stdout.", show_default=False)],
    scale: ScaleOpt = 2,
    weights: WeightsOpt = None,
    arch: ArchOpt = Arch.a955,
    device: DeviceOpt = "auto",
    codec: Annotated[
        str,
        typer.Option(
            help="Video encoder: libx264, libx265, libsvtav1, libvpx-vp9, h264_nvenc (NVIDIA GPUs), or any other PyAV has."
        ),
    ] = "libx264",
    crf: Annotated[float | None, typer.Option(help="Video quality (CRF, or CQ for NVENC); lower is better.")] = None,
    preset: Annotated[str | None, typer.Option(help="Encoder preset (codec default: medium for x264/x265).")] = None,
    pix_fmt: Annotated[str | None, typer.Option(help="Output pixel format (default: the input's, e.g. yuv420p).")] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="Container format of - (stdin/stdout), e.g. matroska, mpegts; - as output defaults to matroska."
        ),
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="auto: tensorrt or compile on a GPU, eager on the CPU (images: always eager).")
    ] = Backend.auto,
    precision: PrecisionOpt = Precision.auto,
    hwaccel: Annotated[str | None, typer.Option(help="Hardware decoding, e.g. cuda (NVDEC); falls back to the CPU.")] = None,
    ensemble: EnsembleOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or summary.")] = False,
    workers: Annotated[
        int,
        typer.Option(help="Video files: split into segments and upscale them in this many local processes (CPU)."),
    ] = 1,
    segment: Annotated[
        float | None,
        typer.Option(help="Seconds of video per segment (default: 1/8 of the video, 2-10 s).", show_default=False),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Reuse the finished segments an interrupted segmented run left (implies segments)."),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the segments as Ray tasks: local (start Ray here) or a cluster address (HOST:PORT, ray://...); "
            "needs Ray (pip install ray, or the vsr-srcnn\\[ray] extra).",
        ),
    ] = None,
) -> None:
    """Upscale an image, a folder of images or videos, a video file, a stream URL or stdin."""
    _passive_openmp()
    from vsr.media.imageio import is_image_path
    from vsr.media.video import is_url

    _check_scale(scale)
    src_path = Path(src)
    segmented = workers > 1 or resume or ray is not None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if ray is not None and workers > 1:
        raise UsageError("--ray and --workers exclude each other: Ray's resources decide how many segments run at once")
    if segment is not None and not segment > 0:
        raise UsageError(f"--segment must be a positive number of seconds, got {segment}")
    if segmented and (src == "-" or is_url(src) or dst == "-"):
        raise UsageError("--workers, --ray and --resume need video files in and out (not - or a URL); drop them")
    if segmented and hwaccel:
        raise UsageError("--hwaccel works in one process; drop it, or drop --workers/--ray/--resume")
    if src != "-" and src_path.is_dir():
        videos, images = _folder_media(src_path)
        pairs = _video_pairs(videos, Path(dst), overwrite, resume) if videos else []  # checked before any image
        if images or not videos:
            ens = True if ensemble is None else ensemble
            _upscale_images(
                src_path, Path(dst), scale, weights, arch.value, device, ens, overwrite, quiet, resume, precision.value
            )
        if not pairs:
            return
    elif src != "-" and is_image_path(src_path):
        ens = True if ensemble is None else ensemble
        _upscale_images(src_path, Path(dst), scale, weights, arch.value, device, ens, overwrite, quiet, False, precision.value)
        return
    else:
        if src != "-" and not is_url(src) and not src_path.exists():
            raise InputError(f"{src}: no such file or folder; check the path")
        pairs = [(src, dst)]
    upscaler = _load_upscaler(weights, scale, arch.value, device, backend.value, precision.value, bool(ensemble))
    from vsr.media.video import EncoderOptions

    enc = EncoderOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    with _VideoProgress(quiet) as progress:
        notice = lambda text: progress({"event": "notice", "message": text})  # noqa: E731
        if segmented:
            from vsr.scaleout.run import upscale_segmented

            make = lambda: _segment_workers(upscaler, workers, ray, notice)  # noqa: E731
            summaries = upscale_segmented(
                pairs, scale, make, upscaler=upscaler, enc=enc, seconds=segment, overwrite=overwrite, resume=resume,
                progress=progress, notice=notice,
            )  # fmt: skip
        else:
            from vsr.pipeline.video import upscale_video
            from vsr.scaleout.workdir import check_stale, discard

            summaries = []
            for one_src, one_dst in pairs:
                if one_dst != "-" and not overwrite:
                    check_stale(one_dst)  # an interrupted segmented run's parts are not dropped silently
                one = upscale_video(
                    one_src, one_dst, scale, upscaler, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                    fmt_in=fmt if one_src == "-" else None, fmt_out=fmt if one_dst == "-" else None,
                    overwrite=overwrite, progress=progress, hwaccel=hwaccel,
                )  # fmt: skip
                summaries.append(one)
                if one_dst != "-" and overwrite:
                    discard(one_dst, notice)
    if not quiet:
        for summary in summaries:
            (w, h), (ow, oh) = summary.in_size, summary.out_size
            err_console.print(
                f"{summary.frames} frames {w}x{h} -> {ow}x{oh} ({summary.codec}, {summary.pix_fmt}) in "
                f"{summary.elapsed_s:.1f} s, {summary.fps:.1f} fps -> {summary.dst}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".flv", ".mpg", ".mpeg", ".wmv", ".ogv"}
)


def _folder_media(folder: Path) -> tuple[list[Path], list[Path]]:
    """A folder's video files and image files, sorted by name (not its subfolders)."""
    from vsr.media.imageio import is_image_path

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES], [p for p in files if is_image_path(p)]


def _video_pairs(videos: list[Path], dst: Path, overwrite: bool, resume: bool = False) -> list[tuple[str, str]]:
    """OUTDIR/<same name> for each video, checked before any work (the folder is created). With `resume`, a video
    whose output exists and has no work folder was finished by the interrupted run: it is left out."""
    from vsr.pipeline.images import output_folder
    from vsr.scaleout.workdir import folder_for

    if resume and not overwrite:
        videos = [v for v in videos if not (dst / v.name).exists() or folder_for(dst / v.name).is_dir()]
        if not videos:
            return []
    output_folder(videos[0].parent, dst, [dst / v.name for v in videos], overwrite)
    return [(str(v), str(dst / v.name)) for v in videos]


def _segment_workers(upscaler, workers: int, ray: str | None, notice):
    """The workers of a segmented run: Ray tasks (`--ray`) or local processes."""
    if ray is not None:
        from vsr.scaleout.raytasks import RayWorkers
        from vsr.scaleout.run import spec_for

        return RayWorkers(ray, spec_for(upscaler, 1, cpu_only=False), notice=notice)
    from vsr.scaleout.run import InProcessWorkers, LocalWorkers, spec_for

    if workers == 1:  # --resume alone: segments in this process, on its device
        return InProcessWorkers(upscaler, spec_for(upscaler, 1, cpu_only=False))
    return LocalWorkers(spec_for(upscaler, workers), workers)


def _upscale_images(
    src: Path,
    dst: Path,
    scale: int,
    weights,
    arch: str,
    device: str,
    ensemble: bool,
    overwrite: bool,
    quiet: bool,
    resume: bool = False,
    precision: str = "auto",
) -> None:
    import time

    from vsr.pipeline.images import image_jobs, upscale_files

    if resume and not overwrite and src.is_dir() and dst.is_dir():  # the images an interrupted run finished
        from vsr.train.data import list_images

        done = {p.stem for p in list_images(src) if (dst / f"{p.stem}.png").exists()}
        jobs = [(s, d) for s, d in image_jobs(src, dst, True) if s.stem not in done]
        if not jobs:
            return
    else:
        jobs = image_jobs(src, dst, overwrite)
    upscaler = _load_upscaler(weights, scale, arch, device, precision=precision, ensemble=ensemble)
    t0 = time.perf_counter()
    plain = _PlainProgress(quiet, "images")
    with _bar(quiet, TextColumn("{task.description}")) as progress:
        task = progress.add_task("upscaling", total=len(jobs))
        count = [0]

        def done(src: Path, dst: Path) -> None:
            progress.advance(task)
            count[0] += 1
            plain(count[0], len(jobs))

        upscale_files(jobs, scale, upscaler, done)
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
            disable=not _live_display(quiet),
            transient=True,
        )
        self.task = None
        self.plain = _PlainProgress(quiet, "frames")

    def __enter__(self) -> _VideoProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind in ("warning", "notice"):
            prefix = "vsr: warning: " if kind == "warning" else "vsr: "
            err_console.print(f"{prefix}{event['message']}", markup=False, highlight=False, soft_wrap=True)
        elif kind == "start":
            total = event["total_frames"]
            (w, h), (ow, oh) = event["in_size"], event["out_size"]
            desc = f"{w}x{h} -> {ow}x{oh}"
            if event.get("files", 1) > 1:
                desc = f"{event['files']} videos"
            done = event.get("done_frames", 0)  # reused by --resume
            self.task = self.progress.add_task(desc, total=total, completed=done, total_text=total or "?", fps=0.0)
        elif kind == "progress" and self.task is not None:
            total = event["total_frames"]
            if total is not None and event["frames"] > total:  # the container's count was an estimate
                total = None
            self.progress.update(self.task, completed=event["frames"], total=total, fps=event["fps"], total_text=total or "?")
            self.plain(event["frames"], total)


class View(str, Enum):
    side = "side"
    split = "split"
    sr = "sr"
    bicubic = "bicubic"


def _parse_size(text: str, option: str) -> tuple[int, int]:
    import re

    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise UsageError(f"{option} must be WIDTHxHEIGHT, e.g. 640x480; got {text!r}")
    return int(match.group(1)), int(match.group(2))


@app.command(cls=_Command)
def webcam(
    source: Annotated[
        str, typer.Option(help="Camera index (0, 1, ...) or /dev/videoN, a video file, or a stream URL (rtsp://, http://, ...).")
    ] = "0",
    scale: ScaleOpt = 2,
    weights: WeightsOpt = None,
    arch: ArchOpt = Arch.a955,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    view: Annotated[View, typer.Option(help="View at the start: side (bicubic | SRCNN), split, sr, bicubic.")] = View.side,
    window: Annotated[bool, typer.Option("--window/--no-window", help="Show the preview, or run the loop headless.")] = True,
    frames: Annotated[int | None, typer.Option(help="Stop after this many frames (shown, or processed headless).")] = None,
    record: Annotated[str | None, typer.Option(help="Record what is shown to this video file (e.g. out.mkv).")] = None,
    record_sr_only: Annotated[
        bool, typer.Option("--record-sr-only", help="Record only the SRCNN stream (output size, the source's pixel format).")
    ] = False,
    codec: Annotated[str, typer.Option(help="Encoder of --record: libx264, libx265, libsvtav1, ffv1, ...")] = "libx264",
    crf: Annotated[float | None, typer.Option(help="Quality of --record (CRF, or CQ for NVENC); lower is better.")] = None,
    preset: Annotated[str | None, typer.Option(help="Encoder preset of --record (codec default: medium for x264).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --record file.")] = False,
    live: Annotated[
        bool | None,
        typer.Option("--live/--no-live", help="Keep only the newest frame, drop stale ones (default: cameras and URLs)."),
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Restart a file source when it ends.")] = False,
    snapshot_dir: Annotated[Path, typer.Option(help="Folder for snapshots (key s).")] = Path("."),
    camera_size: Annotated[str | None, typer.Option(help="Picture size to ask of a camera, WIDTHxHEIGHT, e.g. 640x480.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No status line or summary.")] = False,
) -> None:
    """Live preview of a camera, stream or file: bicubic beside SRCNN, with fps, latency and dropped frames.

    Keys: q/Esc quit, space comparison, s snapshot, 1-4 view, +/- zoom, [ ] or mouse split, p pause, h overlay.
    """
    _passive_openmp()
    from vsr.live.webcam import EncoderOptions, WebcamOptions, run_webcam  # before anything loads PyAV (see vsr.webcam)

    _check_scale(scale)
    opts = WebcamOptions(
        source=source,
        scale=scale,
        window=window,
        frames=frames,
        view=view.value,
        record=record,
        record_sr_only=record_sr_only,
        overwrite=overwrite,
        encoder=EncoderOptions(codec=codec, crf=crf, preset=preset),
        live=live,
        loop=loop,
        snapshot_dir=str(snapshot_dir),
        camera_size=_parse_size(camera_size, "--camera-size") if camera_size else None,
    )
    upscaler = _load_upscaler(weights, scale, arch.value, device, precision=precision.value)
    status = err_console.status("vsr webcam: starting", spinner="dots") if not quiet else None
    if status is not None:
        status.start()
    say = lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731

    def report(event: dict) -> None:
        kind = event["event"]
        if kind == "warning":
            say(f"vsr: warning: {event['message']}")
        elif quiet:
            return
        elif kind == "start":
            (w, h), (ow, oh) = event["in_size"], event["out_size"]
            mode = "live, newest frame only" if event["live"] else "every frame"
            say(f"{event['source']}: {w}x{h} -> {ow}x{oh}, {event['model']} on {event['device']} ({mode})")
        elif kind == "snapshot":
            say(f"snapshot: {event['path']}")
        elif kind == "progress" and status is not None:
            dropped = f", {event['dropped']} dropped" if event["dropped"] else ""
            status.update(
                f"vsr webcam: {event['frames']} frames, {event['fps']:.1f} fps, SR {event['sr_ms']:.0f} ms, "
                f"latency {event['latency_ms']:.0f} ms{dropped}"
            )

    try:
        summary = run_webcam(opts, upscaler, report)
    finally:
        if status is not None:
            status.stop()
    if not quiet:
        dropped = f", {summary.dropped} dropped" if summary.live else ""
        recorded = f"; recorded {summary.recorded_frames} frames -> {summary.record}" if summary.record else ""
        say(
            f"{summary.frames} frames in {summary.elapsed_s:.1f} s, {summary.fps:.1f} fps, SR {summary.sr_ms:.0f} ms/frame, "
            f"latency {summary.latency_ms:.0f} ms{dropped}{recorded}"
        )


@app.command(name="eval", cls=_Command)
def eval_cmd(
    data: Annotated[str, typer.Option(help="Ground-truth images: Set5, Set14 or a folder.")] = "Set5",
    scale: ScaleOpt = 3,
    weights: WeightsOpt = None,
    arch: ArchOpt = Arch.a955,
    device: DeviceOpt = "auto",
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble/--no-ensemble", help="Self-ensemble, as `vsr upscale` does for images (--no-ensemble: one pass)."
        ),
    ] = True,
    precision: PrecisionOpt = Precision.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """PSNR/SSIM (Y, border shaved) of bicubic and SRCNN beside the paper's numbers."""
    import dataclasses

    from vsr.train.data import resolve_dataset
    from vsr.train.evaluate import evaluate, load_ground_truth

    _check_scale(scale)
    folder = resolve_dataset(data)
    images = load_ground_truth(folder, scale)
    upscaler = _load_upscaler(weights, scale, arch.value, device, precision=precision.value, ensemble=ensemble)
    result = evaluate(images, scale, upscaler, Path(data).name)
    means = {k: result.mean(k) for k in ("bicubic_psnr", "bicubic_ssim", "model_psnr", "model_ssim")}
    paper = {"bicubic_psnr": result.paper("bicubic"), "srcnn_955_psnr": result.paper("srcnn")}
    if as_json:
        doc = {
            "dataset": result.dataset,
            "scale": scale,
            "ensemble": ensemble,
            "precision": upscaler.precision,
            "mean": means,
            "paper": paper,
            "images": [dataclasses.asdict(s) for s in result.images],
        }
        out_console.print_json(json.dumps(doc))
        return
    table = Table(title=f"{result.dataset} x{scale}: Y-PSNR (dB) / SSIM, {scale} px border shaved, {upscaler.precision}")
    for col in ("image", "bicubic", "SRCNN (ours, self-ensemble)" if ensemble else "SRCNN (ours, one pass)"):
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


@app.command(cls=_Command)
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer, smaller configurations: about a minute on 2 CPU cores.")] = False,
    device: DeviceOpt = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report (JSON) to this file.")] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="Draw throughput per configuration (PSNR vs speed too with --eval) to this PNG.")
    ] = None,
    eval_quality: Annotated[
        bool, typer.Option("--eval", help="Also measure Set5 Y-PSNR ($VSR_DATA) of each model and scale benched.")
    ] = False,
    src: Annotated[
        str | None, typer.Option("--input", help="Video file for the pipeline rows, processed whole (default: a synthetic clip).")
    ] = None,
    models: Annotated[str, typer.Option(help="Comma-separated SRCNN models: 9-1-5, 9-5-5.")] = "9-1-5,9-5-5",
    backends: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated backends: eager, compile, tensorrt (default: eager; on CUDA also the one upscale picks)."
        ),
    ] = None,
    resolutions: Annotated[
        str | None,
        typer.Option(help="Comma-separated WIDTHxHEIGHTxSCALE, e.g. 640x360x3 (-> 1920x1080); the first sets the clip."),
    ] = None,
    frames: Annotated[int | None, typer.Option(help="Frames of the synthetic clip (default: by device and --quick).")] = None,
    precisions: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="Comma-separated precisions: auto, fp32, bf16, fp16 (default: fp16,fp32 on CUDA; on the CPU fp32, "
            "and auto where the CPU has native bf16). Choices that resolve to the same plan are measured once.",
        ),
    ] = None,
    naive: Annotated[
        bool, typer.Option("--naive/--no-naive", help="Time the naive per-frame loop (vsr.bench.naive) beside the pipeline rows.")
    ] = True,
    codec: Annotated[str, typer.Option(help="Video encoder of the pipeline and transcode rows.")] = "libx264",
    preset: Annotated[str | None, typer.Option(help="Encoder preset (codec default: medium for x264).")] = None,
    pipeline: Annotated[bool, typer.Option("--pipeline/--no-pipeline", help="Measure the pipeline and transcode rows.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --json/--plot files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Measure throughput on this machine: model only, the video pipeline and the transcode-only baseline."""
    _passive_openmp()
    import dataclasses
    import shlex

    from vsr.bench import report as bm
    from vsr.engine.base import pick_device

    dev = pick_device(device)
    plan = bm.default_plan(dev, quick)
    changes: dict = {
        "models": bm.parse_names(models, bm.MODELS, "--models"),
        "codec": codec,
        "preset": preset,
        "pipeline": pipeline,
        "naive": naive,
    }
    if precisions is not None:
        from vsr.engine.precision import PRECISIONS, check_plan
        from vsr.errors import BackendError

        changes["precisions"] = bm.parse_names(precisions, PRECISIONS, "--precision")
        try:  # a precision this device cannot run, now rather than after the peak measurement
            check_plan(changes["precisions"], dev)
        except BackendError as exc:
            raise UsageError(str(exc)) from None
    if backends is not None:
        changes["backends"] = bm.parse_names(backends, bm.BACKENDS, "--backends")
    if resolutions is not None:
        changes["resolutions"] = bm.parse_resolutions(resolutions)
    if frames is not None:
        changes["frames"] = frames
    if src is not None:
        bm.check_input(src)
        changes["input"] = src
    if eval_quality:
        from vsr.train.data import resolve_dataset

        resolve_dataset("Set5")
        changes["eval_data"] = "Set5"
    for path, option in ((json_out, "--json"), (plot_out, "--plot")):
        if path is not None:
            bm.check_output(path, option, overwrite)
    if plot_out is not None:
        bm.check_plotting()
    if pipeline:
        from vsr.media.video import EncoderOptions, encoder_settings

        encoder_settings(EncoderOptions(codec=codec, preset=preset), "yuv420p")  # an unknown encoder fails now, not later
    plan = dataclasses.replace(plan, **changes)
    command = shlex.join(["vsr", *sys.argv[1:]])
    if quiet:
        doc = bm.run(plan, dev, command=command)
    else:
        with err_console.status("vsr bench") as status:
            doc = bm.run(plan, dev, progress=lambda message: status.update(f"vsr bench: {message}"), command=command)
    if json_out is not None:
        bm.write_json(doc, json_out)
    if plot_out is not None:
        bm.plot(doc, plot_out)
    _print_bench(doc)
    for path in (json_out, plot_out):
        if path is not None and not quiet:
            err_console.print(f"wrote {path}", markup=False, highlight=False)


data_app = typer.Typer(cls=_Group, help="Get the paper's datasets (Set5, Set14, 91images) into the cache, checked.")
app.add_typer(data_app, name="data")


@data_app.callback(invoke_without_command=True)
def _data(ctx: typer.Context) -> None:
    _help_without_command(ctx)


class DatasetName(str, Enum):
    set5 = "Set5"
    set14 = "Set14"
    images91 = "91images"
    all = "all"


@data_app.command(name="get", cls=_Command)
def data_get(
    names: Annotated[list[DatasetName], typer.Argument(help="Set5, Set14, 91images or all.", show_default=False)],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Where from: a mirror's URL or a folder laid out like NAME/FILE.png, or the authors' .zip downloaded "
            "by hand. Default: the SRCNN authors' archives (mmlab.ie.cuhk.edu.hk).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Download datasets into $VSR_CACHE/datasets (default ~/.cache/vsr/datasets), each file checked by SHA-256.

    An interrupted download resumes where it stopped; files already there and checked are kept.
    `vsr eval --data Set5` and `vsr train --data 91images` then find them.
    """
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from vsr.train.download import get_dataset

    wanted = [n.value for n in names if n != DatasetName.all]
    if DatasetName.all in names:
        wanted = [n.value for n in DatasetName if n != DatasetName.all]
    say = lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        disable=not _live_display(quiet),
        transient=True,
    )
    tasks: dict[str, int] = {}
    plain = not quiet and not _live_display(quiet)  # a log, not a terminal: a line per archive, none per image

    def progress(done: int, total: int | None, label: str) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
            if plain and label.endswith(".zip"):
                say(f"vsr: downloading {label}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
        bar.update(tasks[label], completed=done, total=total)

    with bar:
        for name in dict.fromkeys(wanted):
            folder = get_dataset(name, source, progress)
            if not quiet:
                say(f"{name}: {folder} (every file checked)")


@data_app.command(name="list", cls=_Command)
def data_list() -> None:
    """The datasets vsr can get, where `--data NAME` finds each, and whether the cache holds it whole."""
    from vsr.train.data import KNOWN_DATASETS, resolve_dataset
    from vsr.train.download import entries, missing

    table = Table(title="datasets (vsr data get NAME)")
    for col in ("name", "files", "cache ($VSR_CACHE/datasets)", "--data NAME uses"):
        table.add_column(col, no_wrap=col == "name")
    for name in KNOWN_DATASETS:
        total, absent = len(entries(name)), len(missing(name))
        state = "complete, checked" if not absent else f"{total - absent} of {total} files" if absent < total else "absent"
        try:
            uses = str(resolve_dataset(name))
        except InputError:
            uses = "- (vsr data get " + name + ")"
        table.add_row(name, str(total), state, uses)
    out_console.print(table)


def _print_bench(doc: dict) -> None:
    """The report as rich tables on stdout: model only, video, where the pipeline waits, quality."""
    from vsr.bench.report import summarise_device

    num = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731

    def table(title: str, cols: tuple[str, ...], left: int) -> Table:
        t = Table(title=title)
        for i, col in enumerate(cols):
            t.add_column(col, justify="left" if i < left else "right", no_wrap=i < left)
        return t

    def name(r: dict) -> str:
        if r["stage"] == "transcode":
            return "transcode (bicubic)"
        random = "*" if r["weights"] == "random" else ""
        if r["stage"] == "naive":
            return f"naive loop {r['model']}{random} fp32"
        return f"{'' if r['stage'] == 'model' else 'pipeline '}{r['model']}{random} {r['backend']} {r['precision']}"

    out_console.print(summarise_device(doc), markup=False, highlight=False, soft_wrap=True)
    rows = doc["results"]
    model_rows = [r for r in rows if r["stage"] == "model"]
    if model_rows:
        cols = ("model", "in -> out", "fps", "Mpix/s", "GFLOP/frame", "of peak")
        t = table("model only: SRCNN on bicubic-sized luma (median)", cols, 2)
        for r in model_rows:
            size = f"{r['input']}->{r['output']}"
            t.add_row(
                name(r), size, num(r["fps"], ".2f"), num(r["mpix_s"], ".2f"), num(r["gflop_per_frame"]), pct(r["peak_fraction"])
            )
        out_console.print(t)
    video_rows = [r for r in rows if r["stage"] != "model"]
    if video_rows:
        enc = doc["plan"]["encoder"]
        t = table(
            f"video: decode -> SR -> encode ({enc['codec']} {enc['preset']}), {video_rows[0]['clip']}; "
            "ratio = fps / transcode fps; x naive = fps / the naive loop's fps (same model)",
            ("run", "in -> out", "fps", "Mpix/s", "ratio", "x naive", "of peak"),
            2,
        )
        for r in video_rows:
            size = f"{r['input']}->{r['output']}"
            t.add_row(
                name(r),
                size,
                num(r["fps"], ".2f"),
                num(r["mpix_s"], ".2f"),
                num(r["ratio_to_transcode"], ".3f"),
                num(r.get("speedup_over_naive"), ".2f"),
                pct(r["peak_fraction"]),
            )
        out_console.print(t)
        staged = [r for r in video_rows if r.get("stages")]  # the naive loop is one thread: no stages
        t = table(
            "where the pipeline waits: stage fps = frames / busy s; busy % of wall time (decode/SR/encode); "
            f"mean items waiting in the decoded/upscaled queues (of {staged[0]['stages']['decoded']['capacity']})",
            ("run", "decode fps", "SR fps", "encode fps", "busy %", "queue fill"),
            1,
        )
        for r in staged:
            st = r["stages"]
            busy = "/".join(
                num(None if st[k]["utilisation"] is None else 100 * st[k]["utilisation"], ".0f")
                for k in ("decode", "sr", "encode")
            )
            fill = "/".join(num(st[k]["mean_fill"]) for k in ("decoded", "upscaled"))
            t.add_row(
                name(r),
                num(st["decode"]["fps"]),
                num(st["sr"]["fps"], ".2f"),
                num(st["encode"]["fps"]),
                busy,
                fill,
            )
        out_console.print(t)
    if doc.get("quality"):
        t = table("quality: Y-PSNR (dB), vsr eval protocol", ("dataset", "scale", "model", "PSNR", "bicubic", "paper 9-5-5"), 3)
        for q in doc["quality"]:
            psnr = num(q["psnr_db"], ".2f") if q.get("psnr_db") is not None else q.get("note", "-")
            model = f"{q['model']} {q['backend']} {q['precision']}"
            t.add_row(
                q["dataset"],
                f"x{q['scale']}",
                model,
                psnr,
                num(q.get("bicubic_psnr_db"), ".2f"),
                num(q.get("paper_srcnn_psnr_db"), ".2f"),
            )
        out_console.print(t)
    if any(r.get("weights") == "random" for r in rows):
        out_console.print("* no shipped weights for this scale: timed with random weights (speed does not depend on them)")


# Click's base exception: `click.ClickException`, or the copy newer typer releases vendor
# (`typer._click`); found from typer's own BadParameter so that either works.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _WarningLine(logging.Handler):
    """Records of the `vsr` logger as one `vsr: warning: ...` line each, through rich (above any progress bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"vsr: warning: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)


def _setup_logging() -> None:
    log = logging.getLogger("vsr")
    if not any(isinstance(h, _WarningLine) for h in log.handlers):
        log.addHandler(_WarningLine(logging.WARNING))
    log.propagate = False


def main() -> None:
    install()
    _setup_logging()
    try:
        _main()
    finally:
        restore()


def _main() -> None:
    try:
        code = app(standalone_mode=False)  # returns an exit code instead of raising typer.Exit (130 on Ctrl-C)
        if isinstance(code, int) and code:
            if code == 130:
                err_console.print("vsr: interrupted", markup=False)
            sys.exit(code)
    except Interrupted as exc:
        acknowledge()
        what = "" if exc.name == "SIGINT" else f" by {exc.name}"
        err_console.print(f"vsr: interrupted{what}; no partial file was left", markup=False, highlight=False)
        sys.exit(exit_code(exc.signum))
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
    except _CLICK_ERROR as exc:  # usage errors: unknown option, bad value, missing argument
        ctx = getattr(exc, "ctx", None)
        where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        message = " ".join(exc.format_message().replace("Value error, ", "").split()).rstrip(".")
        err_console.print(f"vsr: error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
