"""`vsr upscale` with its defaults against the naive per-frame loop, on real footage, side by side.

The clip: the first 14 frames of ../shared/data/videos/car-detection.mp4 (real footage, 768x432), scaled to
640x360 and written as H.264 (crf 12) into a temporary folder. Then, interleaved, `--repeats` times each:
  naive        python bench/naive_loop.py CLIP OUT --scale 3         (torch bicubic, fp32 eager whole frame, libx264)
  vsr          vsr upscale CLIP OUT --scale 3                        (the defaults: 9-5-5, precision auto)
  vsr fp32     vsr upscale CLIP OUT --scale 3 --precision fp32       (what a CPU without native bf16 gets)
each a fresh process timed from start to exit (Python start-up, imports, weights and the encoder's flush
included), 640x360 -> 1920x1080. Prints and writes (--json) the median seconds and the ratios naive / vsr.

    python bench/cpu_speedup.py [--repeats 3] [--json bench/results/epyc-cpu-speedup-640x360-x3.json]
    python bench/cpu_speedup.py --frames 48 --clip-only car360.mp4   # only the clip (bench/pipeline_fps.py --input)
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr.bench.report import cpu_name, print_and_save  # noqa: E402
from vsr.engine.precision import cpu_bf16  # noqa: E402

FOOTAGE = ROOT.parent / "shared" / "data" / "videos" / "car-detection.mp4"


def make_clip(src: Path, dst: Path, frames: int, width: int, height: int) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "12"})
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        n = 0
        for frame in inp.decode(vin):
            small = frame.reformat(width=width, height=height, format="yuv420p")
            small.pts, small.time_base = n, 1 / vin.average_rate
            for packet in vout.encode(small):
                out.mux(packet)
            n += 1
            if n == frames:
                break
        for packet in vout.encode():
            out.mux(packet)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=FOOTAGE)
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--clip-only", type=Path, metavar="OUT", help="only write the clip to OUT (e.g. for pipeline_fps.py)")
    args = ap.parse_args()
    if args.clip_only:
        w, h = (int(v) for v in args.size.split("x"))
        make_clip(args.input, args.clip_only, args.frames, w, h)
        return
    work = Path(tempfile.mkdtemp(prefix="vsr-speedup-"))
    clip = work / "clip.mp4"
    w, h = (int(v) for v in args.size.split("x"))
    make_clip(args.input, clip, args.frames, w, h)
    py, scale = sys.executable, str(args.scale)
    outs = {name: work / f"{name}.mp4" for name in ("naive", "vsr", "vsr_fp32")}
    runs = {
        "naive": [py, str(ROOT / "bench" / "naive_loop.py"), str(clip), str(outs["naive"]), "--scale", scale],
        "vsr": [py, "-m", "vsr", "upscale", str(clip), str(outs["vsr"]), "--scale", scale, "-q"],
        "vsr_fp32": [py, "-m", "vsr", "upscale", str(clip), str(outs["vsr_fp32"]), "--scale", scale, "-q", "--precision", "fp32"],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, cmd in runs.items():
            outs[name].unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=ROOT)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    counts = {name: frame_count(path) for name, path in outs.items()}
    if set(counts.values()) != {args.frames}:
        sys.exit(f"cpu_speedup.py: frame counts differ: {counts}")
    med = {name: statistics.median(t) for name, t in times.items()}
    doc = {
        "what": __doc__.split("\n")[0],
        "command": "python bench/cpu_speedup.py " + " ".join(sys.argv[1:]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), **cpu_bf16()},
        "clip": f"{args.frames} frames of {args.input.name} at {args.size}, x{args.scale}",
        "seconds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
        "median_s": {name: round(t, 3) for name, t in med.items()},
        "speedup_default": round(med["naive"] / med["vsr"], 3),
        "speedup_fp32": round(med["naive"] / med["vsr_fp32"], 3),
    }
    print_and_save(doc, args.json)


if __name__ == "__main__":
    main()
