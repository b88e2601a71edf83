"""`vsr bench` and `vsr.bench.report`: report structure, physical limits, stage counters, CLI options and errors.

Tiny configurations only (64x36 frames, a few video frames); nothing here asserts on speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vsr import cli
from vsr.bench import report as bench
from vsr.engine import tensorrt as trt
from vsr.errors import UsageError
from vsr.model.srcnn import SRCNNConfig
from vsr.pipeline.video import upscale_video

from .test_video import make_clip

ROW_KEYS = {"stage", "backend", "precision", "model", "input", "output", "scale", "fps", "mpix_s"}
LIMIT_KEYS = {"gflop_per_frame", "min_bytes_per_frame", "gflop_s", "peak_fraction", "bandwidth_fraction"}
STAGE_KEYS = {"frames", "busy_s", "wait_in_s", "wait_out_s", "fps", "utilisation"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """64x48 H.264 with AAC audio, 12 frames at irregular timestamps."""
    return make_clip(tmp_path_factory.mktemp("bench") / "in.mkv")


@pytest.fixture(scope="module")
def report(clip) -> dict:
    """One tiny run through the Python API: a 64x36 x2 model row, and transcode + naive + pipeline on `clip`."""
    plan = bench.Plan(
        resolutions=(bench.Resolution(64, 36, 2),),
        models=("9-1-5",),
        input=str(clip),
        min_repeats=2,
        min_time_s=0.0,
        precisions=("fp32",),
    )
    messages: list[str] = []
    doc = bench.run(plan, torch.device("cpu"), progress=messages.append, command="test")
    assert messages, "progress was never reported"
    return doc


def test_report_structure(report):
    assert report["schema"] == bench.SCHEMA and report["command"] == "test"
    json.dumps(report)  # JSON-able as it is
    device = report["device"]
    versions = ("python", "torch", "av", "numpy", "opencv", "vsr")
    assert {"name", "type", "cpu", "cpu_cores", "cpu_threads", "torch_threads", *versions} <= set(device)
    assert device["type"] == "cpu" and device["name"]
    assert report["peak"]["fp32"]["gflop_s"] > 0 and report["peak"]["memory"]["gb_s"] > 0
    assert report["plan"]["resolutions"] == ["64x36x2"]
    assert [r["stage"] for r in report["results"]] == ["model", "transcode", "naive", "pipeline"]
    for row in report["results"]:
        assert ROW_KEYS | LIMIT_KEYS <= set(row), row["stage"]
        assert row["fps"] > 0 and row["mpix_s"] > 0
    assert report["quality"] == []
    assert set(device["cpu_bf16"]) == {"avx512_bf16", "amx_bf16", "native", "onednn"}
    assert report["cpu_precision_psnr_delta_db"] == 0.0  # fp32 only
    assert report["cpu_precision_psnr_delta_source"] == "fp32 only"


def test_model_row(report):
    row = report["results"][0]
    assert (row["backend"], row["precision"], row["model"], row["weights"]) == ("eager", "fp32", "9-1-5", "shipped")
    assert (row["input"], row["output"], row["scale"]) == ("64x36", "128x72", 2)
    assert row["samples"] >= 2 and row["frame_ms_min"] <= row["frame_ms"] <= row["frame_ms_max"]
    assert row["mpix_s"] == pytest.approx(128 * 72 * row["fps"] / 1e6)
    assert row["gflop_s"] == pytest.approx(row["gflop_per_frame"] * row["fps"])
    assert row["peak_fraction"] == pytest.approx(row["gflop_s"] / report["peak"]["fp32"]["gflop_s"])


def test_pipeline_and_transcode_rows(report):
    transcode, naive, pipeline = report["results"][1:]
    assert transcode["model"] == "bicubic" and transcode["backend"] is None and transcode["gflop_per_frame"] is None
    assert pipeline["model"] == "9-1-5" and pipeline["backend"] == "eager"
    for row in (transcode, pipeline):
        assert (row["input"], row["output"], row["frames"], row["codec"]) == ("64x48", "128x96", 12, "libx264")
        assert row["clip"].startswith("in.mkv")
        assert {"decode", "sr", "encode", "decoded", "upscaled"} <= set(row["stages"])
    assert transcode["ratio_to_transcode"] == 1.0
    assert pipeline["ratio_to_transcode"] == pytest.approx(pipeline["fps"] / transcode["fps"])
    assert (naive["model"], naive["backend"], naive["precision"], naive["stages"]) == ("9-1-5", "eager", "fp32", None)
    assert (naive["input"], naive["output"], naive["frames"]) == ("64x48", "128x96", 12)  # every frame, none dropped
    assert pipeline["speedup_over_naive"] == pytest.approx(pipeline["fps"] / naive["fps"])


def test_naive_loop_writes_every_frame_at_the_scale(tmp_path, clip):
    from vsr.bench.naive import naive_upscale

    from .test_model import make_model

    assert naive_upscale(clip, tmp_path / "out.mp4", 2, make_model("9-1-5")) == 12
    import av

    with av.open(str(tmp_path / "out.mp4")) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (96, 128)


def test_precision_choices_resolving_to_one_plan_are_measured_once():
    from .test_model import make_model

    model = make_model("9-1-5")  # no record: auto is fp32
    got = [label for label, _ in bench.distinct_precisions(("fp32", "auto"), "eager", model, torch.device("cpu"))]
    assert got == ["fp32"]


def test_cpu_precision_delta():
    quality = [
        {"dataset": "Set5", "scale": 3, "model": "9-5-5", "precision": "fp32", "psnr_db": 32.70},
        {"dataset": "Set5", "scale": 3, "model": "9-5-5", "precision": "bf16 conv2", "psnr_db": 32.702},
        {"dataset": "Set5", "scale": 3, "model": "9-1-5", "precision": "fp32", "psnr_db": 32.40},
        {"dataset": "Set5", "scale": 3, "model": "9-1-5", "precision": "bf16", "psnr_db": 32.393},
    ]
    doc = bench.cpu_precision_delta(quality, [])
    assert doc == {"cpu_precision_psnr_delta_db": 0.007, "cpu_precision_psnr_delta_source": "measured"}
    assert quality[1]["cpu_precision_psnr_delta_db"] == 0.002 and quality[3]["cpu_precision_psnr_delta_db"] == -0.007
    assert bench.cpu_precision_delta(quality, [], bf16_used=False)["cpu_precision_psnr_delta_db"] == 0.0
    from vsr.model.srcnn import load_weights
    from vsr.model.weights import default_weights

    shipped = load_weights(default_weights(3, "9-5-5"))  # no pairs measured: the record's figure
    doc = bench.cpu_precision_delta(quality[:1], [shipped])
    assert doc["cpu_precision_psnr_delta_source"].startswith("recorded")
    assert doc["cpu_precision_psnr_delta_db"] <= 0.01


def test_frame_cost():
    cost = bench.frame_cost(SRCNNConfig.from_arch("9-5-5"), 64, 36, 2)
    macs = 9 * 9 * 64 + 5 * 5 * 64 * 32 + 5 * 5 * 32
    assert cost["gflop_per_frame"] == pytest.approx(2 * macs * 128 * 72 / 1e9)
    assert cost["min_bytes_per_frame"] == 64 * 36 + 128 * 72  # uint8 luma in and out


def test_video_summary_stages(tmp_path, clip):
    summary = upscale_video(clip, tmp_path / "out.mkv", 2, None)
    stages = summary.stages
    for name in ("decode", "sr", "encode"):
        assert STAGE_KEYS <= set(stages[name])
        assert stages[name]["frames"] == summary.frames
        assert stages[name]["busy_s"] >= 0 and 0 <= stages[name]["utilisation"] <= 1.5
    for name in ("decoded", "upscaled"):
        assert 0 <= stages[name]["mean_fill"] <= stages[name]["capacity"]


def test_parse_options():
    assert bench.parse_resolutions("640x360x3, 1920X1080x2") == (bench.Resolution(640, 360, 3), bench.Resolution(1920, 1080, 2))
    assert bench.Resolution(640, 360, 3).out_width == 1920
    assert bench.parse_names("9-5-5,9-1-5,9-5-5", bench.MODELS, "--models") == ("9-5-5", "9-1-5")
    for bad in ("640x360", "640x360x1", "axbxc", "4x4x2", ""):
        with pytest.raises(UsageError, match="--resolutions"):
            bench.parse_resolutions(bad)
    with pytest.raises(UsageError, match="unknown 'nosuch'"):
        bench.parse_names("eager,nosuch", bench.BACKENDS, "--backends")


def test_default_plans():
    cpu, quick = bench.default_plan(torch.device("cpu")), bench.default_plan(torch.device("cpu"), quick=True)
    assert [r.label for r in cpu.resolutions] == ["640x360x3", "960x540x2", "1920x1080x2"]
    assert quick.quick and len(quick.resolutions) <= len(cpu.resolutions) and quick.frames <= cpu.frames
    assert bench.default_plan(torch.device("cuda"), quick=True).resolutions == bench.DEFAULT_RESOLUTIONS


def test_cli_json_and_plot(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["--quick", "--resolutions", "64x36x2", "--frames", "3", "--models", "9-1-5", "--json", out, "--device", "cpu"]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", png]
    except ImportError:
        png = None
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "vsr", "bench", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert {"device", "peak", "results", "plan"} <= set(doc)
    assert {row["stage"] for row in doc["results"]} == {"model", "pipeline", "transcode", "naive"}
    assert doc["command"].startswith("vsr bench --quick")
    assert "model only" in r.stdout and "transcode (bicubic)" in r.stdout and "naive loop 9-1-5" in r.stdout
    assert "bf16:" in r.stdout and "x naive" in r.stdout
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _numbers(doc: dict) -> list[str]:
    """Every number the tables print, formatted as they print it."""
    out = []

    def add(value, spec: str, times: float = 1, suffix: str = "") -> None:
        if value is not None:
            out.append(format(value * times, spec) + suffix)

    for r in doc["results"]:
        add(r["fps"], ".2f")
        add(r["mpix_s"], ".2f")
        add(r["peak_fraction"], ".1f", 100, "%")
        add(
            r.get("gflop_per_frame") if r["stage"] == "model" else r.get("ratio_to_transcode"),
            ".1f" if r["stage"] == "model" else ".3f",
        )
        add(r.get("speedup_over_naive"), ".2f")
        for k, spec in (("decode", ".1f"), ("sr", ".2f"), ("encode", ".1f")):
            add((r.get("stages") or {}).get(k, {}).get("fps"), spec)
    for q in doc.get("quality") or ():
        for k in ("psnr_db", "bicubic_psnr_db", "paper_srcnn_psnr_db"):
            add(q.get(k), ".2f")
    return out


def _cells(text: str) -> set[str]:
    return set(text.replace("│", " ").replace("┃", " ").split())


@pytest.mark.parametrize("width", [80, 100, 200])
def test_tables_never_cut_a_number(monkeypatch, width):
    """A report the size a fast GPU gives (five-digit fps, 1080p -> 2160p runs with long names) printed for a
    console `width` wide: no line wider, nothing cut with `…`, every number whole in its cell (the number columns'
    headers go one word a line and the names wrap instead)."""
    import importlib
    import io

    from rich.console import Console

    bench_cli = importlib.import_module("vsr.cli.bench")  # `vsr.cli.bench` the attribute is the command
    doc = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / "cpu-quick.json").read_text())
    for r in doc["results"]:
        r.update(backend="tensorrt", precision="fp16", input="1920x1080", output="3840x2160", weights="random")
        r.update(fps=r["fps"] * 1000, mpix_s=r["mpix_s"] * 1000, ratio_to_transcode=r.get("ratio_to_transcode", 0.5))
        for stage in (r.get("stages") or {}).values():
            stage["fps"] = stage.get("fps", 0) * 100
    naive = dict(doc["results"][-1], stage="naive", fps=1234.5678, speedup_over_naive=None)
    doc["results"].append(naive)
    doc["quality"] = [
        {"dataset": "Set14", "scale": 4, "model": "9-5-5", "backend": "eager", "precision": "fp16", "psnr_db": 27.4912,
         "bicubic_psnr_db": 26.0012, "paper_srcnn_psnr_db": 27.5},
        {"dataset": "Set14", "scale": 5, "model": "9-5-5", "backend": "eager", "precision": "fp16", "psnr_db": None,
         "note": "no shipped weights for 9-5-5 x5", "bicubic_psnr_db": 24.5, "paper_srcnn_psnr_db": None},
    ]  # fmt: skip
    buffer = io.StringIO()
    monkeypatch.setattr(bench_cli, "out_console", Console(file=buffer, width=width))
    bench_cli._print_bench(doc)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width, text
    assert "…" not in text, text
    missing = [n for n in _numbers(doc) if n not in _cells(text)]
    assert not missing and len(_numbers(doc)) > 30, (missing, text)


def test_cli_tables_piped_fit_80_columns(tmp_path):
    """`vsr bench --quick` with stdout a file and no terminal anywhere (no COLUMNS): rich's 80 columns, and no
    number of the report cut."""
    out = tmp_path / "bench.json"
    args = ["--quick", "--resolutions", "64x36x2", "--frames", "3", "--models", "9-1-5", "--json", out, "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    cmd = [sys.executable, "-m", "vsr", "bench", *map(str, args)]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in r.stdout, r.stdout
    doc = json.loads(out.read_text())
    missing = [n for n in _numbers(doc) if n not in _cells(r.stdout)]
    assert not missing, (missing, r.stdout)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--models", "9-9-9"], "--models: unknown '9-9-9'"),
        (["--backends", "eager,nosuch"], "--backends: unknown 'nosuch'"),
        (["--resolutions", "640x360"], "--resolutions: '640x360' is not WIDTHxHEIGHTxSCALE"),
        (["--input", "no/such/clip.mp4"], "no/such/clip.mp4: no such video file"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--json", "no/such/folder/out.json"], "does not exist"),
        (["--codec", "nosuchcodec"], "encoder 'nosuchcodec' is not available"),
        (["--precision", "fp16"], "--precision fp16 needs a CUDA GPU"),
        (["--precision", "fp64"], "--precision: unknown 'fp64'"),
    ],
)
def test_cli_bad_options_are_one_line(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["vsr", "bench", "--device", "cpu", "--resolutions", "64x36x2", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code != 0
    assert err.startswith("vsr: error: ") and err.count("\n") == 1, err
    assert message in err


@pytest.mark.skipif(trt.available(), reason="torch-tensorrt is installed here")
def test_cli_tensorrt_missing_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["vsr", "bench", "--device", "cpu", "--backends", "eager,tensorrt"])
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert err.startswith("vsr: error: the tensorrt backend needs torch-tensorrt") and err.count("\n") == 1


def test_cli_eval_without_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VSR_DATA", str(tmp_path))
    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["vsr", "bench", "--device", "cpu", "--eval"])
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert err.startswith("vsr: error: dataset 'Set5' not found") and err.count("\n") == 1


def test_fp16_psnr_delta_takes_the_largest_pair():
    from vsr.bench.report import fp16_psnr_delta

    quality = [
        {"dataset": "Set5", "scale": 2, "model": "9-5-5", "precision": "fp32", "psnr_db": 36.40},
        {"dataset": "Set5", "scale": 2, "model": "9-5-5", "precision": "fp16", "psnr_db": 36.395},
        {"dataset": "Set5", "scale": 3, "model": "9-5-5", "precision": "fp32", "psnr_db": 32.50},
        {"dataset": "Set5", "scale": 3, "model": "9-5-5", "precision": "fp16", "psnr_db": 32.508},
        {"dataset": "Set5", "scale": 4, "model": "9-1-5", "precision": "fp16", "psnr_db": None},
    ]
    assert fp16_psnr_delta(quality) == 0.008
    assert quality[1]["fp16_psnr_delta_db"] == -0.005
    assert fp16_psnr_delta([q for q in quality if q["precision"] == "fp32"]) is None


# ---------------------------------------------------------------- bench/gpu_check.sh (the GPU acceptance command)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_gpu_check_without_cuda_is_one_line_and_77():
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    assert r.returncode == 77, r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("gpu_check: no CUDA GPU visible to torch")


def _gpu_report(fps: float, ratio: float, delta: float | None) -> dict:
    model = {"stage": "model", "backend": "tensorrt", "precision": "fp16", "model": "9-5-5", "output": "1920x1080", "scale": 3}
    pipe = {"stage": "pipeline", "backend": "tensorrt", "precision": "fp16", "model": "9-5-5", "output": "1920x1080", "scale": 3}
    return {
        "plan": {"backends": ["eager", "tensorrt"]},
        "results": [{**model, "backend": "eager", "fps": 1e6}, {**model, "fps": fps}, {**pipe, "ratio_to_transcode": ratio}],
        "fp16_psnr_delta_db": delta,
    }


@pytest.mark.parametrize(
    "fps, ratio, delta, tests_rc, e2e_ok, want",
    [
        (1500.0, 0.95, 0.004, 0, True, [True] * 5),
        (999.0, 0.95, 0.004, 0, True, [True, False, True, True, True]),  # the eager row's 1e6 fps does not count
        (1500.0, 0.89, 0.004, 0, True, [False, True, True, True, True]),
        (1500.0, 0.95, 0.02, 0, True, [True, True, False, True, True]),
        (1500.0, 0.95, None, 0, True, [True, True, False, True, True]),  # not measured is not a pass
        (1500.0, 0.95, 0.004, 1, False, [True, True, True, False, False]),
    ],
)
def test_gpu_check_goals_pass_and_fail(fps, ratio, delta, tests_rc, e2e_ok, want):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    tests = {"returncode": tests_rc, "summary": "", "counts": {"failed": tests_rc}}
    e2e = {"returncode": 0, "frames_in": 96, "frames_out": 96 if e2e_ok else 95, "ok": e2e_ok}
    table = gpu_check.goals(_gpu_report(fps, ratio, delta), tests, e2e)
    assert [ok for _, _, ok in table] == want
