"""Does the video pipeline hide decode and encode behind SR? And is its memory flat?

Measures, on the same frames of one clip (its own synthetic clip by default, or --input):
  network fps   the SRCNN forward pass alone on bicubic-interpolated Y (what `vsr bench` calls model-only)
  sr-stage fps  everything the SR thread does per frame: bicubic Y + SRCNN + bicubic U/V (`upscale_planes`)
  end-to-end    `vsr upscale` through `upscale_video`: decode + SR + encode in three threads, to a real file
and prints end-to-end / sr-stage and end-to-end / network. It also runs the clip with bicubic instead of SR
(decode, bicubic, encode) and reports its process CPU seconds per frame (`transcode_cpu_s_per_frame`; not with --memory), and
`bound_e2e_over_sr_stage`: the best end-to-end / sr-stage when SR keeps all torch threads busy and that other
work must share them, 1/sr / (1/sr + transcode_cpu / threads). With --memory it also samples the process RSS
once a second during the end-to-end run and reports start, peak and end (use a long clip: --frames 15000
is 10 minutes at 25 fps).

    python bench/pipeline_fps.py --size 320x180 --frames 48 --scale 2 --arch 9-5-5 [--precision auto] [--json OUT]
    python bench/pipeline_fps.py --input clip.mp4 --scale 3 --arch 9-1-5     # real footage
    python bench/pipeline_fps.py --size 160x90 --frames 15000 --scale 2 --arch 9-1-5 --memory

The upscaler is `vsr upscale`'s on the CPU: `--precision auto` (its default) by default.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vsr upscale` sets it (see vsr.cli.common.passive_openmp)

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch

from vsr.bench.report import cpu_name, print_and_save
from vsr.engine.base import Upscaler
from vsr.engine.precision import cpu_bf16
from vsr.media.frames import plane_shapes
from vsr.media.reader import VideoReader
from vsr.media.resize import imresize, output_length
from vsr.model.srcnn import load_weights
from vsr.model.weights import default_weights
from vsr.pipeline.video import upscale_planes, upscale_video
from vsr.synth import make_clip


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def decoded_planes(path: Path, limit: int) -> tuple[list[tuple[np.ndarray, ...]], object]:
    reader = VideoReader(str(path))
    frames = []
    try:
        for item in reader.read():
            if hasattr(item, "planes"):
                frames.append(item.planes)
                if len(frames) >= limit:
                    break
        return frames, reader.info
    finally:
        reader.close()


def timed(fn, items, repeats: int = 1) -> float:
    """Frames per second of fn over items (best of `repeats` passes, after one warm-up call)."""
    fn(items[0])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, help="a video file (default: a synthetic clip)")
    ap.add_argument("--size", default="320x180", help="synthetic clip size WxH")
    ap.add_argument("--frames", type=int, default=48, help="synthetic clip length")
    ap.add_argument("--sample", type=int, default=16, help="frames used for the network and sr-stage figures")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--arch", default="9-5-5")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--codec", default="libx264")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--memory", action="store_true", help="sample RSS during the end-to-end run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    work = Path(tempfile.mkdtemp(prefix="vsr-bench-"))
    if args.input:
        src = args.input
    else:
        w, h = (int(v) for v in args.size.split("x"))
        src = make_clip(work / "clip.mp4", w, h, args.frames, audio=True)
    upscaler = Upscaler(load_weights(default_weights(args.scale, args.arch)), "cpu", args.precision)
    frames, info = decoded_planes(src, args.sample)
    out_w, out_h = output_length(info.width, args.scale), output_length(info.height, args.scale)
    shapes = plane_shapes(info.pix_fmt, out_w, out_h)
    ys = [imresize(torch.from_numpy(p[0].astype(np.float32))[None, None] / info.peak, args.scale) for p in frames]

    network_fps = timed(upscaler, ys, repeats=3)
    stage_fps = timed(lambda p: upscale_planes(p, args.scale, upscaler, info.peak, shapes), frames, repeats=3)
    # what the rest of the pipeline costs in CPU time: the same run with bicubic instead of SR (decode, bicubic of
    # Y/U/V, encode), process CPU seconds per frame; not with --memory (a long clip)
    other_cpu_s = None
    if not args.memory:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        bicubic = upscale_video(src, work / "bicubic.mkv", args.scale, None, codec=args.codec, preset=args.preset)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        other_cpu_s = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / bicubic.frames

    samples: list[float] = []
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(1.0):
            samples.append(rss_mib())

    sampler = threading.Thread(target=sample_rss, daemon=True)
    start_rss = rss_mib()
    if args.memory:
        sampler.start()
    summary = upscale_video(src, work / "out.mkv", args.scale, upscaler, codec=args.codec, preset=args.preset)
    stop.set()
    with av.open(str(work / "out.mkv")) as c:
        assert c.streams.video[0].codec_context.width == out_w
    result = {
        "machine": {
            "cpu": cpu_name(),
            "arch": platform.machine(),
            "cpu_bf16": cpu_bf16(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "av": av.__version__,
        },
        "input": f"{info.width}x{info.height}",
        "output": f"{out_w}x{out_h}",
        "scale": args.scale,
        "model": args.arch,
        "precision": upscaler.precision,
        "clip": args.input.name if args.input else f"synthetic {args.size}, {args.frames} frames",
        "frames": summary.frames,
        "codec": summary.codec,
        "network_fps": round(network_fps, 3),
        "sr_stage_fps": round(stage_fps, 3),
        "end_to_end_fps": round(summary.fps, 3),
        "e2e_over_sr_stage": round(summary.fps / stage_fps, 3),
        "e2e_over_network": round(summary.fps / network_fps, 3),
    }
    if other_cpu_s is not None:
        result["transcode_cpu_s_per_frame"] = round(other_cpu_s, 4)
        # the best end to end / SR stage when the SR stage keeps every thread busy and the rest shares them
        sr_s = 1 / stage_fps
        result["bound_e2e_over_sr_stage"] = round(sr_s / (sr_s + other_cpu_s / torch.get_num_threads()), 3)
    if args.memory and samples:
        result["rss_mib"] = {
            "before": round(start_rss, 1),
            "first_minute_median": round(statistics.median(samples[:60]), 1),
            "last_minute_median": round(statistics.median(samples[-60:]), 1),
            "peak": round(max(samples), 1),
            "samples": len(samples),
        }
    print_and_save(result, args.json)


if __name__ == "__main__":
    main()
