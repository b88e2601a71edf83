"""The `vsr` command: the only package that imports typer and rich, one module per command (`upscale`, `webcam`,
`train`, `evaluate` for `vsr eval`, `bench`, `data`) and what they share (`common`). This module makes the app, wires
the commands in the order `vsr --help` lists them, and maps errors: every `VsrError` becomes one line on stderr
(`vsr: error: ...`) and its exit code; `--debug` shows the traceback instead. Ctrl-C, SIGTERM and SIGHUP stop any
command alike (`vsr.signals`): clean-up, one line, exit 130 / 143 / 129. Warnings that library modules log to the
`vsr` logger are printed as `vsr: warning: ...`.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from vsr.cli.bench import bench
from vsr.cli.common import Command, Group, err_console, help_without_command, out_console, state, warning
from vsr.cli.data import data_app
from vsr.cli.evaluate import eval_cmd
from vsr.cli.train import train
from vsr.cli.upscale import upscale
from vsr.cli.webcam import webcam
from vsr.errors import VsrError
from vsr.signals import Interrupted, acknowledge, exit_code, install, restore


def _version(value: bool) -> None:
    if value:
        from vsr import __version__

        out_console.print(f"vsr {__version__}", markup=False, highlight=False)
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print vsr's version and exit.")
    ] = False,
) -> None:
    state["debug"] = debug
    help_without_command(ctx)


app = typer.Typer(cls=Group, add_completion=False, help="Upscale videos, streams and images with SRCNN.")
app.callback(invoke_without_command=True)(_root)
app.command(cls=Command)(train)
app.command(cls=Command)(upscale)
app.command(cls=Command)(webcam)
app.command(name="eval", cls=Command)(eval_cmd)
app.command(cls=Command)(bench)
app.add_typer(data_app, name="data")


# Click's base exception: `click.ClickException`, or the copy newer typer releases vendor
# (`typer._click`); found from typer's own BadParameter so that either works.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _WarningLine(logging.Handler):
    """Records of the `vsr` logger as one `vsr: warning: ...` line each, through rich (above any progress bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        warning(record.getMessage())  # printed with or without --quiet (vsr.cli.common.notice)


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
        if state["debug"]:
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
