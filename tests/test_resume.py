"""vsr.scaleout.run's scheduler and vsr.scaleout.workdir's --resume, in this process: workers are a fake that runs each task
here (plain bicubic, FFV1) and fails where a test says, exactly as a process pool or Ray reports failures."""

from __future__ import annotations

import json
import signal
from fractions import Fraction

import av
import pytest
import torch

from vsr.errors import InputError, OutputError, VsrError
from vsr.media.reader import SegmentError
from vsr.media.writer import EncoderOptions
from vsr.pipeline.video import upscale_video
from vsr.scaleout.run import WorkerDied, run_task, upscale_segmented
from vsr.scaleout.workdir import WorkFolder, folder_for
from vsr.signals import Interrupted

from .test_video import make_clip, names, packets_of

FFV1 = EncoderOptions(codec="ffv1")
GOP12 = {"x264-params": "keyint=12:min-keyint=12:scenecut=0:bframes=2"}


class FakeWorkers:
    """The `LocalWorkers` interface in this process. `fail` maps a segment index to the failures its next
    attempts raise, in order (an exception instance, or WorkerDied for a process that died)."""

    def __init__(self, fail=None, slots=2, engine="fake"):
        self.slots, self.engine, self.weights_digest = slots, engine, "0" * 64
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.ran: list[int] = []  # segment indexes, each attempt
        self.restarts = self.closed = 0
        self._next = 0

    def submit(self, task):
        self._next += 1
        return (self._next, task)

    def wait(self, handles, timeout):
        return set(handles[:1])

    def outcome(self, handle, task):
        index = task.segment.index
        self.ran.append(index)
        if self.fail.get(index):
            raise self.fail[index].pop(0)
        return run_task(task, None)

    def restart(self):
        self.restarts += 1

    def close(self):
        self.closed += 1


def _decoded(path):
    with av.open(str(path)) as c:
        return [(f.pts, [bytes(p) for p in f.planes]) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames at 30 fps, a keyframe every 12, B-frames, AAC: 0.4 s segments give 5 of them."""
    folder = tmp_path_factory.mktemp("resume")
    src = make_clip(folder / "in.mkv", pts=[round(i * 1000 / 30) for i in range(60)], options=GOP12)
    reference = folder / "reference.mkv"
    upscale_video(src, reference, 2, None, codec="ffv1")
    return src, _decoded(reference)


def _run(src, dst, workers, notices=None, **kwargs):
    notices = [] if notices is None else notices
    kwargs.setdefault("seconds", 0.4)
    kwargs.setdefault("enc", FFV1)
    summaries = upscale_segmented([(src, dst)], 2, lambda: workers, notice=notices.append, **kwargs)
    return summaries, notices


def test_segments_join_to_the_streaming_output(tmp_path, clip):
    src, reference = clip
    workers = FakeWorkers()
    (summary,), notices = _run(src, tmp_path / "out.mkv", workers)
    assert sorted(workers.ran) == [0, 1, 2, 3, 4] and summary.frames == 60
    assert _decoded(tmp_path / "out.mkv") == reference
    assert packets_of(tmp_path / "out.mkv", "audio") == packets_of(src, "audio")
    assert names(tmp_path) == {"out.mkv"} and workers.closed


def test_a_dead_worker_restarts_the_pool_and_its_segment_is_redone(tmp_path, clip):
    src, reference = clip
    workers = FakeWorkers(fail={2: [WorkerDied()]})
    _run(src, tmp_path / "out.mkv", workers)
    assert workers.restarts == 1 and workers.ran.count(2) == 2
    assert _decoded(tmp_path / "out.mkv") == reference


def test_a_segment_failing_twice_is_an_error_that_keeps_the_finished_parts(tmp_path, clip):
    src, reference = clip
    dst = tmp_path / "out.mkv"
    workers = FakeWorkers(fail={3: [RuntimeError("boom"), RuntimeError("boom again")]})
    with pytest.raises(VsrError, match=r"segment 4 of 5 failed twice \(RuntimeError: boom again\)"):
        _run(src, dst, workers)
    work = folder_for(dst)
    assert names(tmp_path) == {work.name}  # nothing at the target
    kept = json.loads((work / "manifest.json").read_text())["parts"]
    assert 3 not in map(int, kept) and kept  # the parts that finished before the error
    # --resume: only what is missing is done again
    workers = FakeWorkers()
    (summary,), notices = _run(src, dst, workers, resume=True)
    assert sorted(workers.ran) == sorted(set(range(5)) - set(map(int, kept)))
    assert f"reusing {len(kept)} of 5 segments" in " ".join(notices)
    assert _decoded(dst) == reference and names(tmp_path) == {"out.mkv"}


def test_without_resume_a_stale_work_folder_is_refused_or_discarded_with_overwrite(tmp_path, clip):
    src, reference = clip
    dst = tmp_path / "out.mkv"
    with pytest.raises(VsrError):
        _run(src, dst, FakeWorkers(fail={4: [RuntimeError("x"), RuntimeError("x")]}))
    with pytest.raises(OutputError, match="add --resume to reuse them, or --overwrite to start over"):
        _run(src, dst, FakeWorkers())
    workers = FakeWorkers()
    _, notices = _run(src, dst, workers, overwrite=True)
    assert sorted(workers.ran) == [0, 1, 2, 3, 4] and "starting over" in " ".join(notices)
    assert _decoded(dst) == reference and names(tmp_path) == {"out.mkv"}


@pytest.mark.parametrize("change", ["encoder", "engine", "segments"])
def test_resume_does_not_reuse_a_mismatched_work_folder(tmp_path, clip, change):
    src, reference = clip
    dst = tmp_path / "out.mkv"
    with pytest.raises(VsrError):
        _run(src, dst, FakeWorkers(fail={4: [RuntimeError("x"), RuntimeError("x")]}))
    workers = FakeWorkers(engine="other" if change == "engine" else "fake")
    kwargs = {
        "encoder": {"enc": EncoderOptions(codec="ffv1", pix_fmt="yuv420p")},  # the same output, other options
        "engine": {},
        "segments": {"seconds": 0.7},  # other bounds: no part matches
    }[change]
    _, notices = _run(src, dst, workers, resume=True, **kwargs)
    assert len(set(workers.ran)) == len(workers.ran)  # every segment done once: nothing reused
    said = " ".join(notices)
    if change == "segments":
        assert "reusing" not in said and "none of the earlier run's 4 segment(s) matches this run's segments" in said
    else:
        assert f"cannot be reused ({change} differ); starting over" in said and len(workers.ran) == 5
    assert _decoded(dst) == reference and names(tmp_path) == {"out.mkv"}


def test_resume_redoes_a_part_whose_checksum_changed(tmp_path, clip):
    src, reference = clip
    dst = tmp_path / "out.mkv"
    with pytest.raises(VsrError):
        _run(src, dst, FakeWorkers(fail={4: [RuntimeError("x"), RuntimeError("x")]}))
    part = folder_for(dst) / "part00001.mkv"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    workers = FakeWorkers()
    _run(src, dst, workers, resume=True)
    assert sorted(workers.ran) == [1, 4]
    assert _decoded(dst) == reference


def test_a_users_error_in_a_worker_is_not_retried(tmp_path, clip):
    src, _ = clip
    workers = FakeWorkers(fail={1: [InputError("in.mkv: broken")]})
    with pytest.raises(InputError, match="in.mkv: broken"):
        _run(src, tmp_path / "out.mkv", workers)
    assert workers.ran.count(1) == 1


def test_a_segment_that_does_not_decode_whole_sends_the_file_to_the_streaming_path(tmp_path, clip):
    src, reference = clip
    workers = FakeWorkers(fail={2: [SegmentError("in.mkv: the segment from pts 400 gave 3 frames, 12 expected")]})
    (summary,), notices = _run(src, tmp_path / "out.mkv", workers)
    assert "not split (a segment did not decode whole" in " ".join(notices)
    assert summary.frames == 60 and _decoded(tmp_path / "out.mkv") == reference
    assert names(tmp_path) == {"out.mkv"}


def test_option_errors_come_before_any_work(tmp_path, clip):
    src, _ = clip
    workers = FakeWorkers()
    with pytest.raises(VsrError, match="encoder 'nope' is not available"):
        upscale_segmented([(src, tmp_path / "out.mkv")], 2, lambda: workers, enc=EncoderOptions(codec="nope"), seconds=0.4)
    with pytest.raises(VsrError, match="out.xyz"):
        upscale_segmented([(src, tmp_path / "out.xyz")], 2, lambda: workers, enc=FFV1, seconds=0.4)
    assert workers.ran == [] and names(tmp_path) == set()


def test_one_run_per_target_at_a_time(tmp_path):
    run = {"input": "x"}
    first = WorkFolder.open(tmp_path / "out.mkv", run, resume=False, overwrite=False)
    try:
        with pytest.raises(OutputError, match="another vsr run is writing this output"):
            WorkFolder.open(tmp_path / "out.mkv", run, resume=True, overwrite=False)
    finally:
        first.finish()
    assert names(tmp_path) == set()


def _pts_s(path):
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


@pytest.mark.parametrize(
    ("name", "pts", "time_base", "out", "codec"),
    [
        # 29.97 fps into mp4: each part's edit list rounds its start to 1/1000 s; the joiner puts it back
        ("ntsc.mp4", [i * 1001 for i in range(60)], Fraction(1, 30000), "out.mp4", "libx264"),
        # video from 1 s, audio from 0: audio before the first video keyframe must not be dropped
        ("late.mkv", [1000 + round(i * 1000 / 30) for i in range(60)], Fraction(1, 1000), "out.mkv", "ffv1"),
        # MPEG-TS input (1/90000, no index) splits and joins; the byte-position seek that larger files need when
        # FFmpeg's timestamp seek overshoots a GOP is not reached by so small a file
        ("in.ts", [3000 * i for i in range(60)], Fraction(1, 90000), "out.mkv", "ffv1"),
    ],
)
def test_tricky_inputs_join_like_the_streaming_path(tmp_path, name, pts, time_base, out, codec):
    src = make_clip(tmp_path / name, pts=pts, time_base=time_base, options=GOP12)
    enc = EncoderOptions(codec=codec)
    upscale_video(src, tmp_path / f"one.{out}", 2, None, codec=codec)
    workers = FakeWorkers()
    _, notices = _run(src, tmp_path / out, workers, enc=enc)
    assert not notices and len(workers.ran) > 1  # split, not sent to the streaming path
    assert _pts_s(tmp_path / out) == _pts_s(tmp_path / f"one.{out}")
    assert packets_of(tmp_path / out, "audio") == packets_of(tmp_path / f"one.{out}", "audio")
    if codec == "ffv1":
        assert _decoded(tmp_path / out) == _decoded(tmp_path / f"one.{out}")


def test_a_file_too_short_to_split_still_respects_a_stale_work_folder(tmp_path, clip):
    src, _ = clip
    dst = tmp_path / "out.mkv"
    with pytest.raises(VsrError):
        _run(src, dst, FakeWorkers(fail={4: [RuntimeError("x"), RuntimeError("x")]}))
    short = make_clip(tmp_path / "short.mkv", pts=[0, 40, 80], audio=None)
    with pytest.raises(OutputError, match="add --resume to reuse them"):
        _run(short, dst, FakeWorkers())
    _, notices = _run(short, dst, FakeWorkers(), overwrite=True)
    assert names(tmp_path) == {"out.mkv", "short.mkv"}  # written by the streaming path, the stale folder gone


def test_the_engine_identity_names_the_self_ensemble():
    """--ensemble changes every frame: parts made with and without it must not be mixed by --resume."""
    from vsr.scaleout.run import WorkerSpec

    plain = WorkerSpec(b"w", "9-5-5", 64, 32, ensemble=False, threads=1)
    assert plain.engine == "cpu-fp32" and WorkerSpec(b"w", "9-5-5", 64, 32, True, 1).engine == "cpu-fp32+ensemble"


def test_workers_get_the_parents_precision_plan_and_name_it():
    """A bf16 plan changes every frame too; every worker computes with the parent's plan (not its own `auto`,
    which a worker on another CPU could resolve differently) and --resume does not mix plans (issue 14)."""
    from vsr.engine.base import Upscaler
    from vsr.engine.precision import cpu_bf16
    from vsr.scaleout.run import build_upscaler, spec_for

    from .test_model import make_model

    mixed = ("fp32", "bf16", "fp32")
    if not cpu_bf16()["onednn"]:
        pytest.skip("oneDNN runs no bf16 convolutions on this CPU")
    spec = spec_for(Upscaler(make_model("9-1-5"), "cpu", layers=mixed), 2)
    assert spec.layers == mixed and spec.engine == "cpu-bf16 conv2"
    threads = torch.get_num_threads()
    try:
        assert build_upscaler(spec).layers == mixed
    finally:
        torch.set_num_threads(threads)  # build_upscaler sets the worker's thread count
    assert spec_for(Upscaler(make_model("9-1-5"), "cpu"), 2).engine == "cpu-fp32"


def test_avi_output_takes_the_streaming_path(tmp_path, clip):
    """AVI's muxer restarts each part's clock, so parts cannot be joined into it (review 13b, M1)."""
    src, _ = clip
    workers = FakeWorkers()
    (summary,), notices = _run(src, tmp_path / "out.avi", workers, enc=EncoderOptions(codec="ffv1"))
    assert "not split (.avi output cannot be joined from parts" in " ".join(notices) and workers.ran == []
    assert summary.frames == 60 and names(tmp_path) == {"out.avi"}


# ---------------------------------------------------------------- what vsr may delete (issue 23)


def _tree(folder):
    """Every file and folder under `folder`, with its bytes (None for a folder): byte-identical or not."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _users_folder(work, kind):
    """A folder at the work folder's name that vsr did not write: a user's notes, or a manifest of their own."""
    work.mkdir()
    (work / "sub").mkdir()
    (work / "sub" / "keep.txt").write_text("keep me\n")
    if kind == "notes":
        (work / "notes.txt").write_text("my notes\n")
    else:  # names like vsr's do not make it vsr's: only its manifest does
        (work / "manifest.json").write_text('{"todo": ["part00000.mkv"]}')
        (work / "part00000.mkv").write_bytes(b"not a video")
    return _tree(work)


@pytest.mark.parametrize("kind", ["notes", "own manifest"])
@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}, {"resume": True, "overwrite": True}])
def test_a_folder_vsr_did_not_write_is_refused_untouched(tmp_path, clip, kind, flags):
    src, _ = clip
    dst, work = tmp_path / "out.mkv", folder_for(tmp_path / "out.mkv")
    before = _users_folder(work, kind)
    workers = FakeWorkers()
    with pytest.raises(OutputError, match=r"\.out\.mkv\.vsr-work is not a vsr work folder .* move or remove it") as exc:
        _run(src, dst, workers, **flags)
    assert "\n" not in str(exc.value) and workers.ran == []
    assert _tree(work) == before and names(tmp_path) == {work.name}
    with pytest.raises(OutputError, match="is not a vsr work folder"):
        WorkFolder.open(dst, {}, resume=True, overwrite=True)
    assert _tree(work) == before  # not even a lock file


@pytest.mark.parametrize("lock", [None, b"", b"x"], ids=["empty", "empty lock", "a lock with bytes"])
def test_an_empty_folder_or_one_with_only_vsrs_empty_lock_is_vsrs(tmp_path, lock):
    """What a run killed between creating its folder and writing its first manifest leaves holds nothing to lose."""
    work = folder_for(tmp_path / "out.mkv")
    work.mkdir()
    if lock is not None:
        (work / "lock").write_bytes(lock)
    if lock == b"x":  # a lock file vsr did not write (vsr's is empty)
        with pytest.raises(OutputError, match="it holds no vsr manifest"):
            WorkFolder.open(tmp_path / "out.mkv", {}, resume=True, overwrite=True)
        assert (work / "lock").read_bytes() == b"x"
        return
    folder = WorkFolder.open(tmp_path / "out.mkv", {}, resume=True, overwrite=False)
    assert folder.found == 0
    folder.finish()
    assert names(tmp_path) == set()


@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}])
def test_a_file_the_streaming_path_takes_leaves_a_folder_vsr_did_not_write_alone(tmp_path, flags):
    short = make_clip(tmp_path / "short.mkv", pts=[0, 40, 80], audio=None)
    dst, work = tmp_path / "out.mkv", folder_for(tmp_path / "out.mkv")
    before = _users_folder(work, "notes")
    (summary,), notices = _run(short, dst, FakeWorkers(), **flags)
    assert summary.frames == 3 and _tree(work) == before
    said = [n for n in notices if "leaving" in n]
    assert said == [f"{dst}: leaving {work} untouched: it is not a vsr work folder (it holds no vsr manifest)"], notices


@pytest.mark.parametrize("flags", [{"resume": True}, {"overwrite": True}])
def test_vsr_deletes_only_its_own_files_from_its_work_folder(tmp_path, clip, flags):
    """A work folder with vsr's manifest and a user's files: vsr's files go, the user's stay, with the folder."""
    src, reference = clip
    dst, work = tmp_path / "out.mkv", folder_for(tmp_path / "out.mkv")
    with pytest.raises(VsrError):
        _run(src, dst, FakeWorkers(fail={4: [RuntimeError("x"), RuntimeError("x")]}))
    (work / "notes.txt").write_text("my notes\n")
    (work / "sub").mkdir()
    (work / "sub" / "keep.txt").write_text("keep me\n")
    (work / "part00001.mkv.txt").write_text("a name close to vsr's is not vsr's\n")
    (work / "notes.writing.txt").write_text("nor is a draft\n")
    mine = {"notes.txt", "notes.writing.txt", "part00001.mkv.txt", "sub", "sub/keep.txt"}
    users = {k: v for k, v in _tree(work).items() if k in mine}
    with pytest.raises(OutputError, match="add --resume to reuse them"):
        _run(src, dst, FakeWorkers())  # no flag: refused, as before
    (summary,), notices = _run(src, dst, FakeWorkers(), **flags)
    assert _decoded(dst) == reference
    assert _tree(work) == users and names(tmp_path) == {"out.mkv", work.name}
    left = [n for n in notices if "left the folder" in n]
    assert left == [
        f"{dst}: deleted vsr's files from {work} but left the folder: it also holds notes.txt, notes.writing.txt, "
        "part00001.mkv.txt and 1 more, which vsr did not write"
    ], notices


def test_a_run_stopped_before_any_segment_finished_says_so_and_resume_says_there_is_nothing(tmp_path, clip):
    src, reference = clip
    dst, notices = tmp_path / "out.mkv", []
    with pytest.raises(Interrupted):
        _run(src, dst, FakeWorkers(fail={0: [Interrupted(signal.SIGINT)]}), notices=notices)
    assert notices == [f"{dst}: stopped before any segment finished; nothing kept to resume"]
    assert names(tmp_path) == set()
    workers = FakeWorkers()
    _, notices = _run(src, dst, workers, resume=True)
    assert notices == [f"no earlier work to resume for {dst}; starting from the beginning"]
    assert sorted(workers.ran) == [0, 1, 2, 3, 4] and _decoded(dst) == reference


def test_a_run_stopped_after_a_segment_says_what_it_kept(tmp_path, clip):
    src, _ = clip
    dst, notices = tmp_path / "out.mkv", []
    with pytest.raises(Interrupted):
        _run(src, dst, FakeWorkers(fail={1: [Interrupted(signal.SIGTERM)]}), notices=notices)
    work = folder_for(dst)
    assert notices == [f"{dst}: 1 of 5 segments are done and kept in {work}; the same command with --resume continues"]
    _, notices = _run(src, dst, FakeWorkers(), resume=True)
    assert notices == [f"{src}: reusing 1 of 5 segments from an earlier run"]


def test_resume_of_a_folder_run_names_the_outputs_with_nothing_to_resume_in_one_line(tmp_path, clip):
    src, _ = clip
    pairs = [(src, tmp_path / f"out{i}.mkv") for i in range(3)]
    notices: list[str] = []
    upscale_segmented(pairs, 2, FakeWorkers, enc=FFV1, seconds=0.4, resume=True, notice=notices.append)
    assert notices == [f"no earlier work to resume for {pairs[0][1]} and 2 other output(s); starting them from the beginning"]


def test_local_workers_on_a_gpu_build_their_engine_there_with_the_users_choice():
    """`--workers N` with the model on a GPU: each worker process builds its engine on that GPU with --backend and
    --precision (make_upscaler in the worker), and the work folder names that engine; before, it was refused."""
    from types import SimpleNamespace

    from vsr.scaleout.run import LocalWorkers, spec_for

    from .test_model import make_model

    on_gpu = SimpleNamespace(model=make_model("9-1-5"), device=torch.device("cuda", 1))
    spec = spec_for(on_gpu, 2, backend="compile", precision="fp32")
    assert (spec.device, spec.backend, spec.precision) == ("cuda:1", "compile", "fp32")
    assert spec.engine == "cuda:1-fp32-compile"
    assert spec_for(on_gpu, 2, backend="auto", precision="auto").precision is None  # auto: resolved in the worker
    assert LocalWorkers(spec, 2).engine == spec.engine  # what the work folder records; no process started yet
    from vsr.cli.upscale import _segment_workers  # the command passes --backend and --precision on

    workers = _segment_workers(on_gpu, 2, None, lambda text: None, "tensorrt", "fp16")
    assert (workers.spec.device, workers.spec.backend, workers.spec.precision) == ("cuda:1", "tensorrt", "fp16")
