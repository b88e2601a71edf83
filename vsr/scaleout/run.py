"""Segment-parallel `vsr upscale`: videos split into segments, super-resolved by worker processes or Ray tasks,
joined; finished segments kept for `--resume`.

Contract:
- `upscale_segmented(pairs, scale, workers, ...)` takes (input, output) video pairs. Each input is probed and
  cut into segments (`vsr.scaleout.segments.plan`, `seconds` each, default `auto_seconds`); each output gets a work
  folder (`vsr.scaleout.workdir.WorkFolder`, identified by input, options, weights and engine) whose finished parts are
  reused under `resume`. Segments of all the files are handed to `workers` (`LocalWorkers`: spawned processes
  sharing the machine's cores; or `vsr.scaleout.raytasks.RayWorkers`), at most `workers.slots` at a time, as they finish.
  Each worker encodes its segment into a part file (`vsr.scaleout.parts.encode_segment`); when the last part of a file
  is in, the parts and the source's other streams are joined (`vsr.scaleout.parts.join_parts`, in this thread, signals
  held) into a hidden temporary file renamed onto the output only when complete; its work folder is then
  removed. Returns one `VideoSummary` per pair.
- Before any work every output is checked as the streaming path checks it (exists, same as input, folder) and
  a trial writer opens the encoder and the output format, so option and format errors come at once, as
  usual. Each task gets the input's absolute path (a Ray worker runs in another folder, maybe on another node)
  and its content identity (`vsr.scaleout.workdir.content_identity`), which a Ray task checks before decoding.
  A worker's `VsrError` (such as that check's `InputError`) ends the run as it is; any other failure of a
  segment is retried once, with a notice (`segment K of N of OUT: why; retrying`), then ends the run naming the
  segment (saying the finished ones are kept only when some are); a worker process that dies (killed, out of
  memory) makes the pool start anew, its segments charged one try each. A stop signal ends the run at once
  (workers killed).
- On an error or a stop, each unfinished output's finished parts stay in its work folder and a notice says
  how many and that the same command with --resume continues; when no output kept any, a notice says that
  nothing was kept to resume. Nothing is ever left at an output's path.
- `resume` says what it found: how many segments it reuses, that the earlier ones cannot be reused (and
  why), or, in one line for all such outputs, that there was no earlier work to resume.
- A folder at an output's work folder name that vsr cannot prove its own (`vsr.scaleout.workdir`'s rule) is
  never touched: a split output refuses it before any work (`OutputError`: move or remove it); an output
  the streaming path takes leaves it alone with a notice.
- Input that cannot be split (packets without timestamps, one segment only, or a segment that does not decode
  to the frames the probe listed: `SegmentError`) is upscaled by the streaming path
  (`vsr.pipeline.video.upscale_video`, with the caller's `upscaler`) with a notice: the output is the same.
- `progress(event)` gets one "start" (all files' frames, those reused included as `done_frames`), "progress"
  (frames done of the total, fps of this run's work) and "done" events (its fps, and each summary's, count only
  this run's frames, not those reused by --resume), and "warning" events for the workers'
  warnings and notices.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vsr.errors import OutputError, VsrError
from vsr.media.atomic import publish, remove, temp_path
from vsr.media.reader import SegmentError
from vsr.media.writer import EncoderOptions
from vsr.pipeline.video import VideoSummary, _check_target, check_encoding, upscale_video
from vsr.scaleout.segments import Segment, plan, probe
from vsr.scaleout.workdir import WorkFolder, check_ours, check_stale, content_identity, input_identity
from vsr.signals import check as check_stop
from vsr.signals import deferred, held

_NO_JOIN_SUFFIXES = {".avi"}  # AVI's muxer puts each part's first frame at 0 (review 13b, M1)
RUN_FORMAT = "vsr-segmented-1"  # part of a work folder's identity: bump when parts change meaning


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the upscaler: the weights as safetensors bytes (loading runs no code)."""

    weights: bytes
    arch: str  # f1-f2-f3
    n1: int
    n2: int
    ensemble: bool
    threads: int  # torch threads per worker; 0 leaves torch's default (Ray sets OMP_NUM_THREADS per task)
    device: str = "cpu"  # "cuda": a GPU task (Ray, num_gpus=1), built by `make_upscaler` like the CLI's
    backend: str = "eager"
    precision: str | None = None
    layers: tuple[str, ...] = ("fp32", "fp32", "fp32")  # the CPU plan (vsr.engine.precision), the parent's: every worker the same

    @property
    def cpu_engine(self) -> str:
        from vsr.engine.precision import label

        return f"cpu-{label(self.layers)}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()

    @property
    def engine(self) -> str:
        """What decides the numbers a worker computes (parts of different engines are not mixed). On a GPU: the
        precision plan `precision` gives there (`auto` resolved as `make_upscaler` will) and the backend asked for."""
        from vsr.engine.precision import label, layer_plan

        if self.device == "cpu":
            base = self.cpu_engine
        else:
            base = f"{self.device}-{label(layer_plan(None, self.precision, torch.device(self.device)))}-{self.backend}"
        return base + ("+ensemble" if self.ensemble else "")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def spec_for(upscaler, workers: int, cpu_only: bool = True, backend: str = "auto", precision: str | None = None) -> WorkerSpec:
    """The `WorkerSpec` of an upscaler built by the CLI (an `Upscaler` or a `SelfEnsemble` around one), for `workers`
    local processes sharing this machine's cores. On a GPU each local worker builds its engine on that GPU with the
    caller's `backend` and `precision` (`make_upscaler` in the worker: the same warm-up and hand-over); the processes
    share the GPU, which pays where the CPU's decode and encode are what holds one process back. `cpu_only=False`
    (Ray, in-process) takes a GPU upscaler's model as a CPU spec, which the caller turns into its own."""
    from safetensors.torch import save

    inner = getattr(upscaler, "upscaler", upscaler)
    device = torch.device(inner.device)
    model = inner.model
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = model.config
    threads = max(1, cores() // workers)
    layers = tuple(getattr(inner, "layers", ("fp32",) * 3)) if device.type == "cpu" else ("fp32",) * 3
    spec = WorkerSpec(save(state), cfg.arch, cfg.n1, cfg.n2, upscaler is not inner, threads, layers=layers)
    if cpu_only and device.type == "cuda":
        precision = None if precision in (None, "auto") else precision
        spec = replace(spec, device=str(device), backend=backend, precision=precision)
    return spec


def build_upscaler(spec: WorkerSpec, notice=lambda text: None):
    """The upscaler `spec` describes, in this process."""
    from safetensors.torch import load

    from vsr.engine.base import Upscaler
    from vsr.engine.chain import make_upscaler
    from vsr.engine.ensemble import SelfEnsemble
    from vsr.model.srcnn import SRCNN, SRCNNConfig

    if spec.threads:
        torch.set_num_threads(spec.threads)
    model = SRCNN(SRCNNConfig.from_arch(spec.arch, spec.n1, spec.n2))
    model.load_state_dict(load(spec.weights))
    if spec.device == "cpu":
        upscaler = Upscaler(model, "cpu", layers=spec.layers)
    else:
        upscaler = make_upscaler(model, spec.backend, spec.device, spec.precision, notice=notice)
    return SelfEnsemble(upscaler) if spec.ensemble else upscaler


@dataclass(frozen=True)
class SegmentTask:
    """One segment to encode into `part` (a path the worker can write, or for Ray a name only). `src` is absolute
    (a task may run in another working directory, on another node); `content` is the input's
    `vsr.scaleout.workdir.content_identity` as the driver saw it, which a Ray task checks its node's copy against
    before decoding (None: no check)."""

    src: str
    segment: Segment
    part: str
    scale: float
    enc: EncoderOptions
    fmt: str | None  # the output's container format
    label: str  # the output's name, for errors
    content: tuple[int, str] | None = None


def run_task(task: SegmentTask, upscaler, stop=None) -> tuple[int, list[str]]:
    """Encode `task`'s segment with `upscaler`; returns (frames, warnings)."""
    from vsr.scaleout.parts import encode_segment

    warnings: list[str] = []
    frames = encode_segment(
        task.src, task.segment, task.part, task.scale, upscaler, task.enc, fmt=task.fmt, label=task.label,
        warn=warnings.append, stop=stop,
    )  # fmt: skip
    return frames, warnings


_worker: dict = {}  # per worker process: the upscaler


def _init_worker(spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    _worker["upscaler"] = build_upscaler(spec)


def _run_in_worker(task: SegmentTask) -> tuple[int, list[str]]:
    return run_task(task, _worker["upscaler"])


@contextmanager
def _sigint_blocked():
    """Children started inside inherit a blocked SIGINT: a Ctrl-C while they import torch (seconds, before
    `_init_worker` can ignore it) must not print their tracebacks. The mask survives fork and exec."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _first_done(futures, timeout: float):
    return concurrent.futures.wait(futures, timeout, concurrent.futures.FIRST_COMPLETED).done


class InProcessWorkers:
    """One worker: a thread of this process with the CLI's own upscaler (any device, GPU included): `--resume`
    without `--workers`. `close()` stops the running segment at its next frame."""

    slots = 1
    name = "this process"

    def __init__(self, upscaler, spec: WorkerSpec):
        import threading

        self._upscaler, self._stop = upscaler, threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vsr-segment")
        inner = getattr(upscaler, "upscaler", upscaler)
        device = torch.device(getattr(inner, "device", "cpu"))
        if device.type == "cpu":
            self.engine = spec.cpu_engine
        else:  # --backend auto is named as such: the backend it starts with may hand over in the first segment
            from vsr.engine.chain import FallbackUpscaler

            backend = "auto" if isinstance(inner, FallbackUpscaler) else getattr(inner, "backend", "auto")
            self.engine = f"{device.type}-{getattr(inner, 'precision', 'fp16')}-{backend}"
        if upscaler is not inner:
            self.engine += "+ensemble"
        self.weights_digest = spec.digest

    def submit(self, task: SegmentTask):
        return self._pool.submit(run_task, task, self._upscaler, self._stop)

    @staticmethod
    def wait(handles, timeout: float):
        return _first_done(handles, timeout)

    @staticmethod
    def outcome(handle, task: SegmentTask) -> tuple[int, list[str]]:
        return handle.result()

    def restart(self) -> None:
        """A thread does not die alone."""

    def close(self) -> None:
        self._stop.set()
        with held():  # a second stop signal (timeout sends two) must not leave the thread running in torch
            self._pool.shutdown(wait=True, cancel_futures=True)


class LocalWorkers:
    """`count` spawned worker processes on this machine, `spec.threads` torch threads each."""

    def __init__(self, spec: WorkerSpec, count: int):
        self.spec, self.slots, self._pool = spec, count, None
        self.engine, self.weights_digest = spec.engine, spec.digest
        self.name = f"{count} worker processes"

    def _ensure(self):
        if self._pool is None:
            with _sigint_blocked():
                ctx = multiprocessing.get_context("spawn")
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.slots, mp_context=ctx, initializer=_init_worker, initargs=(self.spec,)
                )
        return self._pool

    def submit(self, task: SegmentTask):
        with _sigint_blocked():  # the pool starts its processes on submit
            return self._ensure().submit(_run_in_worker, task)

    @staticmethod
    def wait(handles, timeout: float):
        return _first_done(handles, timeout)

    @staticmethod
    def outcome(handle, task: SegmentTask) -> tuple[int, list[str]]:
        """The task's result; raises its exception, `WorkerDied` if its process died."""
        try:
            return handle.result()
        except BrokenProcessPool:
            raise WorkerDied(broken=True) from None

    def restart(self) -> None:
        self.close()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's executor keeps them here
        with held():  # a second stop signal must not cut the clean-up short
            for proc in procs:  # a running segment would take its whole length to notice a shutdown
                try:
                    proc.kill()
                except (OSError, ValueError):
                    pass
            pool.shutdown(wait=True, cancel_futures=True)


class WorkerDied(Exception):
    """A worker process ended abruptly (killed, out of memory, crashed). `broken`: every running task is lost
    with it and the workers must be restarted (a process pool); else only this task (Ray). `why`: what happened,
    in a few words ("its worker process died", "its Ray node died", ...)."""

    def __init__(self, broken: bool = True, why: str = "its worker process died: killed, or out of memory?"):
        super().__init__(why)
        self.broken = broken
        self.why = why


@dataclass
class _Job:
    src: str
    dst: str
    segments: list[Segment]
    folder: WorkFolder | None
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    codec: str
    pix_fmt: str
    fmt: str | None
    parts: dict[int, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    streaming: str | None = None  # why the streaming path takes it
    summary: VideoSummary | None = None
    reused: int = 0  # segments reused from an earlier run (--resume)
    reused_frames: int = 0  # their frames: in the output, but not this run's work (not in its fps)
    started: float | None = None  # perf_counter when its first segment went to a worker: its own time starts then

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)


def auto_seconds(duration_s: float) -> float:
    """Default segment length: ~1/8 of the video (so --resume keeps most of the work and 2-4 workers stay busy
    to the end), between 2 and 10 seconds. Independent of the worker count, so a run resumed with other
    --workers still reuses its parts."""
    return min(10.0, max(2.0, duration_s / 8))


def _run_identity(src: str, dst: str, scale: float, enc: EncoderOptions, workers) -> dict:
    return {
        "format": RUN_FORMAT,
        "input": input_identity(src),
        "output_suffix": Path(dst).suffix.lower(),
        "scale": scale,
        "encoder": [enc.codec, enc.crf, enc.preset, enc.pix_fmt],
        "weights_sha256": workers.weights_digest,
        "engine": workers.engine,
    }


def _prepare(src, dst, scale, enc, seconds, resume, overwrite) -> _Job:
    """Everything about one pair that can be checked before workers start: the target, the encoder and output
    format, the segments, and a work folder left by an earlier run (refused without --resume)."""
    _check_target(src, dst, overwrite)
    info, out_size, codec, pix_fmt = check_encoding(src, dst, scale, enc)
    in_size = (info.width, info.height)
    probed = probe(src)
    segments: list[Segment] = []
    if probed is not None and probed.frame_pts:
        length = seconds
        if length is None:
            span = (probed.frame_pts[-1] - probed.frame_pts[0]) * probed.time_base
            length = auto_seconds(float(span))
        segments = plan(probed, length)
    job = _Job(src, dst, segments, None, in_size, out_size, codec, pix_fmt, None)
    if len(segments) < 2:
        job.streaming = "its packets carry no timestamps" if probed is None else "it is shorter than two segments"
    elif Path(dst).suffix.lower() in _NO_JOIN_SUFFIXES:
        job.streaming = f"{Path(dst).suffix} output cannot be joined from parts: its muxer restarts each part's clock"
    if not job.streaming:
        check_ours(dst)  # a folder at the work folder's name that vsr cannot prove its own is refused, untouched
    if not resume and not overwrite:
        check_stale(dst)  # the streaming path too: an interrupted run's parts are never dropped silently
    return job


def _open_folder(job: _Job, scale, enc, workers, resume, overwrite, notice) -> None:
    run = _run_identity(job.src, job.dst, scale, enc, workers)
    job.folder = WorkFolder.open(job.dst, run, resume=resume, overwrite=overwrite, notice=notice)
    offered = len(job.folder.parts)
    for segment in job.segments:
        part = job.folder.reusable(segment)
        if part is not None:
            job.parts[segment.index] = part
    job.reused = len(job.parts)
    job.reused_frames = sum(s.frames for s in job.segments if s.index in job.parts)
    if resume and job.reused:
        notice(f"{job.src}: reusing {job.reused} of {len(job.segments)} segments from an earlier run")
    elif resume and offered:
        notice(f"{job.dst}: none of the earlier run's {offered} segment(s) matches this run's segments; starting over")


def _say_fresh(jobs: list[_Job], notice) -> None:
    """--resume: one line for the outputs an earlier run left no work for."""
    fresh = [job.dst for job in jobs if job.folder is not None and not job.folder.found]
    if len(fresh) == 1:
        notice(f"no earlier work to resume for {fresh[0]}; starting from the beginning")
    elif fresh:
        notice(f"no earlier work to resume for {fresh[0]} and {len(fresh) - 1} other output(s); starting them from the beginning")


def _say_kept(jobs: list[_Job], notice) -> None:
    """After an error or a stop: close the unfinished outputs' work folders and say what each kept, or that
    nothing was kept."""
    stopped = [job for job in jobs if job.folder is not None and job.folder.is_open and job.summary is None]
    kept_any = False
    for job in stopped:
        kept = job.folder.close()
        if kept:
            kept_any = True
            notice(
                f"{job.dst}: {kept} of {len(job.segments)} segments are done and kept in {job.folder.path}; "
                "the same command with --resume continues"
            )
    if stopped and not kept_any:
        where = f"{stopped[0].dst}: " if len(stopped) == 1 else ""
        notice(f"{where}stopped before any segment finished; nothing kept to resume")


def upscale_segmented(
    pairs: list[tuple[str, str]],
    scale: float,
    make_workers,
    *,
    upscaler=None,
    enc: EncoderOptions = EncoderOptions(),
    seconds: float | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress=None,
    notice=lambda message: None,
) -> list[VideoSummary]:
    """See the module contract. `make_workers()` gives the `LocalWorkers` or `RayWorkers`, called once every
    output is checked; `upscaler` (this process's) serves the streaming path."""
    report = progress or (lambda event: None)
    t0 = time.perf_counter()
    jobs = [_prepare(str(src), str(dst), scale, enc, seconds, resume, overwrite) for src, dst in pairs]
    workers = None
    try:
        if any(not job.streaming for job in jobs):
            workers = make_workers()
            for job in jobs:
                if not job.streaming:
                    _open_folder(job, scale, enc, workers, resume, overwrite, notice)
            if resume:
                _say_fresh(jobs, notice)
        _run(jobs, scale, workers, upscaler, enc, overwrite, report, notice, t0)
    finally:
        if workers is not None:
            workers.close()
        _say_kept(jobs, notice)
    return [job.summary for job in jobs]


def _run(jobs, scale, workers, upscaler, enc, overwrite, report, notice, t0) -> None:
    total = sum(job.frames for job in jobs if not job.streaming)
    reused = sum(job.segments[i].frames for job in jobs for i in job.parts)
    first = next((job for job in jobs if not job.streaming), None)
    if first is not None:
        report({"event": "start", "src": first.src, "dst": first.dst, "in_size": first.in_size, "out_size": first.out_size,
                "total_frames": total, "done_frames": reused, "files": len(jobs), "workers": workers.slots})  # fmt: skip
    queue = [(job, s) for job in jobs if not job.streaming for s in job.segments if s.index not in job.parts]
    queue.reverse()  # pop() from the end: the first file's first segment first
    tries: dict[tuple[int, int], int] = {}
    running: dict = {}  # handle -> (job, segment, task)
    done = reused
    capacity = getattr(workers, "capacity", lambda: workers.slots)  # Ray: the cluster's slots now

    def warn(job: _Job, message: str) -> None:
        if message not in job.warnings:
            job.warnings.append(message)
            report({"event": "warning", "message": message})

    def join_ready(job: _Job) -> None:
        if job.streaming or job.summary is not None or len(job.parts) < len(job.segments):
            return
        _join(job, enc, lambda message: warn(job, message))
        job.summary = _summary(job, job.frames, time.perf_counter() - (job.started or t0), job.reused_frames)

    for job in jobs:
        join_ready(job)  # every part reused
    while queue or running:
        check_stop()
        while queue and len(running) < capacity():
            job, segment = queue.pop()
            if job.streaming:
                continue
            if job.started is None:
                job.started = time.perf_counter()
            part = job.folder.writing_path(segment.index, f"-{os.getpid()}")
            content = content_identity(job.folder.run["input"])
            task = SegmentTask(os.path.abspath(job.src), segment, str(part), scale, enc, job.fmt, job.dst, content)
            running[workers.submit(task)] = (job, segment, task)
        finished = workers.wait(list(running), 0.2)
        died = []
        for handle in finished:
            job, segment, task = running.pop(handle)
            try:
                frames, warnings = workers.outcome(handle, task)
            except SegmentError as exc:
                if not job.streaming:
                    job.streaming = f"a segment did not decode whole: {exc}"
                continue
            except VsrError:
                raise
            except WorkerDied as exc:
                if exc.broken:
                    died.append((job, segment))
                else:
                    _charge(tries, jobs, job, segment, exc.why, notice)
                    queue.append((job, segment))
                continue
            except Exception as exc:  # noqa: BLE001 - anything else is retried once
                _charge(tries, jobs, job, segment, f"{type(exc).__name__}: {exc}", notice)
                queue.append((job, segment))
                continue
            if job.streaming:
                continue
            for message in warnings:
                warn(job, message)
            job.parts[segment.index] = job.folder.add(segment, Path(task.part), frames)
            done += frames
            elapsed = time.perf_counter() - t0
            fps = (done - reused) / elapsed if elapsed > 0 else 0.0
            report({"event": "progress", "frames": done, "total_frames": total, "elapsed_s": elapsed, "fps": fps,
                    "position_s": None, "duration_s": None})  # fmt: skip
            join_ready(job)
        if died:  # the pool is broken: the segments that died and every one still running come back
            died += [(j, s) for j, s, _ in running.values()]
            running.clear()
            workers.restart()
            for n, (job, segment) in enumerate(died):
                why = WorkerDied().why if n == 0 else "a worker process died with it (the pool restarts)"
                _charge(tries, jobs, job, segment, why, notice)
                queue.append((job, segment))
    if workers is not None:
        workers.close()
    for job in jobs:
        if job.streaming:
            alone = first is None and len(jobs) == 1
            _stream(job, scale, upscaler, enc, overwrite, report if alone else _warnings_only(report), notice)
    elapsed = time.perf_counter() - t0
    frames = sum(job.summary.frames for job in jobs)
    if first is not None:
        work = frames - reused  # this run's frames: those reused from an earlier run took no time
        report({"event": "done", "frames": frames, "elapsed_s": elapsed, "fps": work / elapsed if elapsed else 0.0,
                "dst": first.dst})  # fmt: skip


def _charge(tries: dict, jobs: list[_Job], job: _Job, segment: Segment, why: str, notice) -> None:
    """A segment failed (`why`, a few words): the first time one line says it is tried again; the second time
    the run ends (`VsrError`), saying the finished segments are kept only when some are."""
    key = (id(job), segment.index)
    tries[key] = tries.get(key, 0) + 1
    n = len(job.segments)
    why = (why.strip().splitlines() or ["?"])[0]
    if tries[key] < 2:
        notice(f"segment {segment.index + 1} of {n} of {job.dst}: {why}; retrying")
        return
    kept = "; the finished ones are kept" if any(j.parts and j.summary is None for j in jobs) else ""
    raise VsrError(f"{job.src}: segment {segment.index + 1} of {n} failed twice ({why}){kept}")


def _join(job: _Job, enc: EncoderOptions, warn) -> None:
    from vsr.scaleout.parts import join_parts

    parts = [job.parts[s.index] for s in job.segments]
    tmp = temp_path(job.dst)
    try:
        with deferred():  # PyAV muxes in this (the main) thread: a signal inside its C code would be mangled
            join_parts(job.src, parts, tmp, enc, job.segments, label=job.dst, warn=warn)
        try:
            publish(tmp, job.dst)
        except OSError as exc:
            raise OutputError(f"{job.dst}: cannot be written ({exc.strerror}); check the output folder") from None
        tmp = None
    finally:
        remove(tmp)
    job.folder.finish()


def _warnings_only(report):
    """`report` for the warnings of a file streamed among others (its start, progress and done would mislead)."""
    return lambda event: report(event) if event["event"] == "warning" else None


def _stream(job: _Job, scale, upscaler, enc, overwrite, report, notice) -> None:
    """The streaming path for `job`: `report` gets its events (all of them when it is the only file; else
    `_warnings_only`)."""
    notice(f"{job.src}: not split ({job.streaming}); one process upscales it")
    if job.folder is not None:
        job.folder.finish()
    else:
        from vsr.scaleout.workdir import discard

        discard(job.dst, notice)  # --resume/--overwrite: a stale folder of another segmenting
    job.summary = upscale_video(
        job.src, job.dst, scale, upscaler, codec=enc.codec, crf=enc.crf, preset=enc.preset, pix_fmt=enc.pix_fmt,
        overwrite=overwrite, progress=report,
    )  # fmt: skip


def _summary(job: _Job, frames: int, elapsed_s: float, reused: int = 0) -> VideoSummary:
    """`frames`: all of the output's; `reused` of them came from an earlier run and do not count in its fps."""
    return VideoSummary(
        frames=frames, elapsed_s=elapsed_s, fps=(frames - reused) / elapsed_s if elapsed_s else 0.0, in_size=job.in_size,
        out_size=job.out_size, codec=job.codec, pix_fmt=job.pix_fmt, dst=job.dst, warnings=tuple(job.warnings),
    )  # fmt: skip
