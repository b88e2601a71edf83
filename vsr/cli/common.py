"""What the commands share: help formatting, the consoles, options, progress display, loading the model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import progress as rich_progress
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)

from vsr.errors import UsageError


class PlainHelp:
    """Plain help: no `<bool>` type beside flags (it invites `--overwrite true`, which fails) and arguments named
    SRC DST in capitals without braces (current typer writes `{src} {dst}` in the usage line); no `[default: None]`
    (typer 0.15 writes it; an option without a default says in its help what happens without it).

    Help fits 80 columns (tests/test_cli.py checks every command at COLUMNS=80): typer's option table gives the
    help text what is left beside the option names and the metavar column, about 35 characters at 80 columns, and
    cuts a longer word with `…`; the metavar column folds mid-word when it is narrowed. So a choice of more than
    a few short names gets a one-word metavar (`metavar="NAME"`) and its help lists the choices, and help texts
    have no word (a path, a URL) longer than about 30 characters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif isinstance(param, typer.core.TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()
            if param.default is None and not isinstance(param.show_default, str):
                param.show_default = False

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(PlainHelp, typer.core.TyperCommand):
    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


class Group(PlainHelp, typer.core.TyperGroup):
    pass


out_console = Console()


err_console = Console(stderr=True)


state = {"debug": False}


def say(text: str) -> None:
    """One plain line on stderr: no markup or highlighting, never wrapped by rich (a log keeps it whole); above any
    progress display."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def notice(text: str, quiet: bool = False) -> None:
    """`vsr: TEXT` on stderr, unless `quiet`. What `--quiet` means, in every command that has it:

    It drops what only informs: progress bars and progress lines, summary lines (`30 frames ... in 0.4 s`, the
    total of a folder) and notices, which say what vsr chose or is doing (a backend handing over, a TensorRT engine
    being built, an emulated precision, a file not split into segments, segments reused or started over, where an
    interrupted run's segments are kept, training without per-epoch evaluation).
    It keeps errors and warnings (`warning` below, and what library code logs to the `vsr` logger): the output
    lacks or changes something the input had or the command asked for (a stream, chapters or attachments not
    copied, bit depth reduced, damaged data skipped, hardware decoding not used, a partial file removed). And it
    keeps what a command is run for: bench's and eval's tables, train's line per epoch and its weights path.
    A message is a notice or a warning by what it reports, not by how loud it should be; `upscale` also prints,
    at the end, any warning a file's summary holds that was not printed as one during the run."""
    if not quiet:
        say(f"vsr: {text}")


def warning(text: str) -> None:
    """`vsr: warning: TEXT` on stderr, with or without --quiet (see `notice`)."""
    say(f"vsr: warning: {text}")


class Arch(str, Enum):
    """Filter sizes f1-f2-f3 that `vsr train` trains."""

    a915 = "9-1-5"
    a935 = "9-3-5"
    a955 = "9-5-5"


class ShippedArch(str, Enum):
    """The models with shipped weights (vsr/model/weights/: x2, x3, x4 each), which `--arch` picks without
    `--weights`. 9-3-5 has none: `vsr train --arch 9-3-5` makes a file for `--weights`."""

    a955 = "9-5-5"
    a915 = "9-1-5"


def help_without_command(ctx: typer.Context) -> None:
    """Bare `vsr` (or `vsr data`): the help, exit 0. Click's `no_args_is_help` raises an error with an empty message
    from 8.2 on, which printed `vsr: error: ;` under the help and exited 2."""
    if ctx.invoked_subcommand is None:
        out_console.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit()


def passive_openmp() -> None:
    """Threads waiting for work sleep instead of spinning. The video commands run decode, SR and encode threads
    on the same cores, and spinning OpenMP workers steal them: measured on 2 cores, 9-5-5 320x180 x2, end-to-end
    6.6 -> 6.8 fps (OMP_WAIT_POLICY=ACTIVE: 3.7). Must run before torch is imported; a user's setting wins."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Progress(rich_progress.Progress):
    """rich's progress display, silent when disabled: rich 13.0 (the floor pyproject.toml allows) printed an empty
    line at the end even then, so `--quiet` and piped stderr got a blank line."""

    def stop(self) -> None:
        if not self.disable:
            super().stop()


def live_display(quiet: bool) -> bool:
    """Progress bars only on a terminal: piped or logged stderr gets the one-line summaries and errors alone
    (rich would leave an empty line behind there)."""
    return not quiet and err_console.is_terminal


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainProgress:
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
            text += f", ETA {duration((total - done) / rate)}"
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def progress_bar(quiet: bool, label: TextColumn, *extra) -> Progress:
    """A transient progress bar on stderr: label, bar, done/total, elapsed, then `extra` columns."""
    return Progress(
        label,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=err_console,
        disable=not live_display(quiet),
        transient=True,
    )


def check_scale(scale: int) -> int:
    if scale < 2 or scale > 8:
        raise UsageError(f"--scale must be an integer from 2 to 8, got {scale}")
    return scale


def load_upscaler(
    weights: Path | None,
    scale: int,
    arch: str,
    device: str,
    backend: str = "eager",
    precision: str | None = None,
    ensemble: bool = False,
    quiet: bool = False,
):
    from vsr.engine.chain import make_upscaler
    from vsr.engine.ensemble import SelfEnsemble
    from vsr.model.srcnn import load_weights
    from vsr.model.weights import default_weights

    model = load_weights(weights or default_weights(scale, arch))
    upscaler = make_upscaler(model, backend, device, precision, notice=lambda text: notice(text, quiet))
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


# The encoders' defaults (vsr.media.encoders.ENCODER_DEFAULTS), written out: the help must not import PyAV.
# tests/test_cli.py checks them against the table.
CRF_HELP = (
    "CRF (CQ for NVENC), lower is better; default: 18 for libx264, 20 for libx265, 30 for AV1, 31 for VP9, "
    "19 for h264_nvenc; ffv1 (lossless) and prores_ks take none."
)
PRESET_HELP = "default: medium for libx264 and libx265, 8 for libsvtav1, p5 for NVENC; VP9, ffv1 and prores_ks take none."


class Opt:
    """The option types several commands share, e.g. `scale: Opt.Scale = 2` (one help text each)."""

    Precision = Annotated[
        Precision,  # the enum above: a class body binds its name only after the right side ran
        typer.Option(
            metavar="NAME",
            help="auto, fp32, bf16 or fp16. auto: fp16 on a GPU; on a CPU with native bf16 (AVX512_BF16 or AMX) bf16 "
            "in the layers where it costs at most 0.01 dB (measured per shipped model), fp32 elsewhere. bf16: every "
            "layer (CPU). fp16: GPU only.",
        ),
    ]
    Weights = Annotated[
        Path | None, typer.Option(help="SRCNN weights (.safetensors, from vsr train); default: the shipped ones.")
    ]
    Scale = Annotated[
        int, typer.Option(help="Upscaling factor, 2-8. Shipped weights cover 2, 3 and 4; other factors need --weights FILE.")
    ]
    Arch = Annotated[
        ShippedArch,
        typer.Option(
            metavar="NAME",
            help="Shipped weights to use without --weights: 9-5-5 (best) or 9-1-5 (fastest), each for x2, x3, x4. "
            "Other models (e.g. 9-3-5, from vsr train): --weights FILE.",
        ),
    ]
    Device = Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu or cuda.")]
    Ensemble = Annotated[
        bool | None,
        typer.Option(
            "--ensemble/--no-ensemble",
            help="Average SRCNN over the 8 flips/rotations (+0.1-0.2 dB, 8x the model's work). "
            "Default: on for images, off for video.",
            show_default=False,
        ),
    ]
