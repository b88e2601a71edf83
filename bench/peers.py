"""vsr beside its peers: speed on the same frames and Y-PSNR under the same protocol.

Peers:
  opencv FSRCNN / FSRCNN-small / ESPCN   cv2.dnn_superres (opencv-contrib), BGR uint8 in and out; OpenCV runs the
                                        network on Y and resizes Cr/Cb with cv::resize itself
  naive PyTorch SRCNN 9-1-5 / 9-5-5     a per-frame loop as one would first write it: RGB -> YCbCr in numpy,
                                        torch `interpolate(bicubic)` (a = -0.75, not MATLAB's), the same SRCNN
                                        weights as vsr in plain fp32, back to RGB; no threads, no tiles
  vsr SRCNN 9-1-5 / 9-5-5               `vsr.pipeline.images.upscale_image` (RGB frames, one pass) and
                                        `vsr.pipeline.video.upscale_planes` (the YUV planes, what the video path does);
                                        quality also with the self-ensemble (what `vsr upscale photo.png` does)
  bicubic                               vsr's MATLAB bicubic, OpenCV INTER_CUBIC, and ffmpeg's swscale bicubic
  ffmpeg                                `ffmpeg -vf scale=iw*S:ih*S:flags=bicubic` transcoding the clip (libx264
                                        medium, CRF 18, audio copied), beside `vsr`'s pipeline on the same clip
                                        with the same encoder settings (bicubic only, and SRCNN)

Speed ("frames" rows): the frames of one clip (the synthetic `vsr.synth` clip, 640x360 by default, or --input)
decoded once; each method upscales every frame in memory (uint8 in, uint8 out), timed with `vsr.bench.report.time_calls`
(warm-up, then the median seconds per frame, in a worker thread like vsr's SR stage). "clip" rows time a whole
transcode of the same clip to a file: wall seconds, opening and closing included, median of --runs.

Quality: `vsr eval`'s protocol for every method: ground truth modcropped to the scale, LR = MATLAB bicubic
(`imresize_uint8`), output rounded to uint8 RGB, PSNR/SSIM of MATLAB-rounded Y with `scale` pixels shaved
(`vsr.train.evaluate.score_pair`). ffmpeg's quality is measured on RGB images (rgb24 through the same scale filter).
A grey (single-channel) ground truth, Set14's `bridge`, is scored as its own luma, as the literature's MATLAB scripts
and `vsr eval` do: vsr's methods (MATLAB bicubic, SRCNN) take the grey LR image as it is; the others, which need RGB,
get it as R = G = B and their output is reduced to grey (the rounded mean of its channels) before scoring.

cv2.dnn_superres is in opencv-contrib, whose `cv2` conflicts with the project's own OpenCV package, so run
this from its own virtual environment (the exact commands are in bench/README.md):

    python3 -m venv /tmp/vsr-peers
    /tmp/vsr-peers/bin/pip install torch==2.13.0 opencv-contrib-python-headless av numpy safetensors rich typer
    /tmp/vsr-peers/bin/pip install --no-deps -e .
    /tmp/vsr-peers/bin/python bench/peers.py --json bench/results/peers-cpu.json          # a few minutes
    /tmp/vsr-peers/bin/python bench/peers.py --quick --json /tmp/peers-quick.json         # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vsr.bench.report import device_info, time_calls
from vsr.engine.base import Upscaler, pick_device
from vsr.engine.ensemble import SelfEnsemble
from vsr.media.frames import plane_shapes, read_planes
from vsr.media.resize import imresize_uint8, output_length
from vsr.model.srcnn import SRCNN, load_weights
from vsr.model.weights import default_weights
from vsr.pipeline.images import upscale_image
from vsr.pipeline.video import upscale_planes, upscale_video
from vsr.synth import make_clip
from vsr.train.data import as_rgb
from vsr.train.evaluate import load_ground_truth, score_pair

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO.parent / "shared" / "peers" / "opencv_dnn_superres"
DATA_DIR = Path(os.environ.get("VSR_DATA") or REPO.parent / "shared" / "data")
OPENCV_MODELS = {
    "FSRCNN": ("fsrcnn", "FSRCNN_x{s}.pb"),
    "FSRCNN-small": ("fsrcnn", "FSRCNN-small_x{s}.pb"),
    "ESPCN": ("espcn", "ESPCN_x{s}.pb"),
}
ARCHS = ("9-1-5", "9-5-5")
X264 = {"codec": "libx264", "preset": "medium", "crf": 18}  # vsr's libx264 defaults, given to ffmpeg as well

Method = Callable[[np.ndarray], np.ndarray]  # uint8 HxWx3 RGB -> uint8 RGB, `scale` times larger


# ---------------------------------------------------------------- the methods


def opencv_sr(name: str, scale: int, folder: Path) -> Method:
    algo, pattern = OPENCV_MODELS[name]
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(folder / pattern.format(s=scale)))
    sr.setModel(algo, scale)
    return lambda rgb: np.ascontiguousarray(sr.upsample(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :, ::-1])


def opencv_cubic(scale: int) -> Method:
    return lambda rgb: cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_CUBIC)


def ffmpeg_cubic(scale: int) -> Method:
    """ffmpeg's scale filter on one RGB image through pipes (rgb24 in and out)."""

    def run(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        cmd = ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "-"]
        cmd += ["-vf", f"scale=iw*{scale}:ih*{scale}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        out = subprocess.run(cmd, input=np.ascontiguousarray(rgb).tobytes(), capture_output=True, check=True).stdout
        return np.frombuffer(out, np.uint8).reshape(h * scale, w * scale, 3)

    return run


class NaiveLoop:
    """The straightforward per-frame PyTorch loop (see the module docstring)."""

    def __init__(self, model: SRCNN, scale: int, device: torch.device):
        self.model, self.scale, self.device = model.to(device).eval(), scale, device

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        r, g, b = (rgb[:, :, i].astype(np.float64) for i in range(3))
        y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
        cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
        cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
        planes = torch.from_numpy(np.stack([y, cb, cr])[None] / 255).float().to(self.device)
        h, w = rgb.shape[:2]
        up = F.interpolate(planes, size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
        with torch.no_grad():
            y_sr = self.model(up[:, :1]).clamp(0, 1)
        ycc = torch.cat([y_sr, up[:, 1:]], 1)[0].cpu().numpy().astype(np.float64) * 255
        y, cb, cr = ycc[0] - 16, ycc[1] - 128, ycc[2] - 128
        red = 1.164383 * y + 1.596027 * cr
        green = 1.164383 * y - 0.391762 * cb - 0.812968 * cr
        blue = 1.164383 * y + 2.017232 * cb
        rgb_out = np.stack([red, green, blue], -1)
        return np.clip(rgb_out.round(), 0, 255).astype(np.uint8)


def methods_for(scale: int, device: torch.device, opencv_dir: Path | None) -> dict[str, Method]:
    """Every image method at `scale` (uint8 RGB in and out), in table order."""
    methods: dict[str, Method] = {
        "bicubic (vsr, MATLAB)": lambda rgb: upscale_image(rgb, scale, None),
        "bicubic (OpenCV INTER_CUBIC)": opencv_cubic(scale),
    }
    if opencv_dir is not None:
        for name in OPENCV_MODELS:
            methods[f"OpenCV dnn {name}"] = opencv_sr(name, scale, opencv_dir)
    for arch in ARCHS:
        model = load_weights(default_weights(scale, arch))
        methods[f"naive PyTorch SRCNN {arch}"] = NaiveLoop(load_weights(default_weights(scale, arch)), scale, device)
        upscaler = Upscaler(model, device)
        methods[f"vsr SRCNN {arch}"] = lambda rgb, up=upscaler: upscale_image(rgb, scale, up)
    return methods


# ---------------------------------------------------------------- speed


def decode(path: Path) -> tuple[list[np.ndarray], list[tuple[np.ndarray, ...]], str]:
    """RGB frames and yuv420p planes of the same decoded frames, and the clip's pix_fmt."""
    rgbs, planes = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            rgbs.append(frame.to_ndarray(format="rgb24"))
            planes.append(read_planes(frame.reformat(format="yuv420p")))
        pix_fmt = stream.codec_context.pix_fmt
    return rgbs, planes, pix_fmt


def time_per_frame(fn: Callable[[object], object], items: list, device: torch.device, min_time_s: float) -> dict:
    """Median seconds per item of fn over the items (cycled), after a warm-up; see vsr.bench.report.time_calls."""
    state = {"i": 0}

    def step() -> None:
        fn(items[state["i"] % len(items)])
        state["i"] += 1

    times = time_calls(step, device, min_repeats=len(items), min_time_s=min_time_s)
    return {"frame_ms": statistics.median(times) * 1e3, "samples": len(times)}


def frame_rows(rgbs, planes, scale: int, device: torch.device, opencv_dir, min_time_s: float, say) -> list[dict]:
    h, w = rgbs[0].shape[:2]
    ow, oh = output_length(w, scale), output_length(h, scale)
    rows = []

    def add(method: str, fn, items) -> None:
        say(f"speed x{scale}: {method}")
        t = time_per_frame(fn, items, device, min_time_s)
        fps = 1e3 / t["frame_ms"]
        rows.append({"kind": "frames", "method": method, "scale": scale, "input": f"{w}x{h}", "output": f"{ow}x{oh}"})
        rows[-1].update({"fps": fps, "mpix_s": ow * oh * fps / 1e6, **t, "frames": len(items)})

    for method, fn in methods_for(scale, device, opencv_dir).items():
        add(method + " (RGB)", fn, rgbs)
    shapes = plane_shapes("yuv420p", ow, oh)
    add("bicubic (vsr video path, YUV)", lambda p: upscale_planes(p, scale, None, 255, shapes), planes)
    for arch in ARCHS:
        up = Upscaler(load_weights(default_weights(scale, arch)), device)
        add(f"vsr SRCNN {arch} (video path, YUV)", lambda p, up=up: upscale_planes(p, scale, up, 255, shapes, device), planes)
    return rows


def clip_rows(clip: Path, frames: int, scale: int, device: torch.device, runs: int, work: Path, say) -> list[dict]:
    """ffmpeg's bicubic transcode and vsr's pipeline (bicubic and SRCNN) on the same clip and encoder settings."""
    with av.open(str(clip)) as c:
        w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    ow, oh = output_length(w, scale), output_length(h, scale)
    out = work / "out.mkv"
    ffmpeg = ["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-vf", f"scale=iw*{scale}:ih*{scale}:flags=bicubic"]
    ffmpeg += ["-c:v", X264["codec"], "-preset", X264["preset"], "-crf", str(X264["crf"]), "-c:a", "copy", str(out)]

    def vsr_run(upscaler) -> Callable[[], None]:
        enc = {"codec": X264["codec"], "preset": X264["preset"], "crf": X264["crf"]}
        return lambda: upscale_video(clip, out, scale, upscaler, overwrite=True, **enc)

    jobs: dict[str, Callable[[], None]] = {
        "ffmpeg scale bicubic + libx264": lambda: subprocess.run(ffmpeg, check=True, capture_output=True),
        "vsr pipeline, bicubic only": vsr_run(None),
    }
    for arch in ARCHS:
        jobs[f"vsr pipeline, SRCNN {arch}"] = vsr_run(Upscaler(load_weights(default_weights(scale, arch)), device))
    elapsed: dict[str, list[float]] = {name: [] for name in jobs}
    for r in range(runs):  # interleaved, so drifting load hits every method alike
        for name, job in jobs.items():
            say(f"clip x{scale}: {name}, run {r + 1}/{runs}")
            t0 = time.perf_counter()
            job()
            elapsed[name].append(time.perf_counter() - t0)
    out.unlink(missing_ok=True)
    rows = []
    for name, times in elapsed.items():
        fps = frames / statistics.median(times)
        row = {"kind": "clip", "method": name, "scale": scale, "input": f"{w}x{h}", "output": f"{ow}x{oh}", "fps": fps}
        row.update({"mpix_s": ow * oh * fps / 1e6, "frames": frames, "runs": runs, "encoder": X264})
        rows.append(row)
    return rows


# ---------------------------------------------------------------- quality


def _run_as_truth(fn: Method, lr: np.ndarray, grey_native: bool) -> np.ndarray:
    """fn's output for `lr`, in the ground truth's form: a grey LR goes in as it is where the method takes grey
    (`grey_native`), else as R = G = B, with the output reduced to grey by the rounded mean of its channels."""
    if lr.ndim == 3 or grey_native:
        return fn(lr)
    out = fn(as_rgb(lr)).astype(np.float64)
    return np.clip(np.round(out.mean(axis=2)), 0, 255).astype(np.uint8)


def quality_rows(datasets: list[str], scales: list[int], device: torch.device, opencv_dir, say) -> list[dict]:
    rows = []
    for scale in scales:
        methods = methods_for(scale, device, opencv_dir)
        methods["bicubic (ffmpeg swscale)"] = ffmpeg_cubic(scale)
        for arch in ARCHS:  # quality only: its speed is that of the one-pass row divided by about 8
            ensemble = SelfEnsemble(Upscaler(load_weights(default_weights(scale, arch)), device))
            methods[f"vsr SRCNN {arch} self-ensemble"] = lambda rgb, up=ensemble, s=scale: upscale_image(rgb, s, up)
        for dataset in datasets:
            images = load_ground_truth(DATA_DIR / dataset, scale)
            lrs = [(imresize_uint8(truth, 1.0 / scale), truth) for _, truth in images]
            for method, fn in methods.items():
                say(f"quality {dataset} x{scale}: {method}")
                grey_native = method.startswith(("vsr ", "bicubic (vsr"))
                scores = [score_pair(_run_as_truth(fn, lr, grey_native), truth, scale) for lr, truth in lrs]
                rows.append(
                    {
                        "method": method,
                        "dataset": dataset,
                        "scale": scale,
                        "psnr_db": float(np.mean([s[0] for s in scores])),
                        "ssim": float(np.mean([s[1] for s in scores])),
                        "images": len(scores),
                    }
                )
    return rows


# ---------------------------------------------------------------- main


def machine(device: torch.device) -> dict:
    info = device_info(device)
    info["opencv_threads"] = cv2.getNumThreads()
    info["opencv_contrib"] = hasattr(cv2, "dnn_superres")
    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()
    info["ffmpeg_binary"] = ff[0] if ff else None
    return info


def print_tables(doc: dict) -> None:
    for kind, title in (("frames", "speed on the same decoded frames (in memory)"), ("clip", "speed of a whole transcode")):
        rows = [r for r in doc["speed"] if r["kind"] == kind]
        if rows:
            print(f"\n{title}")
            for r in rows:
                size = f"x{r['scale']} {r['input']}->{r['output']}"
                print(f"  {size}  {r['method']:<44} {r['fps']:9.2f} fps {r['mpix_s']:9.2f} Mpix/s")
    if doc["quality"]:
        print("\nY-PSNR (dB) / SSIM, vsr eval protocol")
        keys = sorted({(q["dataset"], q["scale"]) for q in doc["quality"]}, key=lambda k: (k[0] != "Set5", k))
        methods = list(dict.fromkeys(q["method"] for q in doc["quality"]))
        print("  " + " " * 36 + "".join(f"{d} x{s}".rjust(17) for d, s in keys))
        for m in methods:
            cells = []
            for d, s in keys:
                q = next((q for q in doc["quality"] if (q["method"], q["dataset"], q["scale"]) == (m, d, s)), None)
                cells.append((f"{q['psnr_db']:.2f} / {q['ssim']:.4f}" if q else "-").rjust(17))
            print(f"  {m:<36}" + "".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, help="a video file for the speed rows (default: a synthetic clip)")
    ap.add_argument("--size", default="640x360", help="synthetic clip size WxH (default 640x360)")
    ap.add_argument("--frames", type=int, default=4, help="synthetic clip length (default 4)")
    ap.add_argument("--scales", default="3", help="speed scales, comma-separated (default 3: 640x360 -> 1920x1080)")
    ap.add_argument("--quality-scales", default="2,3,4", help="quality scales (default 2,3,4)")
    ap.add_argument("--datasets", default="Set5,Set14", help="quality datasets under $VSR_DATA (default Set5,Set14)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each clip transcode, median (default 3)")
    ap.add_argument("--min-time-s", type=float, default=1.0, help="least timing per frame method (default 1 s)")
    ap.add_argument("--device", default="cpu", help="device of the PyTorch methods (OpenCV dnn runs on the CPU)")
    ap.add_argument("--no-opencv", action="store_true", help="leave out OpenCV dnn_superres (when opencv-contrib is absent)")
    ap.add_argument("--quick", action="store_true", help="2 frames, x3, Set5 only, 1 run: about a minute of work")
    ap.add_argument("--json", type=Path, help="write the results here (e.g. bench/results/peers-cpu.json)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.scales, args.quality_scales, args.datasets, args.runs, args.min_time_s = 2, "3", "3", "Set5", 1, 0.0
    opencv_dir = None if args.no_opencv else PEERS_DIR
    if opencv_dir is not None and not hasattr(cv2, "dnn_superres"):
        sys.exit("peers.py: cv2.dnn_superres is missing (opencv-contrib); use the venv of bench/README.md or pass --no-opencv")
    if shutil.which("ffmpeg") is None:
        sys.exit("peers.py: the ffmpeg binary is not on PATH; install ffmpeg")
    device = pick_device(args.device)
    torch.set_grad_enabled(False)
    say = lambda message: print(f"... {message}", file=sys.stderr, flush=True)  # noqa: E731
    doc: dict = {"command": " ".join(["python", "bench/peers.py", *sys.argv[1:]]), "machine": machine(device)}
    doc["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory(prefix="vsr-peers-") as tmp:
        work = Path(tmp)
        if args.input:
            clip = args.input
        else:
            w, h = (int(v) for v in args.size.lower().split("x"))
            clip = make_clip(work / "clip.mp4", w, h, args.frames, audio=True)
        rgbs, planes, pix_fmt = decode(clip)
        name = str(args.input) if args.input else f"synthetic {args.size}"
        doc["clip"] = {"path": name, "frames": len(rgbs), "pix_fmt": pix_fmt}
        speed = []
        for scale in (int(s) for s in args.scales.split(",")):
            speed += frame_rows(rgbs, planes, scale, device, opencv_dir, args.min_time_s, say)
            speed += clip_rows(Path(clip), len(rgbs), scale, device, args.runs, work, say)
    doc["speed"] = speed
    scales = [int(s) for s in args.quality_scales.split(",") if s]
    doc["quality"] = quality_rows([d for d in args.datasets.split(",") if d], scales, device, opencv_dir, say)
    print_tables(doc)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
