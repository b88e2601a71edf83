"""What the webcam session shows: the view of each SR result, the HUD, the window, keys and snapshots.

Contract (see `vsr.live.webcam` for the whole preview): `Display.present` makes a result the current one, draws it in
the window (when `open`) with the HUD and counts it in `stats`; `serve_keys` applies keys; `s` saves the view as it is
now, without the HUD, as a PNG in `snapshot_dir` and reports a "snapshot" event. Main thread only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vsr.live.feed import Feed, Result
from vsr.live.preview import Preview, ViewState, compose, draw_hud, view_size
from vsr.media.imageio import write_image


@dataclass
class Stats:
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


class Display:
    """View state, window, HUD, snapshots and counters of the frames shown by one session."""

    def __init__(self, feed: Feed, view: str, snapshot_dir: str, report: Callable[[dict], None]):
        self.feed, self.snapshot_dir, self.report = feed, snapshot_dir, report
        self.state = ViewState()
        self.state.set_view(view)
        self.stats = Stats()
        self.snapshots: list[str] = []
        self.preview: Preview | None = None
        self.current: Result | None = None
        self.current_view: np.ndarray | None = None
        self.recording = False  # "REC" in the HUD
        self.quit = False

    def display_part_size(self) -> tuple[int, int]:
        """(width, height) of one displayed part (after display rotation)."""
        f = self.feed
        if f.info.rotation % 180 == 90:
            return f.out_h, f.out_w
        return f.out_w, f.out_h

    def open(self) -> None:
        """The window, at the size of the view chosen at the start."""
        part_w, part_h = self.display_part_size()
        self.preview = Preview(self.state, view_size(self.state.view, part_w, part_h))
        self.preview.part_width = part_w

    def serve_keys(self, wait_ms: int) -> None:
        """Wait up to `wait_ms` for a key (the window repaints meanwhile) and apply it."""
        code = self.preview.poll(wait_ms)
        if code == -1:
            return
        action = self.state.key(code)
        if action == "snapshot":
            self._snapshot()
        elif action == "quit":
            self.quit = True

    def view(self, result: Result, view: str) -> np.ndarray:
        s = self.state
        return compose(view, result.bicubic, result.sr, s.split, s.zoom, s.focus, self.feed.sr_label)

    def draw(self, result: Result) -> None:
        view = self.view(result, self.state.view)
        self.current_view = view
        if self.preview is not None:
            self.preview.part_width = result.sr.shape[1]
            self.preview.show(draw_hud(view, self._hud_lines()) if self.state.hud else view)

    def present(self, result: Result) -> None:
        self.current = result
        if self.preview is not None:
            self.draw(result)
        shown_s = time.perf_counter()
        self.stats.add(shown_s, result.sr_s, shown_s - result.frame.captured_s)

    def _hud_lines(self) -> list[str]:
        s, st, feed = self.state, self.stats, self.feed
        w, h = feed.info.width, feed.info.height
        flags = "".join(
            [f"  zoom {s.zoom}x" if s.zoom > 1 else "", "  PAUSED" if s.paused else "", "  REC" if self.recording else ""]
        )
        dropped = f"  dropped {feed.dropped}" if feed.live else ""
        return [
            f"{st.fps():.1f} fps  SR {st.mean_ms(st.sr_s):.0f} ms  latency {st.mean_ms(st.latency_s):.0f} ms{dropped}",
            f"{feed.sr_label} x{feed.scale} {feed.device}  {w}x{h} -> {feed.out_w}x{feed.out_h}  {s.view}{flags}",
            "q quit  space compare  s snapshot  1-4 view  +/- zoom  [ ] split  p pause  h hide",
        ]

    def _snapshot(self) -> None:
        """Save the view as it is now (current keys applied, no HUD) as a PNG in the snapshot folder."""
        if self.current is None:
            return
        view = self.view(self.current, self.state.view)
        folder = Path(self.snapshot_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = len(self.snapshots) + 1
        while (path := folder / f"vsr-snapshot-{stamp}-{n:03d}.png").exists():
            n += 1
        write_image(path, cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
        self.snapshots.append(str(path))
        self.report({"event": "snapshot", "path": str(path)})

    def close(self) -> None:
        """Close the window."""
        if self.preview is not None:
            self.preview.close()
