"""Check that an upscaled video is faithful to its input: frames, timestamps, size, audio, colour.

    python bench/check_video.py IN OUT --scale 2

Prints one line per check and exits 1 if any fails: same number of video frames; every frame
timestamp equal to the input's within 1 ms; every frame exactly `scale` x the input size; every
audio packet byte-identical with the same timestamp; colour range, matrix, primaries and transfer kept.
"""

from __future__ import annotations

import argparse
import sys

import av


def video_frames(path: str) -> list[tuple[float, int, int, int, int, int, int]]:
    with av.open(path) as c:
        return [
            (float(f.pts * f.time_base), f.width, f.height, f.color_range, f.colorspace, f.color_primaries, f.color_trc)
            for f in c.decode(c.streams.video[0])
        ]


def audio_packets(path: str) -> list[tuple[bytes, float | None]]:
    with av.open(path) as c:
        if not c.streams.audio:
            return []
        s = c.streams.audio[0]
        return [(bytes(p), float(p.pts * p.time_base) if p.pts is not None else None) for p in c.demux(s) if p.size]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--scale", type=int, required=True)
    args = ap.parse_args()
    fin, fout = video_frames(args.input), video_frames(args.output)
    ain, aout = audio_packets(args.input), audio_packets(args.output)
    worst_ms = max((abs(a[0] - b[0]) * 1000 for a, b in zip(fin, fout, strict=False)), default=0.0)
    checks = [
        (f"frames: {len(fin)} in, {len(fout)} out", len(fin) == len(fout) > 0),
        (f"timestamps: largest difference {worst_ms:.3f} ms", len(fin) == len(fout) and worst_ms <= 1.0),
        (
            f"size: {fin[0][1]}x{fin[0][2]} -> {fout[0][1]}x{fout[0][2]}",
            all(o[1] == args.scale * i[1] and o[2] == args.scale * i[2] for i, o in zip(fin, fout, strict=False)),
        ),
        (f"audio: {len(ain)} packets in, {len(aout)} out, byte-identical", ain == aout),
        (
            f"colour (range, matrix, primaries, transfer): {fin[0][3:]} -> {fout[0][3:]}",
            all(i[3:] == o[3:] for i, o in zip(fin, fout, strict=False)),
        ),
    ]
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
