"""The webcam preview's pictures and window: BGR conversion, views, HUD, keys, and the OpenCV window.

Contract (see `vsr.live.webcam` for the whole preview):
- `planes_to_bgr(planes, info)`: BGR uint8 of YUV planes with the source's matrix and range, display rotation applied.
- Views (`compose`, BGR uint8): "side" (bicubic | SRCNN, 2W x H), "split" (W x H: bicubic left of a movable
  divider, SRCNN right), "sr", "bicubic"; each part labelled; `zoom` > 1 enlarges (nearest neighbour) the region
  around `focus` in every part alike. `draw_hud` adds the status lines (window only).
- Keys (`ViewState.key`): q / Esc quit; space toggles between the comparison and SRCNN alone; s snapshot; 1-4 pick
  side / split / SRCNN / bicubic; + / - zoom; [ / ] or the mouse move the split divider; p pause; h hide the HUD.
- `check_display()` raises BackendError (suggesting --no-window) unless a window can be opened: an OpenCV GUI
  backend, and on Linux a reachable X server in DISPLAY (checked first: Qt aborts the process otherwise), and
  OpenCV's X libraries loaded before PyAV's. `Preview` is the window itself (main thread only).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # errors are ours to report, in one line

# OpenCV before PyAV: both wheels bundle X libraries under the same names (libxcb-shm-*, ...); the first loaded wins,
# and Qt hangs in its first window when it gets PyAV's copies. `check_display` detects the wrong order.
import cv2  # noqa: E402, I001
import numpy as np  # noqa: E402

from vsr.errors import BackendError, UsageError  # noqa: E402
from vsr.media.frames import VideoInfo, make_frame  # noqa: E402

VIEWS = ("side", "split", "sr", "bicubic")
ZOOMS = (1, 2, 4, 8)
WINDOW_NAME = "vsr webcam"
MAX_WINDOW = (1920, 1080)  # the window starts no larger than this (the image is scaled to fit, ratio kept)


def planes_to_bgr(planes: tuple[np.ndarray, ...], info: VideoInfo) -> np.ndarray:
    """BGR uint8 H x W x 3 of YUV planes in `info.pix_fmt`, with its matrix and range, display rotation applied."""
    frame = make_frame(planes, info.pix_fmt)
    frame.colorspace = info.colorspace
    frame.color_range = info.color_range
    bgr = frame.reformat(format="bgr24").to_ndarray()
    turn = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    code = turn.get(info.rotation % 360)  # the display matrix turns counter-clockwise by `rotation` degrees
    return cv2.rotate(bgr, code) if code is not None else bgr


# ---------------------------------------------------------------- views


@dataclass
class ViewState:
    """What the window shows; `key` applies one key press."""

    view: str = "side"
    comparison: str = "side"  # the comparison view space returns to
    split: float = 0.5  # divider position in the split view, 0..1 of the width
    zoom: int = 1
    focus: tuple[float, float] = (0.5, 0.5)  # zoom centre, 0..1 of a part's width and height
    hud: bool = True
    paused: bool = False

    def set_view(self, view: str) -> None:
        self.view = view
        if view in ("side", "split"):
            self.comparison = view

    def key(self, code: int) -> str | None:
        """Apply a key (cv2.waitKey code); returns "quit", "snapshot" or None."""
        ch = chr(code) if 0 <= code < 256 else ""
        if ch in ("q", "Q", "\x1b"):
            return "quit"
        if ch in ("s", "S"):
            return "snapshot"
        if ch == " ":
            self.set_view(self.comparison if self.view not in ("side", "split") else "sr")
        elif ch and ch in "1234":
            self.set_view(VIEWS[int(ch) - 1])
        elif ch in ("+", "="):
            self.zoom = ZOOMS[min(ZOOMS.index(self.zoom) + 1, len(ZOOMS) - 1)]
        elif ch in ("-", "_"):
            self.zoom = ZOOMS[max(ZOOMS.index(self.zoom) - 1, 0)]
        elif ch == "[":
            self.split = max(0.0, round(self.split - 0.1, 2))
        elif ch == "]":
            self.split = min(1.0, round(self.split + 0.1, 2))
        elif ch in ("p", "P"):
            self.paused = not self.paused
        elif ch in ("h", "H"):
            self.hud = not self.hud
        return None

    def snapshot(self) -> tuple:
        return (self.view, self.split, self.zoom, self.focus, self.hud, self.paused)


def view_size(view: str, width: int, height: int) -> tuple[int, int]:
    """(width, height) of a view of parts width x height."""
    return (2 * width, height) if view == "side" else (width, height)


def _zoomed(img: np.ndarray, zoom: int, focus: tuple[float, float]) -> np.ndarray:
    if zoom == 1:
        return img
    h, w = img.shape[:2]
    cw, ch = max(1, round(w / zoom)), max(1, round(h / zoom))
    left = min(max(0, round(focus[0] * w - cw / 2)), w - cw)
    top = min(max(0, round(focus[1] * h - ch / 2)), h - ch)
    return cv2.resize(img[top : top + ch, left : left + cw], (w, h), interpolation=cv2.INTER_NEAREST)


def _label(img: np.ndarray, text: str, x: int, right: bool = False) -> None:
    h, w = img.shape[:2]
    size = max(0.4, min(1.0, h / 600))
    thick = 1 if size < 0.7 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thick)
    x = x - tw - 8 if right else x + 8
    y = h - 8 - base
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), thick, cv2.LINE_AA)


def compose(
    view: str,
    bicubic: np.ndarray,
    sr: np.ndarray,
    split: float = 0.5,
    zoom: int = 1,
    focus: tuple[float, float] = (0.5, 0.5),
    sr_label: str = "SRCNN",
) -> np.ndarray:
    """The BGR image of a view (see the module contract), labelled, without the HUD."""
    if view not in VIEWS:
        raise UsageError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    bic, up = _zoomed(bicubic, zoom, focus), _zoomed(sr, zoom, focus)
    h, w = up.shape[:2]
    zoom_text = f", zoom {zoom}x" if zoom > 1 else ""
    if view == "side":
        out = np.concatenate([bic, up], axis=1)
        _label(out, f"bicubic{zoom_text}", 0)
        _label(out, f"{sr_label}{zoom_text}", w)
        return out
    if view == "split":
        x = round(split * w)
        out = up.copy()
        out[:, :x] = bic[:, :x]
        cv2.line(out, (min(x, w - 1), 0), (min(x, w - 1), h - 1), (255, 255, 255), 1)
        _label(out, f"bicubic{zoom_text}", 0)
        _label(out, f"{sr_label}{zoom_text}", w, right=True)
        return out
    out = (up if view == "sr" else bic).copy()
    _label(out, f"{sr_label if view == 'sr' else 'bicubic'}{zoom_text}", 0)
    return out


def draw_hud(img: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of `img` with `lines` on a translucent box at the top left."""
    out = img.copy()
    size = 0.5
    heights = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0] for t in lines]
    box_w = min(out.shape[1], max(w for w, _ in heights) + 16)
    box_h = min(out.shape[0], 20 * len(lines) + 10)
    region = out[:box_h, :box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken to 40 %
    for i, text in enumerate(lines):
        cv2.putText(out, text, (8, 20 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------- display


def check_display() -> None:
    """Raise BackendError (suggesting --no-window) unless a window can be opened here."""
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui is not None and gui.group(1).upper() == "NONE":
        raise BackendError(
            "this OpenCV build cannot open windows (opencv-python-headless?); install opencv-python, or pass --no-window"
        )
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) or os.environ.get("QT_QPA_PLATFORM"):
        return
    display = os.environ.get("DISPLAY", "")
    if not display:
        extra = " (Wayland needs XWayland for the preview window)" if os.environ.get("WAYLAND_DISPLAY") else ""
        raise BackendError(f"no display available: DISPLAY is not set{extra}; pass --no-window to run without a window")
    if not _x_server_reachable(display):
        raise BackendError(
            f"no display available: cannot connect to the X server {display!r}; pass --no-window to run without a window"
        )
    if _pyav_x_libraries_first():
        raise BackendError(
            "cannot open a window in this process: PyAV was loaded before OpenCV and Qt would use PyAV's X libraries "
            "(import vsr.live.webcam or cv2 before av); pass --no-window to run without a window"
        )


def _pyav_x_libraries_first() -> bool:
    """Whether PyAV's bundled libxcb-shm (same file name as OpenCV's) is the one loaded in this process."""
    try:
        with open("/proc/self/maps") as maps:
            return any("av.libs/libxcb-shm" in line for line in maps)
    except OSError:
        return False


def _x_server_reachable(display: str, timeout_s: float = 2.0) -> bool:
    """Whether an X server listens at `display` ([host]:n[.screen]), by opening its socket."""
    match = re.fullmatch(r"(?:(?P<host>[^:]*)/)?(?P<name>[^:]*):(?P<n>\d+)(?:\.\d+)?", display)
    if match is None:
        return os.path.exists(display)  # e.g. a launchd socket path
    host, n = match.group("name"), int(match.group("n"))
    if host in ("", "unix"):
        for address in (f"/tmp/.X11-unix/X{n}", f"\0/tmp/.X11-unix/X{n}"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout_s)
                try:
                    s.connect(address)
                    return True
                except OSError:
                    continue
        if host == "unix":
            return False
        host = "localhost"
    try:
        with socket.create_connection((host, 6000 + n), timeout=timeout_s):
            return True
    except OSError:
        return False


class Preview:
    """The OpenCV window: show images, read keys, follow the mouse (main thread only)."""

    def __init__(self, state: ViewState, size: tuple[int, int] | None = None):
        """Open the window, at `size` (width, height of the first view, fitted to the screen) when given, so that it
        does not appear at a default size and jump once the first frame arrives."""
        self.state = state
        self._shape: tuple[int, ...] | None = None
        self._drag = False
        if os.path.isdir("/usr/share/fonts"):  # Qt warns about its missing font folder; the window draws no text itself
            os.environ.setdefault("QT_QPA_FONTDIR", "/usr/share/fonts")
        try:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            cv2.setMouseCallback(WINDOW_NAME, self._mouse)
        except cv2.error as exc:
            raise BackendError(f"cannot open a window ({' '.join(str(exc).split())[:160]}); pass --no-window") from None
        if size is not None:
            self._resize(*size)
        self.part_width = 1  # width of one part of the view, for mouse positions

    @staticmethod
    def _resize(w: int, h: int) -> None:
        fit = min(1.0, MAX_WINDOW[0] / w, MAX_WINDOW[1] / h)
        cv2.resizeWindow(WINDOW_NAME, max(1, round(w * fit)), max(1, round(h * fit)))

    def show(self, img: np.ndarray) -> None:
        if img.shape != self._shape:
            self._resize(img.shape[1], img.shape[0])
            self._shape = img.shape
        cv2.imshow(WINDOW_NAME, img)

    def poll(self, wait_ms: int = 1) -> int:
        """The key pressed within `wait_ms` (ASCII code), or -1; also lets the window repaint."""
        code = cv2.waitKey(max(1, wait_ms))
        return -1 if code == -1 else code & 0xFF

    def closed(self) -> bool:
        if self._shape is None:
            return False
        try:
            return cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def _mouse(self, event: int, x: int, y: int, flags: int, param: object) -> None:
        if self._shape is None:
            return
        h = self._shape[0]
        pw = self.part_width
        px = x % pw if self.state.view == "side" else x
        if event == cv2.EVENT_LBUTTONDOWN:
            self._drag = True
        elif event == cv2.EVENT_LBUTTONUP:
            self._drag = False
        if self.state.view == "split" and (event == cv2.EVENT_LBUTTONDOWN or (self._drag and event == cv2.EVENT_MOUSEMOVE)):
            self.state.split = min(1.0, max(0.0, x / pw))
        if event == cv2.EVENT_MOUSEMOVE and self.state.zoom == 1:
            self.state.focus = (min(1.0, max(0.0, px / pw)), min(1.0, max(0.0, y / h)))

    def close(self) -> None:
        try:
            cv2.destroyWindow(WINDOW_NAME)
            cv2.waitKey(1)
        except cv2.error:
            pass
