"""Throughput measurement for `vsr bench`: model only, the end-to-end pipeline, and the transcode-only baseline.

Contract:
- `run(plan, device)` measures on this machine and returns one JSON-able dict (schema "vsr-bench-1"):
  `{"schema", "created", "command", "plan", "device": {"name", "type", versions...}, "peak": {...},
  "results": [row, ...], "quality": [...], "fp16_psnr_delta_db": largest |fp16 - fp32| Y-PSNR or null,
  "cpu_precision_psnr_delta_db"/"cpu_precision_psnr_delta_source" (CPU only, below)}`.
  Nothing here prints (but `print_and_save`, the output of the scripts in bench/); `progress(message)` says what
  runs now.
- Model rows (`"stage": "model"`): one per backend x precision x model x resolution. The timed call is
  `Upscaler(y)` on a bicubic-sized float32 1 x 1 x sH x sW luma tensor already on the device (padding,
  tiles, clamp included; upload, bicubic and download are not). Warm-up first (1 call and 0.25 s on the CPU; 3 calls
  and 0.5 s on CUDA), then samples of `inner` back-to-back calls closed by `torch.cuda.synchronize`, `inner`
  chosen so a sample lasts ~50 ms; at least `min_repeats` samples and `min_time_s` seconds. `fps` is
  1 / median seconds per call, `mpix_s` = output pixels x fps / 1e6. Timed calls run in a fresh worker thread,
  as the pipeline's SR stage does (on a CPU shared with other work, OpenMP's spinning thread team makes the
  main thread up to 10x slower on small frames than a worker thread; a worker thread measures what
  `vsr upscale` gets).
- Pipeline rows (`"stage": "pipeline"`, one per backend x precision x model) run `upscale_video` on a clip
  (a synthetic one of the first resolution, `vsr.synth.make_clip`, or `plan.input`) at the first resolution's
  scale, writing a real file with the plan's encoder; the transcode row (`"stage": "transcode"`) does the
  same with plain MATLAB bicubic: `upscaler=None` on the CPU, and on CUDA an identity upscaler on the GPU so
  bicubic runs where the pipeline's does. Runs are interleaved (transcode, then each pipeline) `pipeline_runs`
  times; `fps` is the median of frames / wall seconds (opening and closing the files included).
  Each upscaler is called once on a frame of the clip's size before (first-call costs stay out of the timing).
  `ratio_to_transcode` = pipeline fps / transcode fps, and `stages` (from `VideoSummary.stages`) gives the
  decode, SR and encode busy fps, utilisation and mean queue fill of the median run.
- Naive rows (`"stage": "naive"`, one per model, `plan.naive`, 8-bit 4:2:0 clips): `vsr.bench.naive.naive_upscale`,
  the per-frame loop a first script would be (torch bicubic, fp32 eager NCHW whole frame, libx264 in the same
  thread; libx264 at its own defaults whatever the plan's encoder, as a first script would), interleaved with
  the others and timed the same way; `stages` is null. Each pipeline row gets
  `speedup_over_naive` = its fps / the naive fps of the same model.
- Physical limits, per row: `gflop_per_frame` = 2 x `macs_per_pixel` x output pixels (the three convolutions'
  multiply-adds; bias, ReLU, bicubic and the tiles' halo recomputation not counted); `min_bytes_per_frame` =
  uint8 LR luma in + uint8 SR luma out (the least memory traffic any implementation of the SR step makes; the
  4:2:0 chroma, another half of that, is bicubic, not SR). `gflop_s` = gflop_per_frame x fps and
  `peak_fraction` = gflop_s / the measured peak of the row's precision; `bandwidth_fraction` likewise for
  min_bytes_per_frame x fps against the measured copy bandwidth.
- Peak (`measure_peak`): the best of timed square matmuls (n = 2048 on the CPU, 8192 on CUDA; fp32, fp16
  on CUDA, bf16 on a CPU with native bf16; fp32 without TF32, as vsr's fp32 convolutions run, so the peak is
  that of the convolutions' math)
  and of a large tensor copy (bytes read + written per second).
- Quality (`plan.eval_data`, e.g. "Set5"): Y-PSNR of each benched (precision, model, scale) through
  `vsr.train.evaluate`, the protocol of `vsr eval`, with the eager backend (the others compute the same function, and
  compiling them for every image size would cost more than the benchmark). Random-weight models (no shipped
  weights for that scale: speed does not depend on the values) are timed but not scored.
- Backends are the names of `vsr.engine.chain.BACKENDS`, built by `vsr.engine.chain.make_upscaler`; by default "eager" on
  the CPU, and on CUDA "eager" plus what `vsr upscale` picks there (tensorrt where torch-tensorrt imports, else
  compile). Precisions (`plan.precisions`, `--precision`): by default fp16 and fp32 on CUDA; fp32 on the CPU,
  plus `auto` where the CPU has native bf16 (`vsr.engine.precision`); choices that resolve to the same layer plan are
  measured once, and a row's `precision` is the plan's label ("fp32", "bf16 conv2", ...). On the CPU the report
  has `device.cpu_bf16` (`vsr.engine.precision.cpu_bf16()`) and `cpu_precision_psnr_delta_db`: the largest |bf16 plan -
  fp32| Y-PSNR measured with `--eval`, else the recorded Set5 figure of the benched models' auto plans, 0.0
  when only fp32 ran (`cpu_precision_psnr_delta_source` says which). `first_call_s` of a model row is its first call
  (compilation or engine build included), which the warm-up keeps out of `fps`. User mistakes raise `VsrError`s.
"""

from __future__ import annotations

import copy
import datetime
import importlib.metadata
import json
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import torch

from vsr.bench.naive import naive_upscale
from vsr.engine import flags
from vsr.engine.base import cuda_flags
from vsr.engine.chain import BACKENDS, make_upscaler
from vsr.engine.precision import cpu_bf16, recorded_delta
from vsr.errors import BackendError, InputError, OutputError, UsageError, WeightsError, install_hint
from vsr.media.atomic import atomic_path
from vsr.media.reader import VideoReader
from vsr.media.resize import output_length
from vsr.media.writer import ENCODER_DEFAULTS
from vsr.model.srcnn import SRCNN, SRCNNConfig, load_weights
from vsr.model.weights import default_weights
from vsr.pipeline.video import upscale_video

SCHEMA = "vsr-bench-1"
MODELS = ("9-1-5", "9-5-5")
SAMPLE_S = 0.05  # target length of one timing sample (back-to-back calls between syncs)

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Resolution:
    """An input size and an integer scale: 640x360x3 means 640x360 -> 1920x1080."""

    width: int
    height: int
    scale: int

    @property
    def out_width(self) -> int:
        return output_length(self.width, self.scale)

    @property
    def out_height(self) -> int:
        return output_length(self.height, self.scale)

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}x{self.scale}"


DEFAULT_RESOLUTIONS = (Resolution(640, 360, 3), Resolution(960, 540, 2), Resolution(1920, 1080, 2))
QUICK_RESOLUTIONS = {"cpu": (Resolution(320, 180, 2), Resolution(640, 360, 3)), "cuda": DEFAULT_RESOLUTIONS}


@dataclass(frozen=True)
class Plan:
    """What to measure. `default_plan` fills it for a device; every field can be overridden."""

    resolutions: tuple[Resolution, ...] = DEFAULT_RESOLUTIONS
    models: tuple[str, ...] = MODELS
    backends: tuple[str, ...] = ("eager",)
    frames: int = 48  # length of the synthetic clip
    input: str | None = None  # a video file instead of the synthetic clip (processed whole)
    codec: str = "libx264"
    preset: str | None = None  # None: the codec's default (medium for x264)
    min_repeats: int = 5
    min_time_s: float = 2.0
    pipeline_runs: int = 1
    pipeline: bool = True
    eval_data: str | None = None  # e.g. "Set5": score each benched model
    quick: bool = False
    precisions: tuple[str, ...] | None = None  # `--precision` choices; None: `precisions_for(device)`
    naive: bool = True  # a naive per-frame loop row per model beside the pipeline rows


def default_plan(device: torch.device, quick: bool = False) -> Plan:
    """Defaults that finish in reasonable time: --quick is about a minute on 2 CPU cores.

    | device | quick | resolutions         | clip frames | samples (min, s) | pipeline runs |
    | cpu    | no    | 640x360x3, 960x540x2, 1920x1080x2 | 12 | 3, 1.0 | 1 |
    | cpu    | yes   | 320x180x2, 640x360x3 | 8          | 3, 0.5           | 1             |
    | cuda   | no    | the three above     | 96          | 5, 2.0           | 3             |
    | cuda   | yes   | the three above     | 48          | 3, 0.5           | 1             |
    """
    if device.type == "cuda":
        backends = default_backends(device)
        if quick:
            return Plan(QUICK_RESOLUTIONS["cuda"], backends=backends, frames=48, min_repeats=3, min_time_s=0.5, quick=True)
        return Plan(DEFAULT_RESOLUTIONS, backends=backends, frames=96, min_repeats=5, min_time_s=2.0, pipeline_runs=3)
    if quick:
        return Plan(QUICK_RESOLUTIONS["cpu"], frames=8, min_repeats=3, min_time_s=0.5, pipeline_runs=1, quick=True)
    return Plan(DEFAULT_RESOLUTIONS, frames=12, min_repeats=3, min_time_s=1.0, pipeline_runs=1)


# ---------------------------------------------------------------- parsing user choices


def parse_resolutions(text: str) -> tuple[Resolution, ...]:
    """'640x360x3,960x540x2' -> Resolutions; a malformed entry is a UsageError."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)[xX](\d+)[xX](\d+)", part)
        if not m:
            raise UsageError(f"--resolutions: {part!r} is not WIDTHxHEIGHTxSCALE, e.g. 640x360x3 (640x360 -> 1920x1080)")
        w, h, s = (int(v) for v in m.groups())
        if w < 8 or h < 8:
            raise UsageError(f"--resolutions: {part!r} is too small; use at least 8x8 input pixels")
        if not 2 <= s <= 8:
            raise UsageError(f"--resolutions: scale {s} in {part!r} must be an integer from 2 to 8")
        out.append(Resolution(w, h, s))
    return tuple(out)


def parse_names(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against `allowed`; duplicates dropped, order kept."""
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise UsageError(f"{option} is empty; choose from {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise UsageError(f"{option}: unknown {name!r}; choose from {', '.join(allowed)}")
    return names


def precisions_for(device: torch.device) -> tuple[str, ...]:
    """fp16 and fp32 on CUDA; on the CPU fp32, and auto where the CPU has native bf16 (else auto is fp32)."""
    if device.type == "cuda":
        return ("fp16", "fp32")
    return ("fp32", "auto") if cpu_bf16()["native"] else ("fp32",)


def default_backends(device: torch.device) -> tuple[str, ...]:
    """eager on the CPU; on CUDA eager and the backend `vsr upscale` picks (tensorrt if it imports, else compile)."""
    if device.type != "cuda":
        return ("eager",)
    from vsr.engine import tensorrt as trt

    return ("eager", "tensorrt" if trt.available() else "compile")


def build(backend: str, model: SRCNN, device: torch.device, precision: str):
    """An upscaler of the named backend on its own copy of the model (backends move and convert it)."""
    return make_upscaler(copy.deepcopy(model), backend, device, precision)


def load_model(arch: str, scale: int) -> tuple[SRCNN, str]:
    """(model, 'shipped') from the shipped weights, or (He-initialised model, 'random') where there are none."""
    try:
        return load_weights(default_weights(scale, arch)), "shipped"
    except WeightsError:
        model = SRCNN(SRCNNConfig.from_arch(arch))
        model.init_he(torch.Generator().manual_seed(0))
        return model.eval(), "random"


def check_input(path: str) -> None:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such video file; pass an existing file to --input or leave it out for a synthetic clip")


def write_json(doc: dict, path: Path) -> None:
    """The report as indented JSON, written atomically (an interrupted run leaves no half-written file)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2) + "\n")


def check_output(path: Path, option: str, overwrite: bool = False) -> None:
    """Fail before measuring, not after, when a result file cannot be written (or exists, without `overwrite`)."""
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: the folder {path.parent} does not exist; create it first")


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _in_worker(fn: Callable[[], T], device: torch.device) -> T:
    """fn() in a fresh thread (see the module contract) whose current CUDA device is `device` (the current device
    is per thread: cuda:N must not mean cuda:0 in there); its exception is raised here."""
    box: dict = {}

    def target() -> None:
        try:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="vsr-bench", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)  # a short wait keeps Ctrl-C responsive
    if "error" in box:
        raise box["error"]
    return box["value"]


def time_calls(
    fn: Callable[[], object], device: torch.device, min_repeats: int, min_time_s: float, max_repeats: int = 200
) -> list[float]:
    """Seconds per call of `fn`, one value per sample, after a warm-up, in a worker thread (see the module contract)."""
    return _in_worker(lambda: _time_calls(fn, device, min_repeats, min_time_s, max_repeats), device)


def _time_calls(
    fn: Callable[[], object], device: torch.device, min_repeats: int, min_time_s: float, max_repeats: int
) -> list[float]:
    warmup_calls, warmup_s = (3, 0.5) if device.type == "cuda" else (1, 0.25)
    t0, calls = time.perf_counter(), 0
    while True:
        t_call = time.perf_counter()
        fn()
        _sync(device)
        calls += 1
        last_s = time.perf_counter() - t_call
        if calls >= warmup_calls and time.perf_counter() - t0 >= warmup_s:
            break
    inner = max(1, min(1000, int(SAMPLE_S / max(last_s, 1e-9))))
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_repeats or (time.perf_counter() - start < min_time_s and len(samples) < max_repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t) / inner)
    return samples


def measure_peak(device: torch.device, min_repeats: int = 5, min_time_s: float = 0.5) -> dict:
    """Best-of timed matmuls (GFLOP/s per precision) and copy bandwidth (GB/s) on `device`."""
    n = 8192 if device.type == "cuda" else 2048
    peak: dict = {}
    dtypes = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
    for precision in ("fp16", "fp32") if device.type == "cuda" else ("fp32", "bf16") if cpu_bf16()["native"] else ("fp32",):
        tf32 = False  # vsr's upscalers run fp32 convolutions without TF32 (vsr.engine.base.cuda_flags): IEEE fp32 peak
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            best_s = _matmul_s(n, dtypes[precision], device, min_repeats, min_time_s)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        peak[precision] = {"gflop_s": 2.0 * n**3 / best_s / 1e9, "matmul_n": n, "tf32": tf32}
    nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    best_s = min(time_calls(lambda: dst.copy_(src), device, min_repeats, min_time_s))
    peak["memory"] = {"gb_s": 2.0 * nbytes / best_s / 1e9, "copy_bytes": nbytes}
    return peak


def _matmul_s(n: int, dtype: torch.dtype, device: torch.device, min_repeats: int, min_time_s: float) -> float:
    """Best seconds of one n x n x n matmul."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return min(time_calls(lambda: torch.mm(a, b, out=c), device, min_repeats, min_time_s))


# ---------------------------------------------------------------- device description


def print_and_save(doc: dict, path: Path | None) -> None:
    """A bench script's result: printed as JSON, and written to `path` too (`write_json`; its folder made) when given."""
    print(json.dumps(doc, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(doc, path)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_cores() -> int | None:
    """Physical cores from /proc/cpuinfo (distinct physical id, core id), None where unknown."""
    try:
        cores, phys = set(), "0"
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    cores.add((phys, value.strip()))
        return len(cores) or None
    except OSError:
        return None


def _version(module: str, dist: str | None = None) -> str | None:
    try:
        return importlib.metadata.version(dist or module)
    except importlib.metadata.PackageNotFoundError:
        try:
            return getattr(__import__(module), "__version__", None)
        except ImportError:
            return None


def device_info(device: torch.device) -> dict:
    """The machine and the library versions a result depends on."""
    import cv2

    from vsr import __version__

    info: dict = {
        "name": cpu_name(),
        "type": device.type,
        "cpu": cpu_name(),
        "cpu_cores": _cpu_cores(),
        "cpu_threads": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "ffmpeg_libavcodec": ".".join(str(v) for v in av.library_versions.get("libavcodec", ())),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "vsr": _version("vsr") or __version__,
        "cuda": None,
        "cudnn": None,
        "gpu": None,
    }
    if device.type == "cuda":
        run = cuda_flags(flags.current())
        props = torch.cuda.get_device_properties(device)
        info["name"] = props.name
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            # what an upscaler's call runs under (set for the call only: vsr.engine.base.cuda_flags)
            "cudnn_benchmark": run.benchmark if run.benchmark is not None else torch.backends.cudnn.benchmark,
            "cudnn_tf32": run.tf32,
        }
    return info


# ---------------------------------------------------------------- measurements


def frame_cost(config: SRCNNConfig, width: int, height: int, scale: int) -> dict:
    """FLOPs and minimum bytes of SR for one frame (see the module contract)."""
    out_px = output_length(width, scale) * output_length(height, scale)
    flops = 2 * config.macs_per_pixel() * out_px
    min_bytes = width * height + out_px
    return {"gflop_per_frame": flops / 1e9, "min_bytes_per_frame": min_bytes, "flop_per_byte": flops / min_bytes}


def _limits(row: dict, peak: dict, precision: str | None) -> dict:
    """gflop_s, peak_fraction and bandwidth_fraction of a row with fps and frame cost."""
    fps = row["fps"]
    if row.get("gflop_per_frame") is None or not fps:
        return {"gflop_s": None, "peak_fraction": None, "bandwidth_fraction": None}
    gflop_s = row["gflop_per_frame"] * fps
    flop_peak = peak.get(precision or "fp32", {}).get("gflop_s")  # None for a mixed plan ("bf16 conv2")
    mem_peak = peak.get("memory", {}).get("gb_s")
    return {
        "gflop_s": gflop_s,
        "peak_fraction": gflop_s / flop_peak if flop_peak else None,
        "bandwidth_fraction": row["min_bytes_per_frame"] * fps / 1e9 / mem_peak if mem_peak else None,
    }


def bench_model(upscaler, res: Resolution, device: torch.device, min_repeats: int, min_time_s: float) -> dict:
    """Model-only timing of one upscaler at one resolution: fps, mpix_s, frame_ms, samples."""
    y = torch.rand(1, 1, res.out_height, res.out_width, generator=torch.Generator().manual_seed(0)).to(device)
    t0 = time.perf_counter()
    _in_worker(lambda: (upscaler(y), _sync(device)), device)
    first_call_s = time.perf_counter() - t0
    times = time_calls(lambda: upscaler(y), device, min_repeats, min_time_s)
    median_s = statistics.median(times)
    fps = 1.0 / median_s
    return {
        "fps": fps,
        "mpix_s": res.out_width * res.out_height * fps / 1e6,
        "frame_ms": median_s * 1e3,
        "frame_ms_min": min(times) * 1e3,
        "frame_ms_max": max(times) * 1e3,
        "samples": len(times),
        "first_call_s": first_call_s,
    }


class _BicubicOnly:
    """Identity 'upscaler' on a device: the pipeline then does MATLAB bicubic there and nothing else."""

    backend = "none"

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y


def bench_video(src: str, dst: Path, scale: int, upscaler, plan: Plan) -> dict:
    """One run of `upscale_video` to `dst` (deleted afterwards): frames, elapsed_s, fps and stage figures."""
    try:
        summary = upscale_video(src, dst, scale, upscaler, codec=plan.codec, preset=plan.preset, overwrite=True)
    finally:
        dst.unlink(missing_ok=True)
    return {
        "frames": summary.frames,
        "elapsed_s": summary.elapsed_s,
        "fps": summary.fps,
        "in_size": summary.in_size,
        "out_size": summary.out_size,
        "codec": summary.codec,
        "pix_fmt": summary.pix_fmt,
        "stages": summary.stages,
    }


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["fps"])
    return {**ordered[(len(ordered) - 1) // 2], "fps": statistics.median(r["fps"] for r in runs), "runs": len(runs)}


def evaluate_model(upscaler, scale: int, dataset: str, cache: dict) -> dict:
    """Mean Y-PSNR of `upscaler` and of bicubic on `dataset` at `scale` (the `vsr eval` protocol)."""
    from vsr.train.data import resolve_dataset
    from vsr.train.evaluate import evaluate, load_ground_truth

    key = (dataset, scale)
    if key not in cache:
        cache[key] = load_ground_truth(resolve_dataset(dataset), scale)
    result = evaluate(cache[key], scale, upscaler, Path(dataset).name)
    return {
        "psnr_db": result.mean("model_psnr"),
        "bicubic_psnr_db": result.mean("bicubic_psnr"),
        "paper_srcnn_psnr_db": result.paper("srcnn"),
        "images": len(result.images),
    }


def _encoder(plan: Plan) -> dict:
    quality_key, quality, preset = ENCODER_DEFAULTS.get(plan.codec, (None, None, None))
    return {"codec": plan.codec, "preset": plan.preset or preset, quality_key or "quality": quality}


def run(plan: Plan, device: torch.device, progress: Progress | None = None, command: str | None = None) -> dict:
    """Measure everything the plan asks for on `device`; returns the report (see the module contract)."""
    say = progress or (lambda message: None)
    for backend in plan.backends:
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if "tensorrt" in plan.backends:
        from vsr.engine import tensorrt as trt

        if not trt.available():
            raise BackendError(f"the tensorrt backend needs torch-tensorrt ({trt.install_advice()}); leave it out of --backends")
    for arch in plan.models:
        if arch not in MODELS:
            raise UsageError(f"unknown model {arch!r}; choose from {', '.join(MODELS)}")
    if not plan.resolutions:
        raise UsageError("no resolutions to measure; pass e.g. --resolutions 640x360x3")
    if plan.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {plan.frames}")
    if plan.input is not None:
        check_input(plan.input)
    doc: dict = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "plan": {**asdict(plan), "resolutions": [r.label for r in plan.resolutions], "encoder": _encoder(plan)},
        "device": device_info(device),
    }
    say("measuring the peak (matmul, copy)")
    peak = doc["peak"] = measure_peak(device)
    precisions = plan.precisions or precisions_for(device)
    models: dict[tuple[str, int], tuple[SRCNN, str]] = {}
    results: list[dict] = []
    quality: list[dict] = []
    gt_cache: dict = {}

    def model_for(arch: str, scale: int) -> tuple[SRCNN, str]:
        if (arch, scale) not in models:
            models[(arch, scale)] = load_model(arch, scale)
        return models[(arch, scale)]

    def base_row(stage: str, backend, precision, arch, in_wh, out_wh, scale: int, weights) -> dict:
        return {
            "stage": stage,
            "backend": backend,
            "precision": precision,
            "model": arch,
            "weights": weights,
            "input": f"{in_wh[0]}x{in_wh[1]}",
            "output": f"{out_wh[0]}x{out_wh[1]}",
            "scale": scale,
            "device": device.type,
        }

    for res in plan.resolutions:
        for arch in plan.models:
            model, weights = model_for(arch, res.scale)
            for backend in plan.backends:
                for precision, upscaler in distinct_precisions(precisions, backend, model, device):
                    say(f"model {arch} {backend} {precision} {res.width}x{res.height} -> {res.out_width}x{res.out_height}")
                    in_wh, out_wh = (res.width, res.height), (res.out_width, res.out_height)
                    row = base_row("model", backend, precision, arch, in_wh, out_wh, res.scale, weights)
                    row.update(bench_model(upscaler, res, device, plan.min_repeats, plan.min_time_s))
                    row.update(frame_cost(model.config, res.width, res.height, res.scale))
                    row.update(_limits(row, peak, precision))
                    results.append(row)
                    del upscaler
                    if device.type == "cuda":
                        torch.cuda.empty_cache()

    if plan.eval_data:
        for scale in dict.fromkeys(r.scale for r in plan.resolutions):
            for arch in plan.models:
                model, weights = model_for(arch, scale)
                for precision, upscaler in distinct_precisions(precisions, "eager", model, device):
                    entry = {"dataset": Path(plan.eval_data).name, "scale": scale, "model": arch}
                    entry.update({"backend": "eager", "precision": precision, "weights": weights})
                    if weights != "shipped":
                        entry.update({"psnr_db": None, "note": f"no shipped weights for {arch} x{scale}"})
                    else:
                        say(f"{entry['dataset']} x{scale} Y-PSNR of {arch} {precision}")
                        entry.update(evaluate_model(upscaler, scale, plan.eval_data, gt_cache))
                    quality.append(entry)

    if plan.pipeline:
        results.extend(_bench_pipelines(plan, device, precisions, model_for, base_row, peak, say))
    doc["results"] = results
    doc["quality"] = quality
    doc["fp16_psnr_delta_db"] = fp16_psnr_delta(quality)
    if device.type == "cpu":
        used = {r["precision"] for r in results + quality if r.get("precision")}
        benched = [model_for(a, r.scale)[0] for r in plan.resolutions for a in plan.models]
        doc.update(cpu_precision_delta(quality, benched, any("bf16" in p for p in used)))
    return doc


def distinct_precisions(precisions, backend: str, model: SRCNN, device: torch.device):
    """(label, upscaler) for each `--precision` choice, by the label of the plan it resolves to ("auto" on a
    CPU without native bf16 is fp32 again: measured once)."""
    seen = set()
    for precision in precisions:
        upscaler = build(backend, model, device, precision)
        if upscaler.precision not in seen:
            seen.add(upscaler.precision)
            yield upscaler.precision, upscaler


def cpu_precision_delta(quality: list[dict], models: list[SRCNN], bf16_used: bool = True) -> dict:
    """`cpu_precision_psnr_delta_db`: the largest |bf16-plan - fp32| Y-PSNR measured in this run (--eval), each
    such entry also getting its signed `cpu_precision_psnr_delta_db`; without such pairs, the largest recorded
    Set5 figure of the `auto` plans of the benched shipped models (`vsr.engine.precision.recorded_delta`).
    `cpu_precision_psnr_delta_source` says which. 0.0 when no bf16 plan ran (`bf16_used` False)."""
    if not bf16_used:
        return {"cpu_precision_psnr_delta_db": 0.0, "cpu_precision_psnr_delta_source": "fp32 only"}
    fp32 = {(q["dataset"], q["scale"], q["model"]): q.get("psnr_db") for q in quality if q["precision"] == "fp32"}
    deltas = []
    for q in quality:
        ref = fp32.get((q["dataset"], q["scale"], q["model"]))
        if "bf16" in q["precision"] and q.get("psnr_db") is not None and ref is not None:
            q["cpu_precision_psnr_delta_db"] = round(q["psnr_db"] - ref, 4)
            deltas.append(abs(q["psnr_db"] - ref))
    if deltas:
        return {"cpu_precision_psnr_delta_db": round(max(deltas), 4), "cpu_precision_psnr_delta_source": "measured"}
    recorded = [d for d in (recorded_delta(m) for m in models) if d is not None]
    if recorded:
        return {
            "cpu_precision_psnr_delta_db": round(max(abs(d) for d in recorded), 4),
            "cpu_precision_psnr_delta_source": "recorded (Set5, vsr/model/weights/cpu_precision.json)",
        }
    return {"cpu_precision_psnr_delta_db": None, "cpu_precision_psnr_delta_source": None}


def fp16_psnr_delta(quality: list[dict]) -> float | None:
    """The largest |fp16 - fp32| Y-PSNR over the (dataset, scale, model) pairs measured in both precisions
    (each fp16 entry also gets its own signed `fp16_psnr_delta_db`); None without such pairs (e.g. on the CPU)."""
    fp32 = {(q["dataset"], q["scale"], q["model"]): q.get("psnr_db") for q in quality if q["precision"] == "fp32"}
    deltas = []
    for q in quality:
        ref = fp32.get((q["dataset"], q["scale"], q["model"]))
        if q["precision"] == "fp16" and q.get("psnr_db") is not None and ref is not None:
            q["fp16_psnr_delta_db"] = round(q["psnr_db"] - ref, 4)
            deltas.append(abs(q["psnr_db"] - ref))
    return round(max(deltas), 4) if deltas else None


def _bench_pipelines(plan: Plan, device: torch.device, precisions, model_for, base_row, peak: dict, say: Progress) -> list[dict]:
    """The transcode baseline and one pipeline row per backend x precision x model, runs interleaved."""
    first = plan.resolutions[0]
    scale = first.scale
    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp:
        work = Path(tmp)
        if plan.input is None:
            from vsr.synth import make_clip

            say(f"making a synthetic {first.width}x{first.height} clip of {plan.frames} frames")
            src = str(make_clip(work / "clip.mp4", first.width, first.height, plan.frames, fps=25, audio=True))
            clip = f"synthetic {first.width}x{first.height}, {plan.frames} frames, 25 fps, AAC audio"
        else:
            src = plan.input
            reader = VideoReader(src)
            try:
                info = reader.info
            finally:
                reader.close()
            clip = f"{Path(src).name} ({info.width}x{info.height}, {info.pix_fmt})"
        in_w, in_h = (first.width, first.height) if plan.input is None else (info.width, info.height)
        warm = torch.zeros(1, 1, output_length(in_h, scale), output_length(in_w, scale), device=device)
        baseline = None if device.type == "cpu" else _BicubicOnly(device)
        configs = [("transcode", None, None, "bicubic", None, baseline)]
        naive_ok = plan.naive and (plan.input is None or _naive_fits(info))
        for arch in plan.models:
            model, weights = model_for(arch, scale)
            if naive_ok:
                configs.append(("naive", "eager", "fp32", arch, weights, copy.deepcopy(model).to(device)))
            for backend in plan.backends:
                for precision, upscaler in distinct_precisions(precisions, backend, model, device):
                    _in_worker(lambda up=upscaler: up(warm), device)  # first-call costs of this frame size stay out of the timing
                    configs.append(("pipeline", backend, precision, arch, weights, upscaler))
        runs: list[list[dict]] = [[] for _ in configs]
        for r in range(plan.pipeline_runs):
            for i, (stage, backend, precision, arch, _, upscaler) in enumerate(configs):
                label = {"transcode": "transcode (bicubic)", "naive": f"naive loop {arch}"}.get(stage)
                say(f"{label or f'pipeline {arch} {backend} {precision}'}, run {r + 1}/{plan.pipeline_runs}")
                if stage == "naive":
                    runs[i].append(bench_naive(src, work / "naive.mkv", scale, upscaler))
                else:
                    runs[i].append(bench_video(src, work / "out.mkv", scale, upscaler, plan))
        rows = []
        for (stage, backend, precision, arch, weights, _), measured in zip(configs, runs, strict=True):
            m = _median_run(measured)
            (w, h), (ow, oh) = m["in_size"], m["out_size"]
            row = base_row(stage, backend, precision, arch, (w, h), (ow, oh), scale, weights)
            row.update(
                {
                    "fps": m["fps"],
                    "mpix_s": ow * oh * m["fps"] / 1e6,
                    "frames": m["frames"],
                    "elapsed_s": m["elapsed_s"],
                    "runs": m["runs"],
                    "clip": clip,
                    "codec": m["codec"],
                    "pix_fmt": m["pix_fmt"],
                    "stages": m["stages"],
                }
            )
            if stage != "transcode":
                row.update(frame_cost(model_for(arch, scale)[0].config, w, h, scale))
            else:
                row.update({"gflop_per_frame": None, "min_bytes_per_frame": None, "flop_per_byte": None})
            row.update(_limits(row, peak, precision))
            rows.append(row)
        base_fps = rows[0]["fps"]
        naive_fps = {r["model"]: r["fps"] for r in rows if r["stage"] == "naive"}
        for row in rows:
            row["ratio_to_transcode"] = row["fps"] / base_fps if base_fps else None
            if row["stage"] == "pipeline" and naive_fps.get(row["model"]):
                row["speedup_over_naive"] = row["fps"] / naive_fps[row["model"]]
        return rows


def _naive_fits(info) -> bool:
    """The naive loop reads 8-bit 4:2:0 of even size (`vsr.bench.naive`); other inputs get no naive row."""
    return info.pix_fmt in ("yuv420p", "yuvj420p") and info.width % 2 == 0 and info.height % 2 == 0


def bench_naive(src: str, dst: Path, scale: int, model: SRCNN) -> dict:
    """One run of the naive per-frame loop (`vsr.bench.naive`) to `dst` (deleted afterwards), timed like `bench_video`:
    frames, elapsed_s (opening and closing the files included), fps; no stage figures (one thread does all)."""
    t0 = time.perf_counter()
    try:
        frames = naive_upscale(src, dst, scale, model)
        elapsed_s = time.perf_counter() - t0
        with av.open(str(dst)) as c:
            stream = c.streams.video[0]
            out_size, pix_fmt = (stream.codec_context.width, stream.codec_context.height), stream.codec_context.pix_fmt
    finally:
        dst.unlink(missing_ok=True)
    with av.open(str(src)) as c:
        in_size = (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height)
    return {
        "frames": frames,
        "elapsed_s": elapsed_s,
        "fps": frames / elapsed_s,
        "in_size": in_size,
        "out_size": out_size,
        "codec": "libx264",
        "pix_fmt": pix_fmt,
        "stages": None,
    }


# ---------------------------------------------------------------- plotting


def check_plotting() -> None:
    """Raise a UsageError now (before measuring) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"--plot needs matplotlib; install it with {install_hint('plot')}") from None


def row_label(row: dict) -> str:
    if row["stage"] == "transcode":
        return f"transcode bicubic {row['input']}->{row['output']}"
    return f"{row['stage']} {row['model']} {row['backend']} {row['precision']} {row['input']}->{row['output']}"


def plot(doc: dict, path: Path) -> Path:
    """Bar chart of output Mpixel/s per configuration; beside it Y-PSNR vs speed when the report has quality."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    scored = [q for q in doc.get("quality", []) if q.get("psnr_db") is not None]
    ncols = 2 if scored else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7.5 * ncols, max(3.5, 1.2 + 0.38 * len(rows))), squeeze=False)
    ax = axes[0][0]
    colors = {"model": "tab:blue", "pipeline": "tab:orange", "transcode": "tab:gray", "naive": "tab:red"}
    labels = [row_label(r) for r in rows]
    values = [r["mpix_s"] for r in rows]
    ypos = list(range(len(rows)))[::-1]
    ax.barh(ypos, values, color=[colors[r["stage"]] for r in rows])
    ax.set_yticks(ypos, labels, fontsize=8)
    for y, r in zip(ypos, rows, strict=True):
        ax.text(r["mpix_s"], y, f" {r['fps']:.3g} fps", va="center", fontsize=7)
    if _wide(values):
        ax.set_xscale("log")
    ax.margins(x=0.12)
    ax.set_xlabel("output Mpixel/s")
    ax.set_title(f"vsr bench on {doc['device']['name']}", fontsize=10)
    if scored:
        ax = axes[0][1]
        model_rows = [r for r in rows if r["stage"] == "model"]
        speeds = []
        for q in scored:  # one point per backend timed for this (model, precision, scale)
            key = (q["model"], q["precision"], q["scale"])
            for backend in dict.fromkeys(r["backend"] for r in model_rows):
                same = [r for r in model_rows if (r["model"], r["precision"], r["scale"]) == key and r["backend"] == backend]
                if not same:
                    continue
                speed = statistics.median(r["mpix_s"] for r in same)
                speeds.append(speed)
                marker = "o" if q["model"] == "9-5-5" else "s"
                ax.scatter([speed], [q["psnr_db"]], marker=marker, s=40)
                text = f"{q['model']} x{q['scale']} {backend} {q['precision']}"
                ax.annotate(text, (speed, q["psnr_db"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        for scale in sorted({q["scale"] for q in scored}):
            bic = next(q["bicubic_psnr_db"] for q in scored if q["scale"] == scale)
            ax.axhline(bic, ls="--", lw=0.8, color="gray")
            where = {"xycoords": ("axes fraction", "data"), "xytext": (2, 2), "textcoords": "offset points"}
            ax.annotate(f"bicubic x{scale}", (0, bic), fontsize=7, color="gray", **where)
        if _wide(speeds):
            ax.set_xscale("log")
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel("model-only output Mpixel/s (faster ->)")
        ax.set_ylabel(f"{scored[0]['dataset']} Y-PSNR (dB)")
        ax.set_title("quality vs speed", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _wide(values: list[float]) -> bool:
    """Whether values span enough (10x) for a log axis."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def summarise_device(doc: dict) -> str:
    """One line: device, threads, bf16 capability, measured peak; then, on the CPU, the precision loss line."""
    d, p = doc["device"], doc["peak"]
    peaks = ", ".join(f"{k} {v['gflop_s']:.0f} GFLOP/s" for k, v in p.items() if "gflop_s" in v)
    threads = f"{d['cpu_cores']} cores / {d['cpu_threads']} threads, torch {d['torch_threads']} threads"
    load = f", load {d['load_avg_1m']:.1f}" if d.get("load_avg_1m") is not None else ""
    line = f"{d['name']} ({threads}{load}); peak {peaks}, copy {p['memory']['gb_s']:.1f} GB/s"
    bf16 = d.get("cpu_bf16")
    if d.get("type") == "cpu" and bf16 is not None:
        have = [k for k in ("avx512_bf16", "amx_bf16") if bf16.get(k)]
        line += f"\nbf16: {'native (' + ', '.join(have) + ')' if have else 'not native (fp32 under auto)'}"
        delta = doc.get("cpu_precision_psnr_delta_db")
        if delta is not None:
            line += f"; precision loss {delta:.4f} dB Y-PSNR ({doc.get('cpu_precision_psnr_delta_source')})"
    return line
