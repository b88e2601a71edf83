"""Measure every shipped weights file and print the model card's tables (Markdown).

    VSR_DATA=../shared/data python weights/eval_all.py > /tmp/table.md

For D in Set5, Set14, S in 2, 3, 4 and A in 9-5-5, 9-1-5 it measures, as mean Y-PSNR / SSIM
(`scale` pixels shaved, MATLAB-rounded Y):
- one pass: `vsr eval --data D --scale S --arch A --no-ensemble --json` (SRCNN alone);
- `vsr upscale`: the issue's check, end to end. The LR images are written as PNG files (MATLAB
  bicubic from the modcropped ground truth, rounded to uint8), `vsr upscale LRDIR OUTDIR --scale S
  --arch A` upscales the folder with its defaults (self-ensemble for images), and the saved RGB
  PNGs are scored against the ground truth.
It also prints a table of the training runs under weights/runs/ (epochs, summed epoch wall time,
last Set5 PSNR) from their logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from vsr.media.imageio import read_image, write_image
from vsr.media.resize import imresize_uint8
from vsr.train.data import resolve_dataset
from vsr.train.evaluate import PAPER_PSNR, load_ground_truth, score_pair

ROOT = Path(__file__).resolve().parent


def vsr(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vsr", *args], capture_output=True, text=True, check=True)
    return done.stdout


def one_pass(data: str, scale: int, arch: str) -> tuple[float, float, float]:
    """(bicubic PSNR, model PSNR, model SSIM) from `vsr eval --no-ensemble`."""
    m = json.loads(vsr("eval", "--data", data, "--scale", str(scale), "--arch", arch, "--no-ensemble", "--json"))["mean"]
    return m["bicubic_psnr"], m["model_psnr"], m["model_ssim"]


def through_upscale(data: str, scale: int, arch: str) -> tuple[float, float]:
    """(PSNR, SSIM) of the PNGs `vsr upscale LRDIR OUTDIR --scale S --arch A` writes."""
    truth = load_ground_truth(resolve_dataset(data), scale)
    with tempfile.TemporaryDirectory(prefix="vsr-card-") as tmp:
        lr, out = Path(tmp) / "lr", Path(tmp) / "out"
        lr.mkdir()
        for name, img in truth:
            write_image(lr / f"{name}.png", imresize_uint8(img, 1 / scale))
        vsr("upscale", str(lr), str(out), "--scale", str(scale), "--arch", arch, "--quiet")
        scores = [score_pair(read_image(out / f"{name}.png"), img, scale) for name, img in truth]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def main() -> None:
    if not os.environ.get("VSR_DATA"):
        sys.exit("set VSR_DATA to the folder with Set5/ and Set14/ (e.g. VSR_DATA=../shared/data)")
    rows = []
    for arch in ("9-5-5", "9-1-5"):
        for scale in (2, 3, 4):
            cells = []
            for data in ("Set5", "Set14"):
                bicubic, psnr1, ssim1 = one_pass(data, scale, arch)
                psnr, ssim = through_upscale(data, scale, arch)
                paper = PAPER_PSNR[data]["srcnn"][scale]
                cells.append(f"{bicubic:.2f} | {psnr1:.2f} / {ssim1:.4f} | **{psnr:.2f}** / {ssim:.4f} | {paper:.2f}")
            rows.append(f"| {arch} | x{scale} | {' | '.join(cells)} |")
    head = " | ".join(f"{d} bicubic | {d} one pass | {d} `vsr upscale` | {d} paper" for d in ("Set5", "Set14"))
    print(f"| model | scale | {head} |")
    print("| --- | --- |" + " ---: |" * 8)
    print("\n".join(rows))
    print()
    print("| run (weights/runs/) | epochs | wall time (sum of epochs) | last Set5 PSNR (one pass) |")
    print("| --- | ---: | ---: | ---: |")
    for log in sorted(ROOT.glob("runs/*/log.jsonl")):
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        minutes = sum(e["epoch_s"] for e in epochs) / 60
        print(f"| {log.parent.name} | {len(epochs)} | {minutes:.1f} min | {epochs[-1].get('eval_psnr', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
