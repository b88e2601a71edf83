"""`vsr upscale --ray ADDRESS|local`: segments as Ray tasks (the `vsr.scaleout.run` workers interface).

Contract:
- `RayWorkers(address, spec)` connects to Ray (`ray.init`): `local` starts a private Ray instance on this
  machine (all its cores, no dashboard, its session files in a temporary folder removed by `close()`, which
  shuts it down); any other address is passed to `ray.init` as it is (`HOST:PORT` of a running cluster's
  head, from one of its nodes; `ray://HOST:10001` for Ray Client, which needs `ray[client]`; `auto`). Ray
  missing gives `UsageError` with the pip command; an address is checked first (`vsr.scaleout.rayconnect`:
  within seconds, stoppable at every moment, one line for a port that does not answer, is not a Ray GCS, or
  belongs to a cluster this machine is not a node of), and a cluster that still cannot be reached gives
  `BackendError`. Ray's SIGTERM handler is put back to vsr's (`vsr.signals`), and Ray prints nothing.
- A lost cluster (`HOST:PORT`: its head unanswered for `rayconnect.LOST_AFTER_S` while `wait` finds nothing
  done; `ray://`: Ray Client's `ConnectionError` from `submit`, `wait` or `outcome`) is a `BackendError` that
  says the finished segments are kept and `--resume` continues; `close()` then cancels nothing (Ray would
  start a local instance to do it were auto-connect not off: `rayconnect.DRIVER_ENV`).
- Placement: on a cluster with GPUs every task takes one GPU and builds the GPU engine with the caller's
  `backend` and `precision` (`make_upscaler`; `--precision bf16` is refused there, one line): `slots` = the
  cluster's GPUs. `num_gpus=1` is declared in `ray.remote` itself, so Ray ends a GPU task's worker process
  after the task (`max_calls=1`, ray/remote_function.py: 2.10.0 lines 107-111, 2.60.0 lines 122-130; only
  the decorator sets it, `.options()` cannot): Ray sets CUDA_VISIBLE_DEVICES to the task's GPU before each
  task (ray/_raylet.pyx, execute_task, `set_visible_accelerator_ids`), but CUDA reads it once per process,
  so a reused process would keep running on its first task's GPU while the one Ray assigned idles. The
  task builds its engine on the GPU Ray assigned (`ray.get_gpu_ids()` located in CUDA_VISIBLE_DEVICES:
  also right where a node keeps every GPU visible, RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES). The cost:
  each GPU segment starts a process and builds its engine (TensorRT engines load from the node's engine
  cache after the first build). Without GPUs a task takes one CPU and one torch thread and runs the eager
  backend with the caller's CPU precision plan (`--backend compile`/`tensorrt` and `--precision fp16` are
  refused, one line): `slots` = the cluster's CPUs; its worker processes are reused, with the upscaler
  cached per process. `capacity()` reads the cluster's GPUs (CPUs) again every few seconds: nodes that join
  during a run get segments as they join (vsr never asks for more than the cluster has, so an autoscaler does
  not grow the cluster for vsr).
- Data: the weights travel in the object store (one `ray.put` of the `WorkerSpec`, safetensors bytes: no
  shared disk, no code run on load). The input is read by the task at its absolute path (the driver makes it
  absolute: a worker runs in the folder its `ray start` ran in), so on a multi-node cluster it must be at the
  same absolute path on every node (a shared folder). Before decoding, a task checks its node's file against
  the input's size and the SHA-256 of its first and last MiB as the driver saw them (not its mtime, which a
  copy has its own of); a task that cannot see the file, or sees another one, fails with one line naming its
  node (`InputError`), which ends the run: it is not retried. Each encoded part comes back as bytes through
  the object store and the driver writes it into the work folder (`vsr.scaleout.workdir`): outputs, parts
  and resume state never need a shared disk (a task writes its part in a temporary folder of its node).
- Failures: a task's own exception comes back as itself (Ray's `RayTaskError.cause`); a worker process that
  died (killed, out of memory, its node lost) is `WorkerDied(broken=False)` with what happened in words
  (`_death`, for the retry line): only its segment is tried again. Tasks are not
  retried by Ray (`max_retries=0`): `vsr.scaleout.run` retries once. `close()` cancels what still runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

from vsr.errors import BackendError, InputError, UsageError, install_hint
from vsr.scaleout.rayconnect import CLIENT_ENV, DRIVER_ENV, Heartbeat, check_address, quiet_client
from vsr.signals import deferred, held

_QUIET_ENV = {  # read when ray is imported (ray/_private/ray_constants.py)
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage-stats prompt or upload attempt
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",  # no C++ stack dump on SIGTERM: vsr prints one line
    "RAY_IGNORE_UNHANDLED_ERRORS": "1",  # a cancelled task's error is not logged at exit
}
_REREAD_S = 5.0  # how often `RayWorkers.capacity` reads the cluster's resources again
_ASK_S = 0.5  # how long it waits for the answer (a late one is taken at the next read)
_CLIENT_TRIES = 3  # Ray Client connects tried where the head failed to start the session (`RayWorkers._init`)
_cache: dict = {}  # per Ray worker process: (weights digest, engine with its device) -> upscaler


def _import_ray(address: str = "local"):
    extra = {} if address == "local" else {**DRIVER_ENV, **(CLIENT_ENV if address.startswith("ray://") else {})}
    for key, value in {**_QUIET_ENV, **extra}.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed: {install_hint('ray')}") from None
    return ray


def _ray_segment(spec, task, scratch: str | None) -> tuple[bytes, int, list[str]]:
    """A Ray task: encode `task`'s segment with the upscaler `spec` describes; returns the part's bytes. The
    part is written in a temporary folder under `scratch` (local Ray: the driver's, removed with it even when
    the task is killed) or the node's temporary folder."""
    from vsr.scaleout.run import build_upscaler, run_task

    _check_input(task)
    warnings: list[str] = []
    if spec.device != "cpu":
        spec = dataclasses.replace(spec, device=_assigned_gpu())
    key = (spec.digest, spec.engine)
    if key not in _cache:
        _cache.clear()
        _cache[key] = build_upscaler(spec, notice=warnings.append)
    elif spec.threads:  # Ray reuses worker processes, and torch keeps the thread count its first task set
        import torch

        torch.set_num_threads(spec.threads)
    suffix = Path(task.part).suffix
    if scratch is not None and not Path(scratch).is_dir():
        scratch = None
    with tempfile.TemporaryDirectory(prefix="vsr-task-", dir=scratch) as tmp:
        local = dataclasses.replace(task, part=str(Path(tmp) / f"part{suffix}"))
        frames, more = run_task(local, _cache[key])
        return Path(local.part).read_bytes(), frames, warnings + more


def _node() -> str:
    """This Ray node, as a user can find it: its host name and, where Ray knows it, its IP address."""
    name = socket.gethostname()
    try:
        import ray

        address = ray.util.get_node_ip_address()  # the node's own address inside a task (ray/_private/services.py:811)
    except Exception:  # noqa: BLE001 - a Ray without it: the host name alone
        return name
    return f"{name} ({address})" if address and address != name else name


def _check_input(task) -> None:
    """In a task, before anything is decoded: the input is a file at `task.src` on this node and, when the driver
    sent its `content` (size and end hashes), holds that content; else `InputError` naming this node. A
    deterministic mismatch, so the driver ends the run rather than retrying it (`vsr.scaleout.run`). The mtime
    is not compared: another node's copy of the same file has its own."""
    from vsr.scaleout.workdir import content_differs

    where = "with --ray the input must be at the same absolute path on every node (a shared folder)"
    if not Path(task.src).is_file():
        raise InputError(f"{task.src}: not found on Ray node {_node()}; {where}")
    if task.content is not None:
        why = content_differs(task.src, task.content)
        if why is not None:
            raise InputError(
                f"{task.src}: Ray node {_node()} holds another file at this path ({why}); {where}, the same file on each"
            )


def _assigned_gpu() -> str:
    """In a GPU task: the torch device of the GPU Ray assigned it ("cuda:N"). Ray names it by its id in the node's
    CUDA_VISIBLE_DEVICES as the worker started, or 0..GPUs-1 without one (ray/_private/worker.py, get_gpu_ids and
    get_accelerator_ids_for_accelerator_resource); torch numbers the GPUs this process sees, which Ray narrowed to
    that one unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES is set (ray/_private/accelerators/nvidia_gpu.py)."""
    import ray

    ids = [str(i) for i in ray.get_gpu_ids()]
    if len(ids) != 1:
        raise RuntimeError(f"Ray gave this task {len(ids)} GPUs (ids {ids}); it asked for one")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return f"cuda:{ids[0]}"
    names = [name.strip() for name in visible.split(",")]
    if ids[0] not in names:
        raise RuntimeError(f"the GPU Ray assigned ({ids[0]}) is not in CUDA_VISIBLE_DEVICES={visible!r}")
    return f"cuda:{names.index(ids[0])}"


def _gpu_spec(spec, backend: str, precision: str | None):
    """The spec of a GPU task: the caller's backend and precision. A precision a GPU cannot run (bf16) is refused
    in one line by its `engine` (`vsr.engine.precision.layer_plan`), which the driver reads before any task."""
    precision = None if precision in (None, "auto") else precision
    return dataclasses.replace(spec, device="cuda", backend=backend, precision=precision, threads=0)


def _cpu_spec(spec, backend: str, precision: str | None, address: str):
    """The spec of a CPU task: eager, with the caller's CPU precision plan (`spec.layers`); a GPU-only choice is
    refused rather than replaced."""
    if backend not in ("auto", "eager"):
        raise BackendError(
            f"the Ray cluster at {address} has no GPUs, and its tasks run the eager backend on the CPU; drop --backend {backend}"
        )
    if precision == "fp16":
        raise BackendError(f"the Ray cluster at {address} has no GPUs, and --precision fp16 needs one; use auto, fp32 or bf16")
    return dataclasses.replace(spec, threads=1)


class RayWorkers:
    """See the module contract. `backend` and `precision` are the caller's `--backend` and `--precision` (the
    spec's model is built from them on the cluster's GPUs)."""

    def __init__(self, address: str, spec, notice=lambda text: None, backend: str = "auto", precision: str | None = None):
        self._address, self._lost = address, False
        self._refs: list = []
        self._temp = None
        if address != "local":  # before Ray is imported: an address that does not answer fails in seconds
            check_address(address)
        ray = self._ray = _import_ray(address)
        self._heartbeat = Heartbeat(address)
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.CRITICAL}
        if address == "local":
            from vsr.scaleout.run import cores

            # A new local cluster turns on token auth and writes ~/.ray/auth_token unless given a token (ray
            # _private/authentication/authentication_token_setup.py); its session files go to a folder of our own.
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
            self._temp = tempfile.mkdtemp(prefix="vsr-ray-")
            kwargs.update(num_cpus=cores(), _temp_dir=self._temp)
        term = signal.getsignal(signal.SIGTERM)
        # ray.init installs a SIGTERM handler that calls sys.exit (ray/_private/worker.py, init: "sigterm_handler",
        # through ray._private.utils.set_sigterm_handler): a SIGTERM during the start would skip vsr's clean-up.
        utils = getattr(getattr(ray, "_private", None), "utils", None)
        set_handler = getattr(utils, "set_sigterm_handler", None)
        if set_handler is not None:
            utils.set_sigterm_handler = lambda handler: None
        try:
            self._init(ray, address, kwargs, notice)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, ...
            self.close()
            port = " (the head's Ray Client port, 10001 by default)" if address.startswith("ray://") else ""
            raise BackendError(f"cannot start or reach Ray at {address!r} ({_why(exc)}); check --ray{port}") from None
        except BaseException:  # a stop during the start: shut Ray down and remove its session folder
            self.close()
            raise
        finally:
            if set_handler is not None:
                utils.set_sigterm_handler = set_handler
            signal.signal(signal.SIGTERM, term)  # in case another path installed one
        if address.startswith("ray://"):
            quiet_client()  # after ray.init, which sets up Ray's loggers
        hook = getattr(getattr(ray, "_private", None), "worker", None)
        if hook is not None and hasattr(hook, "print_to_stdstream"):  # "(raylet) ..." lines on stdout: no switch
            hook.print_to_stdstream = lambda *args, **kwargs: None
        try:
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
            if gpus:
                spec = _gpu_spec(spec, backend, precision)
                # num_gpus in ray.remote itself: max_calls=1, a process per GPU task (see the module contract)
                options = {"num_cpus": 1, "num_gpus": 1, "max_retries": 0}
            else:
                spec = _cpu_spec(spec, backend, precision, address)
                options = {"num_cpus": 1, "max_retries": 0}
            self.slots = gpus or cpus
            self._unit, self._read, self._notice = ("GPU" if gpus else "CPU"), time.monotonic(), notice
            self._asking, self._answer = None, None  # capacity()'s thread and its answer
            self.engine, self.weights_digest = spec.engine, spec.digest
            self.name = f"Ray at {address}: {self.slots} {'GPU' if gpus else 'CPU'} task slots"
            self._spec = ray.put(spec)
            self._remote = ray.remote(**options)(_ray_segment)
        except BaseException:
            self.close()
            raise
        notice(self.name)

    @staticmethod
    def _init(ray, address: str, kwargs: dict, notice) -> None:
        """`ray.init`. Ray's own connect runs in C++ and calls the signal handler, so a stop is held until it returns
        (it is bounded by `check_address`). Ray Client's is Python gRPC (ray/util/client/worker.py), which a stop
        ends at once, so nothing is held there; its "connection timed out" UserWarning is not printed (the error
        says it), and a session its server failed to start (ray-project/ray#63202, open in 2.60: the head's
        proxier forks the session's server while gRPC threads run, and the child dies in about 1 of 8 connects
        here) is tried again, up to `_CLIENT_TRIES` in all, one line each: a failed connect disconnects first
        (ray/util/client/__init__.py, connect: `except Exception: self.disconnect()`)."""
        if not address.startswith("ray://"):
            with deferred():  # a stop during the start is taken once ray.init returns
                ray.init(address=address, **kwargs)
            return
        for attempt in range(1, _CLIENT_TRIES + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    ray.init(address=address, **kwargs)
                return
            except ConnectionAbortedError as exc:
                if attempt == _CLIENT_TRIES or "Starting Ray client server failed" not in str(exc):
                    raise
                notice(f"the Ray Client server at {address} failed to start a session ({_why(exc)}); trying again")

    def capacity(self) -> int:
        """The task slots now: the cluster's GPUs (CPUs without GPUs) read again at most every `_REREAD_S`, so
        nodes that join during a run (by hand, or an autoscaler's) get segments as they join, and a lost node's
        slots are no longer counted. `ray.cluster_resources()` sums the live nodes' totals (ray/_private/state.py,
        GlobalState.cluster_resources, 2.60.0 lines 878-896), a blocking call to the head (GlobalStateAccessor
        get_all_total_resources, line 925): it runs in a thread of its own and is waited for `_ASK_S` at most,
        so a lost head never stalls the run here nor holds a stop signal; its answer is used when it comes (the
        connection's trouble is `wait`'s and `outcome`'s to report). A change is said in one line."""
        now = time.monotonic()
        if self._ray is None or now - self._read < _REREAD_S:
            return self.slots
        self._read = now
        if self._asking is None or not self._asking.is_alive():
            self._asking = threading.Thread(target=self._ask, args=(self._ray,), name="vsr-ray-resources", daemon=True)
            self._asking.start()
        self._asking.join(_ASK_S)
        count, self._answer = self._answer, None
        if count is not None and count >= 1 and count != self.slots:
            self._notice(f"the Ray cluster now has {count} {self._unit}s: {count} task slots (were {self.slots})")
            self.slots = count
        return self.slots

    def _ask(self, ray) -> None:
        """In the thread `capacity` starts: the cluster's GPU (CPU) count into `_answer`; nothing on failure."""
        try:
            self._answer = int(ray.cluster_resources().get(self._unit, 0))
        except Exception:  # noqa: BLE001,S110 - no answer: the slots stay as they are
            pass

    def submit(self, task):
        try:
            ref = self._remote.remote(self._spec, task, self._temp)
        except ConnectionError as exc:  # Ray Client: the connection is gone
            raise self._gone(exc) from None
        self._refs.append(ref)
        return ref

    def wait(self, handles, timeout: float):
        if not handles:
            return []
        # Ray's C++ wait calls the signal handler: an exception raised there is mangled. Ray Client's wait is
        # Python (gRPC, waiting in slices), and may wait for a lost server for a minute: a stop ends it at once.
        hold = nullcontext() if self._address.startswith("ray://") else deferred()
        try:
            with hold:
                done, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        except ConnectionError as exc:  # Ray Client: "Client is shutting down." and the like
            raise self._gone(exc) from None
        if not done:
            gone = self._heartbeat.lost()
            if gone is not None:
                raise self._gone(f"its head has not answered for {gone:.0f} s")
        return done

    def _gone(self, why) -> BackendError:
        """The cluster or the Ray Client connection is lost: `close()` then calls no Ray API that needs it."""
        self._lost = True
        return BackendError(
            f"lost the Ray cluster at {self._address} ({_why(why)}); the segments done are kept, and the same command "
            "with --resume continues once it is back"
        )

    def outcome(self, ref, task) -> tuple[int, list[str]]:
        from ray.exceptions import (
            LocalRayletDiedError,
            NodeDiedError,
            OutOfMemoryError,
            RayTaskError,
            TaskCancelledError,
            WorkerCrashedError,
        )

        from vsr.scaleout.run import WorkerDied

        self._refs.remove(ref)
        try:
            with deferred():
                data, frames, warnings = self._ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise RuntimeError(str(exc).strip().splitlines()[0]) from None
        except (WorkerCrashedError, TaskCancelledError, OutOfMemoryError, NodeDiedError, LocalRayletDiedError) as exc:
            raise WorkerDied(broken=False, why=_death(exc)) from exc
        except ConnectionError as exc:  # Ray Client: the connection is gone
            raise self._gone(exc) from None
        Path(task.part).write_bytes(data)
        return frames, warnings

    def restart(self) -> None:
        """Nothing to restart: a dead Ray worker takes only its own task with it."""

    def close(self) -> None:
        ray, self._ray = getattr(self, "_ray", None), None
        try:
            if ray is not None:
                with held():
                    for ref in [] if getattr(self, "_lost", False) else self._refs:
                        try:
                            ray.cancel(ref, force=True)
                        except Exception:  # noqa: BLE001,S110 - finished or gone already
                            pass
                    self._refs = []
                    ray.shutdown()
        finally:
            if self._temp is not None:
                shutil.rmtree(self._temp, ignore_errors=True)
                self._temp = None


def _why(exc: BaseException | str) -> str:
    """An exception (or a reason) in a few words: its first line, or for Ray Client's "Initialization failure from
    server:" (the server's traceback follows it) the traceback's last line, which says what failed."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    if lines[0].startswith("Initialization failure from server") and len(lines) > 1:
        return lines[-1].removeprefix("RuntimeError: ")
    return lines[0]


def _death(exc: BaseException) -> str:
    """What a Ray system error says happened to a task's worker, in a few words (the retry line's). Only a lost
    node's error names where it ran: Ray 2.60's NodeDiedError carries the raylet's message, "Task failed because
    the node it was running on is dead or unavailable. Node IP: IP, node ID: ..." (in _raylet.so; deserialized
    in ray/_private/serialization.py:503-505), while WorkerCrashedError carries nothing (lines 465-466)."""
    found = re.search(r"Node IP: ([^,\s]+)", str(exc)) if type(exc).__name__ == "NodeDiedError" else None
    if found:
        return f"its Ray node {found.group(1)} died or cannot be reached"
    kinds = {
        "NodeDiedError": "its Ray node died",
        "LocalRayletDiedError": "the raylet of its Ray node died",
        "OutOfMemoryError": "its worker was killed: its Ray node ran out of memory",
        "TaskCancelledError": "its Ray task was cancelled",
    }
    return kinds.get(type(exc).__name__, "its Ray worker process died (killed, or out of memory?)")
