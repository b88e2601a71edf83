"""Stop signals (vsr.signals) and partial files (vsr.media.atomic): every command that writes stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from vsr.media import atomic

from .conftest import spawn


def _run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, **kwargs)


def test_install_keeps_ignored_signals_ignored():
    """nohup (SIGHUP ignored) and a shell's background job (SIGINT ignored) keep what the launcher asked; the rest are
    routed to Interrupted, and once the CLI has acknowledged a stop, later signals are ignored."""
    code = """
import os, signal
from vsr.signals import Interrupted, acknowledge, install
print(sorted(signal.Signals(s).name for s in install()))
try:
    os.kill(os.getpid(), signal.SIGTERM)
    import time; time.sleep(5)
except Interrupted as exc:
    print(exc.name)
acknowledge()  # what the CLI does when the stop reaches it
os.kill(os.getpid(), signal.SIGTERM)  # later signals are ignored
print("still here")
"""

    def ignore_int_and_hup():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    r = _run_python(code, preexec_fn=ignore_int_and_hup)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['SIGTERM']", "SIGTERM", "still here"]
    from .conftest import default_signals

    r = _run_python(code, preexec_fn=default_signals)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['SIGHUP', 'SIGINT', 'SIGTERM']", "SIGTERM", "still here"]


def test_deferred_holds_a_signal_until_the_block_ends():
    code = """
import os, signal
from vsr.signals import Interrupted, deferred, install
install()
try:
    with deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        print("block finished")
    print("not reached")
except Interrupted as exc:
    print(exc.name)
"""
    r = _run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["block finished", "SIGTERM"]


def test_check_raises_a_stop_that_a_callback_swallowed():
    """A signal handled while C code runs a Python callback (OpenCV's mouse callback inside cv2.waitKey) can have
    its exception discarded; the main loops' `check()` raises it after all, once."""
    code = """
import os, signal, time
from vsr.signals import Interrupted, check, install
install()
def callback():  # as a C wrapper calls it: any exception is printed and dropped
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    except BaseException:
        print("swallowed")
callback()
try:
    check()
except Interrupted as exc:
    print("check raised", exc.name)
check()
print("once")
"""
    r = _run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["swallowed", "check raised SIGTERM", "once"]


def test_a_swallowed_stop_is_not_lost_the_next_signal_raises_again():
    code = """
import os, signal, time
from vsr.signals import Interrupted, install
install()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
except BaseException:
    print("swallowed")  # PyAV's stdin read callback, OpenCV's mouse callback
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except Interrupted as exc:
    print("raised again", exc.name)
"""
    r = _run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["swallowed", "raised again SIGTERM"]


def test_atomic_output_follows_the_umask(tmp_path):
    """safetensors (like some other writers) creates 0600 files; published outputs get 0666 less the umask."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o027)
    try:
        with atomic.atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"a": torch.zeros(2)}, tmp)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o640


def test_sweep_removes_only_dead_writers_of_this_host(tmp_path, caplog):
    host = atomic._host_tag()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = {
        "gone": f".out.vsr-{host}-{dead.pid}-0a1b2c.part.mkv",
        "alive": f".out.vsr-{host}-{os.getpid()}-0a1b2c.part.mkv",
        "other_host": f".out.vsr-{'0000' if host != '0000' else '1111'}-{dead.pid}-0a1b2c.part.mkv",
        "old_naming": ".out.vsr-0a1b2c3d.part.mkv",
        "other_target_alive": f".other.vsr-{host}-{os.getpid()}-0a1b2c.part.mkv",  # a parallel job's: not our business
        "other_target_gone": f".other.vsr-{host}-{dead.pid}-0a1b2c.part.mkv",
        "unrelated": ".out.mkv",
        # near misses: only a whole name temp_path gives proves vsr wrote it (issue 23)
        "users_backup": f".out.vsr-{host}-{dead.pid}-0a1b2c.part.mkv.bak",
        "users_notes": ".out.vsr-notes.part.mkv",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level("WARNING", logger="vsr"):
        atomic.sweep(tmp_path, "out.mkv")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(files.values()) - {files["gone"], files["other_target_gone"]}
    text = caplog.text
    for key in ("gone", "other_target_gone"):
        assert f"removed {tmp_path / files[key]}" in text
    for key in ("other_host", "old_naming"):
        assert f"{tmp_path / files[key]} is a partial file of another vsr run" in text
    assert files["alive"] not in text  # this very process: its own file, in use
    assert files["other_target_alive"] not in text
    assert files["users_backup"] not in text and files["users_notes"] not in text


def _wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1] if proc.poll() is not None else ""
        time.sleep(0.05)


def _partials(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".vsr-" in p.name and ".part" in p.name]


def test_sigterm_during_training_keeps_the_last_checkpoint_and_resumes(image_folder, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "vsr", "train", "--data", image_folder, "--scale", "3", "--arch", "9-1-5"]
    args += ["--n1", "8", "--n2", "4", "--eval-data", "none", "--device", "cpu", "--quiet", "--out", out]
    proc = spawn([*args, "--epochs", "100000"], stdout=subprocess.PIPE)
    _wait_for(lambda: (out / "checkpoint.safetensors").exists(), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vsr: interrupted by SIGTERM; no partial file was left"
    assert _partials(out) == []
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    from vsr.train.training import _checkpoint_state

    assert _checkpoint_state(out / "checkpoint.safetensors")["epoch"] == len(log)  # the epoch's writes went together
    r = subprocess.run([*map(str, args), "--epochs", str(len(log) + 1), "--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len((out / "log.jsonl").read_text().splitlines()) == len(log) + 1


def test_sigterm_during_bench_leaves_no_report_and_no_temporary_clip(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "vsr", "bench", "--quick", "--resolutions", "64x36x2", "--frames", "100000"]
    args += ["--models", "9-1-5", "--device", "cpu", "--json", out, "-q"]
    proc = spawn(args, stdout=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp)})
    _wait_for(lambda: any(tmp.iterdir()), proc)  # the synthetic clip's folder exists
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp.iterdir()) == [] and _partials(tmp_path) == []


def test_bench_refuses_to_overwrite_a_report(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    cmd = [sys.executable, "-m", "vsr", "bench", "--quick", "--json", str(out), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr.strip() == f"vsr: error: --json {out}: already exists; pass --overwrite to replace it"
    assert out.read_text() == "{}"


def test_sigterm_during_image_folder_keeps_finished_images_only(tmp_path, weights):
    """A folder of images stopped half way: the images already written are complete, no partial file is left."""
    big = tmp_path / "big"
    big.mkdir()
    from vsr.media.imageio import write_image

    from .conftest import smooth_image

    for i in range(40):
        write_image(big / f"im{i:02d}.png", smooth_image(160, 120, seed=i))
    out = tmp_path / "out"
    proc = spawn([sys.executable, "-m", "vsr", "upscale", big, out, "--scale", "3", "--weights", weights, "-q"])
    _wait_for(lambda: out.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".") for p in out.iterdir()), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert _partials(out) == []
    from vsr.media.imageio import read_image

    done = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert 0 < len(done) < 40
    for p in done:
        assert read_image(p).shape == (480, 360, 3)
