"""What the segmented driver (`vsr.scaleout.run`) hands a Ray task and how it reports what comes back (issue 25):
the input as an absolute path with its content identity, a task refusing another file at that path in one line
that names its node (not retried), one line per retry, and the fps of a resumed run. Workers are
`tests.test_resume.FakeWorkers`, in this process; the task's own check is `vsr.scaleout.raytasks._check_input`."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from vsr.errors import InputError, VsrError
from vsr.scaleout.raytasks import _check_input, _death
from vsr.scaleout.run import WorkerDied
from vsr.scaleout.workdir import content_identity, input_identity

from .test_resume import FFV1, GOP12, FakeWorkers
from .test_video import make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames at 30 fps with AAC: 0.4 s segments give 5 of them."""
    folder = tmp_path_factory.mktemp("driver")
    return make_clip(folder / "in.mkv", pts=[round(i * 1000 / 30) for i in range(60)], options=GOP12)


class Recording(FakeWorkers):
    """FakeWorkers that keep every task they were given and run it as a Ray task would: `_check_input` first,
    against the file at `node_copy` when one is given (another node's file at the same path)."""

    def __init__(self, node_copy=None, **kwargs):
        super().__init__(**kwargs)
        self.tasks: list = []
        self.node_copy = node_copy

    def submit(self, task):
        self.tasks.append(task)
        return super().submit(task)

    def outcome(self, handle, task):
        seen = task if self.node_copy is None else dataclasses.replace(task, src=str(self.node_copy))
        _check_input(seen)
        return super().outcome(handle, task)


def _segmented(src, dst, workers, notices, **kwargs):
    from vsr.scaleout.run import upscale_segmented

    return upscale_segmented([(src, dst)], 2, lambda: workers, enc=FFV1, seconds=0.4, notice=notices.append, **kwargs)


def test_a_relative_input_reaches_the_tasks_absolute_with_its_content(tmp_path, clip, monkeypatch):
    """A Ray worker runs in the folder its `ray start` ran in: a relative path would be looked up there."""
    monkeypatch.chdir(clip.parent)
    workers = Recording()
    _segmented(clip.name, tmp_path / "out.mkv", workers, [])
    expected = content_identity(input_identity(clip))
    assert len(workers.tasks) == 5
    for task in workers.tasks:
        assert task.src == str(clip) and os.path.isabs(task.src)
        assert task.content == expected


def test_a_node_with_another_file_at_the_path_ends_the_run_in_one_line_naming_it(tmp_path, clip):
    other = tmp_path / "other.mkv"  # the same clip from another source: same name, other bytes
    make_clip(other, pts=[round(i * 1000 / 30) for i in range(60)], options={**GOP12, "crf": "30"})
    workers = Recording(node_copy=other)
    with pytest.raises(InputError) as raised:
        _segmented(clip, tmp_path / "out.mkv", workers, [])
    message = str(raised.value)
    assert "\n" not in message and socket.gethostname() in message
    assert "holds another file at this path" in message and "same absolute path on every node" in message
    assert len(workers.ran) == 0 and len(workers.tasks) <= workers.slots  # refused before decoding, never retried
    assert not (tmp_path / "out.mkv").exists()


def test_the_check_compares_size_and_content_not_the_modification_time(tmp_path, clip):
    """A copy on another node has its own mtime: the same bytes pass; one byte changed in the last MiB does not."""
    from vsr.scaleout.run import SegmentTask
    from vsr.scaleout.segments import Segment

    copy = tmp_path / "copy.mkv"
    copy.write_bytes(clip.read_bytes())
    os.utime(copy, (1_000_000, 1_000_000))
    task = SegmentTask(str(copy), Segment(0, 0, 0, 1), "p.mkv", 2, FFV1, None, "out.mkv", content_identity(input_identity(clip)))
    _check_input(task)  # passes
    data = bytearray(clip.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(InputError, match="same size, but other bytes"):
        _check_input(task)
    copy.write_bytes(bytes(data[:-1]))
    with pytest.raises(InputError, match=rf"{len(data) - 1} bytes here, {len(data)} where vsr was started"):
        _check_input(task)
    with pytest.raises(InputError, match="not found on Ray node"):
        _check_input(dataclasses.replace(task, src=str(tmp_path / "missing.mkv")))


@pytest.mark.parametrize(
    ("died", "line"),
    [
        (WorkerDied(broken=False, why="its Ray node died"), "its Ray node died; retrying"),
        (WorkerDied(), "its worker process died: killed, or out of memory?; retrying"),
        (RuntimeError("cuda hiccup"), "RuntimeError: cuda hiccup; retrying"),
    ],
)
def test_each_retry_is_one_line(tmp_path, clip, died, line):
    dst = tmp_path / "out.mkv"
    notices: list[str] = []
    workers = FakeWorkers(fail={2: [died]})
    _segmented(clip, dst, workers, notices)
    retries = [n for n in notices if "retrying" in n]
    assert retries[0] == f"segment 3 of 5 of {dst}: {line}"
    assert all("\n" not in n for n in retries)
    # a broken pool (a process pool's dead worker) also loses the segment running beside it: a line of its own
    broken = isinstance(died, WorkerDied) and died.broken
    assert len(retries) == 1 or (broken and retries[1].endswith("a worker process died with it (the pool restarts); retrying"))


def test_a_segment_failing_twice_before_any_finished_does_not_say_they_are_kept(tmp_path, clip):
    workers = FakeWorkers(fail={0: [RuntimeError("boom"), RuntimeError("boom again")]}, slots=1)
    with pytest.raises(VsrError) as raised:
        _segmented(clip, tmp_path / "out.mkv", workers, [])
    assert "failed twice" in str(raised.value) and "kept" not in str(raised.value)


def test_after_resume_the_fps_counts_only_this_runs_frames(tmp_path, clip):
    dst = tmp_path / "out.mkv"
    with pytest.raises(VsrError, match="the finished ones are kept"):
        _segmented(clip, dst, FakeWorkers(fail={4: [RuntimeError("a"), RuntimeError("b")]}, slots=1), [])
    events: list[dict] = []
    (summary,) = _segmented(clip, dst, FakeWorkers(), [], resume=True, progress=events.append)
    assert summary.frames == 60
    done = next(e for e in events if e["event"] == "done")
    new = 60 - 4 * 12  # the first four segments (12 frames each) were reused
    assert summary.fps * summary.elapsed_s == pytest.approx(new)
    assert done["fps"] * done["elapsed_s"] == pytest.approx(new)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("NodeDiedError", "its Ray node died"),
        ("WorkerCrashedError", "its Ray worker process died (killed, or out of memory?)"),
        ("OutOfMemoryError", "its worker was killed: its Ray node ran out of memory"),
    ],
)
def test_ray_deaths_are_said_in_words(name, words):
    assert _death(type(name, (Exception,), {})()) == words


def test_a_lost_nodes_retry_line_names_it():
    """Ray 2.60's NodeDiedError message (the raylet's, in _raylet.so) names the node's IP."""
    died = type("NodeDiedError", (Exception,), {"__str__": lambda self: self.args[0]})(
        "Task failed because the node it was running on is dead or unavailable. Node IP: 10.77.0.3, node ID: "
        "ab12. This can happen if the node was preempted, ..."
    )
    assert _death(died) == "its Ray node 10.77.0.3 died or cannot be reached"


class Growing(FakeWorkers):
    """A cluster that gains slots while it runs (`capacity()`, as `RayWorkers` reads Ray's resources again)."""

    def __init__(self):
        super().__init__(slots=1)
        self.most = 0
        self.running = 0

    def capacity(self):
        self.slots = min(3, 1 + len(self.ran))  # a node joins after each finished segment
        return self.slots

    def submit(self, task):
        self.running += 1
        self.most = max(self.most, self.running)
        return super().submit(task)

    def outcome(self, handle, task):
        self.running -= 1
        return super().outcome(handle, task)


def test_the_driver_fills_the_slots_the_cluster_has_now(tmp_path, clip):
    workers = Growing()
    _segmented(clip, tmp_path / "out.mkv", workers, [])
    assert sorted(workers.ran) == [0, 1, 2, 3, 4] and workers.most == 3
