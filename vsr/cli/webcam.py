"""`vsr webcam`: the live preview (vsr.live)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vsr.cli.common import (
    CRF_HELP,
    PRESET_HELP,
    Opt,
    Precision,
    ShippedArch,
    check_scale,
    err_console,
    load_upscaler,
    passive_openmp,
    say,
    warning,
)
from vsr.errors import UsageError


class View(str, Enum):
    side = "side"
    split = "split"
    sr = "sr"
    bicubic = "bicubic"


def _parse_size(text: str, option: str) -> tuple[int, int]:
    import re

    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise UsageError(f"{option} must be WIDTHxHEIGHT, e.g. 640x480; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def webcam(
    source: Annotated[
        str, typer.Option(help="Camera index (0, 1, ...) or /dev/videoN, a video file, or a stream URL (rtsp://, http://, ...).")
    ] = "0",
    scale: Opt.Scale = 2,
    weights: Opt.Weights = None,
    arch: Opt.Arch = ShippedArch.a955,
    device: Opt.Device = "auto",
    precision: Opt.Precision = Precision.auto,
    view: Annotated[
        View, typer.Option(metavar="NAME", help="View at the start: side (bicubic | SRCNN), split, sr or bicubic.")
    ] = View.side,
    window: Annotated[bool, typer.Option("--window/--no-window", help="Show the preview, or run the loop headless.")] = True,
    frames: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many frames (shown, or processed headless); default: until q, Esc or the end of the source."
        ),
    ] = None,
    record: Annotated[str | None, typer.Option(help="Record what is shown to this video file (e.g. out.mkv).")] = None,
    record_sr_only: Annotated[
        bool, typer.Option("--record-sr-only", help="Record only the SRCNN stream (output size, the source's pixel format).")
    ] = False,
    codec: Annotated[
        str, typer.Option(help="Encoder of --record: auto (from the file's container), libx264, ffv1 (lossless), ...")
    ] = "auto",
    crf: Annotated[float | None, typer.Option(help=f"Quality of --record; {CRF_HELP}")] = None,
    preset: Annotated[str | None, typer.Option(help=f"Encoder preset of --record; {PRESET_HELP}")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --record file.")] = False,
    live: Annotated[
        bool | None,
        typer.Option("--live/--no-live", help="Keep only the newest frame, drop stale ones (default: cameras and URLs)."),
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Restart a file source when it ends.")] = False,
    snapshot_dir: Annotated[Path, typer.Option(help="Folder for snapshots (key s).")] = Path("."),
    camera_size: Annotated[
        str | None,
        typer.Option(help="Picture size to ask of a camera, WIDTHxHEIGHT, e.g. 640x480; default: the camera's."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No status line, summary or notices; warnings and errors still print.")
    ] = False,
) -> None:
    """Live preview of a camera, stream or file: bicubic beside SRCNN, with fps, latency and dropped frames.

    Keys: q/Esc quit, space comparison, s snapshot, 1-4 view, +/- zoom, [ ] or mouse split, p pause, h overlay.
    """
    passive_openmp()
    from vsr.live.webcam import EncoderOptions, WebcamOptions, run_webcam  # before anything loads PyAV (see vsr.webcam)

    check_scale(scale)
    opts = WebcamOptions(
        source=source,
        scale=scale,
        window=window,
        frames=frames,
        view=view.value,
        record=record,
        record_sr_only=record_sr_only,
        overwrite=overwrite,
        encoder=EncoderOptions(codec=None if codec == "auto" else codec, crf=crf, preset=preset),
        live=live,
        loop=loop,
        snapshot_dir=str(snapshot_dir),
        camera_size=_parse_size(camera_size, "--camera-size") if camera_size else None,
    )
    upscaler = load_upscaler(weights, scale, arch.value, device, precision=precision.value, quiet=quiet)
    status = err_console.status("vsr webcam: starting", spinner="dots") if not quiet else None
    if status is not None:
        status.start()

    def report(event: dict) -> None:
        kind = event["event"]
        if kind == "warning":
            warning(event["message"])
        elif quiet:
            return
        elif kind == "start":
            (w, h), (ow, oh) = event["in_size"], event["out_size"]
            mode = "live, newest frame only" if event["live"] else "every frame"
            say(f"{event['source']}: {w}x{h} -> {ow}x{oh}, {event['model']} on {event['device']} ({mode})")
        elif kind == "snapshot":
            say(f"snapshot: {event['path']}")
        elif kind == "progress" and status is not None:
            dropped = f", {event['dropped']} dropped" if event["dropped"] else ""
            status.update(
                f"vsr webcam: {event['frames']} frames, {event['fps']:.1f} fps, SR {event['sr_ms']:.0f} ms, "
                f"latency {event['latency_ms']:.0f} ms{dropped}"
            )

    try:
        summary = run_webcam(opts, upscaler, report)
    finally:
        if status is not None:
            status.stop()
    if not quiet:
        dropped = f", {summary.dropped} dropped" if summary.live else ""
        recorded = f"; recorded {summary.recorded_frames} frames -> {summary.record}" if summary.record else ""
        say(
            f"{summary.frames} frames in {summary.elapsed_s:.1f} s, {summary.fps:.1f} fps, SR {summary.sr_ms:.0f} ms/frame, "
            f"latency {summary.latency_ms:.0f} ms{dropped}{recorded}"
        )
