"""`vsr data get|list`: the paper's datasets into the cache (vsr.train.download)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    TextColumn,
)
from rich.table import Table

from vsr.cli.common import Command, Group, Progress, err_console, help_without_command, live_display, out_console
from vsr.errors import InputError

data_app = typer.Typer(cls=Group, help="Get the paper's datasets (Set5, Set14, 91images) into the cache, checked.")


@data_app.callback(invoke_without_command=True)
def _data(ctx: typer.Context) -> None:
    help_without_command(ctx)


class Dataset(str, Enum):
    set5 = "Set5"
    set14 = "Set14"
    images91 = "91images"
    all = "all"


@data_app.command(name="get", cls=Command)
def data_get(
    names: Annotated[list[Dataset], typer.Argument(help="Set5, Set14, 91images or all.", show_default=False, show_choices=False)],
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

    wanted = [n.value for n in names if n != Dataset.all]
    if Dataset.all in names:
        wanted = [n.value for n in Dataset if n != Dataset.all]
    say = lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        disable=not live_display(quiet),
        transient=True,
    )
    tasks: dict[str, int] = {}
    plain = not quiet and not live_display(quiet)  # a log, not a terminal: a line per archive, none per image

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


@data_app.command(name="list", cls=Command)
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
