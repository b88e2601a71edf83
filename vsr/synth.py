"""A synthetic test clip, for the quick start and `vsr bench` when the user has no footage at hand.

Contract: `make_clip(path, width, height, frames, fps, audio)` writes an H.264 (yuv420p, CRF 12) clip of a
slow pan (1 px a frame, back and forth after 240 frames) over a detailed scene (text, lines, circles,
gradients) rendered at 3x and reduced with MATLAB bicubic, so it looks like real low-resolution footage
with detail for SR to restore; with `audio`, a 48 kHz stereo AAC tone of the same length.
Deterministic: the same arguments give the same frames.
`python -m vsr.synth OUT [--size WxH] [--frames N] [--overwrite]` makes one from the command line.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vsr.media.atomic import atomic_path
from vsr.media.resize import imresize

MAX_PAN = 240  # pixels; a longer clip reverses the pan instead of growing the scene


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A detailed RGB uint8 canvas of the given size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 60 * np.sin(xx / 97.0) * np.cos(yy / 131.0),
            128 + 60 * np.sin((xx + yy) / 173.0),
            128 + 60 * np.cos(xx / 211.0 - yy / 89.0),
        ],
        axis=-1,
    )
    img = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range((width * height) // 6000):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if kind == 0:
            cv2.circle(img, (x, y), int(rng.integers(4, 60)), color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            x2, y2 = x + int(rng.integers(-150, 150)), y + int(rng.integers(-150, 150))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVWXYZ0123456789"), int(rng.integers(3, 9))))
            cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.6, 2.0)), color, 2, cv2.LINE_AA)
    return img


def make_clip(path: Path | str, width: int = 320, height: int = 180, frames: int = 60, fps: int = 25, audio: bool = True) -> Path:
    """Write the clip described in the module contract and return its path."""
    path = Path(path)
    pan = max(min(frames, MAX_PAN), 1)  # long clips pan back and forth, so memory stays bounded
    canvas = scene(3 * (width + pan), 3 * (height + pan // 2 + 1))
    t = torch.from_numpy(canvas).permute(2, 0, 1).float()
    small_canvas = imresize(t, 1 / 3).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:  # renamed into place only when complete
        _write(tmp, small_canvas, pan, width, height, frames, fps, audio)
    return path


def _write(path: str, small_canvas: np.ndarray, pan: int, width: int, height: int, frames: int, fps: int, audio: bool) -> None:
    with av.open(str(path), "w") as out:
        # One x264 thread: the contract's "same frames" does not hold with x264's own threads on a loaded machine
        # (measured on 2 cores with 2 busy processes beside: 5-6 of 25 pairs of 96x64 clips decoded to other
        # frames; 0 of 25 with one thread); the clips are small, so the cost is small too.
        v = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "medium", "threads": "1"})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for i in range(frames):
            t = i % (2 * pan)
            x = t if t < pan else 2 * pan - t
            small = small_canvas[x // 2 : x // 2 + height, x : x + width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            n = a.codec_context.frame_size or 1024
            total = int(48000 * frames / fps)
            for k in range(total // n):
                t = (np.arange(k * n, (k + 1) * n) / 48000.0).astype(np.float32)
                tone = 0.2 * np.sin(2 * np.pi * 440.0 * t)
                frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 48000, k * n, Fraction(1, 48000)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vsr.synth", description="Make a synthetic test clip.")
    parser.add_argument("out", help="output file, e.g. sample.mp4")
    parser.add_argument("--size", default="320x180", help="WxH (default 320x180)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if Path(args.out).exists() and not args.overwrite:
        parser.error(f"{args.out} already exists; pass --overwrite or choose another name")
    make_clip(args.out, width, height, args.frames, args.fps, not args.no_audio)
    print(args.out)


if __name__ == "__main__":
    main()
