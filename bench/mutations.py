"""Mutation check of the GPU path's CPU tests: each mutation below, applied alone, must make the tests named with it
fail. No GPU has run vsr's GPU code, so the CPU tests (fakes that enforce CUDA's, torch's and the libraries' rules,
tests/fake_cuda.py) are what stands between a broken GPU path and a release; a test that passes with the code
broken guards nothing.

Contract:
- `MUTATIONS` lists `Mutation(name, path, old, new, tests, needs_gpu)`: in the tracked file `path`, the text `old`
  (which must occur exactly once: if the code moved, the entry is updated, never silently skipped) becomes `new`.
  `tests` are pytest node ids that should fail with it. `needs_gpu` names the GPU test (`pytest -m gpu`, run by
  bench/gpu_check.sh) that covers a mutation no CPU test can catch; such a one may survive.
- For each mutation: the repository's tracked files (`git ls-files`, as they are in the working tree) are copied
  to a temporary folder, the one replacement is made, and `python -m pytest -q -x -p no:cacheprovider <tests>` runs
  there with PYTHONPATH pointing at the copy. Exit status 1 (tests failed) is "killed", 0 is "survived"; any other
  (a collection error, an unknown node id, a timeout) is "error" and counts as a failure of the check.
- First every `old` is checked, then the tests of the selected mutations run once on an unmutated copy ("baseline"):
  they must pass, or nothing can be concluded.
- Output: one table row per mutation. Exit 0: every mutation killed or (survived and `needs_gpu`); 1: some survived
  without `needs_gpu`, or an error; 2: an `old` not found exactly once, or the baseline failed.

Usage:
    python bench/mutations.py                    # all (a few minutes on 2 cores)
    python bench/mutations.py -k webcam -k drain # those whose name contains any of the words
    python bench/mutations.py --list             # the entries, nothing run
    python bench/mutations.py --json bench/results/mutations.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    needs_gpu: str | None = None  # the GPU test covering it, where no CPU test can


T = "tests/test_gpu_timeline.py::"
R = "tests/test_gpu_runtime.py::"
W = "tests/test_gpu_webcam.py::"
P = "tests/test_gpu_placement.py::"
PLANES = T + "test_planes_equal_the_cpu_path_and_waits_sleep[uint8-255-False]"  # GpuFrames on the fake, all checks
PLACED = R + "test_host_buffers_are_pinned_and_device_buffers_and_streams_are_on_the_runtimes_gpu"
SG = "tests/test_segments_gpu.py::"
FL = "tests/test_flags.py::"
RG = "tests/test_ray_gpu.py::"
HW = "tests/test_hwaccel.py::"
GPU_PY = "vsr/engine/gpu.py"
STAGE_PY = "vsr/pipeline/gpu_stage.py"
FEED_PY = "vsr/live/feed.py"

MUTATIONS: list[Mutation] = [
    # ---- GpuFrames and CudaRuntime (vsr/engine/gpu.py)
    Mutation(
        "host buffers not pinned",
        GPU_PY,
        "torch.empty(shape, dtype=dtype, pin_memory=True)",
        "torch.empty(shape, dtype=dtype)",
        (PLACED, PLANES),
    ),
    Mutation(
        "device buffers on `cuda` instead of self.device",
        GPU_PY,
        "torch.empty(shape, dtype=dtype, device=self.device)",
        'torch.empty(shape, dtype=dtype, device="cuda")',
        (PLACED, PLANES),
    ),
    Mutation(
        "CudaRuntime.read returns a view of the pinned buffer",
        GPU_PY,
        "return host.numpy().copy()",
        "return host.numpy()",
        (R + "test_the_fake_makes_the_runtime_read_a_copy_of_the_pinned_buffer", PLANES),
    ),
    Mutation(
        "drain skips the compute stream",
        GPU_PY,
        "        for stream in (self.upload_stream, self.compute_stream, self.download_stream):\n            try:",
        "        for stream in (self.upload_stream, self.download_stream):\n            try:",
        (
            T + "test_pipeline_gpu_loop_failure_drains_and_leaves_nothing[1]",
            R + "test_drain_waits_for_every_stream_even_if_one_wait_fails",
        ),
    ),
    Mutation(
        "a hidden .item() after the model",
        GPU_PY,
        "        y = self.upscaler(y)\n",
        "        y = self.upscaler(y)\n        float(y.max())\n",
        (PLANES,),
    ),
    Mutation(
        "a hidden .cpu() after the model",
        GPU_PY,
        "        y = self.upscaler(y)\n",
        "        y = self.upscaler(y).cpu()\n",
        (PLANES,),
    ),
    Mutation(
        "D2H copy from a compute-stream temporary without record_stream",
        GPU_PY,
        "        _store(slot.dev_out[0], y[0, 0, :oh, :ow].mul_(peak).round_().clamp_(0, peak))",
        "        slot.dev_out[0] = y[0, 0, :oh, :ow].mul(peak).round_().clamp_(0, peak).to(slot.dev_out[0].dtype)",
        (PLANES,),
    ),
    Mutation(
        "streams not ordered after the default stream (risk 6 reverted)",
        GPU_PY,
        "            rt.follow_current(stream)",
        "            pass",
        (R + "test_streams_wait_for_the_default_streams_work_before_touching_the_buffers", PLANES),
    ),
    Mutation(
        "streams from torch-tensorrt's pool level (risk 7 reverted)",
        GPU_PY,
        "return torch.cuda.Stream(self.device, priority=STREAM_PRIORITY)",
        "return torch.cuda.Stream(self.device)",
        (R + "test_many_gpuframes_never_get_a_tensorrt_engines_stream[one-engine]",),
    ),
    Mutation(
        "a failed drain raises the CUDA error itself (defect 3 reverted in drain)",
        GPU_PY,
        "            except RuntimeError as exc:  # torch.AcceleratorError",
        "            except ZeroDivisionError as exc:  # torch.AcceleratorError",
        (
            T + "test_pipeline_sticky_cuda_error_is_one_line_not_the_drains_traceback[1-sticky]",
            W + "test_webcam_sticky_cuda_error_is_the_first_error_as_one_line[sticky]",
        ),
    ),
    Mutation(
        "host waits spin (events not blocking)",
        GPU_PY,
        "torch.cuda.Event(blocking=True)",
        "torch.cuda.Event()",
        (PLANES,),
    ),
    Mutation(
        "copies not non_blocking",
        GPU_PY,
        "dst.copy_(src, non_blocking=True)",
        "dst.copy_(src)",
        (PLANES,),
    ),
    Mutation(
        "compute does not wait for the upload",
        GPU_PY,
        "        rt.wait(self.compute_stream, slot.uploaded)\n",
        "",
        (PLANES,),
    ),
    Mutation(
        "download does not wait for the compute",
        GPU_PY,
        "        rt.wait(self.download_stream, slot.computed)\n",
        "",
        (PLANES,),
    ),
    Mutation(
        "upload and download on one stream",
        GPU_PY,
        "self.upload_stream, self.compute_stream, self.download_stream = rt.stream(), rt.stream(), rt.stream()",
        "self.upload_stream = self.download_stream = rt.stream(); self.compute_stream = rt.stream()",
        (T + "test_each_engine_is_busy_with_one_frame_while_the_others_work_on_neighbours",),
    ),
    Mutation(
        "a slot reused while in flight",
        GPU_PY,
        "        if slot.busy:\n",
        "        if False:\n",
        (T + "test_more_tickets_than_slots_is_refused",),
    ),
    # ---- the pipeline's SR stage on CUDA (vsr/pipeline/gpu_stage.py)
    Mutation(
        "the pipeline keeps one frame in flight instead of all slots",
        STAGE_PY,
        ">= len(gpu.slots):",
        ">= 1:",
        (T + "test_pipeline_keeps_every_slot_in_flight",),
    ),
    Mutation(
        "no torch.cuda.set_device in the pipeline's SR thread",
        STAGE_PY,
        "        torch.cuda.set_device(self.device)\n",
        "",
        (T + "test_pipeline_gpu_loop_gives_the_cpu_output[yuv420p]",),
    ),
    Mutation(
        "the drain's failure replaces the error being reported (defect 3 reverted in the stage)",
        STAGE_PY,
        "gpu.drain(after_error=not ended)",
        "gpu.drain()",
        (T + "test_pipeline_sticky_cuda_error_is_one_line_not_the_drains_traceback[1-backend]",),
    ),
    # ---- the webcam's SR thread on CUDA (vsr/live/feed.py)
    Mutation(
        "no torch.cuda.set_device in the webcam's SR thread",
        FEED_PY,
        "                torch.cuda.set_device(self.device)  # per thread",
        "                pass  # per thread",
        (W + "test_webcam_gpu_branch_names_its_gpu_in_the_sr_thread",),
    ),
    Mutation(
        "the webcam error path without drain()",
        FEED_PY,
        "                self._gpu.drain(after_error=True)",
        "                pass",
        (W + "test_webcam_gpu_failure_drains_and_is_one_line[1-raises]",),
    ),
    Mutation(
        "the webcam drains only after a RuntimeError",
        FEED_PY,
        "        except BaseException as exc:  # noqa: BLE001 - drained whatever failed",
        "        except RuntimeError as exc:  # noqa: BLE001 - drained whatever failed",
        (W + "test_webcam_gpu_failure_drains_and_is_one_line[1-chain]",),
    ),
    Mutation(
        "the webcam's drain failure replaces the error (defect 3 reverted in the webcam)",
        FEED_PY,
        "self._gpu.drain(after_error=True)",
        "self._gpu.drain()",
        (W + "test_webcam_sticky_cuda_error_is_the_first_error_as_one_line[backend]",),
    ),
    # ---- device placement in other modules (tests in tests/test_gpu_placement.py)
    Mutation(
        "Upscaler.__call__ without torch.cuda.device",
        "vsr/engine/base.py",
        "            with torch.cuda.device(self.device), flags.shared(cuda_flags):\n                return self._call(y)",
        "            with flags.shared(cuda_flags):\n                return self._call(y)",
        (P + "test_upscaler_runs_its_model_with_its_gpu_current",),
    ),
    Mutation(
        "TensorRT load without torch.cuda.device",
        "vsr/engine/tensorrt.py",
        "        with torch.cuda.device(self.device):\n            engine = torch.export.load(",
        "        if True:\n            engine = torch.export.load(",
        (P + "test_tensorrt_builds_saves_and_loads_with_the_engines_gpu_current",),
    ),
    Mutation(
        "TensorRT build without torch.cuda.device",
        "vsr/engine/tensorrt.py",
        "            with torch.cuda.device(self.device):\n                engine = compile_engine(",
        "            if True:\n                engine = compile_engine(",
        (P + "test_tensorrt_builds_saves_and_loads_with_the_engines_gpu_current",),
    ),
    Mutation(
        "TensorRT save without torch.cuda.device",
        "vsr/engine/tensorrt.py",
        "with atomic_path(path) as tmp, torch.cuda.device(self.device):",
        "with atomic_path(path) as tmp:",
        (P + "test_tensorrt_builds_saves_and_loads_with_the_engines_gpu_current",),
    ),
    Mutation(
        "the NVDEC device index ignored",
        "vsr/media/source.py",
        "device=None if device is None else str(device)",
        "device=None",
        (P + "test_nvdec_opens_on_the_gpu_that_runs_the_model",),
    ),
    Mutation(
        "the pipeline does not pass its GPU to NVDEC",
        "vsr/pipeline/video.py",
        "hwaccel_device=hw_index)",
        "hwaccel_device=None)",
        (P + "test_nvdec_opens_on_the_gpu_that_runs_the_model",),
    ),
    Mutation(
        'the "software decoder took over" check removed',
        "vsr/media/source.py",
        "elif ctx.pix_fmt not in hw_formats:",
        "elif False:",
        (P + "test_a_hardware_decoder_that_handed_over_to_software_is_said",),
    ),
    # ---- Defect 1: segments on a GPU (vsr/scaleout/parts.py, vsr/engine/chain.py, vsr/pipeline/video.py)
    Mutation(
        "defect 1 reverted: CUDA segments take upscale_planes",
        "vsr/pipeline/video.py",
        "        if self._uses_gpu():\n",
        "        if self._uses_gpu() and self.segment is None:\n",
        (SG + "test_the_simulated_gpu_is_really_used",),
    ),
    Mutation(
        "defect 1 reverted: segments not warmed up",
        "vsr/scaleout/parts.py",
        "        warm_up(upscaler, out_h, out_w)  # before the part is opened",
        "        pass  # before the part is opened",
        (SG + "test_the_upscaler_is_warmed_up_on_the_output_size_before_the_part_is_opened",),
    ),
    Mutation(
        "defect 1 reverted: the auto chain does not hand over at the first frame",
        "vsr/engine/chain.py",
        "        while not self._proven:\n",
        "        while False:\n",
        (SG + "test_the_chain_hands_over_at_the_first_call_without_a_warm_up",),
    ),
    Mutation(
        "next backend built in inference mode",
        "vsr/engine/chain.py",
        "with torch.inference_mode(False):",
        "with torch.inference_mode(True):",
        (SG + "test_the_chain_hands_over_at_the_first_call_without_a_warm_up",),
    ),
    Mutation(
        "segment threads hold the main thread's signal state",
        "vsr/pipeline/stages.py",
        "with held() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():",
        "with held():",
        (SG + "test_the_segment_stages_run_in_their_own_threads_and_do_not_touch_the_signal_state",),
    ),
    Mutation(
        "work folder names the backend the chain started with",
        "vsr/scaleout/run.py",
        'backend = "auto" if isinstance(inner, FallbackUpscaler) else getattr(inner, "backend", "auto")',
        'backend = getattr(inner, "backend", "auto")',
        (SG + "test_in_process_gpu_segments_name_the_auto_chain_not_the_backend_it_starts_with",),
    ),
    # ---- Defect 2: cuDNN flags (vsr/engine/base.py, vsr/engine/flags.py, vsr/train/training.py)
    Mutation(
        "the TF32-off line removed",
        "vsr/engine/base.py",
        "    return flags.Flags(benchmark=None if deterministic else True, tf32=False)",
        "    return flags.Flags(benchmark=None if deterministic else True)",
        (FL + "test_upscaler_sets_cuda_flags_for_its_call_only",),
    ),
    Mutation(
        "an upscaler's call without its flags scope",
        "vsr/engine/base.py",
        "            with torch.cuda.device(self.device), flags.shared(cuda_flags):",
        "            with torch.cuda.device(self.device):",
        (FL + "test_upscaler_sets_cuda_flags_for_its_call_only",),
    ),
    Mutation(
        "defect 2 reverted: the constructor sets process-wide cuDNN flags",
        "vsr/engine/base.py",
        "        self.config = model.config\n        self.tile = tile\n",
        '        self.config = model.config\n        self.tile = tile\n        if self.device.type == "cuda":\n'
        "            torch.backends.cudnn.benchmark = True\n            torch.backends.cudnn.allow_tf32 = False\n",
        (FL + "test_training_epochs_and_a_resumed_run_share_the_same_cuda_flags",),
    ),
    Mutation(
        "training outside its flags scope",
        "vsr/train/training.py",
        '    with flags.scoped(TRAIN_FLAGS) if device.type == "cuda" else nullcontext():',
        "    with nullcontext():",
        (FL + "test_training_epochs_and_a_resumed_run_share_the_same_cuda_flags",),
    ),
    Mutation(
        "training with TF32",
        "vsr/train/training.py",
        "TRAIN_FLAGS = flags.Flags(benchmark=False, deterministic=True, tf32=False)",
        "TRAIN_FLAGS = flags.Flags(benchmark=False, deterministic=True)",
        (FL + "test_training_epochs_and_a_resumed_run_share_the_same_cuda_flags",),
    ),
    Mutation(
        "overlapping calls restore each other's flags",
        "vsr/engine/flags.py",
        "            _depth -= 1\n            if _depth == 0:",
        "            _depth -= 1\n            if True:",
        (FL + "test_shared_scopes_overlapping_in_threads_put_back_once_the_last_ends",),
    ),
    Mutation(
        "TF32 through the legacy flag on torch 2.9+",
        "vsr/engine/flags.py",
        '    return conv if conv is not None and hasattr(conv, "fp32_precision") else None',
        "    return None",
        (FL + "test_tf32_through_the_per_operator_setting",),
    ),
    # ---- Defect 4: Ray GPU tasks (vsr/scaleout/raytasks.py)
    Mutation(
        "defect 4 reverted: num_gpus only through .options() (no max_calls=1)",
        "vsr/scaleout/raytasks.py",
        "self._remote = ray.remote(**options)(_ray_segment)",
        "self._remote = ray.remote(_ray_segment).options(**options)",
        (RG + "test_each_gpu_task_computes_on_the_gpu_ray_gave_it[plain]",),
    ),
    Mutation(
        "a Ray task ignores the GPU it was given",
        "vsr/scaleout/raytasks.py",
        "spec = dataclasses.replace(spec, device=_assigned_gpu())",
        "pass",
        (RG + "test_each_gpu_task_computes_on_the_gpu_ray_gave_it[noset]",),
    ),
    Mutation(
        "defect 4 reverted: --backend and --precision replaced by auto/fp16 on Ray",
        "vsr/scaleout/raytasks.py",
        'device="cuda", backend=backend, precision=precision, threads=0',
        'device="cuda", backend="auto", precision=None, threads=0',
        (RG + "test_vsr_upscale_ray_passes_backend_and_precision_and_records_the_engine",),
    ),
    Mutation(
        "the CLI does not pass --backend/--precision to Ray",
        "vsr/cli/upscale.py",
        "RayWorkers(ray, spec, notice=notice, backend=backend, precision=precision)",
        "RayWorkers(ray, spec, notice=notice)",
        (RG + "test_vsr_upscale_ray_passes_backend_and_precision_and_records_the_engine",),
    ),
    Mutation(
        "local GPU workers lose the user's --backend/--precision",
        "vsr/cli/upscale.py",
        "LocalWorkers(spec_for(upscaler, workers, backend=backend, precision=precision), workers)",
        "LocalWorkers(spec_for(upscaler, workers), workers)",
        ("tests/test_resume.py::test_local_workers_on_a_gpu_build_their_engine_there_with_the_users_choice",),
    ),
    # ---- Risks 5 and 10 (vsr/media/source.py, vsr/media/writer.py, vsr/engine/tensorrt.py)
    Mutation(
        "risk 5 reverted: NVDEC with frame threads",
        "vsr/media/source.py",
        'return "SLICE" if live or hardware else "AUTO"',
        'return "SLICE" if live else "AUTO"',
        (HW + "test_nvdec_gets_no_frame_threads_so_a_16_reference_stream_fits_its_32_surfaces",),
    ),
    Mutation(
        "a refused stream said with the old, wrong reason",
        "vsr/media/source.py",
        "            why = refusal(ctx, self._hwaccel)",
        '            why = "the hardware decoder refused this stream (profile, size or bit depth) and software took over"',
        (HW + "test_a_stream_the_hardware_decoder_refused_is_said_with_what_is_known_of_it",),
    ),
    Mutation(
        "--hwaccel of a device type this FFmpeg lacks is an error again",
        "vsr/media/source.py",
        '        if hwaccel not in {t.name for t in HWDeviceType} - {"none"}:  # a typo: no FFmpeg has such a type',
        "        if True:",
        (HW + "test_a_device_type_this_ffmpeg_build_lacks_falls_back_to_the_cpu_with_one_line",),
    ),
    Mutation(
        "the old NVENC hint",
        "vsr/media/writer.py",
        "                hint = nvenc_hint(codec, self.pix_fmt)",
        '                hint = " (NVENC needs an NVIDIA GPU and driver; use --codec libx264 on other machines)"',
        (HW + "test_an_nvenc_encoder_that_cannot_open_is_one_line_with_the_hint",),
    ),
    Mutation(
        "the TensorRT install advice names no release",
        "vsr/engine/tensorrt.py",
        "    if not CHECKED[0] <= (major, minor) <= CHECKED[1]:",
        "    if False:",
        ("tests/test_install_text.py::test_the_advice_names_the_release_of_the_installed_torchs_minor_version",),
    ),
    # ---- Risk 9: the GPU tests' tolerances (tests/gpu_tolerances.py)
    Mutation(
        "fp32-vs-CPU tolerance back to 1e-5",
        "tests/gpu_tolerances.py",
        "FP32_VS_CPU = 1e-4",
        "FP32_VS_CPU = 1e-5",
        ("tests/test_gpu_tolerances.py::test_fp32_against_the_cpu_separates_tf32_from_fp32_rounding",),
    ),
    Mutation(
        "tiles-vs-whole tolerance back to 1e-6",
        "tests/gpu_tolerances.py",
        "TILED_VS_WHOLE = 1e-4",
        "TILED_VS_WHOLE = 1e-6",
        ("tests/test_gpu_tolerances.py::test_tiles_against_one_window_separate_a_short_halo_from_rounding",),
    ),
]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def copy_tree(files: list[str], dest: Path) -> None:
    for rel in files:
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """Problems: an `old` that does not occur exactly once in its file."""
    problems = []
    for m in mutations:
        path = ROOT / m.path
        if not path.is_file():
            problems.append(f"{m.name}: {m.path}: no such file")
        elif (count := path.read_text().count(m.old)) != 1:
            problems.append(f"{m.name}: {m.path}: the text to replace is found {count} times, not once: {m.old!r}")
    return problems


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int | None, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {TIMEOUT_S} s"
    lines = [line for line in r.stdout.strip().splitlines() if line.strip()]
    return r.returncode, lines[-1] if lines else r.stderr.strip()[-200:]


def run_one(m: Mutation, files: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="vsr-mutation-") as tmp:
        tree = Path(tmp)
        copy_tree(files, tree)
        target = tree / m.path
        target.write_text(target.read_text().replace(m.old, m.new, 1))
        t0 = time.perf_counter()
        rc, last = run_tests(tree, m.tests)
    if rc == 1:
        result = "killed"
    elif rc == 0:
        result = "survived"
    else:
        result = "error"
    return {
        "name": m.name,
        "path": m.path,
        "result": result,
        "tests": list(m.tests),
        "needs_gpu": m.needs_gpu,
        "seconds": round(time.perf_counter() - t0, 1),
        "pytest": last,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[], help="only mutations whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    selected = [m for m in MUTATIONS if not args.k or any(k.lower() in m.name.lower() for k in args.k)]
    if args.list:
        for m in selected:
            print(f"{m.name}\n  {m.path}\n  " + "\n  ".join(m.tests))
        return 0
    problems = check_snippets(selected)
    if problems:
        print("mutations that no longer apply (update their entries):", *problems, sep="\n  ", file=sys.stderr)
        return 2
    files = tracked_files()
    tests = tuple(dict.fromkeys(t for m in selected for t in m.tests))
    with tempfile.TemporaryDirectory(prefix="vsr-mutation-") as tmp:
        copy_tree(files, Path(tmp))
        rc, last = run_tests(Path(tmp), tests)
    if rc != 0:
        print(f"baseline: the tests fail without any mutation ({last}); fix them first", file=sys.stderr)
        return 2
    print(f"baseline: {len(tests)} tests pass unmutated ({last})")
    results = []
    for i, m in enumerate(selected, 1):
        results.append(run_one(m, files))
        r = results[-1]
        print(f"[{i}/{len(selected)}] {r['result']:8} {r['seconds']:6.1f} s  {m.name}", flush=True)
    failed = [r for r in results if r["result"] == "error" or (r["result"] == "survived" and not r["needs_gpu"])]
    width = max(len(r["name"]) for r in results)
    print(f"\n{'mutation':{width}}  {'file':26}  result")
    for r in results:
        note = f" (needs a GPU: {r['needs_gpu']})" if r["result"] == "survived" and r["needs_gpu"] else ""
        note += f" ({r['pytest']})" if r["result"] == "error" else ""
        print(f"{r['name']:{width}}  {r['path']:26}  {r['result']}{note}")
    killed = sum(r["result"] == "killed" for r in results)
    print(f"\n{killed} of {len(results)} killed by CPU tests; {len(failed)} not accounted for")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "killed": killed, "total": len(results)}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
