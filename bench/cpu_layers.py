"""What each CPU-speed idea of issue 14 buys, measured side by side: the evidence for what vsr keeps and drops.

All on this machine's threads, 1920x1080 output (x3 from 640x360), the shipped x3 weights, median of --repeats
after a warm-up, variants of one question timed round-robin (a burst of other load hits them alike):

  frame     SRCNN on a whole bicubic-sized frame: naive (NCHW, whole frame, F.conv2d: what a first script does),
            and vsr's Upscaler (oneDNN, channels_last, tiles, ReLU fused into conv1 and conv2) in fp32 and
            with its `auto` plan; the `auto` plan with the ReLU as a separate in-place pass, and with the tiles
            one after another, each spread over the threads (instead of a tile per thread, vsr/engine/tilepool.py)
  tiles     vsr's Upscaler at output tile sides 64 .. 1080 (small tiles keep conv1's 64-channel output in the
            cache, i.e. conv1 fused into conv2 per tile, at the price of more halo recomputation)
  conv3     the last layer (32 -> 1 channels, 5x5) on one 256 tile: oneDNN's own convolution against
            vsr's 1x1 convolution to 25 taps + shifted sum (vsr.engine.onednn._one_channel_conv)
  relu      conv1 + ReLU on one tile: separate in-place ReLU against oneDNN's fused conv+bias+ReLU
            (torch.ops.mkldnn._convolution_pointwise, what vsr uses)
  conv1     conv1 + ReLU on one tile: directly on the bicubic frame (x3) against the polyphase form (one 7x7
            convolution with 9 x 64 outputs on the low-resolution tile, then pixel_shuffle back to NHWC); speed
            only (the polyphase form would also need its own border handling to be exact)

    python bench/cpu_layers.py [--repeats 5] [--json bench/results/cpu-layers.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vsr upscale` sets it (vsr.cli.common.passive_openmp)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vsr.bench.report import cpu_name  # noqa: E402
from vsr.engine import base as engine  # noqa: E402
from vsr.engine.base import Upscaler  # noqa: E402
from vsr.engine.onednn import _one_channel_conv, _taps  # noqa: E402
from vsr.engine.precision import cpu_bf16  # noqa: E402
from vsr.model.srcnn import load_weights  # noqa: E402
from vsr.model.weights import default_weights  # noqa: E402

MK = torch.ops.aten.mkldnn_convolution
FUSED = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)  # what Inductor's CPU fusion emits


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class SeparateReLU(Upscaler):
    """vsr's Upscaler with every convolution through oneDNN's plain convolution and an in-place ReLU after."""

    def _run_valid(self, window: torch.Tensor) -> torch.Tensor:
        m, x = self.model, window
        for k, conv in enumerate((m.conv1, m.conv2)):
            x = torch.relu_(MK(nhwc(x.to(self.dtypes[k])), conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1))
        x = nhwc(x.to(self.dtypes[2]))
        if self.taps is not None:
            return _one_channel_conv(x, self.taps, m.conv3.bias)
        return MK(x, m.conv3.weight, m.conv3.bias, [0, 0], [1, 1], [1, 1], 1).float()


def one_tile_at_a_time(upscaler: Upscaler, frame: torch.Tensor) -> torch.Tensor:
    """The upscaler with its tiles one after another, each split over the threads (no vsr.engine.tilepool)."""
    saved, engine.tile_pool = engine.tile_pool, lambda threads: None
    try:
        return upscaler(frame)
    finally:
        engine.tile_pool = saved


def race(variants: dict, repeats: int) -> dict:
    """Median milliseconds of each zero-argument callable, timed round-robin after one warm-up call each."""
    times: dict = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t0))
    return {name: round(statistics.median(ms), 2) for name, ms in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(1, 1, 1080, 1920, generator=g)
    result: dict = {}
    for arch in ("9-5-5", "9-1-5"):
        model = load_weights(default_weights(3, arch)).eval()
        fp32, auto = Upscaler(model, "cpu", "fp32"), Upscaler(model, "cpu", "auto")
        variants = {"naive NCHW whole frame": lambda m=model: m(frame), "vsr fp32": lambda u=fp32: u(frame)}
        variants[f"vsr auto ({auto.precision})"] = lambda u=auto: u(frame)
        variants["vsr auto, ReLU as a separate pass"] = lambda u=SeparateReLU(model, "cpu", "auto"): u(frame)
        variants["vsr auto, tiles one after another"] = lambda u=auto: one_tile_at_a_time(u, frame)
        result[f"frame {arch}"] = race(variants, args.repeats)
        tiles = {
            f"tile {t}": (lambda u=Upscaler(model, "cpu", "auto", tile=t): u(frame)) for t in (64, 128, 192, 256, 384, 512, 1080)
        }
        result[f"tiles {arch} auto"] = race(tiles, args.repeats)
        print(json.dumps({k: v for k, v in result.items() if arch in k}), flush=True)

    model = load_weights(default_weights(3, "9-5-5"))
    x = nhwc(torch.rand(1, 32, 260, 260, generator=g))  # conv3's input for a 256 tile
    conv3 = model.conv3
    w3, taps, b3 = nhwc(conv3.weight.detach()), _taps(conv3), conv3.bias.detach()
    result["conv3 ms, 256 tile"] = race(
        {
            "oneDNN 32->1 conv": lambda: MK(x, w3, b3, [0, 0], [1, 1], [1, 1], 1),
            "1x1 conv to 25 taps + shifted sum (vsr)": lambda: _one_channel_conv(x, taps, b3),
        },
        4 * args.repeats,
    )
    hr = nhwc(torch.rand(1, 1, 264, 264, generator=g))  # conv1's input for a 256 tile (4-pixel halo)
    lr = nhwc(torch.rand(1, 1, 92, 92, generator=g))  # the LR pixels behind it at x3: 86 x 86 x 9 phases out
    w1, b1 = nhwc(model.conv1.weight.detach()), model.conv1.bias.detach()
    variants = {"conv1 + separate ReLU": lambda: torch.relu_(MK(hr, w1, b1, [0, 0], [1, 1], [1, 1], 1))}
    if FUSED is not None:
        variants["oneDNN fused conv1+bias+ReLU (vsr)"] = lambda: FUSED(hr, w1, b1, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
    result["conv1+ReLU ms, 256 tile"] = race(variants, 4 * args.repeats)
    wp, bp = nhwc(torch.rand(576, 1, 7, 7, generator=g)), torch.rand(576, generator=g)
    result["conv1 ms, 256 tile, x3"] = race(
        {
            "direct on the bicubic tile, then ReLU": lambda: torch.relu_(MK(hr, w1, b1, [0, 0], [1, 1], [1, 1], 1)),
            "polyphase 7x7 on the LR tile": lambda: MK(lr, wp, bp, [0, 0], [1, 1], [1, 1], 1),
            "polyphase + pixel_shuffle to NHWC + ReLU": lambda: torch.relu_(
                nhwc(F.pixel_shuffle(MK(lr, wp, bp, [0, 0], [1, 1], [1, 1], 1), 3))
            ),
        },
        4 * args.repeats,
    )
    doc = {
        "command": "python bench/cpu_layers.py" + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, **cpu_bf16()},
        "seconds_or_ms": "frame and tiles: seconds per 1080p frame; the others: ms per call",
        "results": result,
    }
    for key in result:
        if key.startswith(("frame", "tiles")):
            result[key] = {name: round(ms / 1000, 3) for name, ms in result[key].items()}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
