"""Live super-resolution preview (`vsr webcam`): a camera, stream or file, bicubic beside SRCNN, in a window.

The pieces live beside it: sources in `vsr.live.capture`, views, HUD, keys and the window in `vsr.live.preview`, the capture
and SR threads in `vsr.live.feed`, what a session shows (and snapshots) in `vsr.live.display`; this module ties them
together in a session and records. Contract of the whole:
- Sources (`vsr.live.capture.open_source`): a number or /dev/videoN is a camera, read with OpenCV (V4L2 on Linux) as BGR and
  converted once to studio-range BT.601 yuv420p; a URL (rtsp://, http://, ...) or a file is read with PyAV
  (`vsr.media.reader.VideoReader`), planes as the decoder gives them (8 or 10 bits, any chroma layout).
- Cameras and URLs are live: a capture thread reads as fast as the source gives frames and keeps only the newest;
  a frame replaced before SR took it (or an SR result replaced before it was shown) is dropped and counted
  (latency first). A file is not live: every frame, in order, through bounded queues (nothing dropped); with a
  window it is shown no faster than its timestamps. `live=True` plays a file like a camera (at its frame rate,
  newest frame only), `loop=True` restarts a file at its end.
- Per frame (SR thread, `vsr.live.feed.upscale_pair`): Y / peak -> MATLAB bicubic x scale -> upscaler (SRCNN) -> x peak, rounded;
  U and V bicubic. The bicubic baseline is the same bicubic Y with the same chroma, so the two differ only by
  SRCNN, and the SR planes equal `vsr.pipeline.video.upscale_planes` (what `vsr upscale` writes). Both go to BGR with
  the source's matrix and range (swscale), display rotation applied.
- Views (`vsr.live.preview.compose`, BGR uint8): "side" (bicubic | SRCNN, 2W x H), "split" (W x H: bicubic left of a movable
  divider, SRCNN right), "sr", "bicubic"; each part labelled; `zoom` > 1 enlarges (nearest neighbour) the
  region around `focus` in every part alike. The HUD (shown fps, SR ms per frame, latency, dropped frames) is
  drawn in the window only, never in snapshots or recordings. Latency runs from the capture of a live frame, or
  for a file from the start of its SR (a file has no capture moment; frames read ahead are not late), to display.
- Keys (`vsr.live.preview.ViewState.key`): q / Esc quit; space toggles between the comparison and SRCNN alone; s saves the view
  as a PNG in `snapshot_dir`; 1-4 pick side / split / SRCNN / bicubic; + / - zoom (mouse position is the
  centre); [ / ] or a mouse click/drag move the split divider; p pauses; h hides the HUD. Closing the window quits.
- Recording (`record`): what is shown (view, zoom, divider), converted to studio BT.601 yuv420p. Its frame size
  is fixed by the view at the start: when the window switches to a view of another size (side <-> the others),
  the recording keeps its last view of its own size. `record_sr_only` records the SR planes themselves (the
  source's pixel format and colour tags, as `vsr upscale` writes them). Both go through `VideoWriter` (the
  encoder code of `vsr upscale`) in an encode thread, into a hidden temporary file beside the target that is
  renamed on success and removed on any error or Ctrl-C; an existing target needs `overwrite`. Timestamps: a
  file's own (plus the loop offset), a live source's capture time in ms since the first frame. Video only.
- `frames`: stop after that many frames shown (processed, without a window); the end of a file ends the run.
- A window needs a display: on Linux, `DISPLAY` must name a reachable X server (checked before any window is
  made, since Qt aborts the process otherwise) and OpenCV must have a GUI backend; else `BackendError`
  suggesting `--no-window`. Import this module before anything that imports PyAV (see the import of cv2);
  the wrong order is detected and refused rather than left to hang. Every user error is a one-line `VsrError`.
- `run_webcam(options, upscaler, report)` returns a `WebcamSummary`; `report(event: dict)` gets "start",
  "progress" (about twice a second), "snapshot", "warning" and "done" events in the caller's thread. On the
  CPU, torch runs on all cores but one while it lasts: capture, display and encoding need one, and torch's
  worker threads stall (up to 100x slower) when a core they wait for is busy with those.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # errors are ours to report, in one line

# OpenCV before PyAV: both wheels bundle X libraries under the same names (libxcb-shm-*, ...); the first loaded wins,
# and Qt hangs in its first window when it gets PyAV's copies. `check_display` detects the wrong order.
import cv2  # noqa: E402, F401, I001
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vsr.live.capture import AVSource, CameraSource, bgr_to_planes, open_source  # noqa: E402
from vsr.errors import OutputError, UsageError, VsrError  # noqa: E402
from vsr.media.atomic import publish, remove, temp_path  # noqa: E402
from vsr.signals import check as check_stop  # noqa: E402
from vsr.pipeline.video import _check_target  # noqa: E402
from vsr.live.preview import VIEWS, check_display, view_size  # noqa: E402
from vsr.live.feed import END, Feed, Ordered, Result, YUpscaler  # noqa: E402
from vsr.live.display import Display, Stats  # noqa: E402
from vsr.media.writer import EncoderOptions, VideoWriter
from vsr.media.frames import Picture, VideoInfo, plain_info

Report = Callable[[dict], None]

RECORD_QUEUE = 8
PROGRESS_EVERY_S = 0.5


# ---------------------------------------------------------------- options and results


@dataclass(frozen=True)
class WebcamOptions:
    source: str = "0"
    scale: int = 2
    window: bool = True
    frames: int | None = None  # stop after this many frames shown; None: until the source ends or q
    view: str = "side"
    record: str | None = None
    record_sr_only: bool = False
    overwrite: bool = False
    encoder: EncoderOptions = EncoderOptions()
    live: bool | None = None  # None: cameras and URLs are live, files are not
    loop: bool = False
    snapshot_dir: str = "."
    camera_size: tuple[int, int] | None = None  # width, height asked of a camera


@dataclass(frozen=True)
class WebcamSummary:
    frames: int  # shown (or processed, without a window)
    dropped: int  # live sources: frames captured but never shown (pauses excluded)
    elapsed_s: float
    fps: float
    sr_ms: float  # mean SR time per frame (bicubic + SRCNN + conversion to BGR)
    latency_ms: float  # mean time from capture (a file: from the start of SR) to display
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    live: bool
    record: str | None
    recorded_frames: int
    snapshots: tuple[str, ...]
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- recording


class Recorder:
    """Encodes pictures through `VideoWriter` in its own thread, into a temporary file renamed on `finish`."""

    def __init__(self, dst: str, info: VideoInfo, width: int, height: int, enc: EncoderOptions, warn: Callable[[str], None]):
        self.dst, self.info = dst, info
        self.tmp = temp_path(Path(dst))
        self.frames = 0
        try:
            self._writer = VideoWriter(self.tmp, None, None, width, height, enc, warn, label=dst, info=info)
        except BaseException:
            remove(self.tmp)
            raise
        self._queue = Ordered(RECORD_QUEUE, threading.Event())
        self._error: BaseException | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="vsr-record", daemon=True)
        self._thread.start()

    def write(self, pts: int, planes: tuple[np.ndarray, ...] | None = None, bgr: np.ndarray | None = None) -> None:
        """Queue one frame: YUV planes in `info.pix_fmt`, or a BGR view (converted in the encode thread)."""
        self.raise_error()
        if not self._queue.put((pts, planes, bgr)):
            self.raise_error()
            raise VsrError(f"{self.dst}: the recording stopped")
        self.frames += 1

    def _run(self) -> None:
        stop = self._queue.stop
        try:
            while not stop.is_set():
                item = self._queue.get(0.1)
                if item is None:
                    continue
                if item is END:
                    self._writer.finish()
                    self._finished = True
                    return
                pts, planes, bgr = item
                if planes is None:
                    planes = bgr_to_planes(bgr)
                self._writer.write(Picture(planes=planes, pts=pts, time_base=self.info.time_base))
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            self._error = exc
            stop.set()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Encode what is queued, close the file and move it onto the target."""
        self._queue.close()
        self._thread.join()
        self.raise_error()
        if self._writer.frames_written != self.frames:
            written = self._writer.frames_written
            raise VsrError(f"internal error: queued {self.frames} frames for {self.dst}, encoded {written} (please report this)")
        try:
            publish(self.tmp, self.dst)
        except OSError as exc:
            raise OutputError(f"{self.dst}: cannot move the finished recording into place ({exc.strerror})") from None

    def abort(self) -> None:
        """Stop encoding and delete the temporary file; the target is left as it was."""
        self._queue.stop.set()
        self._thread.join(10.0)
        if not self._finished:
            self._writer.abort()
        remove(self.tmp)


class _Recording:
    """What one session records of each frame shown (module contract): the SR planes, or the view shown, at the size
    of the view chosen at the start."""

    def __init__(self, opts: WebcamOptions, info: VideoInfo, out_size: tuple[int, int], part_size: tuple[int, int]):
        self.opts, self.info, self.out_size = opts, info, out_size
        self.record_view = opts.view
        self.record_size = view_size(opts.view, *part_size)
        self.recorder: Recorder | None = None

    def start(self, warn: Callable[[str], None]) -> None:
        opts = self.opts
        if opts.record:
            if opts.record_sr_only:
                info, (w, h) = self.info, self.out_size
            else:
                info, (w, h) = plain_info(*self.record_size, self.info.rate, self.info.time_base), self.record_size
            self.recorder = Recorder(opts.record, info, w, h, opts.encoder, warn)

    def write(self, result: Result, display: Display) -> None:
        if self.recorder is None:
            return
        if self.opts.record_sr_only:
            self.recorder.write(result.frame.pts, planes=result.sr_planes)
        else:
            state = display.state
            if view_size(state.view, 1, 1) == view_size(self.record_view, 1, 1):
                self.record_view = state.view
            shown = display.current_view
            view = shown if self.record_view == state.view and shown is not None else None
            self.recorder.write(result.frame.pts, bgr=view if view is not None else display.view(result, self.record_view))


# ---------------------------------------------------------------- the loop


class _Session(Feed):
    """One `run_webcam` call: its input threads (`Feed`, inherited), what it shows (`Display`) and what it records
    (`_Recording`), driven from the main thread."""

    def __init__(self, opts: WebcamOptions, source, upscaler: YUpscaler, report: Report, warnings: _Warnings):
        super().__init__(source, upscaler, opts.scale)
        self.opts, self.report, self.warnings = opts, report, warnings
        self.display = Display(self, opts.view, opts.snapshot_dir, report)
        self.recording = _Recording(opts, self.info, (self.out_w, self.out_h), self.display.display_part_size())

    @property
    def recorder(self) -> Recorder | None:
        return self.recording.recorder

    @property
    def stats(self) -> Stats:
        return self.display.stats

    @property
    def snapshots(self) -> list[str]:
        return self.display.snapshots

    def raise_error(self) -> None:
        super().raise_error()
        if self.recorder is not None:
            self.recorder.raise_error()

    def start(self) -> None:
        self.recording.start(self.warnings.add)
        self.display.recording = self.recorder is not None
        if self.opts.window:
            self.display.open()
        super().start()

    def run(self) -> None:
        frames_max = self.opts.frames
        display, state = self.display, self.display.state
        pending: Result | None = None
        last_report = time.perf_counter()
        drawn = None
        while True:
            check_stop()  # a stop signal swallowed by OpenCV's mouse callback (vsr.signals)
            self.raise_error()
            self.warnings.flush()
            if display.preview is not None:
                display.serve_keys(20 if state.paused else 1)
                if display.quit or display.preview.closed():
                    return
                self._set_paused(state.paused)
                if display.current is not None and state.snapshot() != drawn:
                    display.draw(display.current)
                drawn = state.snapshot()
                if state.paused:
                    continue
            if pending is None:
                item = self.results.get(0.005 if display.preview is not None else 0.1)
                if item is None:
                    continue
                if item is END:
                    return
                pending = item
            if display.preview is not None and not self.live:
                wait_s = self._pace(pending.frame)
                if wait_s > 0.002:
                    display.serve_keys(max(1, int(min(wait_s, 0.01) * 1000)))
                    continue
            self._present(pending)
            drawn = state.snapshot()
            pending = None
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self.report({"event": "progress", **self.figures()})
            if frames_max is not None and self.stats.frames >= frames_max:
                return

    def _present(self, result: Result) -> None:
        self.display.present(result)
        self.recording.write(result, self.display)

    def figures(self) -> dict:
        st = self.stats
        return {
            "frames": st.frames,
            "dropped": self.dropped,
            "fps": st.fps(),
            "sr_ms": st.mean_ms(st.sr_s),
            "latency_ms": st.mean_ms(st.latency_s),
        }

    def close(self) -> None:
        """Stop the threads (each closes what it opened) and the window; the recorder is the caller's."""
        super().close()
        self.display.close()


def run_webcam(
    opts: WebcamOptions, upscaler: YUpscaler, report: Report | None = None, source: CameraSource | AVSource | None = None
) -> WebcamSummary:
    """Run the preview loop (see the module contract) until q, the end of the source or `opts.frames`.

    `source`: an already opened source to use instead of `opts.source` (e.g. a `CameraSource` on a given
    `cv2.VideoCapture`); it is closed when the run ends.
    """
    report = report or (lambda event: None)
    warnings = _Warnings(report)
    try:
        _check_options(opts)
        if opts.window:
            check_display()
        if opts.record:
            _check_target(opts.source, opts.record, opts.overwrite)
    except BaseException:
        if source is not None:
            source.close()
        raise
    if source is None:
        source = open_source(opts.source, opts.live, opts.loop, opts.camera_size, warnings.add)
    threads = torch.get_num_threads()
    if torch.device(getattr(upscaler, "device", "cpu")).type == "cpu":
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 2) - 1)))
    try:
        return _run(opts, source, upscaler, report, warnings)
    finally:
        torch.set_num_threads(threads)


class _Warnings:
    """Warnings from any thread, handed to `report` in the caller's thread by `flush`."""

    def __init__(self, report: Report):
        self.report = report
        self.messages: list[str] = []
        self._sent = 0
        self._lock = threading.Lock()

    def add(self, message: str) -> None:
        with self._lock:
            self.messages.append(message)

    def flush(self) -> None:
        with self._lock:
            new, self._sent = self.messages[self._sent :], len(self.messages)
        for message in new:
            self.report({"event": "warning", "message": message})


def _run(opts: WebcamOptions, source, upscaler: YUpscaler, report: Report, warnings: _Warnings) -> WebcamSummary:
    session = None
    try:
        session = _Session(opts, source, upscaler, report, warnings)
        session.start()
    except BaseException:
        if session is not None:
            session.close()
            if session.recorder is not None:
                session.recorder.abort()
        source.close()
        raise
    t0 = time.perf_counter()
    info = session.info
    warnings.flush()
    report(
        {
            "event": "start",
            "source": source.description,
            "live": session.live,
            "in_size": (info.width, info.height),
            "out_size": (session.out_w, session.out_h),
            "model": session.sr_label,
            "device": str(session.device),
            "record": opts.record,
        }
    )
    try:
        session.run()
        session.raise_error()
        session.close()
        if session.recorder is not None:
            session.recorder.finish()
    except BaseException:
        session.close()
        if session.recorder is not None:
            session.recorder.abort()
        raise
    finally:
        warnings.flush()
    elapsed_s = time.perf_counter() - t0
    st = session.stats
    summary = WebcamSummary(
        frames=st.frames,
        dropped=session.dropped,
        elapsed_s=elapsed_s,
        fps=st.frames / elapsed_s if elapsed_s > 0 else 0.0,
        sr_ms=1000 * st.sr_total_s / st.frames if st.frames else 0.0,
        latency_ms=1000 * st.latency_total_s / st.frames if st.frames else 0.0,
        in_size=(info.width, info.height),
        out_size=(session.out_w, session.out_h),
        live=session.live,
        record=opts.record,
        recorded_frames=session.recorder.frames if session.recorder is not None else 0,
        snapshots=tuple(session.snapshots),
        warnings=tuple(warnings.messages),
    )
    report({"event": "done", **dataclasses.asdict(summary)})
    return summary


def _check_options(opts: WebcamOptions) -> None:
    if opts.scale < 2 or opts.scale > 8:
        raise UsageError(f"--scale must be an integer from 2 to 8, got {opts.scale}")
    if opts.frames is not None and opts.frames < 1:
        raise UsageError(f"--frames must be 1 or more, got {opts.frames}")
    if opts.view not in VIEWS:
        raise UsageError(f"unknown --view {opts.view!r}; use one of {', '.join(VIEWS)}")
    if opts.record == "-":
        raise UsageError("--record needs a file name (e.g. out.mkv); it cannot write to stdout")
    if opts.record_sr_only and not opts.record:
        raise UsageError("--record-sr-only needs --record OUT")
    if opts.window and not Path(opts.snapshot_dir).is_dir():
        raise UsageError(f"--snapshot-dir {opts.snapshot_dir}: no such folder; create it first")
    if opts.camera_size is not None and min(opts.camera_size) < 1:
        raise UsageError(f"--camera-size must be WIDTHxHEIGHT, got {opts.camera_size}")
