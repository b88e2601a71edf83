"""Encoding and muxing with PyAV. No torch.

- `VideoWriter(dst, fmt, reader, width, height, encoder)` writes the `Picture`s it is given with their
  timestamps, the input's colour range, matrix, primaries, transfer, rotation, sample aspect ratio and
  metadata, and remuxes the reader's other streams (`mux`), chapters and attachments. Pictures vsr makes itself
  are written with `VideoWriter(..., reader=None, info=plain_info(...))`; nothing is remuxed then.
- The encoder and the output pixel format are `vsr.media.encoders.plan_encoder`'s choice for the output container
  and the input; what it cannot keep of the input (alpha, depth, chroma) is said through `warn`, once. Pictures
  made from RGB (`info.from_rgb`) go back to RGB where the encoder writes it (gbrp), with the matrix and range
  they were made with, and are tagged GBR; otherwise they keep their full-range BT.709 tags. Alpha is written
  where the format has it (VP8/VP9 in WebM/Matroska store it beside each frame, alpha_mode=1).
- The output goes to the path the caller gives (a temporary file beside the target: `vsr.media.atomic`).
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

from vsr.errors import OutputError, UsageError
from vsr.media.encoders import ENCODER_DEFAULTS, EncoderOptions, encoder_settings, plan_encoder  # noqa: F401 (re-export)
from vsr.media.frames import _FULL_RANGE_ALIASES, RANGE_JPEG, RANGE_MPEG, SPC_RGB, Picture, VideoInfo, Warn, make_frame, traits
from vsr.media.reader import VideoReader
from vsr.media.source import _err_text

_STALE_TAGS = frozenset(  # tags that describe the old encode; the muxer writes fresh ones
    "encoder duration bps number_of_frames number_of_bytes major_brand minor_version compatible_brands "
    "_statistics_writing_app _statistics_writing_date_utc _statistics_tags".split()
)
_MP4_LIKE = {"mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp"}


# Where a full-range picture can say so: in the bitstream (H.264/H.265 VUI, VP9 and AV1 headers), or in the
# container (Matroska/WebM's Colour element). ProRes and FFV1 have no such flag, and MOV's 'colr' box ('nclc') and
# AVI none either: there full range would be read as studio range, so it is converted.
_RANGE_IN_BITSTREAM = {"libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}
_RANGE_IN_CONTAINER = {"matroska", "webm"}


def _output_range(info: VideoInfo, plan) -> int:
    """The colour range the output is written in: full range where `--pix-fmt yuvj...` asks for it or the input
    has it and the output can say so; studio range otherwise (converted from full range where needed)."""
    if plan.full_range:
        return RANGE_JPEG
    if info.color_range == RANGE_JPEG and plan.codec not in _RANGE_IN_BITSTREAM and plan.container not in _RANGE_IN_CONTAINER:
        return RANGE_MPEG
    return info.color_range


# AVColorSpace -> swscale's matrix (libswscale/swscale.h SWS_CS_*): the same numbers but for BT.601 (5, 6),
# unspecified (2: swscale's default, BT.601) and BT.2020 (9, 10).
def sws_matrix(colorspace: int) -> int:
    return {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}.get(colorspace, 5)


def nvenc_hint(codec: str, pix_fmt: str) -> str:
    """What to say when NVENC encoder `codec` does not open for `pix_fmt` pictures. FFmpeg's error alone does not
    say why (nvenc.c `nvenc_check_capabilities` logs the reason and returns ENOSYS, "Function not implemented"), and
    the reasons are the GPU's: an NVIDIA GPU without NVENC engines (A100, H100: compute GPUs with NVDEC only, per
    NVIDIA's video encode/decode support matrix) or no driver; 10-bit H.264 (`NV_ENC_CAPS_SUPPORT_10BIT_ENCODE`,
    "10 bit encode not supported") and 4:2:2 only on Blackwell's NVENC (Video Codec SDK 13), never for AV1; AV1 from
    Ada on. Said as a parenthesis after FFmpeg's message, naming what keeps the format where that is the cause."""
    t = traits(pix_fmt)
    parts = ["NVENC needs the NVIDIA driver and a GPU with video encoders, which A100 and H100 lack"]
    if t.chroma == "422":
        if codec == "av1_nvenc":
            parts.append("av1_nvenc writes no 4:2:2: --pix-fmt yuv420p")
        else:
            parts.append(f"{codec} writes 4:2:2 on Blackwell GPUs (RTX 50) and newer only: --pix-fmt yuv420p or yuv444p")
    if codec == "h264_nvenc" and t.bits > 8:
        parts.append("h264_nvenc writes 10-bit on Blackwell GPUs (RTX 50) and newer only: --codec hevc_nvenc keeps 10 bits")
    if codec == "av1_nvenc":
        parts.append("av1_nvenc needs an Ada (RTX 40, L4, L40) or newer GPU")
    return f" ({'; '.join(parts)}; else use --codec libx264 or libx265)"


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
        self.frames_written = 0
        self.packets_written = 0
        self._container = _open_output(self.dst, fmt, self.label)
        try:
            plan = plan_encoder(enc, info, self._container.format.name)
            self.pix_fmt = plan.pix_fmt
            self._rgb_out = traits(plan.pix_fmt).rgb
            self._out_range = _output_range(info, plan)
            if template is None and plan.notice(self.label):
                warn(plan.notice(self.label))
            self._setup(reader, plan.codec, plan.options, width, height, warn)
        except BaseException:
            self.abort()
            raise

    @property
    def pix_fmt_label(self) -> str:
        """The pixel format as players and ffprobe name what was written: full-range 4:2:0/4:2:2/4:4:4 8-bit output
        is `yuvj420p` etc. (the same planes as `pix_fmt`, tagged full range), anything else `pix_fmt` itself."""
        if self._out_range == RANGE_JPEG and not self._rgb_out:
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
                # The frame rate an encoding writer gives `add_stream`: Matroska writes it as the video track's
                # DefaultDuration, and a reader infers packet durations from it (the video's, and the first audio
                # packet's when it comes before any video): without it a joined output reads differently from the
                # one-process output of the same input (issue 25, item 7). PyAV 18.1 and later copy it to the
                # stream when the output starts (av/video/stream.py, VideoStream._finalize_for_output, v18.1.0 line
                # 67); earlier PyAV cannot carry it on a template stream (docs/scaleout.md, Segments).
                if info.rate:
                    stream.codec_context.framerate = info.rate
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
        ctx.color_range, ctx.colorspace = self._range_and_matrix()
        ctx.color_primaries, ctx.color_trc = info.color_primaries, info.color_trc
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
                hint = nvenc_hint(codec, self.pix_fmt)
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

    def _range_and_matrix(self) -> tuple[int, int]:
        """The output's colour range and matrix tags: GBR, full range for RGB output; otherwise the pictures' matrix
        and the range `_output_range` decided."""
        if self._rgb_out:
            return RANGE_JPEG, SPC_RGB
        return self._out_range, self.info.colorspace

    def write(self, pic: Picture) -> None:
        """Encode one picture (planes in the reader's pix_fmt, output size) with its own pts."""
        info = self.info
        frame = make_frame(pic.planes, info.pix_fmt)
        if self._rgb_out:  # to RGB with the matrix and range the pictures have (RGB input: those the reader used)
            frame = frame.reformat(
                format=self.pix_fmt,
                src_colorspace=sws_matrix(info.colorspace),
                src_color_range=info.color_range or RANGE_MPEG,
                dst_color_range=RANGE_JPEG,
            )
        elif self.pix_fmt != info.pix_fmt or self._out_range != info.color_range:
            src, dst = info.color_range or RANGE_MPEG, self._out_range or RANGE_MPEG
            frame = frame.reformat(format=self.pix_fmt, src_color_range=src, dst_color_range=dst)
        frame.pts, frame.time_base = pic.pts, pic.time_base
        frame.color_range, frame.colorspace = self._range_and_matrix()
        frame.color_primaries, frame.color_trc = info.color_primaries, info.color_trc
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
    if chapters and not set(out.format.name.split(",")) & _CHAPTER_MUXERS:
        warn(f"the input's {len(chapters)} chapter(s) are not copied: {out.format.name} cannot hold chapters; write a .mkv")
    elif chapters:
        try:
            out.set_chapters(chapters)
        except (av.FFmpegError, AttributeError, ValueError, TypeError):
            warn(f"the input's {len(chapters)} chapter(s) could not be copied to {out.format.name}")
    return copied


# The muxers that write chapters (libavformat: matroskaenc.c, movenc.c, oggenc.c, nutenc.c, ffmetaenc.c); the others
# (MPEG-TS, AVI, FLV, ...) take them without a word and drop them.
_CHAPTER_MUXERS = {"matroska", "webm", "mp4", "mov", "ipod", "ismv", "3gp", "3g2", "ogg", "oga", "ogv", "nut", "ffmetadata"}


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
