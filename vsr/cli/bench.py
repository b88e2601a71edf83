"""`vsr bench`: throughput on this machine (vsr.bench), printed as tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vsr.cli.common import PRESET_HELP, Opt, err_console, out_console, passive_openmp
from vsr.errors import UsageError


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer, smaller configurations: about a minute on 2 CPU cores.")] = False,
    device: Opt.Device = "auto",
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
    preset: Annotated[str | None, typer.Option(help=f"Encoder preset; {PRESET_HELP}")] = None,
    pipeline: Annotated[bool, typer.Option("--pipeline/--no-pipeline", help="Measure the pipeline and transcode rows.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --json/--plot files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or notices (wrote FILE).")] = False,
) -> None:
    """Measure throughput on this machine: model only, the video pipeline and the transcode-only baseline."""
    passive_openmp()
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
        from vsr.media.encoders import EncoderOptions, check_options

        check_options(EncoderOptions(codec=codec, preset=preset))  # an unknown encoder or preset fails now, not later
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


# Headers of number columns where the table is too wide for them on one line: one word a line.
_STACKED = {"GFLOP/frame": "GFLOP\n/frame"}


def fit_table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]], left: int, width: int) -> Table:
    """A table of `rows` (strings) for a console `width` columns wide: the first `left` columns hold text (names,
    sizes), the others numbers, right-aligned. Numbers are never cut or wrapped: their columns do not shrink. Where
    the table is wider than `width` with every header on one line, the number columns' headers go one word a line,
    and rich narrows the text columns, which wrap at spaces (a word longer than its column folds, never `…`).
    Realistic rows fit 80 columns that way (tests/test_bench.py, with GPU-sized numbers)."""

    def span(texts) -> int:
        return max(len(line) for text in texts for line in text.splitlines())

    chrome = 3 * len(headers) + 1  # a border and two spaces of padding a column, and the last border
    natural = chrome + sum(span([h, *(row[i] for row in rows)]) for i, h in enumerate(headers))
    if natural > width:
        headers = tuple(h if i < left else _STACKED.get(h, h.replace(" ", "\n")) for i, h in enumerate(headers))
    t = Table(title=title)
    for i, header in enumerate(headers):
        if i < left:
            t.add_column(header, justify="left", overflow="fold")
        else:
            t.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def _print_bench(doc: dict) -> None:
    """The report as rich tables on stdout: model only, video, where the pipeline waits, quality. Each fits the
    console's width (rich's: COLUMNS, else the terminal's, else 80, as where output is piped and there is no
    terminal) without cutting a number (`fit_table`)."""
    from vsr.bench.report import summarise_device

    width = out_console.width
    num = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731

    def show(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]], left: int) -> None:
        out_console.print(fit_table(title, headers, rows, left, width))

    def name(r: dict) -> str:
        if r["stage"] == "transcode":
            return "transcode (bicubic)"
        random = "*" if r["weights"] == "random" else ""
        if r["stage"] == "naive":
            return f"naive loop {r['model']}{random} fp32"
        return f"{'' if r['stage'] == 'model' else 'pipeline '}{r['model']}{random} {r['backend']} {r['precision']}"

    def size(r: dict) -> str:
        return f"{r['input']} -> {r['output']}"

    out_console.print(summarise_device(doc), markup=False, highlight=False)
    rows = doc["results"]
    model_rows = [r for r in rows if r["stage"] == "model"]
    if model_rows:
        show(
            "model only: SRCNN on bicubic-sized luma (median)",
            ("model", "in -> out", "fps", "Mpix/s", "GFLOP/frame", "of peak"),
            [
                (
                    name(r),
                    size(r),
                    num(r["fps"], ".2f"),
                    num(r["mpix_s"], ".2f"),
                    num(r["gflop_per_frame"]),
                    pct(r["peak_fraction"]),
                )
                for r in model_rows
            ],
            2,
        )
    video_rows = [r for r in rows if r["stage"] != "model"]
    if video_rows:
        enc = doc["plan"]["encoder"]
        show(
            f"video: decode -> SR -> encode ({enc['codec']} {enc['preset']}), {video_rows[0]['clip']}; "
            "ratio = fps / transcode fps; x naive = fps / the naive loop's fps (same model)",
            ("run", "in -> out", "fps", "Mpix/s", "ratio", "x naive", "of peak"),
            [
                (
                    name(r),
                    size(r),
                    num(r["fps"], ".2f"),
                    num(r["mpix_s"], ".2f"),
                    num(r["ratio_to_transcode"], ".3f"),
                    num(r.get("speedup_over_naive"), ".2f"),
                    pct(r["peak_fraction"]),
                )
                for r in video_rows
            ],
            2,
        )
        staged = [r for r in video_rows if r.get("stages")]  # the naive loop is one thread: no stages
        stage_rows = []
        for r in staged:
            st = r["stages"]
            busy = "/".join(
                num(None if st[k]["utilisation"] is None else 100 * st[k]["utilisation"], ".0f")
                for k in ("decode", "sr", "encode")
            )
            fill = "/".join(num(st[k]["mean_fill"]) for k in ("decoded", "upscaled"))
            stage_rows.append(
                (name(r), num(st["decode"]["fps"]), num(st["sr"]["fps"], ".2f"), num(st["encode"]["fps"]), busy, fill)
            )
        if staged:
            show(
                "where the pipeline waits: stage fps = frames / busy s; busy % of wall time (decode/SR/encode); "
                f"mean items waiting in the decoded/upscaled queues (of {staged[0]['stages']['decoded']['capacity']})",
                ("run", "decode fps", "SR fps", "encode fps", "busy %", "queue fill"),
                stage_rows,
                1,
            )
    if doc.get("quality"):
        quality_rows = []
        for q in doc["quality"]:
            random = "*" if q.get("psnr_db") is None and q.get("note") else ""  # no shipped weights: not measured
            quality_rows.append(
                (
                    q["dataset"],
                    f"x{q['scale']}",
                    f"{q['model']}{random} {q['backend']} {q['precision']}",
                    num(q.get("psnr_db"), ".2f"),
                    num(q.get("bicubic_psnr_db"), ".2f"),
                    num(q.get("paper_srcnn_psnr_db"), ".2f"),
                )
            )
        show(
            "quality: Y-PSNR (dB), vsr eval protocol",
            ("dataset", "scale", "model", "PSNR", "bicubic", "paper 9-5-5"),
            quality_rows,
            3,
        )
    if any(r.get("weights") == "random" for r in rows) or any(q.get("note") for q in doc.get("quality") or ()):
        out_console.print(
            "* no shipped weights for this scale: timed with random weights (speed does not depend on them), no PSNR",
            markup=False,
            highlight=False,
        )
