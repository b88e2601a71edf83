"""Encoding and muxing with PyAV. No torch.

- `VideoWriter(dst, fmt, reader, width, height, encoder)` writes the `Picture`s it is given with their
  timestamps, the input's colour range, matrix, primaries, transfer, rotation, sample aspect ratio and
  metadata, and remuxes the reader's other streams (`mux`), chapters and attachments. Pictures vsr makes itself
  are written with `VideoWriter(..., reader=None, info=plain_info(...))`; nothing is remuxed then.
- `encoder_settings(EncoderOptions, work_fmt)` checks the encoder options (`--codec`, `--crf`, `--preset`,
  `--pix-fmt`) before any work: codec, options and the output pixel format, or a one-line error.
- The output goes to the path the caller gives (a temporary file beside the target: `vsr.media.atomic`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vsr.errors import OutputError, UsageError
from vsr.media.frames import _FULL_RANGE_ALIASES, _SEMIPLANAR_TWINS, NATIVE_FORMATS, Picture, VideoInfo, Warn, make_frame
from vsr.media.reader import VideoReader
from vsr.media.source import _err_text

_STALE_TAGS = frozenset(  # tags that describe the old encode; the muxer writes fresh ones
    "encoder duration bps number_of_frames number_of_bytes major_brand minor_version compatible_brands "
    "_statistics_writing_app _statistics_writing_date_utc _statistics_tags".split()
)
_MP4_LIKE = {"mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp"}


# codec -> (quality option, default quality, default preset); quality is CRF or its equivalent.
ENCODER_DEFAULTS: dict[str, tuple[str | None, float | None, str | None]] = {
    "libx264": ("crf", 18, "medium"),
    "libx265": ("crf", 20, "medium"),
    "libsvtav1": ("crf", 30, "8"),
    "libaom-av1": ("crf", 30, None),
    "libvpx-vp9": ("crf", 31, None),
    "h264_nvenc": ("cq", 19, "p5"),
    "hevc_nvenc": ("cq", 21, "p5"),
    "av1_nvenc": ("cq", 28, "p5"),
    "ffv1": (None, None, None),
}
_NO_PRESET = {"libaom-av1", "libvpx-vp9", "ffv1"}


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder choice; None means the codec's default from ENCODER_DEFAULTS (pix_fmt: the input's)."""

    codec: str = "libx264"
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    gpu: int | None = None  # NVENC encoders: the GPU to encode on (the model's), else FFmpeg's default


def encoder_settings(enc: EncoderOptions, work_fmt: str) -> tuple[str, dict[str, str], str]:
    """(codec name, encoder options, pix_fmt) for `enc`, checked against what this FFmpeg build offers."""
    try:
        codec = av.codec.Codec(enc.codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        known = [c for c in ENCODER_DEFAULTS if c in av.codecs_available]
        raise UsageError(f"encoder {enc.codec!r} is not available in this FFmpeg build; try one of {', '.join(known)}") from None
    if codec.type != "video":
        raise UsageError(f"{enc.codec!r} is not a video encoder; try libx264, libx265 or libsvtav1")
    quality_key, quality, preset = ENCODER_DEFAULTS.get(codec.name, ("crf", None, None))
    options: dict[str, str] = {}
    if enc.crf is not None:
        if quality_key is None:
            raise UsageError(f"{codec.name} is lossless and takes no --crf; leave it out")
        if enc.crf < 0:
            raise UsageError(f"--crf must be 0 or more, got {enc.crf:g}")
        quality = enc.crf
    if quality is not None and quality_key:
        options[quality_key] = f"{quality:g}"
    if enc.preset is not None:
        if codec.name in _NO_PRESET:
            raise UsageError(f"{codec.name} has no --preset; leave it out")
        preset = enc.preset
    if preset is not None:
        options["preset"] = str(preset)
    if codec.name.endswith("_nvenc") and "cq" in options:
        options["rc"] = "vbr"
    if codec.name.endswith("_nvenc") and enc.gpu is not None:
        options["gpu"] = str(enc.gpu)  # nvenc.c's "gpu" option: which NVENC-capable GPU
    if codec.name == "libx265":
        options["x265-params"] = "log-level=error"
    if codec.name == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs a banner to stderr unless told errors only
    return codec.name, options, _pick_pix_fmt(codec, work_fmt, enc.pix_fmt)


def _pick_pix_fmt(codec: av.codec.Codec, work_fmt: str, requested: str | None) -> str:
    supported = [f.name for f in (codec.video_formats or [])]
    if requested is not None:
        name = _FULL_RANGE_ALIASES.get(requested, requested)  # range travels in the tags, not the format name
        try:
            av.VideoFormat(name)
        except ValueError:
            raise UsageError(f"unknown --pix-fmt {requested!r}; e.g. yuv420p, yuv420p10le, yuv444p") from None
        if supported and name not in supported:
            raise UsageError(f"{codec.name} cannot encode {requested}; it takes {', '.join(supported[:12])}")
        return name
    for name in (work_fmt, *_SEMIPLANAR_TWINS.get(work_fmt, ())):
        if not supported or name in supported:
            return name
    bits = NATIVE_FORMATS[work_fmt][1]
    raise UsageError(
        f"{codec.name} cannot encode the input's {bits}-bit {work_fmt}; pass --pix-fmt with one it takes "
        f"({', '.join(supported[:12])}) or use --codec libx265"
    )


def _clean_tags(tags: dict[str, str]) -> dict[str, str]:
    """Metadata minus tags that describe the old encode (encoder, duration, statistics)."""
    return {k: v for k, v in tags.items() if k.lower().split("-")[0] not in _STALE_TAGS}


def _copy_disposition(src: av.stream.Stream, dst: av.stream.Stream) -> None:
    try:
        dst.disposition = src.disposition
    except (AttributeError, TypeError, ValueError):
        pass


class VideoWriter:
    """Encodes Pictures and remuxes the reader's other streams into `dst` (a path, or "-" for stdout)."""

    def __init__(
        self,
        dst: str | Path,
        fmt: str | None,
        reader: VideoReader | None,
        width: int,
        height: int,
        enc: EncoderOptions,
        warn: Warn = lambda message: None,
        label: str | None = None,
        info: VideoInfo | None = None,
        template: av.video.stream.VideoStream | None = None,
        sar=None,
    ):
        self._sar = sar
        self.dst = str(dst)
        self._template = template  # copy mode: encoded packets from another file (`mux_video`), no encoder
        self._last_dts: int | None = None
        self.label = label or self.dst  # the name errors mention (the target, not its temporary file)
        if info is None:
            if reader is None:
                raise ValueError("VideoWriter needs a reader or the info of the pictures it writes")
            info = reader.info
        self.info = info
        codec, options, self.pix_fmt = encoder_settings(enc, info.pix_fmt)
        self.frames_written = 0
        self.packets_written = 0
        self._container = _open_output(self.dst, fmt, self.label)
        try:
            self._setup(reader, codec, options, width, height, warn)
        except BaseException:
            self.abort()
            raise

    @property
    def pix_fmt_label(self) -> str:
        """The pixel format as players and ffprobe name what was written: full-range 4:2:0/4:2:2/4:4:4 8-bit output
        is `yuvj420p` etc. (the same planes as `pix_fmt`, tagged full range), anything else `pix_fmt` itself."""
        if self.info.full_range:
            for alias, plain in _FULL_RANGE_ALIASES.items():
                if plain == self.pix_fmt:
                    return alias
            return f"{self.pix_fmt}, full range"
        return self.pix_fmt

    def _setup(
        self, reader: VideoReader | None, codec: str, options: dict[str, str], width: int, height: int, warn: Warn
    ) -> None:
        out, info = self._container, self.info
        try:
            if self._template is not None:
                stream = self.stream = out.add_stream_from_template(self._template, opaque=True)
            else:
                stream = self.stream = out.add_stream(codec, rate=info.rate, options=options)
        except (av.FFmpegError, ValueError) as exc:  # e.g. "'webm' format does not support 'ffv1' codec"
            name = self._template.codec_context.name if self._template is not None else codec
            raise UsageError(f"{self.label}: this output format cannot hold {name} video ({_err_text(exc)}); "
                             "choose another --codec or an .mkv output") from None  # fmt: skip
        if self._template is None:
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.codec_context.time_base = info.time_base  # frames keep their input pts in the input time base
            stream.time_base = info.time_base
            stream.codec_context.bit_rate = 0
            stream.codec_context.thread_count = 0
        ctx = stream.codec_context
        ctx.color_range = info.color_range
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = info.colorspace, info.color_primaries, info.color_trc
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self._map = {}
        if self._sar:
            ctx.sample_aspect_ratio = self._sar
        if reader is not None:
            self._map = copy_input(self._container, stream, reader, self.label, warn)
        try:
            if self._template is None:
                ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            if width % 2 or height % 2:
                hint = " (4:2:0/4:2:2 encoders need even sizes: use an even --scale, --pix-fmt yuv444p or --codec ffv1)"
            elif codec.endswith("_nvenc"):
                hint = " (NVENC needs an NVIDIA GPU and driver; use --codec libx264 on other machines)"
            else:
                hint = "; check --codec, --crf, --preset and --pix-fmt"
            raise UsageError(
                f"cannot start encoder {codec} for {width}x{height} {self.pix_fmt} {options}: {_err_text(exc)}{hint}"
            ) from None
        try:
            out.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(
                f"{self.label}: cannot write the {out.format.name} header: {_err_text(exc)}; "
                "check the folder is writable, or write a .mkv file"
            ) from None

    def write(self, pic: Picture) -> None:
        """Encode one picture (planes in the reader's pix_fmt, output size) with its own pts."""
        info = self.info
        frame = make_frame(pic.planes, info.pix_fmt)
        if self.pix_fmt != info.pix_fmt:
            rng = info.color_range or None
            frame = frame.reformat(format=self.pix_fmt, src_color_range=rng, dst_color_range=rng)
        frame.pts, frame.time_base = pic.pts, pic.time_base
        frame.color_range = info.color_range
        frame.colorspace, frame.color_primaries, frame.color_trc = info.colorspace, info.color_primaries, info.color_trc
        try:
            packets = self.stream.encode(frame)
            self.frames_written += 1
            self._mux_encoded(packets)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(
                f"{self.label}: encoding the frame at {float(pic.pts * pic.time_base):.3f} s failed: {_err_text(exc)}"
            ) from None

    def mux(self, packet: av.Packet) -> None:
        """Copy one packet of a passthrough stream unchanged (dropped if its stream is not copied)."""
        dup = self._map.get(packet.stream_index)
        if dup is None:
            return
        packet.stream = dup
        try:
            self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: copying a {dup.type} packet failed: {_err_text(exc)}") from None

    def mux_video(self, packet: av.Packet, time_base: Fraction) -> None:
        """Copy mode (`template`): write one encoded video packet of a part file, timestamps rescaled from
        `time_base` (the part's stream) to this stream's. Decoding timestamps must keep rising across parts."""
        packet.stream = self.stream
        tb = self.stream.time_base
        if time_base != tb:
            packet.pts = None if packet.pts is None else round(packet.pts * time_base / tb)
            packet.dts = None if packet.dts is None else round(packet.dts * time_base / tb)
        if packet.dts is not None and self._last_dts is not None and packet.dts <= self._last_dts:
            raise OutputError(
                f"{self.label}: the parts cannot be joined (decoding timestamps go back at "
                f"{float(packet.dts * tb):.3f} s); use one worker"
            )
        self._last_dts = packet.dts
        self.packets_written += 1
        try:
            self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: writing a video packet failed: {_err_text(exc)}") from None

    def _mux_encoded(self, packets: list[av.Packet]) -> None:
        self.packets_written += len(packets)
        self._container.mux(packets)

    def finish(self) -> None:
        """Flush the encoder, write the trailer and close the file."""
        try:
            if self._template is None:
                self._mux_encoded(self.stream.encode(None))
            self._container.close()
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.label}: finishing the output failed: {_err_text(exc)}") from None

    def abort(self) -> None:
        """Close without flushing; the caller deletes the partial file."""
        try:
            self._container.close()
        except (av.FFmpegError, OSError, ValueError):
            pass


def copy_input(out: av.container.OutputContainer, stream, reader: VideoReader, label: str, warn: Warn) -> dict:
    """Into `out`, of `reader`'s input: container and video stream metadata, sample aspect ratio and disposition (on
    `stream`), the passthrough streams, attachments and chapters. Returns {input stream index: output stream} of the
    streams whose packets `VideoWriter.mux` copies. A stream the format cannot hold is an `OutputError`; what can be
    left out without losing the video (a data stream of an unknown codec, attachments outside Matroska, chapters
    the muxer refuses) is said through `warn`."""
    copied = {}
    out.metadata.update(_clean_tags(reader.metadata))
    if reader.video.sample_aspect_ratio:
        stream.codec_context.sample_aspect_ratio = reader.video.sample_aspect_ratio
    stream.metadata.update(_clean_tags(dict(reader.video.metadata)))
    _copy_disposition(reader.video, stream)
    for src in reader.passthrough:
        if src.type == "data" and (src.codec_context is None or out.format.name not in reader.format_name.split(",")):
            warn(f"data stream #{src.index} is not copied: its codec is unknown or it cannot move to {out.format.name}")
            continue
        try:
            dup = out.add_stream_from_template(src)
        except (ValueError, av.FFmpegError) as exc:
            raise OutputError(
                f"{label}: the {out.format.name} format cannot hold {src.type} stream #{src.index} "
                f"({_err_text(exc)}); write a .mkv file instead"
            ) from None
        dup.metadata.update(_clean_tags(dict(src.metadata)))
        _copy_disposition(src, dup)
        copied[src.index] = dup
    _copy_attachments(out, reader, warn)
    chapters = reader.chapters()
    if chapters:
        try:
            out.set_chapters(chapters)
        except (av.FFmpegError, AttributeError, ValueError, TypeError):
            warn(f"the input's {len(chapters)} chapter(s) could not be copied to {out.format.name}")
    return copied


def _copy_attachments(out: av.container.OutputContainer, reader: VideoReader, warn: Warn) -> None:
    if not reader.attachments:
        return
    if "matroska" not in out.format.name:
        warn(f"{len(reader.attachments)} attachment(s) (e.g. fonts) are not copied: only .mkv can hold them")
        return
    for att in reader.attachments:
        name = att.metadata.get("filename") or f"attachment{att.index}"
        try:
            out.add_attachment(name, att.mimetype or "application/octet-stream", att.data)
        except (av.FFmpegError, ValueError, AttributeError) as exc:
            warn(f"attachment {name} is not copied ({_err_text(exc)})")


def _open_output(dst: str, fmt: str | None, label: str) -> av.container.OutputContainer:
    options = {}
    if dst == "-":
        file = sys.stdout.buffer
        fmt = fmt or "matroska"
        if fmt in _MP4_LIKE:
            options["container_options"] = {"movflags": "frag_keyframe+empty_moov"}  # streamable mp4
    else:
        file = dst
    try:
        return av.open(file, "w", format=fmt, **options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        if fmt:
            raise UsageError(f"cannot write format {fmt!r} ({_err_text(exc)}); use e.g. matroska or mp4") from None
        raise OutputError(
            f"{label}: cannot tell the container format from the name ({_err_text(exc)}); end it in .mp4, .mkv, .mov or .webm"
        ) from None
