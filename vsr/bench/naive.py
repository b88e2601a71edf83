"""The naive per-frame loop: the baseline `vsr bench` and bench/cpu_speedup.py measure `vsr upscale` against.

Contract: `naive_upscale(src, dst, scale, model)` is what someone with SRCNN weights and PyAV writes without vsr,
and returns the number of frames written: decode a frame, torch bicubic (`F.interpolate`) of Y, U and V by
`scale`, the model in fp32 eager on the whole frame (its own padded convolutions, NCHW, torch's defaults),
round, encode with libx264 at its defaults (yuv420p; crf 23, where vsr's default is crf 18, which costs the
encoder more), next frame. The model runs where the caller put it, as it is (fp32 expected). One thread of
control, nothing overlapped, no tiles, no bf16; no audio, no error handling beyond PyAV's own. 8-bit 4:2:0
input of even size only.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from vsr.model.srcnn import SRCNN


def _bicubic(planes: np.ndarray, scale: int) -> torch.Tensor:
    x = torch.from_numpy(planes.astype(np.float32))[None]
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0]


@torch.no_grad()
def naive_upscale(src: str | Path, dst: str | Path, scale: int, model: SRCNN) -> int:
    """Upscale the first video stream of `src` into `dst` the naive way (see the module contract)."""
    model.eval()
    device = next(model.parameters()).device  # where the caller put it (a naive GPU loop runs the model there)
    frames = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.width * scale, vin.height * scale, "yuv420p"
        vout.codec_context.time_base = vin.time_base  # the input's timestamps as they are (variable frame rate too)
        for frame in inp.decode(vin):
            yuv = frame.to_ndarray(format="yuv420p")
            h, w = frame.height, frame.width
            sr = model((_bicubic(yuv[None, :h], scale)[None] / 255.0).to(device))[0, 0]
            y = (sr * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            uv = _bicubic(yuv[h:].reshape(2, h // 2, w // 2), scale).round().clamp(0, 255).to(torch.uint8).numpy()
            new = av.VideoFrame.from_ndarray(np.concatenate([y, uv.reshape(-1, w * scale)]), format="yuv420p")
            new.pts, new.time_base = frame.pts, frame.time_base
            out.mux(vout.encode(new))
            frames += 1
        out.mux(vout.encode())
    return frames
