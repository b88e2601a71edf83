"""Which encoder and pixel format an output gets, and the checks of the encoder options. No torch.

Contract:
- `plan_encoder(enc, info, container)` -> `EncoderPlan`: codec, its options and the output pixel format for pictures
  described by `info` (`vsr.media.frames.VideoInfo`: working format, alpha, RGB origin) written into the muxer
  `container` ("mp4", "mov", "matroska", "webm", ... as PyAV names output formats; None: matroska's rules).
  - `enc.codec` None (the default, `--codec auto`): the first encoder of the container's list (`CANDIDATES`, the
    table in docs/video.md) that keeps what the input holds, in this order of importance: alpha, bit depth, chroma
    resolution, RGB. Where none keeps everything, the one that loses least, ties going to the earlier in the list.
    So MP4/MKV/MOV keep libx264 for 8- and 10-bit 4:2:0-4:4:4 and take libx265 for 12-bit and RGB; WebM takes VP9
    for 8-bit and AV1 (libsvtav1) where VP9 in this PyAV cannot hold the depth; alpha goes to VP9 (WebM, MKV) or
    ProRes 4444 (MOV, and MKV beyond 8 bits).
  - An encoder the build lacks, or the container cannot hold (`_container_takes`), is skipped.
  - `enc.pix_fmt` wins over the choice of format, `enc.codec` over the choice of encoder (their format is then the
    one that keeps most).
  - `EncoderPlan.lost` says what the output drops of the input ("alpha", "12-bit depth", "4:4:4 chroma"), and
    `EncoderPlan.notice()` is the one line to say about it, naming what keeps it (another container or --codec);
    nothing is lost without that line. An explicit `--pix-fmt` is the user's choice and is not reported.
- `check_options(enc)` checks `--codec`, `--crf` (each encoder's range), `--preset` (each encoder's names) and
  `--pix-fmt` before any work: a `UsageError` with one line, never an encoder's log. With `--codec auto` the crf and
  preset are checked again against the encoder the plan picks.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass

import av

from vsr.errors import UsageError
from vsr.media.frames import _FULL_RANGE_ALIASES, _SEMIPLANAR_TWINS, FormatTraits, VideoInfo, traits

# codec -> (quality option, default quality, default preset); quality is CRF or its equivalent.
ENCODER_DEFAULTS: dict[str, tuple[str | None, float | None, str | None]] = {
    "libx264": ("crf", 18, "medium"),
    "libx265": ("crf", 20, "medium"),
    "libsvtav1": ("crf", 30, "8"),
    "libaom-av1": ("crf", 30, None),
    "libvpx-vp9": ("crf", 31, None),
    "libvpx": ("crf", None, None),
    "h264_nvenc": ("cq", 19, "p5"),
    "hevc_nvenc": ("cq", 21, "p5"),
    "av1_nvenc": ("cq", 28, "p5"),
    "prores_ks": (None, None, None),
    "ffv1": (None, None, None),
}

# The quality ranges the encoders accept. x264 and x265 clamp a CRF above 51 without a word (x264
# encoder/encoder.c validate_parameters: x264_clip3f(rf_constant, -QP_BD_OFFSET, 51)); FFmpeg's wrappers declare
# crf as 0..63 for libvpx (libavcodec/libvpxenc.c "crf"), 0..63 for libaom and libsvtav1 (libsvtav1.c "crf",
# 0 meaning "not set", so 1..63 here) and cq 0..51 for NVENC (nvenc_h264.c/nvenc_hevc.c "cq").
CRF_RANGE: dict[str, tuple[float, float]] = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libsvtav1": (1, 63),
    "libaom-av1": (0, 63),
    "libvpx-vp9": (0, 63),
    "libvpx": (4, 63),  # libvpxenc.c: VP8's cq-level needs crf >= qmin (4)
    "h264_nvenc": (0, 51),
    "hevc_nvenc": (0, 51),
    "av1_nvenc": (0, 51),
}
_X26X_PRESETS = "ultrafast superfast veryfast faster fast medium slow slower veryslow placebo".split()
_NVENC_PRESETS = [f"p{i}" for i in range(1, 8)]  # nvenc_h264.c "preset" constants p1 (fastest) .. p7 (slowest)
PRESETS: dict[str, list[str]] = {
    "libx264": _X26X_PRESETS,
    "libx265": _X26X_PRESETS,
    "libsvtav1": [str(i) for i in range(0, 14)],  # libsvtav1.c "preset": 0 (slowest) .. 13 (fastest)
    "h264_nvenc": _NVENC_PRESETS,
    "hevc_nvenc": _NVENC_PRESETS,
    "av1_nvenc": _NVENC_PRESETS,
}

# The encoders each container gets by default, in order of preference (module contract).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "mp4": ("libx264", "libx265", "libsvtav1", "libvpx-vp9"),
    "mov": ("libx264", "libx265", "prores_ks"),
    "matroska": ("libx264", "libx265", "libvpx-vp9", "prores_ks", "libsvtav1", "ffv1"),
    "webm": ("libvpx-vp9", "libsvtav1"),
    "avi": ("libx264", "libx265", "ffv1"),
    "ivf": ("libvpx-vp9", "libsvtav1"),
    "nut": ("libx264", "libx265", "libvpx-vp9", "ffv1"),
}
_OTHER = ("libx264", "libx265", "libsvtav1", "libvpx-vp9")  # e.g. MPEG-TS: what players expect there, no FFV1
# Formats left out of the choice: x265's alpha layer has no MP4/Matroska mapping players read; libvpx-vp9 opens
# alpha other than 4:2:0 only with -strict experimental ("Pixel format 'gbrap' is not widely supported").
_EXCLUDED = {("libx265", "yuva420p"), ("libx265", "yuva420p10le")} | {
    ("libvpx-vp9", name) for name in ("yuva422p", "yuva444p", "gbrap")
}
# libvpx codes alpha as a second stream that only Matroska/WebM carry (BlockAdditional, libavformat/matroskaenc.c);
# in any other container it would vanish without a word.
_SIDE_ALPHA = {"libvpx", "libvpx-vp9"}
_SIDE_ALPHA_CONTAINERS = {"matroska", "webm"}
# Where to look for a way to keep what a container loses, and what to call it.
_ELSEWHERE = (("matroska", ".mkv"), ("mov", ".mov"), ("mp4", ".mp4"), ("webm", ".webm"))


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder choice; None means automatic: the codec from the container and input (`plan_encoder`), the
    quality and preset that codec's defaults (ENCODER_DEFAULTS), the pixel format the one that keeps most."""

    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    gpu: int | None = None  # NVENC encoders: the GPU to encode on (the model's), else FFmpeg's default


@dataclass(frozen=True)
class EncoderPlan:
    codec: str
    options: dict[str, str]
    pix_fmt: str
    lost: tuple[str, ...] = ()
    keep_hint: str | None = None  # how to keep what is lost: another container, or a --codec
    container: str | None = None
    full_range: bool = False  # --pix-fmt yuvj...: full range asked for

    def notice(self, label: str) -> str | None:
        """The one line that says what the output loses, or None."""
        if not self.lost:
            return None
        hint = f"; {self.keep_hint} keeps it" if self.keep_hint else ""
        return f"{label}: {self.codec} ({self.pix_fmt}) cannot keep the input's {' and '.join(self.lost)}{hint}"


def _codec(name: str) -> av.codec.Codec:
    try:
        codec = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        known = [c for c in ENCODER_DEFAULTS if c in av.codecs_available]
        raise UsageError(f"encoder {name!r} is not available in this FFmpeg build; try one of {', '.join(known)}") from None
    if codec.type != "video":
        raise UsageError(f"{name!r} is not a video encoder; try libx264, libx265, libvpx-vp9 or libsvtav1")
    return codec


def check_options(enc: EncoderOptions) -> None:
    """One `UsageError` line for a bad --codec, --crf, --preset or --pix-fmt (see the module contract)."""
    if enc.pix_fmt is not None:
        _check_pix_fmt(enc.pix_fmt)
    if enc.codec is None:
        if enc.crf is not None and enc.crf < 0:
            raise UsageError(f"--crf must be 0 or more, got {enc.crf:g}")
        return
    codec = _codec(enc.codec)
    _check_quality(codec.name, enc)
    if enc.pix_fmt is not None:
        supported = _formats(codec)
        name = _FULL_RANGE_ALIASES.get(enc.pix_fmt, enc.pix_fmt)
        if supported and name not in supported:
            raise UsageError(f"{codec.name} cannot encode {enc.pix_fmt}; it takes {', '.join(supported[:12])}")


def _check_pix_fmt(pix_fmt: str) -> None:
    try:
        av.VideoFormat(_FULL_RANGE_ALIASES.get(pix_fmt, pix_fmt))
    except ValueError:
        raise UsageError(f"unknown --pix-fmt {pix_fmt!r}; e.g. yuv420p, yuv420p10le, yuv444p") from None


def _check_quality(codec: str, enc: EncoderOptions) -> None:
    quality_key = ENCODER_DEFAULTS.get(codec, ("crf", None, None))[0]
    if enc.crf is not None:
        if quality_key is None:
            kind = "is lossless and" if codec == "ffv1" else "has no CRF scale; it"
            raise UsageError(f"{codec} {kind} takes no --crf; leave it out")
        low, high = CRF_RANGE.get(codec, (0, float("inf")))
        if not low <= enc.crf <= high:
            raise UsageError(f"--crf for {codec} must be {low:g} to {high:g}, got {enc.crf:g}")
    if enc.preset is not None:
        names = PRESETS.get(codec)
        if names is None:
            raise UsageError(f"{codec} has no --preset; leave it out")
        if str(enc.preset) not in names:
            shown = f"{names[0]} to {names[-1]}" if codec == "libsvtav1" else ", ".join(names)
            raise UsageError(f"unknown --preset {enc.preset!r} for {codec}; it takes {shown}")


def _formats(codec: av.codec.Codec) -> list[str]:
    return [f.name for f in (codec.video_formats or [])]


@functools.cache
def _container_takes(container: str | None, codec: str) -> bool:
    """Whether the muxer `container` takes `codec`: PyAV's own test (`OutputContainer.add_stream` refuses a codec
    for which `avformat_query_codec` says no, av/container/output.py; a muxer that cannot say takes it)."""
    if container is None:
        return True
    try:
        with av.open(io.BytesIO(), "w", format=container) as out:
            out.add_stream(codec)
    except ValueError:
        return False
    except (av.FFmpegError, OSError):
        return True  # not this muxer's answer: VideoWriter's own add_stream says what is wrong
    return True


def _loss(src: FormatTraits, out: FormatTraits) -> tuple[int, int, int, int]:
    """What `out` drops of `src`, most important first: alpha, bits, chroma steps, RGB."""
    return (
        int(src.alpha and not out.alpha),
        max(0, src.bits - out.bits),
        max(0, out.chroma_rank - src.chroma_rank),
        int(src.rgb and not out.rgb),
    )


def _excess(src: FormatTraits, out: FormatTraits, name: str) -> tuple[int, int, int, int, int]:
    """How much more than `src` the format carries (the closest fit wins among those that lose the same)."""
    return (
        int(out.rgb and not src.rgb),
        int(out.alpha and not src.alpha),
        max(0, out.bits - src.bits),
        max(0, src.chroma_rank - out.chroma_rank),
        int(name not in _planar_names()),
    )


def _planar_names() -> set[str]:
    return {f"yuv{a}{c}p{d}" for a in ("", "a") for c in ("420", "422", "444") for d in ("", "10le", "12le", "16le")}


def _best_format(codec: av.codec.Codec, src: FormatTraits, container: str | None) -> tuple[str, tuple] | None:
    """The pixel format of `codec` that keeps most of `src` (then carries least more) in `container`, and its loss."""
    best = None
    side_alpha_lost = codec.name in _SIDE_ALPHA and (container or "matroska") not in _SIDE_ALPHA_CONTAINERS
    for name in _formats(codec):
        if (codec.name, name) in _EXCLUDED or name.startswith(("yuvj", "gray", "ya")) or name == "cuda":
            continue
        try:
            out = traits(name)
        except ValueError:
            continue
        if out.alpha and side_alpha_lost:
            continue
        if out.rgb and not (src.rgb and name.startswith("gbr")):
            continue  # RGB output only for RGB input, and then planar (what swscale makes from YUV without fuss)
        key = (_loss(src, out), _excess(src, out, name))
        if best is None or key < best[1]:
            best = (name, key)
    if best is None:
        return None
    return best[0], best[1][0]


def _source_traits(info: VideoInfo | str) -> FormatTraits:
    if isinstance(info, str):  # a working format alone: pictures not made from RGB
        return traits(info)
    t = traits(info.pix_fmt)
    return FormatTraits(chroma=t.chroma, bits=t.bits, alpha=t.alpha, rgb=info.from_rgb)


def _choose(src: FormatTraits, container: str | None, only: str | None = None) -> tuple[str, str, tuple] | None:
    """(codec, pix_fmt, loss) of the encoder for `container` that keeps most of `src` (module contract)."""
    names = (only,) if only else CANDIDATES.get(container or "matroska", _OTHER)
    best = None
    for name in names:
        try:
            codec = av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        if not only and not _container_takes(container, codec.name):
            continue
        pick = _best_format(codec, src, container)
        if pick is None:
            continue
        if best is None or pick[1] < best[2]:
            best = (codec.name, pick[0], pick[1])
    return best


def _describe(src: FormatTraits, loss: tuple) -> tuple[str, ...]:
    alpha, bits, chroma, _rgb = loss
    out = []
    if alpha:
        out.append("alpha")
    if bits:
        out.append(f"{src.bits}-bit depth")
    if chroma:
        out.append(f"{src.chroma[0]}:{src.chroma[1]}:{src.chroma[2]} chroma")
    return tuple(out)


def _keep_hint(src: FormatTraits, container: str | None, codec: str | None) -> str | None:
    """Where the input's alpha, depth and chroma survive: another --codec in this container, else another one."""
    if codec is not None:
        here = _choose(src, container)
        if here and not any(here[2][:3]):
            return f"--codec {here[0]}"
    for name, suffix in _ELSEWHERE:
        if name == container:
            continue
        there = _choose(src, name)
        if there and not any(there[2][:3]):
            return f"a {suffix} output ({there[0]})"
    return None


def plan_encoder(enc: EncoderOptions, info: VideoInfo | str, container: str | None = None) -> EncoderPlan:
    """The encoder, its options and the output pixel format for `info`'s pictures (or pictures of the working format
    `info`) in `container` (module contract)."""
    check_options(enc)
    src = _source_traits(info)
    lost: tuple[str, ...] = ()
    if enc.codec is not None:
        codec = _codec(enc.codec)
        pick = _choose(src, container, only=codec.name)
        if enc.pix_fmt is not None:
            pix_fmt = _FULL_RANGE_ALIASES.get(enc.pix_fmt, enc.pix_fmt)
        elif pick is None:  # no planar format we use: e.g. NVENC's list without yuv420p10le, take its semi-planar
            pix_fmt = _semiplanar(codec, info if isinstance(info, str) else info.pix_fmt)
        else:
            pix_fmt, lost = pick[1], _describe(src, pick[2])
        name = codec.name
    else:
        if enc.pix_fmt is not None:  # the first encoder for the container that takes the format asked for
            pix_fmt = _FULL_RANGE_ALIASES.get(enc.pix_fmt, enc.pix_fmt)
            name = _taking(pix_fmt, container)
            if name is None:
                raise UsageError(f"no encoder vsr picks for {container} takes --pix-fmt {enc.pix_fmt}; add --codec")
        else:
            choice = _choose(src, container)
            if choice is None:
                raise UsageError(f"no encoder in this FFmpeg build can write {container} video; write a .mkv or .mp4 file")
            name, pix_fmt, loss = choice
            lost = _describe(src, loss)
        _check_quality(name, enc)
    hint = _keep_hint(src, container, enc.codec) if lost else None
    full = enc.pix_fmt is not None and enc.pix_fmt.startswith("yuvj")
    return EncoderPlan(name, _options(name, enc), pix_fmt, lost, hint, container, full)


def _taking(pix_fmt: str, container: str | None) -> str | None:
    for name in CANDIDATES.get(container or "matroska", _OTHER):
        try:
            codec = av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        if pix_fmt in _formats(codec) and _container_takes(container, codec.name):
            return codec.name
    return None


def _semiplanar(codec: av.codec.Codec, work_fmt: str) -> str:
    supported = _formats(codec)
    for name in (work_fmt, *_SEMIPLANAR_TWINS.get(work_fmt, ())):
        if not supported or name in supported:
            return name
    raise UsageError(f"{codec.name} cannot encode the input's {work_fmt}; pass --pix-fmt with one it takes "
                     f"({', '.join(supported[:12])})")  # fmt: skip


def _options(codec: str, enc: EncoderOptions) -> dict[str, str]:
    quality_key, quality, preset = ENCODER_DEFAULTS.get(codec, ("crf", None, None))
    options: dict[str, str] = {}
    if enc.crf is not None:
        quality = enc.crf
    if quality is not None and quality_key:
        options[quality_key] = f"{quality:g}"
    if enc.preset is not None:
        preset = enc.preset
    if preset is not None:
        options["preset"] = str(preset)
    if codec.endswith("_nvenc") and "cq" in options:
        options["rc"] = "vbr"
    if codec.endswith("_nvenc") and enc.gpu is not None:
        options["gpu"] = str(enc.gpu)  # nvenc.c's "gpu" option: which NVENC-capable GPU
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs a banner to stderr unless told errors only
    return options


def encoder_settings(enc: EncoderOptions, info: VideoInfo | str, container: str | None = None) -> tuple[str, dict[str, str], str]:
    """(codec, options, pix_fmt) of `plan_encoder` (for callers that need no notice)."""
    plan = plan_encoder(enc, info, container)
    return plan.codec, plan.options, plan.pix_fmt
