"""Accept vsr's GPU path on a CUDA machine: one command, a pass/fail table against the goals.

    bash bench/gpu_check.sh            # the entry point (exits 77 with one line where torch sees no CUDA GPU)
    python bench/gpu_check.py [--out FILE] [--data DIR]

Steps, each recorded in the JSON report (default bench/results/gpu-check-<gpu>-<UTC time>.json):
1. the GPU tests: `pytest -m gpu` (tests/test_gpu.py and the other tests marked `gpu`), each test's outcome
   read from pytest's JUnit XML; among them TensorRT through `GpuFrames` (the streaming path's GPU stage);
2. `vsr bench --eval --json ...`: model-only fps per backend, precision, model and resolution, the pipeline
   beside the transcode-only baseline at 640x360 -> 1920x1080 (x3), and Set5 Y-PSNR in fp16 and fp32
   (needs the reference data: --data, $VSR_DATA or ../shared/data);
3. `vsr upscale` with its defaults (--backend auto, fp16) of a 640x360 clip with audio to 1920x1080, then
   bench/check_video.py's checks of the output against the input;
4. a 10-bit clip (`ten_bit`): lossless yuv420p10le made from a 10-bit ground truth reduced by 3, upscaled x3 with
   the defaults and with --precision fp32 (FFV1 out): Y-PSNR of each against the ground truth, in 10-bit codes;
5. segments on the GPU (`segments`): `vsr upscale --workers 2 --segment 1` against the streaming path, same
   device and backend: same frames and timestamps, samples within one code value;
6. `vsr train` (`train_resume`): 2 epochs straight against 1 epoch then `--resume` to 2, evaluating every
   epoch (the evaluation builds an `Upscaler`; issue 24 defect 2): the weights must be equal bit for bit.
Steps 4-6 take `device` and sizes, so tests/test_gpu_check.py runs them on the CPU to check their logic.

Goals (from issue 12), each PASS or FAIL:
- end-to-end >= 0.9 x transcode-only (pipeline row of 9-5-5, fp16, the backend `vsr upscale` picks, x3);
- 9-5-5 fp16 model-only >= 1000 fps at 1920x1080 output (640x360 x3, the backend `vsr upscale` picks);
- fp16 Set5 Y-PSNR within 0.01 dB of fp32 (every model and scale benched);
- the output of `vsr upscale` has the input's frame count and timestamps (and audio, size, colour tags);
- the GPU tests pass (skips are listed, not failures: e.g. torch-tensorrt not installed, one GPU only);
and (issue 24):
- TensorRT through GpuFrames passed (a skip fails it: install torch-tensorrt, or pass --no-tensorrt to accept the
  GPU path without TensorRT, which `--backend auto` then never picks);
- 10-bit: the defaults' Y-PSNR within 0.01 dB of fp32's, 10-bit output, every frame;
- segments on the GPU: the streaming path's frames and timestamps, samples within one code value;
- training resumed after an epoch ends with the weights of the uninterrupted run, bit for bit.
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


TRT_FRAMES_TEST = "tests/test_gpu.py::test_tensorrt_through_gpu_frames_gives_its_own_one_frame_output"


def junit_outcomes(xml_text: str) -> dict[str, dict]:
    """pytest's JUnit XML -> {node id: {"outcome": passed|failed|error|skipped, "message": ...}}."""
    import xml.etree.ElementTree as ET

    outcomes = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        module, name = case.get("classname", ""), case.get("name", "")
        node = f"{module.replace('.', '/')}.py::{name}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, message = ("failed" if tag == "failure" else tag), found.get("message", "")
                break
        outcomes[node] = {"outcome": outcome, "message": message}
    return outcomes


def gpu_tests() -> dict:
    with tempfile.TemporaryDirectory(prefix="vsr-gpu-tests-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        r = _run(cmd, capture_output=True)
        outcomes = junit_outcomes(xml.read_text()) if xml.is_file() else {}
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    print(r.stdout[-4000:])
    return {"returncode": r.returncode, "summary": tail, "counts": counts, "skipped": skips, "outcomes": outcomes}


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


# ---------------------------------------------------------------- steps 4-6 (issue 24)


def _vsr(*args, quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vsr", *(str(a) for a in args), *(["-q"] if quiet else [])]
    r = _run(cmd, capture_output=True)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
    return r


def _video(path: Path) -> list[tuple[float, str, tuple]]:
    """(time, pixel format, planes) of every frame."""
    import av

    from vsr.media.frames import read_planes

    with av.open(str(path)) as c:
        return [(float(f.pts * f.time_base), f.format.name, read_planes(f)) for f in c.decode(c.streams.video[0])]


def _psnr(a, b, peak: float, shave: int) -> float:
    import numpy as np

    a, b = (np.asarray(x, np.float64)[shave:-shave, shave:-shave] for x in (a, b))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def ten_bit(folder: Path, device: str = "cuda", size: tuple[int, int] = (320, 180), frames: int = 8) -> dict:
    """Step 4: a 10-bit clip. Ground truth: `vsr.synth.scene` at 3x `size` as studio-range 10-bit luma (with a gentle
    ramp, so every code value is used), panning a pixel a frame; the clip: its MATLAB-bicubic reduction by 3, rounded
    to 10-bit codes, FFV1 yuv420p10le (grey chroma). Upscaled x3 by `vsr upscale` with the defaults (fp16 on a GPU)
    and with --precision fp32, FFV1 out; Y-PSNR of each against the ground truth (peak 1023, 3 pixels shaved)."""
    from fractions import Fraction

    import av
    import numpy as np
    import torch

    from vsr.media.frames import make_frame
    from vsr.media.resize import imresize
    from vsr.synth import scene

    w, h = size
    canvas = scene(3 * (w + frames), 3 * h).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    canvas = canvas / 255.0 * 0.9 + 0.05 + 0.02 * np.linspace(0, 1, canvas.shape[1])[None, :]
    truth, src = [], folder / "ten_bit_in.mkv"
    with av.open(str(src), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p10le"
        for i in range(frames):
            big = canvas[:, 3 * i : 3 * (i + w)]
            truth.append(np.round(64 + 876 * np.clip(big, 0, 1)))
            small = imresize(torch.from_numpy(big)[None, None].float(), 1 / 3)[0, 0].double().numpy()
            y = np.round(64 + 876 * np.clip(small, 0, 1)).astype(np.uint16)
            grey = np.full((h // 2, w // 2), 512, np.uint16)
            frame = make_frame((y, grey, grey), "yuv420p10le")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    result: dict = {"frames_in": frames}
    for name, extra in (("default", []), ("fp32", ["--precision", "fp32"])):
        dst = folder / f"ten_bit_{name}.mkv"
        r = _vsr("upscale", src, dst, "--scale", 3, "--codec", "ffv1", "--device", device, *extra)
        if r.returncode != 0:
            return {**result, "ok": False, "failed": name, "stderr": r.stderr[-1000:]}
        got = _video(dst)
        result[name] = {
            "frames": len(got),
            "pix_fmt": got[0][1] if got else None,
            "y_psnr_db": float(np.mean([_psnr(f[2][0], t, 1023.0, 3) for f, t in zip(got, truth, strict=False)])),
        }
        result[f"_{name}_y"] = [f[2][0] for f in got]
    a, b = result.pop("_default_y"), result.pop("_fp32_y")
    diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)) if len(a) == len(b) else None
    result["codes_apart_max"] = None if diff is None else int(diff.max())
    result["codes_apart_share"] = None if diff is None else float((diff > 0).mean())
    result["delta_db"] = result["fp32"]["y_psnr_db"] - result["default"]["y_psnr_db"]
    result["ok"] = (
        all(result[n]["frames"] == frames and result[n]["pix_fmt"] == "yuv420p10le" for n in ("default", "fp32"))
        and result["delta_db"] <= PSNR_GOAL_DB
    )
    return result


def segments(folder: Path, device: str = "cuda", size: tuple[int, int] = (320, 180), frames: int = 100) -> dict:
    """Step 5: `--workers 2 --segment 1` (4 s of 25 fps: several segments) against the streaming path on `device`,
    FFV1 out: the same frame count and timestamps, every sample within one code value (both use the backend and
    precision `--backend auto` picks there), and the clip was split (no "not split" notice)."""
    import numpy as np

    from vsr.synth import make_clip

    src = make_clip(folder / "segments_in.mp4", size[0], size[1], frames, 25, audio=True)
    common = ("--scale", 2, "--codec", "ffv1", "--device", device)
    one = _vsr("upscale", src, folder / "streamed.mkv", *common)
    split = _vsr("upscale", src, folder / "segmented.mkv", *common, "--workers", 2, "--segment", 1, quiet=False)
    result = {"returncode": split.returncode, "stderr_tail": split.stderr[-600:]}
    if one.returncode != 0 or split.returncode != 0:
        return {**result, "ok": False, "streamed_returncode": one.returncode}
    a, b = _video(folder / "streamed.mkv"), _video(folder / "segmented.mkv")
    result["frames"] = [len(a), len(b)]
    result["timestamps_equal"] = len(a) == len(b) and all(abs(x[0] - y[0]) <= 1e-3 for x, y in zip(a, b, strict=True))
    worst = 0
    for x, y in zip(a, b, strict=False):
        for p, q in zip(x[2], y[2], strict=True):
            worst = max(worst, int(np.abs(p.astype(int) - q.astype(int)).max()))
    result["codes_apart_max"] = worst
    result["split"] = "not split" not in split.stderr
    result["ok"] = len(a) == len(b) == frames and result["timestamps_equal"] and worst <= 1 and result["split"]
    return result


def train_resume(folder: Path, device: str = "cuda", images: int = 8, size: int = 96, arch: str = "9-5-5") -> dict:
    """Step 6: `vsr train` for 2 epochs straight, and for 1 epoch then `--resume` to 2, on `images` synthetic
    `size`x`size` images, evaluated on them after every epoch: the weights files' tensors and the logged losses must
    be equal bit for bit (the weights files' metadata hold times, so they differ)."""
    import json as _json

    import numpy as np

    from vsr.media.imageio import write_image
    from vsr.synth import scene

    data = folder / "train_images"
    data.mkdir(exist_ok=True)
    canvas = scene(size * images, size)
    for i in range(images):
        write_image(data / f"img{i}.png", np.ascontiguousarray(canvas[:, i * size : (i + 1) * size]))
    common = ("--data", data, "--eval-data", data, "--scale", 3, "--arch", arch, "--device", device, "--seed", 0)
    runs = {
        "straight": [("--epochs", 2, "--out", folder / "straight")],
        "resumed": [("--epochs", 1, "--out", folder / "resumed"), ("--epochs", 2, "--out", folder / "resumed", "--resume")],
    }
    for name, steps in runs.items():
        for step in steps:
            r = _vsr("train", *common, *step)
            if r.returncode != 0:
                return {"ok": False, "failed": f"{name} {' '.join(map(str, step))}", "stderr": r.stderr[-1000:]}
    weights = f"srcnn_{arch}_x3.safetensors"
    differ = differing_tensors(folder / "straight" / weights, folder / "resumed" / weights)
    same = not differ
    losses = [[_json.loads(line)["loss"] for line in (folder / n / "log.jsonl").read_text().splitlines()] for n in runs]
    return {"ok": same and losses[0] == losses[1], "weights_equal": same, "differing": differ, "losses": losses}


def differing_tensors(a: Path, b: Path) -> list[str]:
    """The names of the tensors of safetensors files `a` and `b` that are not equal bit for bit (all names where the
    two files hold different ones)."""
    from safetensors.numpy import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return sorted(x.keys() ^ y.keys())
    return [k for k in sorted(x) if x[k].dtype != y[k].dtype or x[k].tobytes() != y[k].tobytes()]


def more_goals(tests: dict, tenbit: dict, seg: dict, train: dict, tensorrt: bool = True) -> list[tuple[str, str, bool]]:
    """The rows of steps 4-6 and of TensorRT through GpuFrames (see the module docstring)."""
    trt = tests.get("outcomes", {}).get(TRT_FRAMES_TEST)
    if not tensorrt:
        trt_row = ("TensorRT through GpuFrames (not asked: --no-tensorrt)", "not run", True)
    else:
        seen = "not collected" if trt is None else f"{trt['outcome']}{': ' + trt['message'] if trt['message'] else ''}"
        trt_row = ("TensorRT through GpuFrames (pytest -m gpu)", seen[:120], trt is not None and trt["outcome"] == "passed")
    delta = tenbit.get("delta_db")
    return [
        trt_row,
        (
            f"10-bit clip: defaults' Y-PSNR within {PSNR_GOAL_DB} dB of fp32, 10-bit out, every frame",
            "failed to run" if delta is None else f"{delta:.4f} dB, {tenbit['default']['pix_fmt']}",
            bool(tenbit.get("ok")),
        ),
        (
            "segments on the GPU (--workers 2) = streaming: frames, timestamps, samples within 1",
            f"exit {seg.get('returncode')}" if "frames" not in seg else f"{seg['frames']} frames, {seg['codes_apart_max']} apart",
            bool(seg.get("ok")),
        ),
        (
            "vsr train: 2 epochs = 1 epoch + --resume, bit for bit",
            train.get("failed", "weights equal" if train.get("weights_equal") else f"differ: {train.get('differing')}"),
            bool(train.get("ok")),
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="report file (default bench/results/gpu-check-<gpu>-<time>.json)")
    ap.add_argument("--data", type=Path, help="folder with Set5/ (default $VSR_DATA or ../shared/data)")
    ap.add_argument("--no-tensorrt", action="store_true", help="accept the GPU path without TensorRT (not installed)")
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
        tenbit = ten_bit(Path(tmp))
        seg = segments(Path(tmp))
        train = train_resume(Path(tmp))
    table = goals(report, tests, e2e) + more_goals(tests, tenbit, seg, train, tensorrt=not args.no_tensorrt)
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
        "ten_bit": tenbit,
        "segments": seg,
        "train_resume": train,
        "bench": report,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"report: {out}")
    return 0 if all(ok for _, _, ok in table) else 1


if __name__ == "__main__":
    sys.exit(main())
