"""A fake `ray` module for CPU tests of `vsr.scaleout.raytasks`: one node with `gpus` GPUs, tasks run at `.remote()`
in fake worker processes, under the rules of Ray 2.10.0 to 2.60.0 (the releases the `[ray]` extra allows, read in
their wheels) that decide which GPU a task computes on:

- max_calls: `ray.remote(num_gpus=N>0)` sets `max_calls=1` unless the decorator gives one
  (ray/remote_function.py, `RemoteFunction.__init__`: 2.10.0 lines 107-111, 2.60.0 lines 122-130); `.options()`
  refuses `max_calls` (ray/_private/ray_option_utils.py 2.10.0 line 321, ray/_common/ray_option_utils.py 2.60.0
  line 378) and leaves the function's own (remote_function.py `options`: "max_calls could not be used in
  .options()"; the exported function carries `_max_calls`, ray/_private/function_manager.py). A worker process
  exits once it has run the function `max_calls` times (ray/_raylet.pyx, `execute_task`); with 0 Ray reuses it
  for any later task of the job, whatever GPU that task is given.
- GPUs: each task with `num_gpus=1` gets one GPU (here in turn, 0, 1, 0, ...: Ray promises no order). Before the
  task Ray sets CUDA_VISIBLE_DEVICES to that GPU's id and restores it after (ray/_private/utils.py
  `set_visible_accelerator_ids`, called by `execute_task` for every normal task), except where
  RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES is set (ray/_private/accelerators/nvidia_gpu.py,
  `set_current_process_visible_accelerator_ids`). `get_gpu_ids()` gives the id: the entry of the
  CUDA_VISIBLE_DEVICES the worker started with (a string), or the GPU's number without one (an int)
  (ray/_private/worker.py, `get_accelerator_ids_for_accelerator_resource`).
- A worker process has its own copy of the task function's module (module state, such as a cache, is per process)
  and its own CUDA, which reads CUDA_VISIBLE_DEVICES once, at its first CUDA call (`FakeProcess.cuda`): what
  `fake_make_upscaler` models, so a task computes on the physical GPU its process's CUDA saw, not necessarily the
  one Ray gave it.
- Arguments travel pickled, object refs from `put` resolved first.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
import sys
import types

NOSET = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"


class RayTaskError(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(f"task failed: {cause!r}")
        self.cause = cause


class ObjectRef:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class FakeProcess:
    """A Ray worker process: its copies of the task modules, its CUDA (None until first used), its call counts."""

    _ids = itertools.count()

    def __init__(self, started_with: str | None):
        self.pid = next(self._ids)
        self.started_with = started_with  # CUDA_VISIBLE_DEVICES when the raylet started it (the node's)
        self.modules: dict[str, types.ModuleType] = {}
        self.calls: dict[str, int] = {}
        self.cuda: list[str] | None = None  # the physical GPUs CUDA sees, read once per process

    def function(self, fn):
        """`fn` as unpickled in this process: from this process's own import of its module."""
        name = fn.__module__
        if name not in self.modules:
            spec = importlib.util.spec_from_file_location(f"{name}__fakeproc{self.pid}", sys.modules[name].__file__)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.modules[name] = module
        return getattr(self.modules[name], fn.__qualname__)

    def init_cuda(self, node_gpus: int) -> list[str]:
        if self.cuda is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.cuda = [v.strip() for v in visible.split(",")] if visible is not None else [str(i) for i in range(node_gpus)]
        return self.cuda


class RemoteFunction:
    def __init__(self, cluster: FakeCluster, fn, options: dict):
        options = dict(options)
        if (options.get("num_gpus") or 0) > 0 and options.get("max_calls") is None:  # remote_function.py
            options["max_calls"] = 1
        self._cluster, self._fn, self._options = cluster, fn, options
        self.max_calls = options.get("max_calls") or 0

    def options(self, **options):
        if "max_calls" in options:
            raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
        merged = {k: v for k, v in self._options.items() if k != "max_calls"} | options
        outer = self

        class _Wrapper:
            def remote(self, *args):
                return outer._cluster.run(outer, merged, args)

        return _Wrapper()

    def remote(self, *args):
        return self._cluster.run(self, self._options, args)


class FakeCluster:
    """The fake `ray` module's state (see the module docstring); `module()` is what `import ray` gives."""

    def __init__(self, gpus: int = 2, cpus: int = 4, started_with: str | None = None):
        self.gpus, self.cpus, self.started_with = gpus, cpus, started_with
        self.idle: list[FakeProcess] = []  # processes alive between tasks, reused first
        self.current: FakeProcess | None = None  # the process running a task
        self.assigned: list[str] | None = None  # the running task's GPU ids, as get_gpu_ids gives them
        self.tasks: list[dict] = []  # one per task: the process it ran in and the GPU Ray gave it
        self.init_args: dict | None = None
        self.shut_down = False
        self._next_gpu = itertools.cycle(range(gpus)) if gpus else None

    # ---- the node's view of a GPU
    def ray_id(self, slot: int):
        """What Ray calls GPU `slot`: its entry in the node's CUDA_VISIBLE_DEVICES, or its number."""
        return self.started_with.split(",")[slot] if self.started_with is not None else slot

    def physical(self, slot: int) -> str:
        return str(self.ray_id(slot))

    # ---- running a task
    def run(self, remote: RemoteFunction, options: dict, args) -> ObjectRef:
        args = [a.value if isinstance(a, ObjectRef) else a for a in args]
        args = pickle.loads(pickle.dumps(args))
        proc = self.idle.pop() if self.idle else FakeProcess(self.started_with)
        slot = next(self._next_gpu) if options.get("num_gpus") else None
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if slot is not None and not os.environ.get(NOSET):
            os.environ["CUDA_VISIBLE_DEVICES"] = str(self.ray_id(slot))
        elif saved is None and self.started_with is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.started_with
        self.current, self.assigned = proc, ([self.ray_id(slot)] if slot is not None else [])
        record = {"pid": proc.pid, "gpu": None if slot is None else self.physical(slot)}
        self.tasks.append(record)
        try:
            ref = ObjectRef(proc.function(remote._fn)(*args))
        except Exception as exc:  # noqa: BLE001 - the task's own exception, as RayTaskError.cause
            ref = ObjectRef(error=RayTaskError(exc))
        finally:
            self.current, self.assigned = None, None
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        name = remote._fn.__qualname__
        proc.calls[name] = proc.calls.get(name, 0) + 1
        if not (remote.max_calls and proc.calls[name] >= remote.max_calls):
            self.idle.append(proc)  # else the process exits (max_calls reached)
        return ref

    # ---- the `ray` API vsr uses
    def module(self) -> types.ModuleType:
        ray = types.ModuleType("ray")
        ray.__file__ = __file__
        exceptions = types.ModuleType("ray.exceptions")
        exceptions.RayTaskError = RayTaskError
        for name in ("LocalRayletDiedError", "NodeDiedError", "OutOfMemoryError", "TaskCancelledError", "WorkerCrashedError"):
            setattr(exceptions, name, type(name, (Exception,), {}))
        ray.exceptions = exceptions

        def init(address=None, **kwargs):
            self.init_args = {"address": address, **kwargs}

        def remote(*args, **options):
            if args and callable(args[0]) and not options:
                return RemoteFunction(self, args[0], {})
            return lambda fn: RemoteFunction(self, fn, options)

        def get_gpu_ids():
            if self.assigned is None:
                raise RuntimeError("get_gpu_ids() is for tasks (the fake runs none now)")
            return list(self.assigned)

        def get(ref):
            if ref.error is not None:
                raise ref.error
            return ref.value

        def shutdown():
            self.shut_down = True

        ray.init, ray.remote, ray.get_gpu_ids, ray.get, ray.shutdown = init, remote, get_gpu_ids, get, shutdown
        ray.put = lambda value: ObjectRef(value)
        ray.wait = lambda refs, num_returns=1, timeout=None: (list(refs[:num_returns]), list(refs[num_returns:]))
        ray.cancel = lambda ref, force=False: None
        ray.cluster_resources = lambda: {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus else {})}
        return ray


class FakeGpuUpscaler:
    """What the fake `make_upscaler` builds on a GPU: where it computes and what it was asked for."""

    def __init__(self, physical: str, device: str, backend: str, precision):
        self.physical, self.device, self.backend, self.precision = physical, device, backend, precision


def fake_make_upscaler(cluster: FakeCluster, built: list):
    """A `vsr.engine.chain.make_upscaler` for tasks on the fake node's GPUs: 'cuda' is the current device (0 in a new
    process), 'cuda:N' the N-th GPU this process's CUDA sees, which it reads from CUDA_VISIBLE_DEVICES at its first
    use (torch numbers the visible GPUs from 0). Each build is appended to `built`."""
    import torch

    from vsr.errors import BackendError

    def make(model, backend="auto", device="auto", precision=None, tile=None, notice=lambda text: None):
        proc = cluster.current
        assert proc is not None, "the fake builds GPU upscalers in tasks only"
        dev = torch.device(device)
        assert dev.type == "cuda", f"a GPU task built on {device}"
        visible = proc.init_cuda(cluster.gpus)
        index = 0 if dev.index is None else dev.index
        if index >= len(visible):
            raise BackendError(f"there is no GPU {device}: this process sees {len(visible)}")
        upscaler = FakeGpuUpscaler(visible[index], f"cuda:{index}", backend, precision)
        built.append({"pid": proc.pid, "gpu": upscaler.physical, "backend": backend, "precision": precision})
        return upscaler

    return make
