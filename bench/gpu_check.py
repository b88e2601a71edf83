"""Accept vsr's GPU path on a CUDA machine: one command, a pass/fail table against the goals.

    bash bench/gpu_check.sh            # the entry point (exits 77 with one line where torch sees no CUDA GPU)
    python bench/gpu_check.py [--out FILE] [--data DIR]

Steps, each recorded in the JSON report (default bench/results/gpu-check-<gpu>-<UTC time>.json):
1. the GPU tests: `pytest -m gpu` (tests/test_gpu.py and the other tests marked `gpu`);
2. `vsr bench --eval --json ...`: model-only fps per backend, precision, model and resolution, the pipeline
   beside the transcode-only baseline at 640x360 -> 1920x1080 (x3), and Set5 Y-PSNR in fp16 and fp32
   (needs the reference data: --data, $VSR_DATA or ../shared/data);
3. `vsr upscale` with its defaults (--backend auto, fp16) of a 640x360 clip with audio to 1920x1080, then
   bench/check_video.py's checks of the output against the input.

Goals (from issue 12), each PASS or FAIL:
- end-to-end >= 0.9 x transcode-only (pipeline row of 9-5-5, fp16, the backend `vsr upscale` picks, x3);
- 9-5-5 fp16 model-only >= 1000 fps at 1920x1080 output (640x360 x3, the backend `vsr upscale` picks);
- fp16 Set5 Y-PSNR within 0.01 dB of fp32 (every model and scale benched);
- the output of `vsr upscale` has the input's frame count and timestamps (and audio, size, colour tags);
- the GPU tests pass (skips are listed, not failures: e.g. torch-tensorrt not installed, one GPU only).
Exit status: 0 when every goal passes, 1 otherwise, 77 without CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

FPS_GOAL = 1000.0
RATIO_GOAL = 0.9
PSNR_GOAL_DB = 0.01


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, text=True, **kw)


def gpu_tests() -> dict:
    r = _run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"], capture_output=True)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    print(r.stdout[-4000:])
    return {"returncode": r.returncode, "summary": tail, "counts": counts, "skipped": skips}


def bench(data: Path | None, out: Path) -> dict | None:
    """The `vsr bench` report, or None if it failed (the table then says "not measured")."""
    env = dict(os.environ)
    if data is not None:
        env["VSR_DATA"] = str(data)
    cmd = [sys.executable, "-m", "vsr", "bench", "--json", str(out), "--overwrite", "-q"]
    if data is not None:
        cmd.append("--eval")
    r = _run(cmd, env=env)
    if r.returncode != 0 or not out.is_file():
        print(f"gpu_check: `vsr bench` failed (exit {r.returncode}); its goals are not measured", file=sys.stderr)
        return None
    return json.loads(out.read_text())


def end_to_end(folder: Path) -> dict:
    from check_video import audio_packets, video_frames

    from vsr.synth import make_clip

    src = make_clip(folder / "in.mp4", 640, 360, 96, 24, audio=True)
    dst = folder / "out.mkv"
    t0 = time.perf_counter()
    r = _run([sys.executable, "-m", "vsr", "upscale", str(src), str(dst), "--scale", "3"], capture_output=True)
    wall_s = time.perf_counter() - t0
    print(r.stderr[-2000:])
    if r.returncode != 0:
        return {"returncode": r.returncode, "stderr": r.stderr[-2000:], "ok": False}
    fin, fout = video_frames(str(src)), video_frames(str(dst))
    same_times = len(fin) == len(fout) and all(abs(a[0] - b[0]) <= 1e-3 for a, b in zip(fin, fout, strict=True))
    checks = {
        "frames_in": len(fin),
        "frames_out": len(fout),
        "timestamps_equal": same_times,
        "size_x3": all((o[1], o[2]) == (3 * i[1], 3 * i[2]) for i, o in zip(fin, fout, strict=False)),
        "audio_identical": audio_packets(str(src)) == audio_packets(str(dst)),
        "colour_kept": all(i[3:] == o[3:] for i, o in zip(fin, fout, strict=False)),
    }
    ok = checks["frames_in"] == checks["frames_out"] > 0 and all(v for k, v in checks.items() if not k.startswith("frames"))
    return {"returncode": 0, "wall_s": wall_s, "stderr_tail": r.stderr[-600:], **checks, "ok": ok}


def goals(report: dict | None, tests: dict, e2e: dict) -> list[tuple[str, str, bool]]:
    report = report or {"results": [], "plan": {"backends": ["(vsr bench failed)"]}}
    rows = report["results"]
    picked = report["plan"]["backends"][-1]  # default_backends: eager, then what `vsr upscale` picks on CUDA

    def one(stage: str, **match) -> dict | None:
        found = [r for r in rows if r["stage"] == stage and all(r.get(k) == v for k, v in match.items())]
        return found[0] if found else None

    pipe = one("pipeline", backend=picked, precision="fp16", model="9-5-5")
    ratio = pipe.get("ratio_to_transcode") if pipe else None
    model = one("model", backend=picked, precision="fp16", model="9-5-5", output="1920x1080", scale=3)
    fps = model["fps"] if model else None
    delta = report.get("fp16_psnr_delta_db")
    failed = tests["counts"].get("failed", 0) + tests["counts"].get("error", 0) + tests["counts"].get("errors", 0)
    return [
        (
            f"end-to-end >= {RATIO_GOAL} x transcode-only ({picked}, fp16, 9-5-5, 640x360 -> 1920x1080)",
            "not measured" if ratio is None else f"{ratio:.3f} x",
            ratio is not None and ratio >= RATIO_GOAL,
        ),
        (
            f"9-5-5 fp16 model-only >= {FPS_GOAL:.0f} fps at 1920x1080 output ({picked})",
            "not measured" if fps is None else f"{fps:.0f} fps",
            fps is not None and fps >= FPS_GOAL,
        ),
        (
            f"fp16 Set5 Y-PSNR within {PSNR_GOAL_DB} dB of fp32",
            "not measured (no Set5: pass --data)" if delta is None else f"{delta:.4f} dB",
            delta is not None and delta <= PSNR_GOAL_DB,
        ),
        (
            "`vsr upscale` output: same frame count and timestamps (audio, size, colour too)",
            f"{e2e.get('frames_in')} -> {e2e.get('frames_out')} frames" if e2e.get("returncode") == 0 else "upscale failed",
            bool(e2e.get("ok")),
        ),
        (
            "GPU tests (pytest -m gpu)",
            tests["summary"] or f"exit {tests['returncode']}",
            tests["returncode"] == 0 and failed == 0,
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="report file (default bench/results/gpu-check-<gpu>-<time>.json)")
    ap.add_argument("--data", type=Path, help="folder with Set5/ (default $VSR_DATA or ../shared/data)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch here; run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 77
    data = args.data or (Path(os.environ["VSR_DATA"]) if os.environ.get("VSR_DATA") else ROOT.parent / "shared" / "data")
    data = data if (data / "Set5").is_dir() else None
    gpu = torch.cuda.get_device_name(0)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = (
        args.out or ROOT / "bench" / "results" / f"gpu-check-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}-{stamp}.json"
    )
    tests = gpu_tests()
    with tempfile.TemporaryDirectory(prefix="vsr-gpu-check-") as tmp:
        report = bench(data, Path(tmp) / "bench.json")
        e2e = end_to_end(Path(tmp))
    table = goals(report, tests, e2e)
    width = max(len(g) for g, _, _ in table)
    print(f"\nvsr GPU check on {gpu} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    for goal, measured, ok in table:
        print(f"{'PASS' if ok else 'FAIL'}  {goal:<{width}}  {measured}")
    doc = {
        "schema": "vsr-gpu-check-1",
        "created": stamp,
        "command": "bash bench/gpu_check.sh",
        "gpu": gpu,
        "goals": [{"goal": g, "measured": m, "pass": ok} for g, m, ok in table],
        "tests": tests,
        "upscale": e2e,
        "bench": report,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"report: {out}")
    return 0 if all(ok for _, _, ok in table) else 1


if __name__ == "__main__":
    sys.exit(main())
