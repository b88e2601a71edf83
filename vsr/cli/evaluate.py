"""`vsr eval`: PSNR/SSIM beside the paper's table (vsr.train.evaluate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vsr.cli.common import Opt, Precision, ShippedArch, check_scale, load_upscaler, out_console


def eval_cmd(
    data: Annotated[str, typer.Option(help="Ground-truth images: Set5, Set14 or a folder.")] = "Set5",
    scale: Opt.Scale = 3,
    weights: Opt.Weights = None,
    arch: Opt.Arch = ShippedArch.a955,
    device: Opt.Device = "auto",
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble/--no-ensemble", help="Self-ensemble, as `vsr upscale` does for images (--no-ensemble: one pass)."
        ),
    ] = True,
    precision: Opt.Precision = Precision.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """PSNR/SSIM (Y, border shaved) of bicubic and SRCNN beside the paper's numbers."""
    import dataclasses

    from vsr.train.data import resolve_dataset
    from vsr.train.evaluate import evaluate, load_ground_truth

    check_scale(scale)
    folder = resolve_dataset(data)
    images = load_ground_truth(folder, scale)
    upscaler = load_upscaler(weights, scale, arch.value, device, precision=precision.value, ensemble=ensemble)
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
