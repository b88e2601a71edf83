"""The `vsr` command as a user runs it: images, folders, eval, train, and bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.media.imageio import read_image, write_image
from vsr.media.resize import imresize_uint8
from vsr.model.weights import SHIPPED_WEIGHTS
from vsr.train.evaluate import evaluate, load_ground_truth, score_pair

from .conftest import smooth_image


def vsr(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsr", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=600,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_images_grey_rgb_rgba_and_folder(tmp_path, weights):
    src = tmp_path / "in"
    src.mkdir()
    rgba = np.dstack([smooth_image(20, 30), smooth_image(20, 30, 1, seed=5)])
    write_image(src / "rgb.png", smooth_image(20, 30))
    write_image(src / "grey.bmp", smooth_image(21, 17, channels=1))
    write_image(src / "alpha.png", rgba)
    write_image(src / "photo.jpg", smooth_image(16, 16))
    r = vsr("upscale", src, tmp_path / "out", "--scale", 3, "--weights", weights, "--quiet")
    assert r.returncode == 0, r.stderr
    out = {p.name: read_image(p) for p in (tmp_path / "out").iterdir()}
    assert sorted(out) == ["alpha.png", "grey.png", "photo.png", "rgb.png"]
    assert out["rgb.png"].shape == (60, 90, 3)
    assert out["grey.png"].shape == (63, 51)
    assert out["photo.png"].shape == (48, 48, 3)
    assert out["alpha.png"].shape == (60, 90, 4)
    np.testing.assert_array_equal(out["alpha.png"][:, :, 3], imresize_uint8(rgba[:, :, 3], 3))
    r = vsr("upscale", src / "rgb.png", tmp_path / "single.tif", "--scale", 2, "--weights", weights)
    assert r.returncode == 0, r.stderr
    assert read_image(tmp_path / "single.tif").shape == (40, 60, 3)


def test_bad_inputs_one_line_and_nothing_lost(tmp_path, weights):
    good = tmp_path / "good.png"
    write_image(good, smooth_image(20, 20))
    existing = tmp_path / "existing.png"
    write_image(existing, smooth_image(8, 8))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"garbage" * 50)
    before = {p: digest(p) for p in (good, existing, corrupt, garbage)}
    cases = [
        ("upscale", tmp_path / "missing.png", tmp_path / "o1.png", "--weights", weights),
        ("upscale", corrupt, tmp_path / "o2.png", "--weights", weights),
        ("upscale", good, tmp_path / "o3.png", "--weights", garbage),
        ("upscale", good, tmp_path / "o4.png", "--weights", tmp_path / "nope.safetensors"),
        ("upscale", good, tmp_path / "o5.png", "--scale", "1", "--weights", weights),
        ("upscale", good, tmp_path / "o6.png", "--scale", "-2", "--weights", weights),
        ("upscale", good, existing, "--weights", weights),
        ("upscale", good, good, "--overwrite", "--weights", weights),
        ("upscale", good, tmp_path / "o7.xyz", "--weights", weights),
        ("upscale", good, tmp_path / "no" / "dir" / "o8.png", "--weights", weights),
        ("eval", "--data", "NoSuchSet", "--weights", weights),
        ("eval", "--data", "Set5", "--weights", weights),  # VSR_DATA points nowhere
        ("train", "--data", tmp_path / "nothing", "--out", tmp_path / "run"),
    ]
    for args in cases:
        r = vsr(*args, VSR_DATA=str(tmp_path / "nodata"), VSR_CACHE=str(tmp_path / "cache"))
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode != 0, args
        assert len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert lines[0].startswith("vsr: error:") or "Error" in lines[0], (args, r.stderr)
    assert {p: digest(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.png", "existing.png", "garbage.safetensors", "good.png"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--precision", "fp8"], ["--precision", "fp8", "bf16"]),
        (["upscale", "a.mp4", "b.mp4", "--precision", "fp8"], ["--precision", "fp8", "auto", "bf16"]),
        (["eval", "--precision", "int8"], ["--precision", "int8", "fp32"]),
        (["upscale", "a.png", "b.png", "--scale", "x"], ["--scale", "integer"]),
        (["upscale", "a.png", "b.png", "--bogus"], ["--bogus"]),
        (["upscale"], ["Missing argument"]),
        (["eval", "--arch", "9-9-9"], ["--arch", "9-5-5"]),
        (["nosuchcmd"], ["nosuchcmd"]),
    ],
)
def test_usage_errors_are_one_line(args, words):
    r = vsr(*args)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsr: error: ") and "--help" in lines[0], r.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_bare_vsr_and_version():
    """Bare `vsr` (and `vsr data`) is the help and exit 0, with no error line; `--version` is the package's."""
    from vsr import __version__

    for args in ([], ["data"]):
        r = vsr(*args)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "Usage: " in r.stdout and "Commands" in r.stdout
    r = vsr("--version")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, f"vsr {__version__}", "")


@pytest.mark.parametrize("command", ["", "upscale", "train", "webcam", "eval", "bench", "data get"])
def test_help_has_plain_flags_and_argument_names(command):
    """No `<bool>` beside flags (it invites `--overwrite true`), no `{src}` braces; the shipped weights and the codec
    list are named where users choose them."""
    r = vsr(*command.split(), "--help")
    assert r.returncode == 0, r.stderr
    assert "<bool>" not in r.stdout and "{" not in r.stdout, r.stdout
    text = " ".join(r.stdout.replace("│", " ").split())
    if command == "upscale":
        assert "upscale [OPTIONS] SRC DST" in text
        for words in ("9-5-5 (best) or 9-1-5 (fastest), each for x2, x3, x4", "other factors need --weights FILE"):
            assert words in text
        assert "auto: chosen from the output's container and the input" in text
        assert "libx264, libx265, libsvtav1, libvpx-vp9, prores_ks, ffv1 (lossless), h264_nvenc" in text
        assert "- as output defaults to matroska" in text
        assert "default: 18 for libx264" in text


HELP_COMMANDS = ["", "upscale", "train", "webcam", "eval", "bench", "data", "data get", "data list"]


def _click_command(command: str):
    import typer

    from vsr.cli import app

    cmd = typer.main.get_command(app)
    for name in command.split():
        cmd = cmd.commands[name]
    return cmd


def _choices(param) -> list[str]:
    """A parameter's choices: typer 0.29 keeps them in `type_descriptor`, older typer in click's `param.type`."""
    desc = getattr(param, "type_descriptor", None)
    choices = desc.choices if desc is not None else getattr(getattr(param, "type", None), "choices", None)
    return [str(getattr(c, "value", c)) for c in choices or ()]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_fits_80_columns(command):
    """At COLUMNS=80 (typer's option table): no line over 80 columns, nothing cut with `…`, no metavar split
    across lines (each `<` closed on its line; a list of choices like `a|b|c` whole on one line), and every choice
    named somewhere in the help (a one-word metavar puts the choices in the help text)."""
    r = vsr(*command.split(), "--help", COLUMNS="80")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in r.stdout, r.stdout
    params = _click_command(command).params
    choice_lists = [_choices(p) for p in params if _choices(p)]
    for line in lines:
        bare = line.replace("->", "")
        assert bare.count("<") == bare.count(">"), line
        for run in re.findall(r"[\w.-]*(?:\|[\w.-]*)+", line):
            if run.strip("|"):  # `a|b` written in a metavar, not a lone `|` in a sentence
                assert run.split("|") in choice_lists, f"{run!r} is not a whole choice list: {line}"
    text = " ".join(r.stdout.replace("│", " ").split())
    for choices in choice_lists:
        for choice in choices:
            assert re.search(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", text), f"{choice} is not named in the help"


def test_help_names_the_encoders_defaults_as_the_writer_has_them():
    """The --crf and --preset help (written out, so that --help needs no PyAV) says what vsr.media.writer does."""
    from vsr.cli.common import CRF_HELP, PRESET_HELP
    from vsr.media.encoders import ENCODER_DEFAULTS

    named = {"libx264": "libx264", "libx265": "libx265", "libsvtav1": "AV1", "libaom-av1": "AV1", "libvpx-vp9": "VP9"}
    named["h264_nvenc"] = "h264_nvenc"
    for codec, label in named.items():
        assert f"{ENCODER_DEFAULTS[codec][1]:g} for {label}" in CRF_HELP, codec
    assert ENCODER_DEFAULTS["ffv1"][1] is ENCODER_DEFAULTS["prores_ks"][1] is None
    assert "ffv1 (lossless) and prores_ks take none" in CRF_HELP
    assert ENCODER_DEFAULTS["libx264"][2] == ENCODER_DEFAULTS["libx265"][2] == "medium"
    assert "medium for libx264 and libx265" in PRESET_HELP
    assert f"{ENCODER_DEFAULTS['libsvtav1'][2]} for libsvtav1" in PRESET_HELP
    assert {ENCODER_DEFAULTS[c][2] for c in ("h264_nvenc", "hevc_nvenc", "av1_nvenc")} == {"p5"} and "p5 for NVENC" in PRESET_HELP
    for codec in ("libvpx-vp9", "ffv1", "prores_ks"):
        assert ENCODER_DEFAULTS[codec][2] is None


def test_arch_offers_the_shipped_weights_only(tmp_path):
    """`--arch` of upscale, webcam and eval picks shipped weights: its choices are the models shipped for x2, x3
    and x4; 9-3-5 (none shipped) is refused with the usage error, and train still trains it."""
    from vsr.cli.common import Arch, ShippedArch

    shipped = {p.name.split("_")[1] for p in SHIPPED_WEIGHTS.glob("srcnn_*_x*.safetensors")}
    assert {a.value for a in ShippedArch} == shipped
    for arch in shipped:
        assert all((SHIPPED_WEIGHTS / f"srcnn_{arch}_x{s}.safetensors").is_file() for s in (2, 3, 4))
    assert "9-3-5" in {a.value for a in Arch}
    for command in ("upscale", "webcam", "eval"):
        assert {c for p in _click_command(command).params if p.name == "arch" for c in _choices(p)} == shipped
    r = vsr("upscale", tmp_path / "a.png", tmp_path / "b.png", "--arch", "9-3-5")
    assert r.returncode == 2 and "--arch" in r.stderr and "9-3-5" in r.stderr, r.stderr


def test_overwrite_replaces(tmp_path, weights):
    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    write_image(src, smooth_image(10, 12))
    write_image(dst, smooth_image(4, 4))
    assert vsr("upscale", src, dst, "--weights", weights, "--overwrite", "-q").returncode == 0
    assert read_image(dst).shape == (20, 24, 3)


def _set5_lr_folder(shared_data: Path, scale: int, folder: Path) -> list[tuple[str, np.ndarray]]:
    truth = load_ground_truth(shared_data / "Set5", scale)
    folder.mkdir()
    for name, img in truth:
        write_image(folder / f"{name}.png", imresize_uint8(img, 1 / scale))
    return truth


def _mean_psnr(truth, folder: Path, scale: int) -> float:
    return float(np.mean([score_pair(read_image(folder / f"{n}.png"), img, scale)[0] for n, img in truth]))


def test_train_two_epochs_then_upscale_beats_bicubic(shared_data, tmp_path):
    """The issue's CPU check, as a new user runs it: no VSR_DATA, `vsr train --data <91images folder> ... --arch 9-1-5
    --epochs 2` finds Set5 beside the training folder for its per-epoch evaluation; then `vsr upscale --weights`."""
    env = {k: v for k, v in os.environ.items() if k != "VSR_DATA"}
    env.update(VSR_CACHE=str(tmp_path / "empty-cache"), COLUMNS="200")
    args = ["train", "--data", shared_data / "91images", "--scale", 3, "--arch", "9-1-5", "--epochs", 2]
    r = subprocess.run(
        [sys.executable, "-m", "vsr", *map(str, args), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "epoch 2: loss" in r.stderr and ", Set5 " in r.stderr, r.stderr
    weights = tmp_path / "run" / "srcnn_9-1-5_x3.safetensors"
    truth = _set5_lr_folder(shared_data, 3, tmp_path / "lr")
    assert vsr("upscale", tmp_path / "lr", tmp_path / "sr", "--scale", 3, "--weights", weights, "-q").returncode == 0
    assert _mean_psnr(truth, tmp_path / "sr", 3) > evaluate(truth, 3, None).mean("bicubic_psnr") + 0.3


SHIPPED = sorted(SHIPPED_WEIGHTS.glob("srcnn_*_x*.safetensors"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_beat_bicubic_through_upscale(shared_data, tmp_path, path):
    """Each shipped file, used by default by `vsr upscale`, beats bicubic on Set5 (LR files in, PNG out)."""
    arch, scale = path.stem.split("_")[1], int(path.stem.rsplit("x", 1)[1])
    truth = _set5_lr_folder(shared_data, scale, tmp_path / "lr")
    r = vsr("upscale", tmp_path / "lr", tmp_path / "sr", "--scale", scale, "--arch", arch, "--no-ensemble", "-q")
    assert r.returncode == 0, r.stderr
    assert _mean_psnr(truth, tmp_path / "sr", scale) > evaluate(truth, scale, None).mean("bicubic_psnr") + 0.5


def test_images_default_to_self_ensemble(shared_data, tmp_path):
    """`vsr upscale` on images averages the 8 flips/rotations unless --no-ensemble; it scores higher on Set5."""
    truth = _set5_lr_folder(shared_data, 3, tmp_path / "lr")
    for out, flags in (("one", ["--no-ensemble"]), ("ens", [])):
        r = vsr("upscale", tmp_path / "lr", tmp_path / out, "--scale", 3, "--arch", "9-1-5", *flags, "-q")
        assert r.returncode == 0, r.stderr
    one, ens = _mean_psnr(truth, tmp_path / "one", 3), _mean_psnr(truth, tmp_path / "ens", 3)
    assert ens > one + 0.05, (one, ens)


def test_eval_json(shared_data, weights):
    r = vsr("eval", "--data", shared_data / "Set5", "--scale", 2, "--weights", weights, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scale"] == 2 and len(doc["images"]) == 5 and doc["ensemble"] is True
    assert abs(doc["mean"]["bicubic_psnr"] - 33.66) < 0.02
    assert doc["paper"]["srcnn_955_psnr"] == 36.66
    assert torch.isfinite(torch.tensor(doc["mean"]["model_psnr"]))
    assert doc["precision"] == "fp32"  # `auto` with weights that have no precision record


def test_fp16_on_the_cpu_is_one_line(tmp_path, weights):
    write_image(tmp_path / "a.png", smooth_image(24, 32))
    r = vsr("upscale", tmp_path / "a.png", tmp_path / "b.png", "--weights", weights, "--device", "cpu", "--precision", "fp16")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "fp16 needs a CUDA GPU" in r.stderr, r.stderr
    assert not (tmp_path / "b.png").exists()


def test_plain_progress_lines_when_stderr_is_not_a_terminal(capsys):
    """nohup, logs and CI get a plain line now and then (count, rate, ETA), not silence until the end."""
    from vsr.cli.common import PlainProgress

    now = [100.0]
    plain = PlainProgress(False, "frames", interval_s=30, clock=lambda: now[0])
    assert plain.enabled  # pytest's stderr is not a terminal
    for t, done in ((10, 100), (31, 310), (40, 400), (62, 620)):
        now[0] = 100.0 + t
        plain(done, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "vsr: 310 / 1000 frames (31%), 10.00 frames/s, ETA 1 min 09 s",
        "vsr: 620 / 1000 frames (62%), 10.00 frames/s, ETA 38 s",
    ]
    quiet = PlainProgress(True, "frames", interval_s=0, clock=lambda: now[0])
    now[0] += 100
    quiet(5, None)
    assert capsys.readouterr().err == ""
