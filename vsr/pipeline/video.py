"""The overlapped video pipeline: decode -> super-resolve -> encode, in three threads.

Contract:
- `upscale_video(src, dst, scale, upscaler, ...)` upscales every frame of the first video stream of `src`
  by `scale` and writes it to `dst` with the input's timestamps; audio, subtitle and data streams are
  copied untouched (see `vsr.media.reader`, `vsr.media.writer`). `upscaler` is a `vsr.engine.base.Upscaler`-like callable (float32
  N x 1 x H x W in [0, 1] -> same shape, clamped), or None for plain MATLAB bicubic.
- Per frame (`upscale_planes`): Y as float32 / peak (2^bits - 1: 255, 1023, 4095, 65535) -> `imresize` x scale
  -> upscaler -> x peak, rounded, clipped -> uint; U and V -> `imresize` x scale -> rounded, clipped, and
  cropped to the output's chroma size (ceil(out / subsampling)); alpha (where the input has it) like U and V, at
  the luma size. No RGB round trip.
- Stages are joined by bounded queues (back-pressure, bounded memory). An error in any stage stops the
  others and is raised in the caller's thread; Ctrl-C (KeyboardInterrupt) and the stop signals
  (`vsr.signals`) stop all stages within seconds and are re-raised, also while the input is stdin and its
  producer has stalled or written nothing (`vsr.media.stdin`). Frames decoded and frames encoded are counted;
  a difference is an error.
- Output safety: a file target is written to a hidden temporary file beside it (same suffix, so the
  container format follows the name) and renamed onto the target only on success; on any error or
  interrupt the temporary file is deleted and the target left untouched. An existing target is refused
  unless `overwrite`, the input itself always. "-" streams to stdout (matroska unless `fmt_out`).
- `progress(event: dict)` is called in the caller's thread: {"event": "start", ...}, a few times a second
  {"event": "progress", ...}, {"event": "warning", "message"}, and {"event": "done", ...}.
- `VideoSummary.stages` says where the pipeline waited (`vsr bench` reports it): for "decode", "sr" and
  "encode", `frames`, `busy_s` (seconds the stage's thread spent in its own work: demux + decode, `upscale_planes`,
  encode + mux + the final encoder flush), `wait_in_s` / `wait_out_s` (blocked on an empty input / a full output
  queue), `fps` (frames / busy_s: the rate the stage alone could sustain) and `utilisation` (busy_s / elapsed_s);
  for the queues "decoded" and "upscaled", `capacity` and `mean_fill` (items waiting, averaged over the moments
  the consumer asked for the next item: near 0 the consumer starves, near capacity the producer is held back).
  The counters are a few `perf_counter` calls per item and change nothing else.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vsr.errors import OutputError, UsageError, VsrError
from vsr.media.atomic import publish, remove, temp_path
from vsr.media.frames import Picture, plane_shapes
from vsr.media.reader import VideoReader
from vsr.media.resize import imresize, output_length
from vsr.media.source import is_url
from vsr.media.writer import EncoderOptions, VideoWriter
from vsr.pipeline.gpu_stage import GpuStage
from vsr.pipeline.stages import END, Stages
from vsr.signals import check as check_stop

YUpscaler = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    elapsed_s: float
    fps: float
    in_size: tuple[int, int]  # width, height
    out_size: tuple[int, int]
    codec: str
    pix_fmt: str
    dst: str
    warnings: tuple[str, ...]
    stages: dict = field(default_factory=dict, hash=False)  # per-stage figures, see the module contract


def upscale_planes(
    planes: tuple[np.ndarray, ...],
    scale: float,
    upscaler: YUpscaler | None,
    peak: int,
    shapes: tuple[tuple[int, int], ...],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, ...]:
    """Super-resolve one frame's (Y, U, V[, A]) planes (uint8 or uint16) to the plane `shapes` of the output."""
    dtype = planes[0].dtype
    y = torch.from_numpy(planes[0].astype(np.float32)).to(device) / peak
    y = imresize(y[None], scale)
    if upscaler is not None:
        y = upscaler(y[None])[0]
    y = (y * peak).round_().clamp_(0, peak)[0, : shapes[0][0], : shapes[0][1]]
    chroma = torch.from_numpy(np.stack(planes[1:3]).astype(np.float32)).to(device)
    ch, cw = shapes[1]
    chroma = imresize(chroma, scale)[:, :ch, :cw].round_().clamp_(0, peak)
    out = [y.cpu().numpy().astype(dtype), *chroma.cpu().numpy().astype(dtype)]
    if len(planes) > 3:  # alpha: the same bicubic as chroma, at the luma size
        alpha = imresize(torch.from_numpy(planes[3].astype(np.float32)).to(device)[None], scale)[0]
        out.append(alpha[: shapes[3][0], : shapes[3][1]].round_().clamp_(0, peak).cpu().numpy().astype(dtype))
    return tuple(np.ascontiguousarray(p) for p in out)


def upscale_video(
    src: str | Path,
    dst: str | Path,
    scale: float,
    upscaler: YUpscaler | None,
    *,
    codec: str | None = None,
    crf: float | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    fmt_in: str | None = None,
    fmt_out: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    hwaccel: str | None = None,
) -> VideoSummary:
    """Upscale a video file, URL or stdin ("-") to `dst` (a path or "-"); see the module contract."""
    src, dst = str(src), str(dst)
    if not scale > 0:
        raise UsageError(f"--scale must be positive, got {scale}")
    t0 = time.perf_counter()
    report = progress or (lambda event: None)
    warnings: list[str] = []
    lock = threading.Lock()

    def warn(message: str) -> None:
        with lock:
            warnings.append(message)

    device = torch.device(getattr(upscaler, "device", None) or "cpu")
    hw_index = device.index if device.type == "cuda" else None  # NVDEC on the GPU that runs the model
    reader = VideoReader(src, fmt_in, warn, hwaccel=hwaccel, hwaccel_device=hw_index)
    try:
        _check_target(src, dst, overwrite)
        info = reader.info
        out_w, out_h = output_length(info.width, scale), output_length(info.height, scale)
        warm_up(upscaler, out_h, out_w)
        tmp = None if dst == "-" else temp_path(Path(dst))
        enc = EncoderOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, gpu=hw_index)
        try:
            writer = VideoWriter(tmp or "-", fmt_out, reader, out_w, out_h, enc, warn, label=dst)
        except BaseException:
            remove(tmp)
            raise
    except BaseException:
        reader.close()
        raise
    run = _Run(reader, writer, scale, upscaler, plane_shapes(info.pix_fmt, out_w, out_h), info.peak)
    sent = 0
    try:
        report(
            {
                "event": "start",
                "src": src,
                "dst": dst,
                "in_size": (info.width, info.height),
                "out_size": (out_w, out_h),
                "total_frames": info.frames,
                "duration_s": info.duration_s,
                "rate": float(info.rate) if info.rate else None,
                "codec": writer.stream.codec_context.name,
                "pix_fmt": writer.pix_fmt_label,
                "in_pix_fmt": info.pix_fmt,
            }
        )

        def tick() -> None:
            nonlocal sent
            check_stop()  # a stop signal held while the stages started, or one some callback swallowed (vsr.signals)
            sent = _flush_warnings(warnings, lock, sent, report)
            report(_progress_event(run, info, t0))

        run_stages(run, tick)
        if writer.packets_written != writer.frames_written:
            warn(f"the encoder made {writer.packets_written} packets from {writer.frames_written} frames")
        if tmp is not None:
            try:
                publish(tmp, dst)
            except OSError as exc:
                raise OutputError(f"{dst}: cannot move the finished video into place ({exc.strerror})") from None
    except BaseException:
        try:
            run.abandon()
        finally:
            remove(tmp)
        raise
    _flush_warnings(warnings, lock, sent, report)
    elapsed_s = time.perf_counter() - t0
    frames = writer.frames_written
    summary = VideoSummary(
        frames=frames,
        elapsed_s=elapsed_s,
        fps=frames / elapsed_s if elapsed_s > 0 else 0.0,
        in_size=(info.width, info.height),
        out_size=(out_w, out_h),
        codec=writer.stream.codec_context.name,
        pix_fmt=writer.pix_fmt_label,
        dst=dst,
        warnings=tuple(warnings),
        stages=run.stage_figures(elapsed_s),
    )
    report({"event": "done", "frames": frames, "elapsed_s": elapsed_s, "fps": summary.fps, "dst": dst})
    return summary


def warm_up(upscaler: YUpscaler | None, height: int, width: int) -> None:
    """Warm `upscaler` up on a frame of the output size (`Upscaler.warm_up`), before any output is opened: compiled
    backends build here, and a failure is one line, or under `--backend auto` a hand-over to the next backend
    (`vsr.engine.chain.FallbackUpscaler`). Call in the thread whose work it is, before the stages start."""
    if hasattr(upscaler, "warm_up"):
        upscaler.warm_up(height, width)


def run_stages(run: _Run, tick: Callable[[], None] = lambda: None) -> None:
    """Run `run`'s three stages to the end from the caller's thread: `tick()` right after they start and then a few
    times a second (it may raise to stop the run), the first error of any stage raised here, and every decoded
    frame checked to be upscaled and encoded. The caller calls `run.abandon()` on any exception."""
    run.start()
    tick()
    while not run.finished.wait(0.25):
        tick()
    run.join()
    run.raise_error()
    decoded, writer = run.frames_decoded, run.writer
    if not (decoded == run.frames_sr == writer.frames_written):
        raise VsrError(
            f"internal error: decoded {decoded} frames, upscaled {run.frames_sr}, encoded "
            f"{writer.frames_written}; the output was discarded (please report this)"
        )


class _Run(GpuStage, Stages):
    """One run of the decode, SR (CPU here, CUDA in `GpuStage`) and encode stages from `reader` into `writer`: the
    whole video (`upscale_video`), or with `segment` the pictures of one `vsr.scaleout.segments.Segment`
    (`VideoReader.read_segment`, for `vsr.scaleout.parts`), the same way on every device."""

    def __init__(
        self,
        reader: VideoReader,
        writer: VideoWriter,
        scale: float,
        upscaler: YUpscaler | None,
        shapes: tuple[tuple[int, int], ...],
        peak: int,
        segment=None,
    ):
        self.reader, self.writer, self.segment = reader, writer, segment
        self.scale, self.upscaler, self.shapes, self.peak = scale, upscaler, shapes, peak
        self.device = getattr(upscaler, "device", "cpu") if upscaler is not None else "cpu"
        self.frames_sr = 0
        self.last_time_s: float | None = None
        super().__init__()

    @property
    def frames_decoded(self) -> int:
        """Pictures decoded for this run (a segment's decoder may have decoded and dropped some before its start)."""
        return self.reader.frames_read if self.segment is None else self.frames_stage["decode"]

    def abandon(self) -> None:
        """After an error or a stop: stop the stages and wait for them (each closes its own container, the encoder
        stage aborts the writer; a stage stuck in I/O is left behind, a daemon), or close the reader and abort the
        writer when they never started."""
        self.stop.set()
        self.reader.cancel()  # a decode stage waiting for stdin gives up (vsr.media.stdin)
        if self.started:
            self.join()
        else:
            self.writer.abort()
            self.reader.close()

    def _decode(self) -> None:
        try:
            items = iter(self.reader.read() if self.segment is None else self.reader.read_segment(self.segment))
            while True:
                t0 = time.perf_counter()
                item = next(items, END)
                self.busy_s["decode"] += time.perf_counter() - t0
                if item is END:
                    break
                if isinstance(item, Picture):
                    self.frames_stage["decode"] += 1
                if not self._put(self.decoded, item, "decode"):
                    return
            self._put(self.decoded, END, "decode")
        finally:
            self.reader.close()

    def _upscale(self) -> None:
        if self._uses_gpu():
            self._upscale_gpu()
            return
        while (item := self._get(self.decoded, "sr", "decoded")) is not END:
            if isinstance(item, Picture):
                t0 = time.perf_counter()
                planes = upscale_planes(item.planes, self.scale, self.upscaler, self.peak, self.shapes, self.device)
                self.busy_s["sr"] += time.perf_counter() - t0
                item = Picture(planes=planes, pts=item.pts, time_base=item.time_base)
                self.frames_sr += 1
                self.frames_stage["sr"] += 1
            if not self._put(self.upscaled, item, "sr"):
                return
        if not self.stop.is_set():
            self._put(self.upscaled, END, "sr")

    def _encode(self) -> None:
        done = False
        try:
            while (item := self._get(self.upscaled, "encode", "upscaled")) is not END:
                t0 = time.perf_counter()
                if isinstance(item, Picture):
                    self.writer.write(item)
                    self.last_time_s = float(item.pts * item.time_base)
                    self.frames_stage["encode"] += 1
                else:
                    self.writer.mux(item)
                self.busy_s["encode"] += time.perf_counter() - t0
            if not self.stop.is_set():
                t0 = time.perf_counter()
                self.writer.finish()
                self.busy_s["encode"] += time.perf_counter() - t0
                done = True
        finally:
            if not done:
                self.writer.abort()
            self.finished.set()


def _progress_event(run: _Run, info, t0: float) -> dict:
    elapsed_s = time.perf_counter() - t0
    frames = run.writer.frames_written
    return {
        "event": "progress",
        "frames": frames,
        "total_frames": info.frames,
        "elapsed_s": elapsed_s,
        "fps": frames / elapsed_s if elapsed_s > 0 else 0.0,
        "position_s": run.last_time_s,
        "duration_s": info.duration_s,
    }


def _flush_warnings(warnings: list[str], lock: threading.Lock, sent: int, report: Progress) -> int:
    with lock:
        new = warnings[sent:]
    for message in new:
        report({"event": "warning", "message": message})
    return sent + len(new)


def _check_target(src: str, dst: str, overwrite: bool) -> None:
    """Refuse OUT == IN, an existing OUT without overwrite, a folder as OUT, and a missing or unwritable folder."""
    if dst == "-":
        return
    target = Path(dst)
    if src != "-" and not is_url(src):
        same = Path(src).resolve() == target.resolve()
        if not same and target.exists() and Path(src).exists():
            same = os.path.samefile(src, target)
        if same:
            raise OutputError(f"{dst}: the output is the input file; choose another output name")
    if target.is_dir():
        raise OutputError(f"{dst}: is a folder; give a file name such as {target / 'video.mp4'}")
    if target.exists() and not overwrite:
        raise OutputError(f"{dst}: already exists; pass --overwrite to replace it")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{dst}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{dst}: the folder {folder} is not writable; choose another output folder")


def check_encoding(src: str, dst: str, scale: float, enc: EncoderOptions) -> tuple:
    """Open `src` and the encoder and output format as `upscale_video` would, on a temporary file beside `dst`
    (removed): option and format errors come before any work (segmented runs, folders of videos). Returns (in info,
    out size, codec, pix_fmt)."""
    reader = VideoReader(src)
    tmp = temp_path(dst)
    try:
        info = reader.info
        out_w, out_h = output_length(info.width, scale), output_length(info.height, scale)
        writer = VideoWriter(tmp, None, reader, out_w, out_h, enc, label=dst)
        writer.abort()
        return info, (out_w, out_h), writer.stream.codec_context.name, writer.pix_fmt_label
    finally:
        remove(tmp)
        reader.close()
