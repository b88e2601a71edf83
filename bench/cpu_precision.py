"""Which SRCNN layers may run in bf16 on the CPU: measure, choose, record (`vsr/model/weights/cpu_precision.json`).

For each shipped model and scale (or one --weights file), and for each of the 8 subsets of the three
convolutions in bf16 (the rest fp32), this measures:
  set5_psnr / set14_psnr   mean Y-PSNR under `vsr eval --no-ensemble`'s protocol (vsr.train.evaluate)
  frame_s                  median seconds of the SR network on one bicubic-sized frame (default 1920x1080),
                           tiled as `vsr upscale` runs it (eager, oneDNN, channels_last), after a warm-up;
                           the 8 subsets timed round-robin, so that other load hits them alike
and records as `auto_bf16_layers` the fastest subset whose Set5 Y-PSNR is within `MAX_LOSS_DB` (0.01 dB) of fp32
(either way), if it is at least `MIN_SPEEDUP` (1.05) times as fast as fp32; else none (`vsr.engine.precision.choose_auto`;
`--reselect` re-applies that rule to an existing record without measuring). Set14 is measured as a check the
choice was not fitted to Set5 alone; it does not choose. `vsr --precision auto` reads the record on CPUs with
native bf16 (vsr.engine.precision); measuring needs such a CPU.

    VSR_DATA=../shared/data python bench/cpu_precision.py                  # all six, writes vsr/model/weights/cpu_precision.json
    VSR_DATA=../shared/data python bench/cpu_precision.py --weights my.safetensors --scale 3 --out my.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vsr upscale` sets it (vsr.cli.common.passive_openmp)

import argparse  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from vsr.bench.report import cpu_name  # noqa: E402
from vsr.engine.base import Upscaler  # noqa: E402
from vsr.engine.precision import LAYERS, MAX_LOSS_DB, MIN_SPEEDUP, RECORD, choose_auto, cpu_bf16  # noqa: E402
from vsr.model.srcnn import load_weights, weights_hash  # noqa: E402
from vsr.model.weights import SHIPPED_WEIGHTS, default_weights  # noqa: E402
from vsr.train.data import resolve_dataset  # noqa: E402
from vsr.train.evaluate import evaluate, load_ground_truth  # noqa: E402

WHAT = (
    "Set5/Set14 Y-PSNR (vsr eval --no-ensemble protocol) and 1080p frame time per subset of layers in bf16; "
    f"auto_bf16_layers: the fastest subset within {MAX_LOSS_DB} dB of fp32 on Set5, if {MIN_SPEEDUP}x as fast as fp32"
)
SHIPPED = [(arch, scale) for arch in ("9-5-5", "9-1-5") for scale in (2, 3, 4)]


def frame_seconds(upscalers: list[Upscaler], width: int, height: int, repeats: int) -> list[float]:
    """Median seconds per frame of each upscaler, timed round-robin (one call of each in turn, `repeats` rounds,
    after one warm-up call each), so that a burst of other work on the machine slows all of them alike."""
    y = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(0))
    times: list[list[float]] = [[] for _ in upscalers]
    for upscaler in upscalers:
        upscaler(y)
    for _ in range(repeats):
        for upscaler, seconds in zip(upscalers, times, strict=True):
            t0 = time.perf_counter()
            upscaler(y)
            seconds.append(time.perf_counter() - t0)
    return [statistics.median(seconds) for seconds in times]


def measure(path: Path, scale: int, sets: dict, size: tuple[int, int], repeats: int, say) -> dict:
    model = load_weights(path)
    subsets = [c for n in range(len(LAYERS) + 1) for c in itertools.combinations(LAYERS, n)]
    rows, upscalers = [], []
    for bf16 in subsets:
        layers = tuple("bf16" if name in bf16 else "fp32" for name in LAYERS)
        upscaler = Upscaler(model, "cpu", layers=layers)
        row = {"bf16_layers": list(bf16)}
        for name, images in sets.items():
            row[f"{name.lower()}_psnr"] = round(evaluate(images, scale, upscaler, name).mean("model_psnr"), 4)
        rows.append(row)
        upscalers.append(upscaler)
        say(f"{path.name} bf16 {'+'.join(bf16) or '-'}: {row}")
    for row, seconds in zip(rows, frame_seconds(upscalers, *size, repeats), strict=True):
        row["frame_s"] = round(seconds, 4)
    say(f"{path.name} frame seconds: {[r['frame_s'] for r in rows]}")
    ref = rows[0]
    for row in rows:
        for name in sets:
            key = name.lower()
            row[f"{key}_delta_db"] = round(row[f"{key}_psnr"] - ref[f"{key}_psnr"], 4)
        row["speedup"] = round(ref["frame_s"] / row["frame_s"], 3)
    record = {"file": path.name, "arch": model.config.arch, "scale": scale, "weights_hash": weights_hash(model)}
    return with_choice({**record, "subsets": rows})


def with_choice(record: dict) -> dict:
    """The record with its `auto` fields set from its subsets by `vsr.engine.precision.choose_auto`."""
    best = choose_auto(record["subsets"])
    return {
        **record,
        "auto_bf16_layers": best["bf16_layers"],
        "auto_set5_delta_db": best["set5_delta_db"],
        "auto_set14_delta_db": best.get("set14_delta_db"),
        "auto_speedup": best["speedup"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, help="one weights file (default: the six shipped ones)")
    ap.add_argument("--scale", type=int, help="its scale (with --weights)")
    ap.add_argument("--frame", default="1920x1080", help="timed frame, WxH (bicubic-sized, i.e. the output size)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--reselect", action="store_true", help="only re-apply the choice rule to the --out record")
    ap.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS / RECORD, help="record to update (other models' entries kept)")
    args = ap.parse_args()
    if args.reselect:
        doc = json.loads(args.out.read_text())
        doc["models"] = {name: with_choice(record) for name, record in doc["models"].items()}
        doc["what"] = WHAT
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        return
    if args.weights and not args.scale:
        ap.error("--weights needs --scale")
    cpu = cpu_bf16()
    if not cpu["native"]:
        sys.exit("cpu_precision.py: this CPU has no native bf16 (AVX512_BF16 or AMX); its timings would not choose well")
    torch.set_grad_enabled(False)
    size = tuple(int(v) for v in args.frame.split("x"))
    jobs = [(args.weights, args.scale)] if args.weights else [(default_weights(s, a), s) for a, s in SHIPPED]
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    models = {}
    for path, scale in jobs:
        sets = {name: load_ground_truth(resolve_dataset(name), scale) for name in ("Set5", "Set14")}
        models[path.name] = measure(path, scale, sets, size, args.repeats, say)
    doc = {
        "what": WHAT,
        "command": "python bench/cpu_precision.py" + (f" --weights {args.weights} --scale {args.scale}" if args.weights else ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, **cpu},
        "frame": args.frame,
        "max_loss_db": MAX_LOSS_DB,
        "models": models,
    }
    for m in models.values():
        m["machine"] = doc["machine"]
    try:  # keep the other models' records: --weights adds one model to the shipped ones
        doc["models"] = {**json.loads(args.out.read_text()).get("models", {}), **models}
    except (OSError, ValueError):
        pass
    text = json.dumps(doc, indent=1)
    args.out.write_text(text + "\n")
    for m in models.values():
        say(
            f"{m['file']}: auto bf16 {'+'.join(m['auto_bf16_layers']) or 'none'}, Set5 {m['auto_set5_delta_db']:+.4f} dB, "
            f"Set14 {m['auto_set14_delta_db']:+.4f} dB, {m['auto_speedup']:.2f}x fp32"
        )
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
