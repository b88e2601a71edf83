"""Live super-resolution preview (`vsr webcam`): a camera, stream or file, bicubic beside SRCNN, in a window.

The pieces live beside it: sources in `vsr.live.capture`, views, HUD, keys and the window in `vsr.live.preview`; this module
runs the session (threads, SR, recording, snapshots). Contract of the whole:
- Sources (`open_source`): a number or /dev/videoN is a camera, read with OpenCV (V4L2 on Linux) as BGR and
  converted once to studio-range BT.601 yuv420p; a URL (rtsp://, http://, ...) or a file is read with PyAV
  (`vsr.media.reader.VideoReader`), planes as the decoder gives them (8 or 10 bits, any chroma layout).
- Cameras and URLs are live: a capture thread reads as fast as the source gives frames and keeps only the newest;
  a frame replaced before SR took it (or an SR result replaced before it was shown) is dropped and counted
  (latency first). A file is not live: every frame, in order, through bounded queues (nothing dropped); with a
  window it is shown no faster than its timestamps. `live=True` plays a file like a camera (at its frame rate,
  newest frame only), `loop=True` restarts a file at its end.
- Per frame (SR thread, `upscale_pair`): Y / peak -> MATLAB bicubic x scale -> upscaler (SRCNN) -> x peak, rounded;
  U and V bicubic. The bicubic baseline is the same bicubic Y with the same chroma, so the two differ only by
  SRCNN, and the SR planes equal `vsr.pipeline.video.upscale_planes` (what `vsr upscale` writes). Both go to BGR with
  the source's matrix and range (swscale), display rotation applied.
- Views (`compose`, BGR uint8): "side" (bicubic | SRCNN, 2W x H), "split" (W x H: bicubic left of a movable
  divider, SRCNN right), "sr", "bicubic"; each part labelled; `zoom` > 1 enlarges (nearest neighbour) the
  region around `focus` in every part alike. The HUD (shown fps, SR ms per frame, latency, dropped frames) is
  drawn in the window only, never in snapshots or recordings. Latency runs from the capture of a live frame, or
  for a file from the start of its SR (a file has no capture moment; frames read ahead are not late), to display.
- Keys (`ViewState.key`): q / Esc quit; space toggles between the comparison and SRCNN alone; s saves the view
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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # errors are ours to report, in one line

# OpenCV before PyAV: both wheels bundle X libraries under the same names (libxcb-shm-*, ...); the first loaded wins,
# and Qt hangs in its first window when it gets PyAV's copies. `check_display` detects the wrong order.
import cv2  # noqa: E402, I001
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vsr.live.capture import AVSource, CameraSource, Frame, bgr_to_planes, open_source  # noqa: E402
from vsr.errors import OutputError, UsageError, VsrError  # noqa: E402
from vsr.media.imageio import write_image  # noqa: E402
from vsr.media.atomic import publish, remove, temp_path  # noqa: E402
from vsr.signals import check as check_stop  # noqa: E402
from vsr.pipeline.video import _check_target  # noqa: E402
from vsr.live.preview import VIEWS, Preview, ViewState, check_display, compose, draw_hud, planes_to_bgr, view_size  # noqa: E402
from vsr.media.resize import imresize, output_length  # noqa: E402
from vsr.media.writer import EncoderOptions, VideoWriter
from vsr.media.frames import Picture, VideoInfo, plain_info, plane_shapes

YUpscaler = Callable[[torch.Tensor], torch.Tensor]
Report = Callable[[dict], None]

RECORD_QUEUE = 8
FILE_QUEUE = 4
PROGRESS_EVERY_S = 0.5
_END = object()


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


# ---------------------------------------------------------------- per-frame work


def upscale_pair(
    planes: tuple[np.ndarray, ...],
    scale: int,
    upscaler: YUpscaler,
    peak: int,
    shapes: tuple[tuple[int, int], ...],
    device: torch.device | str = "cpu",
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(bicubic planes, SRCNN planes) of one frame's (Y, U, V), sharing the bicubic Y and chroma (module contract)."""
    dtype = planes[0].dtype
    rows, cols = shapes[0]
    y = torch.from_numpy(planes[0].astype(np.float32)).to(device) / peak
    y = imresize(y[None], scale)
    sr = upscaler(y[None])[0]

    def to_plane(t: torch.Tensor) -> np.ndarray:
        t = (t * peak).round_().clamp_(0, peak)[0, :rows, :cols]
        return np.ascontiguousarray(t.cpu().numpy().astype(dtype))

    ch, cw = shapes[1]
    chroma = torch.from_numpy(np.stack(planes[1:]).astype(np.float32)).to(device)
    chroma = imresize(chroma, scale)[:, :ch, :cw].round_().clamp_(0, peak).cpu().numpy().astype(dtype)
    uv = tuple(np.ascontiguousarray(c) for c in chroma)
    return (to_plane(y), *uv), (to_plane(sr), *uv)


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
        self._queue = _Ordered(RECORD_QUEUE, threading.Event())
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
                if item is _END:
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


# ---------------------------------------------------------------- hand-over between threads


class _Newest:
    """A one-item mailbox: `put` replaces an item not yet taken, which counts as dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: object) -> bool:
        with self._cond:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify_all()
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout_s: float) -> object:
        """The newest item, `_END` once closed and empty, or None after `timeout_s`."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout_s)
            if self._full:
                item, self._item, self._full = self._item, None, False
                return item
            return _END if self._closed else None


class _Ordered:
    """A bounded FIFO: `put` waits for room (back-pressure) until `stop`; nothing is dropped."""

    dropped = 0

    def __init__(self, size: int, stop: threading.Event):
        import queue

        self._queue: queue.Queue = queue.Queue(size)
        self._full, self._empty = queue.Full, queue.Empty
        self.stop = stop

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except self._full:
                continue
        return False

    def close(self) -> None:
        self.put(_END)

    def get(self, timeout_s: float) -> object:
        try:
            return self._queue.get(timeout=timeout_s)
        except self._empty:
            return None


@dataclass
class _Result:
    frame: Frame
    bicubic: np.ndarray  # BGR
    sr: np.ndarray  # BGR
    sr_planes: tuple[np.ndarray, ...]
    sr_s: float


# ---------------------------------------------------------------- the loop


@dataclass
class _Stats:
    shown_s: deque = field(default_factory=lambda: deque(maxlen=60))
    sr_s: deque = field(default_factory=lambda: deque(maxlen=30))
    latency_s: deque = field(default_factory=lambda: deque(maxlen=30))
    sr_total_s: float = 0.0
    latency_total_s: float = 0.0
    frames: int = 0

    def add(self, shown_s: float, sr_s: float, latency_s: float) -> None:
        self.shown_s.append(shown_s)
        self.sr_s.append(sr_s)
        self.latency_s.append(latency_s)
        self.sr_total_s += sr_s
        self.latency_total_s += latency_s
        self.frames += 1

    def fps(self) -> float:
        """Frames shown per second over the last 2 s (at least the last two frames)."""
        times = list(self.shown_s)
        recent = [t for t in times if t >= times[-1] - 2.0] if times else []
        if len(recent) < 2:
            recent = times[-2:]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    @staticmethod
    def mean_ms(values: deque) -> float:
        return 1000 * sum(values) / len(values) if values else 0.0


class _Session:
    """Threads, window, recorder and counters of one `run_webcam` call."""

    def __init__(self, opts: WebcamOptions, source, upscaler: YUpscaler, report: Report, warnings: _Warnings):
        self.opts, self.source, self.upscaler, self.report = opts, source, upscaler, report
        self.warnings = warnings
        self.info: VideoInfo = source.info
        self.live = source.live
        self.scale = opts.scale
        self.out_w, self.out_h = output_length(self.info.width, self.scale), output_length(self.info.height, self.scale)
        self.shapes = plane_shapes(self.info.pix_fmt, self.out_w, self.out_h)
        self.device = torch.device(getattr(upscaler, "device", "cpu"))
        self._gpu = None  # vsr.engine.gpu.GpuFrames, made by the SR thread on its first CUDA frame
        config = getattr(upscaler, "config", None)
        self.sr_label = f"SRCNN {config.arch}" if config is not None else "SRCNN"
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.captured = _Newest() if self.live else _Ordered(FILE_QUEUE, self.stop)
        self.results = _Newest() if self.live else _Ordered(2, self.stop)
        self.errors: list[BaseException] = []
        self.state = ViewState()
        self.state.set_view(opts.view)
        self.stats = _Stats()
        self.snapshots: list[str] = []
        self.preview: Preview | None = None
        self.recorder: Recorder | None = None
        self.current: _Result | None = None
        self.current_view: np.ndarray | None = None
        self.dropped_paused = 0
        self._paused_at: int | None = None
        self._pace_offset_s: float | None = None
        self.quit = False
        part_w, part_h = self.display_part_size()
        self.record_view = opts.view
        self.record_size = view_size(opts.view, part_w, part_h)
        self.threads = [
            threading.Thread(target=self._guard, args=(self._capture,), name="vsr-capture", daemon=True),
            threading.Thread(target=self._guard, args=(self._super_resolve,), name="vsr-sr", daemon=True),
        ]

    def display_part_size(self) -> tuple[int, int]:
        """(width, height) of one displayed part (after display rotation)."""
        if self.info.rotation % 180 == 90:
            return self.out_h, self.out_w
        return self.out_w, self.out_h

    # ---- worker threads

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            self.errors.append(exc)
            self.stop.set()

    def _capture(self) -> None:
        try:
            for frame in self.source.frames(self.stop):
                if self.stop.is_set() or not self.captured.put(frame):
                    return
            self.captured.close()
        finally:
            self.source.close()

    def _super_resolve(self) -> None:
        while not self.stop.is_set():
            if self.paused.is_set():
                self.stop.wait(0.02)
                continue
            frame = self.captured.get(0.1)
            if frame is None:
                continue
            if frame is _END:
                self.results.close()
                return
            t0 = time.perf_counter()
            if not self.live:
                frame = dataclasses.replace(frame, captured_s=t0)
            info = self.info
            if self.device.type == "cuda":  # see _upscale_pair_gpu
                bic_planes, sr_planes = self._upscale_pair_gpu(frame.planes)
            else:
                bic_planes, sr_planes = upscale_pair(frame.planes, self.scale, self.upscaler, info.peak, self.shapes, self.device)
            bicubic, sr = planes_to_bgr(bic_planes, info), planes_to_bgr(sr_planes, info)
            result = _Result(frame, bicubic, sr, sr_planes, time.perf_counter() - t0)
            if not self.results.put(result):
                return

    def _upscale_pair_gpu(self, planes: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """`upscale_pair` on CUDA through `vsr.engine.gpu.GpuFrames` (pinned slots, one wait per frame instead of three
        blocking `.cpu()` copies from pageable memory); one frame in flight, as latency comes first here."""
        if self._gpu is None:
            from vsr.engine.gpu import GpuFrames

            torch.cuda.set_device(self.device)  # per thread, as in vsr.pipeline.video
            in_shapes = tuple(p.shape for p in planes)
            dtype = planes[0].dtype
            self._gpu = GpuFrames(self.upscaler, self.scale, self.info.peak, in_shapes, self.shapes, dtype, with_bicubic=True)
        try:
            y_sr, u, v, y_bicubic = self._gpu.result(self._gpu.submit(planes))
        except RuntimeError as exc:
            from vsr.engine.gpu import gpu_failure

            self._gpu.drain()
            raise gpu_failure(exc) from exc
        return (y_bicubic, u, v), (y_sr, u, v)

    def raise_error(self) -> None:
        if self.errors:
            raise self.errors[0]
        if self.recorder is not None:
            self.recorder.raise_error()

    # ---- main thread

    @property
    def dropped(self) -> int:
        return self.captured.dropped + self.results.dropped - self.dropped_paused

    def start(self) -> None:
        opts = self.opts
        if opts.record:
            if opts.record_sr_only:
                info, (w, h) = self.info, (self.out_w, self.out_h)
            else:
                info, (w, h) = plain_info(*self.record_size, self.info.rate, self.info.time_base), self.record_size
            self.recorder = Recorder(opts.record, info, w, h, opts.encoder, self.warnings.add)
        if opts.window:
            self.preview = Preview(self.state, self.record_size)
            self.preview.part_width = self.display_part_size()[0]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        frames_max = self.opts.frames
        pending: _Result | None = None
        last_report = time.perf_counter()
        drawn = None
        while True:
            check_stop()  # a stop signal swallowed by OpenCV's mouse callback (vsr.signals)
            self.raise_error()
            self.warnings.flush()
            if self.preview is not None:
                self._serve_keys(20 if self.state.paused else 1)
                if self.quit or self.preview.closed():
                    return
                self._set_paused(self.state.paused)
                if self.current is not None and self.state.snapshot() != drawn:
                    self._draw(self.current)
                drawn = self.state.snapshot()
                if self.state.paused:
                    continue
            if pending is None:
                item = self.results.get(0.005 if self.preview is not None else 0.1)
                if item is None:
                    continue
                if item is _END:
                    return
                pending = item
            if self.preview is not None and not self.live:
                wait_s = self._pace(pending.frame)
                if wait_s > 0.002:
                    self._serve_keys(max(1, int(min(wait_s, 0.01) * 1000)))
                    continue
            self._present(pending)
            drawn = self.state.snapshot()
            pending = None
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self.report({"event": "progress", **self.figures()})
            if frames_max is not None and self.stats.frames >= frames_max:
                return

    def _serve_keys(self, wait_ms: int) -> None:
        """Wait up to `wait_ms` for a key (the window repaints meanwhile) and apply it."""
        code = self.preview.poll(wait_ms)
        if code == -1:
            return
        action = self.state.key(code)
        if action == "snapshot":
            self._snapshot()
        elif action == "quit":
            self.quit = True

    def _set_paused(self, paused: bool) -> None:
        if paused and not self.paused.is_set():
            self.paused.set()
            self._paused_at = self.captured.dropped + self.results.dropped
        elif not paused and self.paused.is_set():
            self.dropped_paused += self.captured.dropped + self.results.dropped - (self._paused_at or 0)
            self._pace_offset_s = None
            self.paused.clear()

    def _pace(self, frame: Frame) -> float:
        """Seconds to wait before showing a file's frame at its own time (never faster than real time)."""
        media_s = float(frame.pts * self.info.time_base)
        now = time.perf_counter()
        if self._pace_offset_s is None or now - (media_s + self._pace_offset_s) > 0.1:  # first frame, or late: re-anchor
            self._pace_offset_s = now - media_s
        return media_s + self._pace_offset_s - now

    def _view(self, result: _Result, view: str) -> np.ndarray:
        s = self.state
        return compose(view, result.bicubic, result.sr, s.split, s.zoom, s.focus, self.sr_label)

    def _draw(self, result: _Result) -> None:
        view = self._view(result, self.state.view)
        self.current_view = view
        if self.preview is not None:
            self.preview.part_width = result.sr.shape[1]
            self.preview.show(draw_hud(view, self._hud_lines()) if self.state.hud else view)

    def _present(self, result: _Result) -> None:
        self.current = result
        if self.preview is not None:
            self._draw(result)
        shown_s = time.perf_counter()
        self.stats.add(shown_s, result.sr_s, shown_s - result.frame.captured_s)
        if self.recorder is not None:
            if self.opts.record_sr_only:
                self.recorder.write(result.frame.pts, planes=result.sr_planes)
            else:
                if view_size(self.state.view, 1, 1) == view_size(self.record_view, 1, 1):
                    self.record_view = self.state.view
                view = self.current_view if self.record_view == self.state.view and self.current_view is not None else None
                self.recorder.write(result.frame.pts, bgr=view if view is not None else self._view(result, self.record_view))

    def _hud_lines(self) -> list[str]:
        s, st = self.state, self.stats
        w, h = self.info.width, self.info.height
        flags = "".join(
            [f"  zoom {s.zoom}x" if s.zoom > 1 else "", "  PAUSED" if s.paused else "", "  REC" if self.recorder else ""]
        )
        dropped = f"  dropped {self.dropped}" if self.live else ""
        return [
            f"{st.fps():.1f} fps  SR {st.mean_ms(st.sr_s):.0f} ms  latency {st.mean_ms(st.latency_s):.0f} ms{dropped}",
            f"{self.sr_label} x{self.scale} {self.device}  {w}x{h} -> {self.out_w}x{self.out_h}  {s.view}{flags}",
            "q quit  space compare  s snapshot  1-4 view  +/- zoom  [ ] split  p pause  h hide",
        ]

    def _snapshot(self) -> None:
        """Save the view as it is now (current keys applied, no HUD) as a PNG in the snapshot folder."""
        if self.current is None:
            return
        view = self._view(self.current, self.state.view)
        folder = Path(self.opts.snapshot_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = len(self.snapshots) + 1
        while (path := folder / f"vsr-snapshot-{stamp}-{n:03d}.png").exists():
            n += 1
        write_image(path, cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
        self.snapshots.append(str(path))
        self.report({"event": "snapshot", "path": str(path)})

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
        self.stop.set()
        for t in self.threads:
            if t.ident is not None:
                t.join(10.0)
        if self.preview is not None:
            self.preview.close()


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
