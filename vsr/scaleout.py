"""`vsr upscale --workers N`: a video split into segments, super-resolved by N local worker processes, joined.

Contract:
- `upscale_segmented(src, dst, scale, spec, workers, ...)` plans segments (`vsr.segments.plan`, `seconds` each),
  hands them to `workers` processes as they finish (a `multiprocessing` pool, spawn), each encoding its segment
  into a part file (`vsr.parts.encode_segment`) in a hidden work folder beside `dst`
  (`.NAME.vsr-parts-PID`), then joins the parts and the source's other streams (`vsr.parts.join_parts`) into a
  hidden temporary file that is renamed onto `dst` only when complete (`vsr.atomic`). The work folder is removed
  in every case: success, error, Ctrl-C or SIGTERM (the workers ignore SIGINT and are terminated by the parent;
  a stop during the join, a fast remux, is held until it ends and then taken, before the rename).
  `--resume` and Ray are not implemented yet (issue 13).
- Each worker builds its own upscaler from `spec` (`WorkerSpec`: the weights as safetensors bytes, so loading them
  runs no code, the architecture, CPU only for now) and uses `threads` torch threads (the machine's cores divided
  among the workers).
- A segment that fails is tried once more; a second failure is an error naming the segment.
- Input that cannot be split (no timestamps in its packets, a stream, one segment only) goes through the
  streaming path (`vsr.pipeline.upscale_video`) with a notice: the output is the same either way.
- `progress(event)` gets "start", "progress" (frames done of total, fps) and "done" events like the pipeline's.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import publish, remove, temp_path
from .errors import VsrError
from .pipeline import VideoSummary, _check_target, upscale_video
from .resize import output_length
from .segments import plan, probe
from .signals import check as check_stop
from .signals import deferred
from .video import EncoderOptions, VideoReader


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the upscaler (see the module contract)."""

    weights: bytes  # safetensors
    arch: str  # f1-f2-f3
    n1: int
    n2: int
    ensemble: bool
    threads: int


def spec_for(upscaler, workers: int) -> WorkerSpec:
    """The `WorkerSpec` of a CPU upscaler built by the CLI (an `Upscaler` or a `SelfEnsemble` around one)."""
    from safetensors.torch import save

    inner = getattr(upscaler, "upscaler", upscaler)
    if torch.device(inner.device).type != "cpu":
        raise VsrError("--workers runs on the CPU; use --device cpu with it (one process drives a GPU best)")
    model = inner.model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = model.config
    return WorkerSpec(save(state), cfg.arch, cfg.n1, cfg.n2, upscaler is not inner, max(1, cores // workers))


_upscaler = None  # per worker process


def _init_worker(spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    torch.set_num_threads(spec.threads)
    from safetensors.torch import load

    from .engine import SelfEnsemble, Upscaler
    from .model import SRCNN, SRCNNConfig

    model = SRCNN(SRCNNConfig.from_arch(spec.arch, spec.n1, spec.n2))
    model.load_state_dict(load(spec.weights))
    global _upscaler
    _upscaler = Upscaler(model, "cpu")
    if spec.ensemble:
        _upscaler = SelfEnsemble(_upscaler)


def _run_segment(src: str, segment, part: str, scale: float, enc: EncoderOptions) -> int:
    from .parts import encode_segment

    return encode_segment(src, segment, part, scale, _upscaler, enc)


def upscale_segmented(
    src: str | Path,
    dst: str | Path,
    scale: float,
    spec: WorkerSpec,
    workers: int,
    *,
    upscaler=None,
    enc: EncoderOptions = EncoderOptions(),
    seconds: float = 10.0,
    overwrite: bool = False,
    progress=None,
    notice=lambda message: None,
) -> VideoSummary:
    """See the module contract. `upscaler` (the parent's) serves the streaming fallback."""
    src, dst = str(src), str(dst)
    report = progress or (lambda event: None)
    t0 = time.perf_counter()
    _check_target(src, dst, overwrite)
    info = probe(src)
    segments = plan(info, seconds) if info is not None else []
    if len(segments) < 2:
        why = "its packets carry no timestamps" if info is None else "it is shorter than two segments"
        notice(f"{src}: not split ({why}); one process upscales it")
        return upscale_video(
            src, dst, scale, upscaler, codec=enc.codec, crf=enc.crf, preset=enc.preset, pix_fmt=enc.pix_fmt,
            overwrite=overwrite, progress=progress,
        )  # fmt: skip
    reader = VideoReader(src)
    in_info = reader.info
    reader.close()
    out_w, out_h = output_length(in_info.width, scale), output_length(in_info.height, scale)
    target = Path(dst)
    work = target.parent / f".{target.name}.vsr-parts-{os.getpid()}"
    suffix = target.suffix or ".mkv"
    total = sum(s.frames for s in segments)
    report({"event": "start", "src": src, "dst": dst, "in_size": (in_info.width, in_info.height),
            "out_size": (out_w, out_h), "total_frames": total, "segments": len(segments), "workers": workers})  # fmt: skip
    tmp = None
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (spec,))
    try:
        shutil.rmtree(work, ignore_errors=True)  # the name has our PID: an existing one is a dead run's
        work.mkdir()
        parts = [work / f"part{s.index:05d}{suffix}" for s in segments]
        pending = {s.index: pool.apply_async(_run_segment, (src, s, str(parts[s.index]), scale, enc)) for s in segments}
        tries = dict.fromkeys(pending, 1)
        done = 0
        while pending:
            check_stop()
            time.sleep(0.05)
            for index, result in list(pending.items()):
                if not result.ready():
                    continue
                del pending[index]
                try:
                    done += result.get()
                except Exception as exc:  # noqa: BLE001 - a failed segment is tried once more
                    if tries[index] >= 2:
                        raise VsrError(f"{src}: segment {index + 1} of {len(segments)} failed twice ({exc})") from None
                    tries[index] += 1
                    remove(parts[index])
                    seg = segments[index]
                    pending[index] = pool.apply_async(_run_segment, (src, seg, str(parts[index]), scale, enc))
                elapsed = time.perf_counter() - t0
                report({"event": "progress", "frames": done, "total_frames": total, "elapsed_s": elapsed,
                        "fps": done / elapsed if elapsed > 0 else 0.0, "position_s": None, "duration_s": None})  # fmt: skip
        pool.close()
        tmp = temp_path(target)
        from .parts import join_parts

        with deferred():  # PyAV muxes in this (the main) thread: a signal inside its C code would be mangled
            join_parts(src, parts, tmp, enc)  # a stop that came meanwhile is raised here, before the rename
        publish(tmp, target)
        tmp = None
    finally:
        pool.terminate()
        pool.join()
        remove(tmp)
        shutil.rmtree(work, ignore_errors=True)
    elapsed_s = time.perf_counter() - t0
    report({"event": "done", "frames": total, "elapsed_s": elapsed_s, "fps": total / elapsed_s, "dst": dst})
    from .video import encoder_settings

    codec, _, pix_fmt = encoder_settings(enc, in_info.pix_fmt)
    return VideoSummary(
        frames=total, elapsed_s=elapsed_s, fps=total / elapsed_s, in_size=(in_info.width, in_info.height),
        out_size=(out_w, out_h), codec=codec, pix_fmt=pix_fmt, dst=dst, warnings=(),
    )  # fmt: skip
