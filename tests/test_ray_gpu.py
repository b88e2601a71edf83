"""`--ray` on a cluster with GPUs, on the CPU: `tests/fake_ray.py` stands in for Ray with its rules on `max_calls`,
CUDA_VISIBLE_DEVICES and worker-process reuse (read in Ray 2.10.0's and 2.60.0's wheels), and for CUDA, which reads
CUDA_VISIBLE_DEVICES once per process. Each GPU task must compute on the GPU Ray gave it, with the `--backend` and
`--precision` the user chose, and the work folder must name that engine (issue 24, defect 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .fake_ray import FakeCluster, fake_make_upscaler


@pytest.fixture
def cluster(monkeypatch):
    """Installs a fake Ray (`make(gpus=..., started_with=..., noset=...)`) and records what the tasks build and run."""
    for key in ("RAY_USAGE_STATS_ENABLED", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "RAY_IGNORE_UNHANDLED_ERRORS"):
        monkeypatch.setenv(key, "1")  # raytasks sets them; restored after the test
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", raising=False)

    class Made:
        node: FakeCluster
        built: list  # one entry per upscaler a task built
        ran: list  # one entry per segment run: the GPU its upscaler computes on

    made = Made()

    def make(gpus: int = 2, started_with: str | None = None, noset: bool = False, fake_run: bool = True):
        import vsr.engine.chain
        import vsr.scaleout.run

        node = FakeCluster(gpus=gpus, started_with=started_with)
        ray = node.module()
        monkeypatch.setitem(sys.modules, "ray", ray)
        monkeypatch.setitem(sys.modules, "ray.exceptions", ray.exceptions)
        if started_with is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", started_with)  # the node's, as its raylet started
        if noset:
            monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1")
        made.node, made.built, made.ran = node, [], []
        if gpus:
            monkeypatch.setattr(vsr.engine.chain, "make_upscaler", fake_make_upscaler(node, made.built))
        if fake_run:

            def run_task(task, upscaler, stop=None):
                made.ran.append(getattr(upscaler, "physical", "cpu"))
                Path(task.part).write_bytes(b"part %d" % task.segment.index)
                return task.segment.frames, []

            monkeypatch.setattr(vsr.scaleout.run, "run_task", run_task)
        return node

    made.make = make
    return made


def _spec():
    from vsr.engine.base import Upscaler
    from vsr.scaleout.run import spec_for

    from .test_model import make_model

    return spec_for(Upscaler(make_model("9-1-5"), "cpu"), 1, cpu_only=False)


def _tasks(tmp_path, count: int):
    from vsr.media.writer import EncoderOptions
    from vsr.scaleout.run import SegmentTask
    from vsr.scaleout.segments import Segment

    src = tmp_path / "in.mkv"
    src.write_bytes(b"not read by the fake run_task")
    return [
        SegmentTask(str(src), Segment(i, 0, 0, 10), str(tmp_path / f"part{i}.mkv"), 2.0, EncoderOptions(), None, "out.mkv")
        for i in range(count)
    ]


def _run_all(workers, tasks) -> None:
    for task in tasks:  # one at a time: the process of a finished task is free for the next
        ref = workers.submit(task)
        assert workers.wait([ref], 1.0) == [ref]
        workers.outcome(ref, task)


@pytest.mark.parametrize(
    "started_with, noset",
    [(None, False), ("2,3", False), (None, True), ("2,3", True)],
    ids=["plain", "node-visible-2,3", "noset", "noset-node-visible-2,3"],
)
def test_each_gpu_task_computes_on_the_gpu_ray_gave_it(tmp_path, cluster, started_with, noset):
    """Four segments on a 2-GPU node, Ray giving them GPU 0, 1, 0, 1. With `num_gpus` only in `.options()` Ray
    reuses the first task's process (max_calls stays 0), whose CUDA saw GPU 0 only: every segment ran on GPU 0 while
    GPU 1 idled (debefaf). Declared in `ray.remote`, each GPU task gets a new process (max_calls=1) and builds on its
    own GPU; where the node keeps every GPU visible (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) the task picks the
    one Ray named (`ray.get_gpu_ids()`), not cuda:0."""
    from vsr.scaleout.raytasks import RayWorkers

    node = cluster.make(gpus=2, started_with=started_with, noset=noset)
    workers = RayWorkers("auto", _spec())
    try:
        assert workers.slots == 2 and workers.name == "Ray at auto: 2 GPU task slots"
        _run_all(workers, _tasks(tmp_path, 4))
    finally:
        workers.close()
    given = [t["gpu"] for t in node.tasks]
    assert given == (["0", "1", "0", "1"] if started_with is None else ["2", "3", "2", "3"])
    assert cluster.ran == given  # each segment computed on the GPU Ray gave its task
    assert [b["gpu"] for b in cluster.built] == given
    assert len({t["pid"] for t in node.tasks}) == 4  # a process per GPU task: CUDA cannot change GPU in one
    assert node.shut_down


def test_a_task_checks_its_nodes_input_before_anything_and_its_refusal_comes_back_as_itself(tmp_path, cluster):
    """Issue 25: the task checks the file at its path against the content the driver saw (`_check_input`); the
    InputError comes back through Ray as itself (RayTaskError.cause), so the driver ends the run, untried again."""
    import dataclasses

    from vsr.errors import InputError
    from vsr.scaleout.raytasks import RayWorkers

    cluster.make(gpus=0)
    (task,) = _tasks(tmp_path, 1)
    task = dataclasses.replace(task, content=(len(b"not read by the fake run_task") + 1, "0" * 64))
    workers = RayWorkers("auto", _spec())
    try:
        ref = workers.submit(task)
        with pytest.raises(InputError, match="holds another file at this path"):
            workers.outcome(ref, task)
    finally:
        workers.close()
    assert cluster.ran == []  # nothing decoded


@pytest.mark.parametrize("gpus", [0, 2])
def test_nodes_that_join_during_a_run_add_task_slots(cluster, monkeypatch, gpus):
    """Issue 25: slots follow the cluster's GPUs (CPUs without GPUs) as nodes join or leave, said in one line."""
    import vsr.scaleout.raytasks
    from vsr.scaleout.raytasks import RayWorkers

    node = cluster.make(gpus=gpus)
    monkeypatch.setattr(vsr.scaleout.raytasks, "_REREAD_S", 0.0)
    notes: list[str] = []
    workers = RayWorkers("auto", _spec(), notice=notes.append)
    try:
        assert workers.capacity() == workers.slots == (gpus or 4)
        if gpus:
            node.gpus = gpus + 2  # a node with two GPUs joined
        else:
            node.cpus = 6  # a node with two CPUs joined
        unit = "GPU" if gpus else "CPU"
        assert workers.capacity() == workers.slots == (gpus + 2 if gpus else 6)
        assert notes[-1] == f"the Ray cluster now has {workers.slots} {unit}s: {workers.slots} task slots (were {gpus or 4})"
    finally:
        workers.close()


def test_a_head_that_does_not_answer_never_stalls_the_slot_count(cluster, monkeypatch):
    """Ray's resource call blocks while the head is gone (a minute, or for good): `capacity` waits for it a
    moment only, keeps its count meanwhile, and takes the answer when it comes."""
    import threading
    import time

    import vsr.scaleout.raytasks
    from vsr.scaleout.raytasks import RayWorkers

    node = cluster.make(gpus=0)
    monkeypatch.setattr(vsr.scaleout.raytasks, "_REREAD_S", 0.0)
    workers = RayWorkers("auto", _spec())
    ray, answer = sys.modules["ray"], threading.Event()

    def blocked():
        answer.wait(10)
        return {"CPU": 8.0}

    monkeypatch.setattr(ray, "cluster_resources", blocked)
    try:
        t0 = time.monotonic()
        assert workers.capacity() == 4 and time.monotonic() - t0 < 2
        answer.set()
        time.sleep(0.2)  # the thread puts its answer
        assert workers.capacity() == 8
    finally:
        answer.set()
        workers.close()
    assert node.shut_down


def test_cpu_tasks_reuse_their_process_and_its_upscaler(tmp_path, cluster, monkeypatch):
    """Without GPUs Ray may reuse a worker process (no max_calls), and the upscaler it built stays cached there."""
    import vsr.scaleout.run
    from vsr.scaleout.raytasks import RayWorkers

    node = cluster.make(gpus=0)
    built, real = [], vsr.scaleout.run.build_upscaler

    def build(spec, notice=lambda text: None):
        built.append((spec.device, spec.threads))
        return real(spec, notice)

    monkeypatch.setattr(vsr.scaleout.run, "build_upscaler", build)
    monkeypatch.setattr(vsr.scaleout.run.torch, "set_num_threads", lambda n: None)  # not this test process's
    workers = RayWorkers("auto", _spec())
    try:
        assert workers.slots == 4 and workers.engine == "cpu-fp32"
        _run_all(workers, _tasks(tmp_path, 3))
    finally:
        workers.close()
    assert built == [("cpu", 1)] and len({t["pid"] for t in node.tasks}) == 1 and cluster.ran == ["cpu"] * 3


@pytest.mark.parametrize(
    "backend, precision, engine",
    [
        ("auto", "auto", "cuda-fp16-auto"),
        ("tensorrt", "fp32", "cuda-fp32-tensorrt"),
        ("compile", "auto", "cuda-fp16-compile"),
        ("eager", "fp16", "cuda-fp16-eager"),
    ],
    ids=["auto-auto", "tensorrt-fp32", "compile-auto", "eager-fp16"],
)
def test_the_users_backend_and_precision_reach_the_gpu_tasks(tmp_path, cluster, backend, precision, engine):
    """debefaf replaced them with auto and fp16 on every Ray GPU task, and the work folder said so. Now the tasks
    build what the user asked for, and the engine the work folder records (its run identity) is that one."""
    from vsr.media.writer import EncoderOptions
    from vsr.scaleout.raytasks import RayWorkers
    from vsr.scaleout.run import _run_identity

    cluster.make(gpus=2)
    workers = RayWorkers("auto", _spec(), backend=backend, precision=precision)
    try:
        _run_all(workers, _tasks(tmp_path, 2))
    finally:
        workers.close()
    asked = None if precision == "auto" else precision
    assert [(b["backend"], b["precision"]) for b in cluster.built] == [(backend, asked)] * 2
    assert workers.engine == engine
    src = tmp_path / "in.mkv"
    assert _run_identity(str(src), str(tmp_path / "out.mkv"), 2.0, EncoderOptions(), workers)["engine"] == engine


_NO_GPUS = "the Ray cluster at auto has no GPUs, and "
_EAGER = _NO_GPUS + "its tasks run the eager backend on the CPU; drop --backend "


@pytest.mark.parametrize(
    "gpus, backend, precision, message",
    [
        (2, "auto", "bf16", "--precision bf16 is a CPU precision in vsr; use auto (fp16) or fp32 on a GPU"),
        (0, "compile", "auto", _EAGER + "compile"),
        (0, "tensorrt", "auto", _EAGER + "tensorrt"),
        (0, "auto", "fp16", _NO_GPUS + "--precision fp16 needs one; use auto, fp32 or bf16"),
    ],
    ids=["gpu-bf16", "cpu-compile", "cpu-tensorrt", "cpu-fp16"],
)
def test_what_the_cluster_cannot_run_is_refused_in_one_line(cluster, gpus, backend, precision, message):
    """Not replaced silently: one line, before any task, and Ray shut down."""
    from vsr.errors import BackendError
    from vsr.scaleout.raytasks import RayWorkers

    node = cluster.make(gpus=gpus)
    with pytest.raises(BackendError) as info:
        RayWorkers("auto", _spec(), backend=backend, precision=precision)
    assert str(info.value) == message and node.shut_down and not node.tasks


def test_vsr_upscale_ray_passes_backend_and_precision_and_records_the_engine(tmp_path, cluster, weights, monkeypatch):
    """The whole command on a fake 2-GPU cluster: `vsr upscale --ray auto --backend eager --precision fp32`. The
    tasks build eager fp32 (their fake GPU upscaler stands in for one built on the CPU, so the segments are really
    encoded), each on the GPU Ray gave it; the third segment fails, so the run stops with its work folder kept,
    whose manifest names the engine `cuda-fp32-eager`."""
    import typer

    import vsr.engine.chain
    from vsr.cli import app
    from vsr.engine.base import Upscaler
    from vsr.errors import InputError
    from vsr.scaleout.workdir import folder_for

    from .test_scaleout import GOP, LONG
    from .test_video import make_clip

    node = cluster.make(gpus=2, fake_run=False)
    gpu_make = vsr.engine.chain.make_upscaler

    def make(model, backend="auto", device="auto", precision=None, tile=None, notice=lambda text: None):
        if node.current is None:  # the driver's own upscaler (for a file that cannot be split): on this CPU
            return Upscaler(model, "cpu", precision, tile, notice=notice)
        if len(cluster.built) == 2:
            raise InputError("the third segment fails")
        gpu_make(model, backend, device, precision, tile, notice)  # recorded: which GPU, what was asked for
        return Upscaler(model, "cpu", precision, tile, notice=notice)

    monkeypatch.setattr(vsr.engine.chain, "make_upscaler", make)
    src = make_clip(tmp_path / "in.mkv", pts=LONG[:60], options=GOP)
    dst = tmp_path / "out.mkv"
    args = [str(src), str(dst), "--weights", str(weights), "--arch", "9-1-5", "--ray", "auto", "--segment", "0.4"]
    args += ["--backend", "eager", "--precision", "fp32", "--device", "cpu", "--quiet", "--codec", "ffv1"]
    command = typer.main.get_command(app).commands["upscale"]
    with pytest.raises(InputError, match="the third segment fails"):
        command.main(args, standalone_mode=False)
    assert [(b["backend"], b["precision"]) for b in cluster.built] == [("eager", "fp32")] * 2
    assert [b["gpu"] for b in cluster.built] == [t["gpu"] for t in node.tasks[:2]] == ["0", "1"]
    manifest = json.loads((folder_for(dst) / "manifest.json").read_text())
    assert manifest["run"]["engine"] == "cuda-fp32-eager" and len(manifest["parts"]) == 2
    assert not dst.exists()


@pytest.mark.parametrize("failures", [1, 2, 3])
def test_a_ray_client_session_the_head_failed_to_start_is_tried_again(cluster, monkeypatch, failures):
    """Ray Client: the head's proxier fails to start a session's server now and then (ray-project/ray#63202, open in
    Ray 2.60; about 1 connect in 8 here). vsr connects again, saying so in one line each, up to 3 tries; a third
    failure is the one-line error naming what failed. Any other connect failure is not retried."""
    import vsr.scaleout.raytasks
    from vsr.errors import BackendError
    from vsr.scaleout.rayconnect import CLIENT_ENV, DRIVER_ENV
    from vsr.scaleout.raytasks import RayWorkers

    for key, value in {**DRIVER_ENV, **CLIENT_ENV}.items():
        monkeypatch.setenv(key, value)  # raytasks sets them for Ray Client; restored after the test
    cluster.make(gpus=0)
    ray = sys.modules["ray"]
    monkeypatch.setattr(vsr.scaleout.raytasks, "check_address", lambda address: None)
    monkeypatch.setattr(vsr.scaleout.raytasks, "quiet_client", lambda: None)
    real, tries = ray.init, []
    server = (
        'Initialization failure from server:\nTraceback (most recent call last):\n  File "proxier.py", line 772, '
        "in Datapath\n    raise RuntimeError(\nRuntimeError: Starting Ray client server failed. See "
        "ray_client_server_23001.err for detailed logs.\n"
    )

    def init(address=None, **kwargs):
        tries.append(address)
        if len(tries) <= failures:
            raise ConnectionAbortedError(server)
        real(address, **kwargs)

    monkeypatch.setattr(ray, "init", init)
    notes: list[str] = []
    address = "ray://head:10001"
    said = "the Ray Client server at ray://head:10001 failed to start a session (Starting Ray client server failed. "
    if failures < 3:
        RayWorkers(address, _spec(), notice=notes.append).close()
        assert len(tries) == failures + 1
        assert [n for n in notes if n.startswith(said)] == notes[:failures] and len(notes) == failures + 1
        assert notes[0].endswith("for detailed logs.); trying again")
    else:
        with pytest.raises(BackendError) as caught:
            RayWorkers(address, _spec(), notice=notes.append)
        assert len(tries) == 3 and len(notes) == 2
        assert str(caught.value).startswith(
            "cannot start or reach Ray at 'ray://head:10001' (Starting Ray client server failed. See ray_client_server"
        )
    tries.clear()

    def refused(address=None, **kwargs):
        tries.append(address)
        raise ConnectionAbortedError("Initialization failure from server:\nsomething else")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(BackendError, match=r"\(something else\); check --ray \(the head's Ray Client port"):
        RayWorkers(address, _spec())
    assert len(tries) == 1
