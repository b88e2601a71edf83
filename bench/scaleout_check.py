"""Issue 13's acceptance on real footage: segmented runs equal the one-process run, and --resume after Ctrl-C.

1. Equality: 8 s of the footage (default ../shared/data/videos/car-detection.mp4) re-encoded at 320x180 with a
   keyframe every 20 frames and AAC audio; `vsr upscale --scale 2 --arch 9-1-5 --codec ffv1` in one process,
   with `--workers 2`, and with `--ray local` (when Ray is installed). Each segmented output must decode to the
   one-process output frame for frame (planes byte for byte, same timestamps), with the audio packets byte-identical.
2. Resume: a 16 s version with `--workers 2`: a full run is timed; a second run gets SIGINT after 60 % of that
   time, then the same command with `--resume` is timed. Its output must equal the full run's, take at most
   0.75 of its wall time, and leave nothing but the output beside it.

    python bench/scaleout_check.py [--json bench/results/scaleout-check.json]

Prints one line per check and PASS/FAIL; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaleout_fps import FOOTAGE, cpu_name  # noqa: E402


def clip(src: Path, seconds: float, path: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-t", str(seconds), "-vf", "scale=320:180",
                    "-c:v", "libx264", "-g", "20", "-keyint_min", "20", "-sc_threshold", "0", "-c:a", "aac",
                    "-y", str(path)], check=True)  # fmt: skip
    return path


def decoded(path: Path) -> list[tuple[int, str]]:
    with av.open(str(path)) as c:
        return [(f.pts, hashlib.sha256(b"".join(bytes(p) for p in f.planes)).hexdigest()) for f in c.decode(video=0)]


def audio(path: Path) -> list[tuple[int, str]]:
    """(pts, SHA-256) of every audio packet; pts are in the file's own time base."""
    with av.open(str(path)) as c:
        return [(p.pts, hashlib.sha256(bytes(p)).hexdigest()) for p in c.demux(audio=0) if p.size]


COMMON = ["--scale", "2", "--arch", "9-1-5", "--codec", "ffv1", "-q"]


def vsr(*args) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vsr", "upscale", *map(str, args), *COMMON], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"vsr upscale {' '.join(map(str, args))} failed: {r.stderr.strip()}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=FOOTAGE)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results, ok = {}, True

    def check(name: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok &= passed
        results[name] = {"pass": passed, "detail": detail}
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = clip(a.input, 8, tmp / "car8.mp4")
        times = {"one process": vsr(src, tmp / "one.mkv")}
        want_v, want_a = decoded(tmp / "one.mkv"), audio(tmp / "one.mkv")
        source_audio = [digest for _, digest in audio(src)]
        same_audio = want_a and [digest for _, digest in want_a] == source_audio
        check("8 s, one process: audio packets = the source's", bool(same_audio), f"{len(want_a)} packets")
        runs = {"--workers 2": ["--workers", "2"]}
        try:
            import ray  # noqa: F401

            runs["--ray local"] = ["--ray", "local"]
        except ImportError:
            print("SKIP  --ray local: Ray is not installed (pip install -e '.[ray]')")
        for name, extra in runs.items():
            out = tmp / f"{name.strip('-').replace(' ', '_')}.mkv"
            times[name] = vsr(src, out, *extra)
            got_v = decoded(out)
            same = got_v == want_v and audio(out) == want_a
            check(f"8 s, {name} = one process", same, f"{len(got_v)} frames (one process {len(want_v)}), "
                  f"audio {'byte-identical' if audio(out) == want_a else 'DIFFERS'}; {times[name]:.1f} s "
                  f"(one process {times['one process']:.1f} s)")  # fmt: skip
        src16 = clip(a.input, 16, tmp / "car16.mp4")
        folder = tmp / "out16"
        folder.mkdir()
        full = vsr(src16, folder / "full.mkv", "--workers", "2")
        cmd = [sys.executable, "-m", "vsr", "upscale", str(src16), str(folder / "out.mkv"), *COMMON, "--workers", "2"]
        default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731 - as a terminal's Ctrl-C
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        time.sleep(0.6 * full)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        kept = [line for line in err.splitlines() if "kept in" in line]
        resumed = vsr(src16, folder / "out.mkv", "--workers", "2", "--resume")
        same = decoded(folder / "out.mkv") == decoded(folder / "full.mkv") and audio(folder / "out.mkv") == audio(
            folder / "full.mkv"
        )
        left = sorted(p.name for p in folder.iterdir())
        check(
            "16 s, SIGINT at 60 % then --resume = uninterrupted",
            same,
            f"exit {proc.returncode} on SIGINT; {kept[0] if kept else 'nothing kept'}",
        )
        check(
            "16 s, --resume time <= 0.75 x full run",
            resumed <= 0.75 * full,
            f"{resumed:.1f} s / {full:.1f} s = {resumed / full:.2f}",
        )
        check("16 s, nothing but the outputs left", left == ["full.mkv", "out.mkv"], f"folder holds {left}")
    print(f"(CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} cores)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"command": " ".join(sys.argv), "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
                                      "times_s": times, "checks": results}, indent=1) + "\n")  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
