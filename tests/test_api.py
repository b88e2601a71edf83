"""The public Python API (`import vsr`): the same results and guarantees as the CLI, errors as exceptions, silence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import vsr
from vsr.engine.base import Upscaler
from vsr.media.imageio import read_image, write_image

from .conftest import smooth_image
from .test_cli import vsr as run_vsr
from .test_video import frames_of, make_clip


def test_import_vsr_is_light_and_the_api_is_there():
    code = "import sys, vsr; assert 'torch' not in sys.modules, 'torch at import'; vsr.load_model; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
    assert vsr.Upscaler is Upscaler
    assert set(vsr.__all__) >= {"load_model", "make_upscaler", "upscale_image", "upscale_video", "Upscaler", "VsrError"}
    for error in (vsr.InputError, vsr.OutputError, vsr.WeightsError, vsr.UsageError, vsr.BackendError):
        assert issubclass(error, vsr.VsrError)
    with pytest.raises(AttributeError):
        vsr.no_such_thing  # noqa: B018


def test_load_model_shipped_and_from_a_file(tmp_path, weights):
    assert vsr.load_model(scale=3).config.arch == "9-5-5"
    assert vsr.load_model(scale=2, arch="9-1-5").config.arch == "9-1-5"
    assert vsr.load_model(weights).config.arch == "9-1-5"
    with pytest.raises(vsr.WeightsError):
        vsr.load_model(tmp_path / "missing.safetensors")
    with pytest.raises(vsr.WeightsError):
        vsr.load_model(scale=5)


def test_upscale_image_is_what_the_cli_writes(tmp_path, capfd):
    img = smooth_image(24, 30)
    write_image(tmp_path / "in.png", img)
    r = run_vsr("upscale", tmp_path / "in.png", tmp_path / "cli.png", "--scale", 2, "--arch", "9-1-5", "-q")
    assert r.returncode == 0, r.stderr
    capfd.readouterr()
    out = vsr.upscale_image(img, 2, arch="9-1-5")  # the self-ensemble, as the CLI does for images
    assert out.dtype == np.uint8 and out.shape == (48, 60, 3)
    assert np.array_equal(out, read_image(tmp_path / "cli.png"))
    one = vsr.upscale_image(img, 2, upscaler=vsr.make_upscaler(vsr.load_model(scale=2, arch="9-1-5")), ensemble=False)
    assert one.shape == out.shape and not np.array_equal(one, out)
    grey = vsr.upscale_image(smooth_image(20, 22, channels=1), 3, arch="9-1-5", ensemble=False)
    assert grey.shape == (60, 66)
    assert capfd.readouterr() == ("", "")  # nothing printed


@pytest.mark.parametrize(
    "bad, words",
    [(np.zeros((8, 8), np.float32), "numpy uint8"), (np.zeros((8, 8, 2), np.uint8), "2 channels"), ([[1, 2]], "numpy uint8")],
)
def test_upscale_image_bad_input_is_a_usage_error(bad, words):
    with pytest.raises(vsr.UsageError, match=words):
        vsr.upscale_image(bad, 2, arch="9-1-5")
    with pytest.raises(vsr.UsageError, match="integer from 2 to 8"):
        vsr.upscale_image(np.zeros((8, 8), np.uint8), 1)


def test_upscale_video_keeps_the_guarantees_and_prints_nothing(tmp_path, capfd):
    src = make_clip(tmp_path / "in.mkv")
    dst = tmp_path / "out.mkv"
    events = []
    summary = vsr.upscale_video(src, dst, 2, arch="9-1-5", progress=events.append)
    assert isinstance(summary, vsr.VideoSummary) and summary.frames == len(frames_of(src)) == len(frames_of(dst))
    assert [f.pts for f in frames_of(dst)] == [f.pts for f in frames_of(src)]
    assert events and capfd.readouterr() == ("", "")
    before = dst.read_bytes()
    with pytest.raises(vsr.OutputError, match="already exists"):
        vsr.upscale_video(src, dst, 2, arch="9-1-5")
    assert dst.read_bytes() == before  # kept
    with pytest.raises(vsr.InputError):
        vsr.upscale_video(tmp_path / "missing.mkv", tmp_path / "x.mkv", 2, arch="9-1-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]  # no partial file left
    vsr.upscale_video(src, dst, 2, upscaler=vsr.make_upscaler(vsr.load_model(scale=2, arch="9-1-5")), overwrite=True)
    assert len(frames_of(dst)) == summary.frames
