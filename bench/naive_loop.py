"""The naive per-frame loop (`vsr.bench.naive`) as a command, for bench/cpu_speedup.py to time as a whole process.

python bench/naive_loop.py IN.mp4 OUT.mp4 --scale 3 [--arch 9-5-5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vsr.bench.naive import naive_upscale
from vsr.model.srcnn import load_weights
from vsr.model.weights import default_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--arch", default="9-5-5")
    args = ap.parse_args()
    naive_upscale(args.src, args.dst, args.scale, load_weights(default_weights(args.scale, args.arch)))


if __name__ == "__main__":
    main()
