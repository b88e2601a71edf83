"""Opening an input for reading with PyAV: a file path, a URL (rtsp://, http(s)://, ...) or "-" (stdin, read through
`vsr.media.stdin` so that a stop signal ends the wait), optionally with NVDEC (`_open_input`), and what differs
between the PyAV releases vsr allows (`AV_MAJOR`).

Why decoded frames leave the GPU (NVDEC) even though the SR stage uploads them again. PyAV can keep them there
(`HWAccel(is_hw_owned=True)`, planes exported through DLPack: av/video/plane.py `__dlpack__`), which would save
the NVDEC download and the SR stage's upload of the low-resolution frame. Not done, by reasoning, not
measurement (nothing here has run on a GPU):
- The saving is small: at x3 the input is 1/9 of the output, whose download to the encoder stays; the two
  copies saved are ~2/11 of the PCIe traffic, on copy engines that already overlap compute (`vsr.engine.gpu`).
- Hardware frames belong to the decoder's fixed surface pool. The pipeline queues up to 16 decoded frames
  ahead of the SR stage (`vsr.pipeline.stages.QUEUE_SIZE`), which would hold the pool's surfaces and stall NVDEC
  unless the pool grew with it (`extra_hw_frames`), and the copy a frame needs before its surface returns to
  the decoder would move onto the SR stage's critical path.
- It would need its own stream discipline: PyAV's `__dlpack__` refuses any stream argument (the decoder's work
  must be complete: a synchronize per frame), and `torch.from_dlpack(plane)` passes torch's current stream for
  CUDA producers, so the capsule has to be taken by hand; plus a second code path for NVDEC's semi-planar
  4:2:2/4:4:4 layouts, and it would tie `vsr.media` to torch.
The bottleneck of a GPU run is expected to be the CPU encoder (libx264) or NVENC, not this copy.
"""

from __future__ import annotations

import re
from pathlib import Path

import av

from vsr.errors import InputError, UsageError
from vsr.media.frames import Warn
from vsr.media.stdin import StdinPipe, open_stdin

# Metadata that is not valid UTF-8 (old muxers write Latin-1 titles): PyAV before 19 decodes it strictly unless told
# `metadata_errors="replace"`, and raises on the whole file otherwise; PyAV 19 removed the argument (av/container/core.py
# `open`, changelog 19.0.0 "Remove the metadata_encoding and metadata_errors arguments") and always reads it as UTF-8
# with surrogateescape, byte exact, so its values copy back to the output unchanged.
AV_MAJOR = int(av.__version__.split(".")[0])
_METADATA_OPTIONS = {"metadata_errors": "replace"} if AV_MAJOR < 19 else {}


def is_url(src: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src) is not None


def _err_text(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name, on one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def _announced_duration_s(stream: av.video.stream.VideoStream) -> float | None:
    """End time of a stream as its header says (stream duration, or Matroska's DURATION tag), in seconds."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.lower().split("-")[0] == "duration"), None)
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag.strip()) if tag else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _open_input(
    src: str,
    fmt: str | None,
    hwaccel: str | None = None,
    warn: Warn = lambda message: None,
    device: int | None = None,
    stdin=None,
) -> tuple[av.container.InputContainer, bool]:
    """Open `src` for reading -> (container, whether a hardware device was attached). `stdin` is the file object
    "-" reads (`vsr.media.stdin.open_stdin()`).

    With `hwaccel` (e.g. "cuda": NVDEC) PyAV creates the device when it opens the video stream's decoder; if it
    cannot (no GPU, no driver), the file is opened again for the CPU with a warning that gives FFmpeg's reason. A
    device type this FFmpeg build leaves out (one of PyAV's `HWDeviceType` names, not in `hwdevices_available()`)
    is the same case: the CPU, with a warning; a name FFmpeg has no type for is a `UsageError` (a typo).
    `device` is the GPU's index. The decoder gets a CUDA context of its own, not the device's primary context
    that torch uses: FFmpeg retains the primary context only with CU_CTX_SCHED_BLOCKING_SYNC and refuses
    (ENOTSUP, "Primary context already active with incompatible flags", libavutil/hwcontext_cuda.c
    `cuda_context_init`) once torch has activated it with the default flags, which it has by the time a video
    is opened. Frames are downloaded to system memory either way.
    Needs PyAV 18: the hwaccel API (`av.codec.hwaccel.HWAccel`, `av.open(..., hwaccel=)`,
    `CodecContext.is_hwaccel`) first appears in 14.1, and before 18.0 a downloaded frame kept only its pts
    (av/video/codeccontext.py `_transfer_hwframe`: "TODO: Is there anything else to transfer?"), losing the
    colour tags vsr copies to the output; 18.0 copies them (`_copy_internal_attributes`). PyAV 17 (the newest on
    Python 3.10) therefore decodes on the CPU, with a notice."""
    if not hwaccel:
        return _open_input_with(src, fmt, {}, stdin=stdin), False
    if AV_MAJOR < 18:
        warn(
            f"hardware decoding ({hwaccel}) needs PyAV 18 or newer, which keeps the colour tags of the frames it takes "
            f"from the GPU (this is PyAV {av.__version__}; PyAV 18 needs Python 3.11 or newer); decoding on the CPU"
        )
        return _open_input_with(src, fmt, {}, stdin=stdin), False
    from av.codec.hwaccel import HWAccel, HWDeviceType, hwdevices_available

    kinds = hwdevices_available()
    if hwaccel not in kinds:  # HWAccel takes an unknown name as "any device type" (av_hwdevice_find_type_by_name)
        if hwaccel not in {t.name for t in HWDeviceType} - {"none"}:  # a typo: no FFmpeg has such a type
            raise UsageError(f"--hwaccel {hwaccel}: not a hardware device type this FFmpeg knows; use one of {', '.join(kinds)}")
        # A type FFmpeg has, left out of this build (e.g. a PyAV wheel without CUDA): no device, as on a machine
        # without a GPU, so the same fallback (the --hwaccel help promises it).
        built = ", ".join(kinds) or "none"
        warn(
            f"hardware decoding ({hwaccel}) is not available here (this FFmpeg build, PyAV {av.__version__}'s, has no "
            f"{hwaccel} support; its device types: {built}); decoding on the CPU"
        )
        return _open_input_with(src, fmt, {}, stdin=stdin), False
    accel = HWAccel(device_type=hwaccel, device=None if device is None else str(device), allow_software_fallback=True)
    try:
        return _open_input_with(src, fmt, {"hwaccel": accel}, raw_errors=True, stdin=stdin), True
    except (av.FFmpegError, OSError, ValueError) as exc:  # no such device, no driver, no permission
        if src == "-":
            raise UsageError(f"--hwaccel {hwaccel} could not open stdin ({_err_text(exc)}); drop --hwaccel") from None
        container = _open_input_with(src, fmt, {})  # a broken file fails here with its own message
        warn(f"hardware decoding ({hwaccel}) is not available here ({_err_text(exc)}); decoding on the CPU")
        return container, False


def _open_input_with(src: str, fmt: str | None, extra: dict, raw_errors: bool = False, stdin=None) -> av.container.InputContainer:
    options = dict(extra)
    if src == "-":
        file = stdin if stdin is not None else open_stdin()
    elif is_url(src):
        file = src
        options["timeout"] = (30.0, 30.0)
    else:
        path = Path(src)
        if not path.exists():
            raise InputError(f"{src}: no such file; check the path")
        if path.is_dir():
            raise InputError(f"{src}: is a folder, not a video file")
        if path.stat().st_size == 0:
            raise InputError(f"{src}: the file is empty; give a video file")
        file = src
    try:
        return av.open(file, "r", format=fmt, **_METADATA_OPTIONS, **options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        if src == "-":
            _stdin_ended(file)
        if raw_errors:
            raise
        if fmt and isinstance(exc, ValueError):
            raise InputError(f"unknown input format {fmt!r}; use a name from `ffmpeg -formats`, e.g. matroska") from None
        if src == "-":
            hint = "; pass the container format of stdin, e.g. --format matroska"
        elif is_url(src):
            hint = "; check the address and that the stream is reachable"
        else:
            hint = "; is it a complete video file?"
        raise InputError(f"{src}: cannot be read as a video ({_err_text(exc)}){hint}") from None


def _stdin_ended(stdin) -> None:
    """After PyAV failed to open stdin: raise the stop signal that ended the wait for it, or say that nothing came
    (nothing piped, or Ctrl-D at a terminal)."""
    if not isinstance(stdin, StdinPipe):
        return
    stdin.raise_stop()
    if stdin.bytes_read == 0:
        raise InputError(
            "-: no input: stdin ended before any data came; pipe a video in, e.g. "
            "`ffmpeg -i in.mp4 -f matroska - | vsr upscale - out.mp4`"
        )


def decoder_threads(live: bool, hardware: bool) -> str:
    """The video decoder's `thread_type` (PyAV's `CodecContext.thread_type`, settable until the codec opens at the
    first decode in PyAV 17.1 to 19): "AUTO" (frame and slice threads, the most throughput) for files on the CPU;
    "SLICE" for `live` input (each frame thread delays output by a frame) and under a hardware decoder.

    Why not frame threads with NVDEC: FFmpeg gives the hardware decoder a fixed pool of surfaces, sized when the
    decoder opens: the stream's reference and reorder frames (H.264: `ref_frame_count + num_reorder_frames`,
    libavcodec/nvdec_h264.c `nvdec_h264_frame_params`), + 2 (nvdec.c `ff_nvdec_frame_params`), + one per frame
    thread (decode.c `avcodec_get_hw_frames_parameters`: "If frame threading is enabled then an extra surface
    per thread is also required", `initial_pool_size += avctx->thread_count`), + 3 (nvdec.c
    `nvdec_init_hwframes`). NVDEC refuses more than 32 (nvdec.c `ff_nvdec_decode_init`: "Using more than 32 (%d)
    decode surfaces might cause nvdec to fail. Try lowering the amount of threads"), and the automatic frame
    thread count is min(cores + 1, 16) (pthread_frame.c `ff_frame_thread_init`, `MAX_AUTO_THREADS` 16). A
    16-reference H.264 with 2 reorder frames on a 16-core host would need 16 + 2 + 2 + 16 + 3 = 39: the hardware
    decoder fails to open and PyAV's `get_format` hands the stream to software without an error
    (av/video/codeccontext.py `_get_hw_format`, `allow_software_fallback`). Slice threads add no surface (23
    there), so NVDEC takes every stream it could take single-threaded. The price: where the GPU refuses a stream
    anyway, the CPU decodes it with slice threads only (`InputStreams.hwaccel_in_use` says so)."""
    return "SLICE" if live or hardware else "AUTO"


class InputStreams:
    """An input opened for decoding (see the module contract): its container, the video stream vsr decodes (the first
    that is not cover art; its threads: `decoder_threads`), the streams copied untouched
    (audio, subtitle, data), the attachments, metadata and chapters; after the first frame, `hwaccel_in_use` says
    whether the hardware decoder asked for really decodes it. For "-", a stop signal that ends the wait for stdin
    makes PyAV see the end of the input; `raise_stop()` then raises it (after each PyAV call in the main thread), and
    `cancel()` ends a wait from any thread (`vsr.media.stdin`)."""

    def __init__(
        self,
        src: str,
        fmt: str | None,
        warn: Warn,
        live: bool = False,
        hwaccel: str | None = None,
        hwaccel_device: int | None = None,
    ):
        self.src, self._warn, self._hwaccel = src, warn, hwaccel
        self._stdin = open_stdin() if src == "-" else None
        self.container, self._hw_attached = _open_input(src, fmt, hwaccel, warn, hwaccel_device, self._stdin)
        try:
            self.raise_stop()
            c = self.container
            videos = [s for s in c.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
            if not videos:
                kinds = ", ".join(sorted({s.type for s in c.streams})) or "no streams"
                raise InputError(f"{src}: has no video stream ({kinds}); give a video file")
        except BaseException:
            self.close()
            raise
        self.video = videos[0]
        # `is_hwaccel`: PyAV attached the device to this decoder (it has a config for the type; set when the
        # container opened: av/video/codeccontext.py `_init`); a decoder without one (FFV1) decodes on the CPU.
        self.video.thread_type = decoder_threads(live, self._hw_attached and self.video.codec_context.is_hwaccel)
        self.video.thread_count = 0  # FFmpeg's automatic count (PyAV's default too)
        self.passthrough = [s for s in c.streams if s.type in ("audio", "subtitle", "data")]
        self.attachments = [s for s in c.streams if s.type == "attachment"]

    def raise_stop(self) -> None:
        """Raise a stop signal that ended a read of stdin in this thread (see the class docstring); else nothing."""
        if isinstance(self._stdin, StdinPipe):
            self._stdin.raise_stop()

    def cancel(self) -> None:
        """Any thread: a read waiting for stdin gives up within `vsr.media.stdin.POLL_S` (the input ends there).
        Files and URLs are not waited for this way: nothing to do."""
        if isinstance(self._stdin, StdinPipe):
            self._stdin.cancel()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.container.metadata)

    @property
    def format_name(self) -> str:
        return self.container.format.name

    def chapters(self) -> list:
        try:
            return self.container.chapters()
        except (av.FFmpegError, AttributeError, ValueError):
            return []

    def hwaccel_in_use(self) -> bool:
        """After the first frame: whether the video really decodes on the device `hwaccel` named; warns once if not.

        `CodecContext.is_hwaccel` is only True when PyAV found a hardware config for the codec and created the
        device (av/video/codeccontext.py, `VideoCodecContext._init`: a codec without one, e.g. FFV1, is opened
        for software decoding, silently). Even then the decoder may fall back to software (an unsupported
        profile or size: `_get_hw_format` returns `sw_pix_fmt` with allow_software_fallback), so the pixel
        format the decoder chose (`codec_context.pix_fmt`, e.g. "cuda" for NVDEC) is compared with the codec's
        hardware formats as well."""
        if not self._hwaccel:
            return False
        ctx = self.video.codec_context
        hw_formats = {cfg.format.name for cfg in ctx.codec.hardware_configs if cfg.format is not None}
        if not ctx.is_hwaccel:
            why = f"FFmpeg's {ctx.name} decoder has no {self._hwaccel} support; decoding on the CPU"
        elif ctx.pix_fmt not in hw_formats:
            why = refusal(ctx, self._hwaccel)
        else:
            return True
        if self._hw_attached:  # else _open_input has already said that the device is not there
            self._warn(f"hardware decoding ({self._hwaccel}) is not used: {why}")
        return False

    def close(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass


def refusal(ctx, hwaccel: str) -> str:
    """Why the `hwaccel` decoder that opened handed the stream `ctx` (an opened video `CodecContext`) to software, as far
    as it can be known: the stream's codec, profile, pixel format and coded size, with the limits that refuse such a
    stream. The exact one is in FFmpeg's log only (nvdec.c `nvdec_test_capabilities`: "Hardware is lacking required
    capabilities", "Video width %d not within range", ...; PyAV keeps FFmpeg's log quiet). Frame threads are not
    among them: under a hardware decoder there are none (`decoder_threads`)."""
    profile = f" {ctx.profile}" if ctx.profile else ""
    stream = f"{ctx.name}{profile}, {ctx.pix_fmt}, {ctx.coded_width or ctx.width}x{ctx.coded_height or ctx.height}"
    surfaces = "its 32 surfaces" if hwaccel == "cuda" else "its surfaces"  # NVDEC's limit, see decoder_threads
    return (
        f"the hardware decoder refused this stream ({stream}: a profile, bit depth, chroma format or size it lacks, "
        f"or more reference frames than {surfaces} hold) and software took over; decoding on the CPU with slice "
        "threads only (drop --hwaccel for all threads)"
    )
