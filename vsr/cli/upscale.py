"""`vsr upscale`: an image, a folder of images or videos, a video file, a URL or stdin (vsr.pipeline, vsr.scaleout)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vsr.cli.common import (
    CRF_HELP,
    PRESET_HELP,
    Backend,
    Opt,
    PlainProgress,
    Precision,
    Progress,
    ShippedArch,
    check_scale,
    err_console,
    live_display,
    load_upscaler,
    notice,
    passive_openmp,
    progress_bar,
    say,
    warning,
)
from vsr.errors import InputError, UsageError


def upscale(
    src: Annotated[str, typer.Argument(help="Image, folder of images, video file, URL, or - (stdin).", show_default=False)],
    dst: Annotated[str, typer.Argument(help="Output image, folder, video file, or - for stdout.", show_default=False)],
    scale: Opt.Scale = 2,
    weights: Opt.Weights = None,
    arch: Opt.Arch = ShippedArch.a955,
    device: Opt.Device = "auto",
    codec: Annotated[
        str,
        typer.Option(
            help="Video encoder. auto: chosen from the output's container and the input, keeping depth, chroma and "
            "alpha (docs/video.md). Or libx264, libx265, libsvtav1, libvpx-vp9, prores_ks, ffv1 (lossless), "
            "h264_nvenc (NVIDIA GPUs), ..."
        ),
    ] = "auto",
    crf: Annotated[float | None, typer.Option(help=f"Video quality: {CRF_HELP}")] = None,
    preset: Annotated[str | None, typer.Option(help=f"Encoder preset; {PRESET_HELP}")] = None,
    pix_fmt: Annotated[
        str | None, typer.Option(help="Output pixel format, e.g. yuv420p, yuv444p; default: what keeps the input's.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Container format of - (stdin/stdout), e.g. matroska, mpegts; - as input is probed, - as output "
            "defaults to matroska.",
        ),
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(
            metavar="NAME",
            help="auto, eager, compile or tensorrt. auto: tensorrt or compile on a GPU, eager on the CPU (images: always eager).",
        ),
    ] = Backend.auto,
    precision: Opt.Precision = Precision.auto,
    hwaccel: Annotated[
        str | None,
        typer.Option(
            help="Hardware decoding, e.g. cuda (NVDEC, PyAV 18+). Where this FFmpeg build, the driver, the GPU or PyAV "
            "cannot, the CPU decodes, with a one-line warning."
        ),
    ] = None,
    ensemble: Opt.Ensemble = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress display, summary or notices; warnings and errors still print."),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(help="Video files: split into segments and upscale them in this many local processes (CPU)."),
    ] = 1,
    segment: Annotated[
        float | None,
        typer.Option(help="Seconds of video per segment (default: 1/8 of the video, 2-10 s).", show_default=False),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Reuse the finished segments an interrupted segmented run left (implies segments)."),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the segments as Ray tasks: local (start Ray here) or a cluster address (HOST:PORT, ray://...); "
            "needs Ray (pip install ray).",
        ),
    ] = None,
) -> None:
    """Upscale an image, a folder of images or videos, a video file, a stream URL or stdin."""
    passive_openmp()
    from vsr.media.imageio import is_image_path
    from vsr.media.source import is_url

    check_scale(scale)
    from vsr.media.encoders import EncoderOptions, check_options

    enc = EncoderOptions(codec=None if codec == "auto" else codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    check_options(enc)  # a bad --codec, --crf, --preset or --pix-fmt is one line before any work
    src_path = Path(src)
    segmented = workers > 1 or resume or ray is not None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if ray is not None and workers > 1:
        raise UsageError("--ray and --workers exclude each other: Ray's resources decide how many segments run at once")
    if segment is not None and not segment > 0:
        raise UsageError(f"--segment must be a positive number of seconds, got {segment}")
    if segmented and (src == "-" or is_url(src) or dst == "-"):
        raise UsageError("--workers, --ray and --resume need video files in and out (not - or a URL); drop them")
    if segmented and hwaccel:
        raise UsageError("--hwaccel works in one process; drop it, or drop --workers/--ray/--resume")
    if src != "-" and src_path.is_dir():
        videos, images = _folder_media(src_path)
        pairs = _video_pairs(videos, Path(dst), overwrite, resume) if videos else []  # checked before any image
        if images or not videos:
            ens = True if ensemble is None else ensemble
            _upscale_images(
                src_path, Path(dst), scale, weights, arch.value, device, ens, overwrite, quiet, resume, precision.value
            )
        if not pairs:
            return
    elif src != "-" and is_image_path(src_path):
        ens = True if ensemble is None else ensemble
        _upscale_images(src_path, Path(dst), scale, weights, arch.value, device, ens, overwrite, quiet, False, precision.value)
        return
    else:
        if src != "-" and not is_url(src) and not src_path.exists():
            raise InputError(f"{src}: no such file or folder; check the path")
        pairs = [(src, dst)]
    if len(pairs) > 1 and not segmented:  # each file's encoder and options checked before the first is written
        from vsr.pipeline.video import check_encoding

        for one_src, one_dst in pairs:
            check_encoding(one_src, one_dst, scale, enc)
    upscaler = load_upscaler(weights, scale, arch.value, device, backend.value, precision.value, bool(ensemble), quiet)
    t0 = time.perf_counter()
    with _VideoProgress(quiet) as progress:
        tell = lambda text: progress({"event": "notice", "message": text})  # noqa: E731
        if segmented:
            from vsr.scaleout.run import upscale_segmented

            make = lambda: _segment_workers(upscaler, workers, ray, tell, backend.value, precision.value)  # noqa: E731
            summaries = upscale_segmented(
                pairs, scale, make, upscaler=upscaler, enc=enc, seconds=segment, overwrite=overwrite, resume=resume,
                progress=progress, notice=tell,
            )  # fmt: skip
            for summary in summaries:
                progress.summary(summary)
        else:
            from vsr.pipeline.video import upscale_video
            from vsr.scaleout.workdir import check_stale, discard

            summaries = []
            for one_src, one_dst in pairs:
                if one_dst != "-" and not overwrite:
                    check_stale(one_dst, tell)  # an interrupted segmented run's parts are not dropped silently
                if one_src == "-" and _stdin_is_terminal():
                    notice(WAITING_FOR_STDIN)
                one = upscale_video(
                    one_src, one_dst, scale, upscaler, codec=enc.codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                    fmt_in=fmt if one_src == "-" else None, fmt_out=fmt if one_dst == "-" else None,
                    overwrite=overwrite, progress=progress, hwaccel=hwaccel,
                )  # fmt: skip
                summaries.append(one)
                progress.summary(one)  # timed from this file's start (upscale_video's own clock)
                if one_dst != "-" and overwrite:
                    discard(one_dst, tell)
        if len(summaries) > 1:
            progress.total(summaries, time.perf_counter() - t0, dst)


WAITING_FOR_STDIN = (
    "waiting for a video stream on stdin (pipe one in, e.g. `ffmpeg -i in.mp4 -f matroska - | vsr upscale - out.mp4`; "
    "Ctrl-C to stop)"
)


def _stdin_is_terminal() -> bool:
    """`vsr upscale - ...` typed at a terminal with nothing piped: vsr would wait silently for a stream, so it says so
    (Ctrl-C, SIGTERM and SIGHUP end the wait, Ctrl-D ends the input: vsr.media.stdin)."""
    import sys

    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".flv", ".mpg", ".mpeg", ".wmv", ".ogv"}
)


def _folder_media(folder: Path) -> tuple[list[Path], list[Path]]:
    """A folder's video files and image files, sorted by name (not its subfolders)."""
    from vsr.media.imageio import is_image_path

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES], [p for p in files if is_image_path(p)]


def _video_pairs(videos: list[Path], dst: Path, overwrite: bool, resume: bool = False) -> list[tuple[str, str]]:
    """OUTDIR/<same name> for each video, checked before any work (the folder is created). With `resume`, a video
    whose output exists and has no work folder was finished by the interrupted run: it is left out."""
    from vsr.pipeline.images import output_folder
    from vsr.scaleout.workdir import folder_for

    if resume and not overwrite:
        videos = [v for v in videos if not (dst / v.name).exists() or folder_for(dst / v.name).is_dir()]
        if not videos:
            return []
    output_folder(videos[0].parent, dst, [dst / v.name for v in videos], overwrite)
    return [(str(v), str(dst / v.name)) for v in videos]


def _segment_workers(upscaler, workers: int, ray: str | None, notice, backend: str = "auto", precision: str = "auto"):
    """The workers of a segmented run: Ray tasks (`--ray`, built with the user's `--backend` and `--precision` on the
    cluster's GPUs) or local processes."""
    if ray is not None:
        from vsr.scaleout.raytasks import RayWorkers
        from vsr.scaleout.run import spec_for

        spec = spec_for(upscaler, 1, cpu_only=False)
        return RayWorkers(ray, spec, notice=notice, backend=backend, precision=precision)
    from vsr.scaleout.run import InProcessWorkers, LocalWorkers, spec_for

    if workers == 1:  # --resume alone: segments in this process, on its device
        return InProcessWorkers(upscaler, spec_for(upscaler, 1, cpu_only=False))
    return LocalWorkers(spec_for(upscaler, workers, backend=backend, precision=precision), workers)


def _upscale_images(
    src: Path,
    dst: Path,
    scale: int,
    weights,
    arch: str,
    device: str,
    ensemble: bool,
    overwrite: bool,
    quiet: bool,
    resume: bool = False,
    precision: str = "auto",
) -> None:
    from vsr.pipeline.images import image_jobs, upscale_files

    if resume and not overwrite and src.is_dir() and dst.is_dir():  # the images an interrupted run finished
        from vsr.media.imageio import list_images

        done = {p.stem for p in list_images(src) if (dst / f"{p.stem}.png").exists()}
        jobs = [(s, d) for s, d in image_jobs(src, dst, True) if s.stem not in done]
        if not jobs:
            return
    else:
        jobs = image_jobs(src, dst, overwrite)
    upscaler = load_upscaler(weights, scale, arch, device, precision=precision, ensemble=ensemble, quiet=quiet)
    t0 = time.perf_counter()
    plain = PlainProgress(quiet, "images")
    with progress_bar(quiet, TextColumn("{task.description}")) as progress:
        task = progress.add_task("upscaling", total=len(jobs))
        count = [0]

        def done(src: Path, dst: Path) -> None:
            progress.advance(task)
            count[0] += 1
            plain(count[0], len(jobs))

        upscale_files(jobs, scale, upscaler, done)
    if not quiet:
        say(f"{len(jobs)} image(s) upscaled x{scale} in {time.perf_counter() - t0:.1f} s -> {dst}")


def summary_line(summary) -> str:
    """One file's line: frames, sizes, encoder, time and fps of that file alone, output."""
    (w, h), (ow, oh) = summary.in_size, summary.out_size
    return (
        f"{summary.frames} frames {w}x{h} -> {ow}x{oh} ({summary.codec}, {summary.pix_fmt}) in "
        f"{summary.elapsed_s:.1f} s, {summary.fps:.1f} fps -> {summary.dst}"
    )


def total_line(summaries: list, elapsed_s: float, dst: str) -> str:
    """The last line for a folder of videos: files, frames, wall time from the first file's start to the end."""
    frames = sum(s.frames for s in summaries)
    fps = frames / elapsed_s if elapsed_s > 0 else 0.0
    return f"total: {len(summaries)} videos, {frames} frames in {elapsed_s:.1f} s, {fps:.1f} fps -> {dst}"


class _VideoProgress:
    """Rich progress for `upscale_video` events on stderr: frames, fps, ETA; a spinner when the count is unknown.
    Prints the notices and warnings of the run and its summary lines, following the --quiet rule (`notice`)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.said: set[str] = set()  # the warnings and notices printed, by message
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} / {task.fields[total_text]} frames"),
            TextColumn("{task.fields[fps]:.1f} fps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not live_display(quiet),
            transient=True,
        )
        self.task = None
        self.plain = PlainProgress(quiet, "frames")

    def __enter__(self) -> _VideoProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "warning":
            self.said.add(event["message"])
            warning(event["message"])
        elif kind == "notice":
            if not self.quiet:
                self.said.add(event["message"])
            notice(event["message"], self.quiet)
        elif kind == "start":
            total = event["total_frames"]
            (w, h), (ow, oh) = event["in_size"], event["out_size"]
            desc = f"{w}x{h} -> {ow}x{oh}"
            if event.get("files", 1) > 1:
                desc = f"{event['files']} videos"
            done = event.get("done_frames", 0)  # reused by --resume
            self.task = self.progress.add_task(desc, total=total, completed=done, total_text=total or "?", fps=0.0)
        elif kind == "progress" and self.task is not None:
            total = event["total_frames"]
            if total is not None and event["frames"] > total:  # the container's count was an estimate
                total = None
            self.progress.update(self.task, completed=event["frames"], total=total, fps=event["fps"], total_text=total or "?")
            self.plain(event["frames"], total)

    def summary(self, summary) -> None:
        """A file's line, unless quiet; then any warning it holds that was not printed during the run (the
        segmented path's streamed files report theirs as notices, which --quiet drops)."""
        if not self.quiet:
            say(summary_line(summary))
        for message in summary.warnings:
            if message not in self.said:
                self.said.add(message)
                warning(message)

    def total(self, summaries: list, elapsed_s: float, dst: str) -> None:
        if not self.quiet:
            say(total_line(summaries, elapsed_s, dst))
