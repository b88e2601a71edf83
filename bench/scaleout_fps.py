"""Does splitting cost anything? `vsr upscale` in one process beside `--workers N` (and `--ray local`), same clip.

Each configuration is the whole command, timed from start to exit (start-up, probing, worker start, join
included), run in turn, `--repeats` times, and the median kept; the report gives fps and the ratio of each to
the one-process run measured in the same invocation. The clip is real footage (`--input`, default
../shared/data/videos/car-detection.mp4) re-encoded to `--size` at 25 fps with a keyframe every 20 frames and
its AAC audio, `--seconds` long (looped if the footage is shorter); or a synthetic clip when the footage is
missing. The outputs are checked to hold every frame.

    python bench/scaleout_fps.py --seconds 60 --size 320x180 --scale 2 --arch 9-1-5 --workers 2 \
        --json bench/results/cpu-scaleout-320x180-x2-9-1-5.json
    python bench/scaleout_fps.py --ray      # adds --ray local (needs Ray: pip install -e '.[ray]')
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "car-detection.mp4"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_input(path: Path, footage: Path, seconds: float, size: str) -> None:
    w, h = size.split("x")
    if footage.exists():
        cmd = ["ffmpeg", "-v", "error", "-stream_loop", "-1", "-i", str(footage), "-t", str(seconds),
               "-vf", f"scale={w}:{h},fps=25", "-c:v", "libx264", "-g", "20", "-keyint_min", "20",
               "-sc_threshold", "0", "-c:a", "aac", "-y", str(path)]  # fmt: skip
        subprocess.run(cmd, check=True)
        return
    from vsr.synth import make_clip

    make_clip(path, int(w), int(h), frames=int(seconds * 25))


def frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size)


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vsr", "upscale", *args, "-q"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"vsr upscale {' '.join(args)} failed: {r.stderr.strip()}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=FOOTAGE)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--arch", default="9-1-5")
    ap.add_argument("--codec", default="libx264")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--segment", type=float, default=None, help="seconds per segment (default: vsr's)")
    ap.add_argument("--ray", action="store_true", help="also time --ray local")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.mp4"
        make_input(src, a.input, a.seconds, a.size)
        n = frames(src)
        common = ["--scale", str(a.scale), "--arch", a.arch, "--codec", a.codec, "--overwrite"]
        split = ["--segment", str(a.segment)] if a.segment else []
        configs = {"one process": [], f"--workers {a.workers}": ["--workers", str(a.workers), *split]}
        if a.ray:
            configs["--ray local"] = ["--ray", "local", *split]
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(a.repeats):  # interleaved, so drift in the machine's speed hits every configuration alike
            for name, extra in configs.items():
                out = Path(tmp) / "out.mkv"
                times[name].append(run([str(src), str(out), *common, *extra]))
                if frames(out) != n:
                    raise SystemExit(f"{name}: {frames(out)} frames written, {n} in the input")
    base = statistics.median(times["one process"])
    rows = {
        name: {"median_s": statistics.median(t), "runs_s": t, "fps": n / statistics.median(t),
               "ratio_to_one_process": base / statistics.median(t)}
        for name, t in times.items()
    }  # fmt: skip
    for name, row in rows.items():
        print(f"{name:>14}: {row['median_s']:7.1f} s  {row['fps']:6.2f} fps  {row['ratio_to_one_process']:.3f}x one process")
    print(f"({n} frames {a.size} x{a.scale} {a.arch} {a.codec}, median of {a.repeats}; CPU: {cpu_name()}, "
          f"{len(os.sched_getaffinity(0))} cores)")  # fmt: skip
    if a.json:
        import torch

        report = {
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": {
                "cpu": cpu_name(),
                "cores": len(os.sched_getaffinity(0)),
                "torch": torch.__version__,
                "av": av.__version__,
                "loadavg_start": load,
            },  # fmt: skip
            "clip": {
                "source": str(a.input) if a.input.exists() else "synthetic",
                "frames": n,
                "size": a.size,
                "seconds": a.seconds,
                "scale": a.scale,
                "arch": a.arch,
                "codec": a.codec,
            },  # fmt: skip
            "results": rows,
        }
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
