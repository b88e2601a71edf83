"""bench/gpu_check.py's steps of issue 24 (TensorRT through GpuFrames, a 10-bit clip, segments, training resumed)
checked on the CPU: the steps take a device and sizes, so their logic runs here with tiny inputs; the pass/fail rows
and the readers of pytest's and safetensors' files are tested on made-up results. Without CUDA the check itself exits
77 with one line (tests/test_bench.py runs bench/gpu_check.sh; here bench/gpu_check.py directly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import gpu_check
finally:
    sys.path.remove(str(ROOT / "bench"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_the_script_without_cuda_exits_77_with_one_line():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 77 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("gpu_check: no CUDA GPU visible to torch")


def test_ten_bit_step_on_the_cpu(tmp_path):
    got = gpu_check.ten_bit(tmp_path, "cpu", size=(48, 32), frames=3)
    for name in ("default", "fp32"):
        assert got[name]["frames"] == 3 and got[name]["pix_fmt"] == "yuv420p10le", got
        assert 30 < got[name]["y_psnr_db"] < 80, got  # against the 10-bit truth, in 10-bit codes
    assert got["delta_db"] == pytest.approx(got["fp32"]["y_psnr_db"] - got["default"]["y_psnr_db"])
    assert got["ok"] == (got["delta_db"] <= gpu_check.PSNR_GOAL_DB)


def test_segments_step_on_the_cpu(tmp_path):
    got = gpu_check.segments(tmp_path, "cpu", size=(64, 48), frames=50)
    assert got["ok"] and got["split"] and got["frames"] == [50, 50] and got["codes_apart_max"] == 0, got


def test_training_step_on_the_cpu_resumes_bit_for_bit(tmp_path):
    got = gpu_check.train_resume(tmp_path, "cpu", images=3, size=48, arch="9-1-5")
    assert got["ok"] and got["weights_equal"] and len(got["losses"][0]) == 2, got


def test_differing_tensors_is_bit_for_bit(tmp_path):
    from safetensors.numpy import save_file

    a = {"w": np.array([0.0, 1.0], np.float32), "b": np.ones(2, np.float32)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({**a}, str(tmp_path / "same.safetensors"))
    save_file({**a, "w": np.array([-0.0, 1.0], np.float32)}, str(tmp_path / "signed.safetensors"))  # == but not bits
    save_file({"w": a["w"]}, str(tmp_path / "fewer.safetensors"))
    assert gpu_check.differing_tensors(tmp_path / "a.safetensors", tmp_path / "same.safetensors") == []
    assert gpu_check.differing_tensors(tmp_path / "a.safetensors", tmp_path / "signed.safetensors") == ["w"]
    assert gpu_check.differing_tensors(tmp_path / "a.safetensors", tmp_path / "fewer.safetensors") == ["b"]


_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_gpu" name="test_tensorrt_through_gpu_frames_gives_its_own_one_frame_output">{inner}</testcase>
<testcase classname="tests.test_gpu" name="test_fp32_on_cuda_is_not_tf32"/>
</testsuite></testsuites>"""


@pytest.mark.parametrize(
    "inner, tensorrt, want",
    [
        ("", True, True),
        ('<skipped message="torch-tensorrt is not installed"/>', True, False),  # a skip is not a pass
        ('<failure message="assert 3 &lt;= 1"/>', True, False),
        ('<skipped message="torch-tensorrt is not installed"/>', False, True),  # --no-tensorrt: not asked
    ],
)
def test_the_tensorrt_row_reads_that_tests_outcome(inner, tensorrt, want):
    outcomes = gpu_check.junit_outcomes(_JUNIT.format(inner=inner))
    assert outcomes["tests/test_gpu.py::test_fp32_on_cuda_is_not_tf32"] == {"outcome": "passed", "message": ""}
    assert gpu_check.TRT_FRAMES_TEST in outcomes
    rows = gpu_check.more_goals({"outcomes": outcomes}, {}, {}, {}, tensorrt=tensorrt)
    assert rows[0][2] is want, rows[0]


def test_the_new_rows_pass_only_on_ok_results():
    tests = {"outcomes": {gpu_check.TRT_FRAMES_TEST: {"outcome": "passed", "message": ""}}}
    good = (
        {"ok": True, "delta_db": 0.004, "default": {"pix_fmt": "yuv420p10le"}},
        {"ok": True, "returncode": 0, "frames": [100, 100], "codes_apart_max": 1},
        {"ok": True, "weights_equal": True},
    )
    assert [ok for _, _, ok in gpu_check.more_goals(tests, *good)] == [True] * 4
    bad = (
        {"ok": False, "delta_db": 0.03, "default": {"pix_fmt": "yuv420p10le"}},
        {"ok": False, "returncode": 1},
        {"ok": False, "failed": "resumed"},
    )
    rows = gpu_check.more_goals(tests, *bad)
    assert [ok for _, _, ok in rows] == [True, False, False, False]
    assert "0.0300 dB" in rows[1][1] and rows[2][1] == "exit 1" and rows[3][1] == "resumed"
