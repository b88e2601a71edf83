"""How many output code values GPU fp16 changes against fp32, at 8, 10, 12 and 16 bits: run on the CPU.

No GPU here, so cuDNN's FP16 convolution is emulated in float32 arithmetic: inputs, weights and bias rounded to
half, products summed in float32 (PyTorch asks cuDNN for FP32 accumulation of half convolutions:
aten/src/ATen/cudnn/Descriptors.h, `ConvolutionDescriptor::set`, mathType CUDNN_DATA_FLOAT for CUDNN_DATA_HALF),
the sum rounded to half, then the bias added and rounded to half again (aten/src/ATen/native/Convolution.cpp adds
cuDNN's bias after the convolution, in the output's dtype). An fp32 layer is plain float32 (IEEE: vsr turns TF32
off for fp32 layers). A layer after an fp16 one sees its half input exactly (the cast up is exact).

Per bit depth (peak = 2^bits - 1) and model, over Set5: the ground truth's Y (BT.601 studio range, unrounded) at
that depth, MATLAB-bicubic downscaled and rounded (a decoded frame), then vsr's per-frame path
(`upscale_planes`: / peak, bicubic up, model, x peak, round, clip), once per layer plan, and once more with torch's
own CPU half convolutions (float32 sums, bias fused, one rounding to half: a second stand-in for the GPU). Printed:
the share of pixels whose code differs from the fp32 plan's, the largest difference, the RMS error before rounding
(codes), and Y-PSNR (scale pixels shaved) against the ground truth at that depth, minus fp32's.

    python bench/fp16_codes.py [--data DIR] [--models 9-5-5x2,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsr.media.imageio import list_images, read_image  # noqa: E402
from vsr.media.resize import imresize, modcrop  # noqa: E402
from vsr.model.srcnn import load_weights  # noqa: E402
from vsr.model.weights import default_weights  # noqa: E402

PLANS = {"fp16": ("fp16",) * 3, "fp16+fp32 conv3": ("fp16", "fp16", "fp32"), "fp32": ("fp32",) * 3}
NATIVE = "fp16 (torch CPU half)"  # a second stand-in for cuDNN: torch's own CPU half convolutions, bias fused


def _half(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


def emulated_conv(x: torch.Tensor, conv: torch.nn.Conv2d, dtype: str) -> torch.Tensor:
    """One valid convolution as cuDNN runs it in `dtype` (see the module docstring), float32 out."""
    if dtype == "fp32":
        return F.conv2d(x, conv.weight, conv.bias)
    out = _half(F.conv2d(_half(x), _half(conv.weight)))
    return _half(out + _half(conv.bias)[None, :, None, None])


def emulated_forward(model, y: torch.Tensor, plan: tuple[str, ...]) -> torch.Tensor:
    """SRCNN on bicubic-upscaled luma (1 x 1 x H x W in [0, 1]) with replicate padding, as `Upscaler` runs it."""
    b = model.config.border
    x = F.pad(y, (b, b, b, b), mode="replicate")
    x = F.relu(emulated_conv(x, model.conv1, plan[0]))
    x = F.relu(emulated_conv(x, model.conv2, plan[1]))
    return emulated_conv(x, model.conv3, plan[2]).clamp(0, 1)


def studio_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio-range Y in 8-bit units, unrounded (MATLAB rgb2ycbcr's formula)."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    return 16 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr(a: np.ndarray, b: np.ndarray, peak: int, shave: int) -> float:
    d = (a.astype(np.float64) - b)[shave:-shave, shave:-shave]
    return 10 * math.log10(peak * peak / float(np.mean(d * d)))


def measure(folder: Path, models: list[tuple[str, int]], depths: list[int]) -> list[dict]:
    rows = []
    originals = [read_image(p) for p in list_images(folder)]
    torch.manual_seed(0)
    for arch, scale in models:
        model = load_weights(default_weights(scale, arch)).float().eval()
        half = copy.deepcopy(model).half()
        images = [modcrop(img, scale) for img in originals]
        for bits in depths:
            peak = 2**bits - 1
            stats = {name: {"differ": 0, "max": 0, "sq": 0.0, "psnr": []} for name in (*PLANS, NATIVE)}
            pixels = 0
            for img in images:
                truth = np.round(studio_y(img) * peak / 255)  # the 8-bit formula scaled to this depth
                lr = imresize(torch.from_numpy(truth / peak).float()[None, None], 1 / scale)
                lr = (lr * peak).round().clamp(0, peak)
                y = imresize(lr / peak, scale)
                raw = {}
                with torch.no_grad():
                    for name, plan in PLANS.items():
                        raw[name] = (emulated_forward(model, y, plan) * peak)[0, 0].double().numpy()
                    b = model.config.border
                    x = F.pad(y, (b, b, b, b), mode="replicate").half()
                    raw[NATIVE] = (half(x, pad=False).float().clamp(0, 1) * peak)[0, 0].double().numpy()
                pixels += truth.size
                for name, value in raw.items():
                    out = np.round(value)
                    diff = np.abs(out - np.round(raw["fp32"]))
                    stats[name]["differ"] += int((diff > 0).sum())
                    stats[name]["max"] = max(stats[name]["max"], int(diff.max()))
                    stats[name]["sq"] += float(np.sum((value - raw["fp32"]) ** 2))
                    stats[name]["psnr"].append(psnr(out, truth, peak, scale))
            base = float(np.mean(stats["fp32"]["psnr"]))
            for name, s in stats.items():
                rows.append(
                    {
                        "model": f"{arch} x{scale}",
                        "bits": bits,
                        "plan": name,
                        "pixels_differing_pct": round(100 * s["differ"] / pixels, 3),
                        "max_code_diff": s["max"],
                        "rms_error_codes": round(math.sqrt(s["sq"] / pixels), 4),  # before rounding, against fp32
                        "psnr_delta_db": round(float(np.mean(s["psnr"])) - base, 5),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("VSR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "Set5"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--models", default="9-5-5x2,9-5-5x3,9-5-5x4,9-1-5x3")
    ap.add_argument("--bits", default="8,10,12,16")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = [(m.split("x")[0], int(m.split("x")[1])) for m in args.models.split(",")]
    t0 = time.perf_counter()
    rows = measure(args.data, models, [int(b) for b in args.bits.split(",")])
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "data": str(args.data),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
