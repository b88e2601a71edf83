"""Measure every shipped weights file with `vsr eval` and print the model card's table (Markdown).

    VSR_DATA=../shared/data python weights/eval_all.py > /tmp/table.md

Runs `vsr eval --data D --scale S --arch A --json` for D in Set5, Set14, S in 2, 3, 4 and A in
9-5-5, 9-1-5, and prints mean Y-PSNR / SSIM beside bicubic and the paper's SRCNN 9-5-5, and a table of the
training runs under weights/runs/ (epochs, summed epoch wall time, last Set5 PSNR) from their logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def vsr_eval(data: str, scale: int, arch: str) -> dict:
    cmd = [sys.executable, "-m", "vsr", "eval", "--data", data, "--scale", str(scale), "--arch", arch, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    rows = []
    for arch in ("9-5-5", "9-1-5"):
        for scale in (2, 3, 4):
            cells = []
            for data in ("Set5", "Set14"):
                doc = vsr_eval(data, scale, arch)
                m, paper = doc["mean"], doc["paper"]
                cells.append(
                    f"{m['bicubic_psnr']:.2f} | {m['model_psnr']:.2f} / {m['model_ssim']:.4f} | {paper['srcnn_955_psnr']:.2f}"
                )
            rows.append(f"| {arch} | x{scale} | {cells[0]} | {cells[1]} |")
    print("| model | scale | Set5 bicubic | Set5 ours (PSNR / SSIM) | Set5 paper | Set14 bicubic | Set14 ours | Set14 paper |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print()
    print("| run (weights/runs/) | epochs | wall time (sum of epochs) | last Set5 PSNR |")
    print("| --- | ---: | ---: | ---: |")
    for log in sorted(ROOT.glob("runs/*/log.jsonl")):
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        minutes = sum(e["epoch_s"] for e in epochs) / 60
        print(f"| {log.parent.name} | {len(epochs)} | {minutes:.1f} min | {epochs[-1].get('eval_psnr', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
