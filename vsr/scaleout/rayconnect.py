"""Checks of a `--ray ADDRESS` before `ray.init`, and of the cluster while a run waits on it (for `raytasks`).

Contract:
- `check_address(address)` raises `BackendError` (one line) within seconds when `ray.init(address)` would hang or
  fail slowly, and is stoppable by a stop signal at every moment (it runs in this, the main, thread only Python
  code that waits in short slices, and kills its child process on any `BaseException`):
  - `HOST:PORT`: nothing accepts a TCP connection there within 5 s: "no Ray cluster answers". Else a child
    process asks it for the cluster's nodes with Ray's own GCS client (`ray._raylet.GcsClient`, the client
    `ray.init` uses: ray/_private/node.py 996-1003) with 1 s connect timeouts; its C++ log lines go to
    /dev/null. A port that is not a Ray GCS (a plain TCP server, a gRPC server of another kind: gRPC status
    12, UNIMPLEMENTED) fails there in about 3 s, where `ray.init` retries for minutes ("Failed to get cluster
    ID", 20 x 41 s). A GCS that answers but whose alive nodes include no raylet running on this machine
    (`ray._private.services.find_node_ids`, which `ray.init` reads: services.py 374-376, 512-586) means this
    machine is not a node: `ray.init` would wait 60 s (`get_node_to_connect_for_driver`) and fail with a
    misleading line; vsr says to run on a node or to use Ray Client (`ray://`).
  - `ray://HOST:PORT`: nothing accepts a TCP connection there within 5 s: "no Ray Client server answers";
    `ray[client]` (grpcio) missing: `UsageError` with the pip command. The Ray Client handshake itself is
    bounded by `CLIENT_ENV` (3 tries of 3 s instead of 5 + 10 + 15 s: ray/util/client/worker.py 61-62, 278-342).
  - `auto`, or no port: not checked (Ray finds a local cluster itself).
- `Heartbeat(address)`: `lost()` is called while a run waits for its tasks; for a `HOST:PORT` it tries a TCP
  connection to the GCS at most every `CHECK_EVERY_S` seconds (1 s timeout) and returns the seconds since it first
  failed once that is at least `LOST_AFTER_S`, else None. Ray itself would wait `gcs_rpc_server_reconnect_timeout_s`
  (60 s) and then end the process with its own C++ line (vsr sets it higher, `DRIVER_ENV`, so that vsr's own line
  comes first with what is kept).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from vsr.errors import BackendError, UsageError

# Read by Ray when it is imported or connects (driver only): nothing here changes the cluster.
DRIVER_ENV = {
    "RAY_ENABLE_AUTO_CONNECT": "0",  # no API call starts a local Ray once the connection is gone (auto_init_hook.py 8)
    "RAY_gcs_rpc_server_reconnect_timeout_s": "600",  # Ray's own exit on a lost GCS comes after vsr's (Heartbeat)
    "RAY_task_events_shutdown_flush_timeout_ms": "1000",  # ray.shutdown with the GCS gone: 1 s, not 5 s
}
CLIENT_ENV = {
    "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "3",
    "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "3",
    "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "5",  # a lost connection: Ray Client tries again for 5 s, not 30 s
}
_PROBE_ENV = {
    "RAY_py_gcs_connect_timeout_s": "1",
    "RAY_gcs_rpc_server_connect_timeout_s": "1",
    "RAY_gcs_rpc_server_reconnect_timeout_s": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
PROBE_TIMEOUT_S = 20.0  # the child normally answers in 0.5-4 s; it is killed after this
CHECK_EVERY_S = 2.0
LOST_AFTER_S = 10.0

_PROBE = r"""
import json, sys
try:
    from ray._raylet import GcsClient
    from ray._private.services import find_node_ids
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    client = GcsClient(address=sys.argv[1])
    nodes = client.get_all_node_info(timeout=5, state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
    alive = sorted(node_id.hex() for node_id in nodes)
except Exception as exc:
    print(json.dumps({"gcs": False, "error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}))
    sys.exit()
print(json.dumps({"gcs": True, "alive": alive, "local": sorted(find_node_ids())}))
"""


def split(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`; None for `auto`, `local` or no port."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _tcp(host: str, port: int, timeout: float) -> str | None:
    """None if something accepts a TCP connection at host:port within `timeout`, else why not."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return None


def check_address(address: str) -> None:
    """See the module contract."""
    where = split(address)
    if where is None:
        return
    client = address.startswith("ray://")
    reason = _tcp(*where, timeout=5)
    if reason is not None:
        if client:
            raise BackendError(
                f"no Ray Client server answers at {address} ({reason}); check --ray (the head's Ray Client port, "
                "10001 by default)"
            )
        raise BackendError(f"no Ray cluster answers at {address} ({reason}); start one with 'ray start --head' or check --ray")
    if client:
        try:
            import grpc  # noqa: F401 - what ray[client] adds
        except ImportError:
            hint = "pip install 'ray[client]'"
            raise UsageError(f"--ray {address} (Ray Client) needs ray[client], which is not installed: {hint}") from None
        return
    found = _probe(address)
    if not found.get("gcs"):
        raise BackendError(
            f"{address} accepts connections but is not a Ray cluster's GCS ({found.get('error') or 'no answer'}); "
            "give the head's port (the one 'ray start --head --port' got, 6379 by default)"
        )
    if not set(found.get("alive", ())) & set(found.get("local", ())):
        raise BackendError(
            f"this machine is not a node of the Ray cluster at {address}, and --ray HOST:PORT works only from one "
            f"of its nodes: run vsr on a node, or connect through Ray Client with --ray ray://{where[0]}:10001 "
            "(needs pip install 'ray[client]' here)"
        )


def _probe(address: str) -> dict:
    """The child's answer (see `_PROBE`); killed on a stop signal or after `PROBE_TIMEOUT_S`."""
    env = {**os.environ, **_PROBE_ENV}
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", _PROBE, address], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while proc.poll() is None:
            if time.monotonic() > deadline:
                return {"gcs": False, "error": f"no answer in {PROBE_TIMEOUT_S:.0f} s"}
            time.sleep(0.05)  # a stop signal raises here
        out = proc.stdout.read().decode(errors="replace").strip().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    try:
        return json.loads(out[-1])
    except (IndexError, ValueError):
        return {"gcs": False, "error": f"the check ended with status {proc.returncode}"}


def quiet_client() -> None:
    """Ray Client's own warnings on a lost connection ("Log channel is reconnecting...", from loggers of their own
    that do not propagate: ray/util/client/logsclient.py 20-24, 83) are not printed: vsr says it in one line."""
    import logging

    for name in ("ray.util.client", "ray.util.client.logsclient", "ray.util.client.dataclient", "ray.util.client.worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class Heartbeat:
    """See the module contract."""

    def __init__(self, address: str):
        self._where = None if address.startswith("ray://") else split(address)
        self._next = time.monotonic() + CHECK_EVERY_S
        self._failing_since: float | None = None

    def lost(self) -> float | None:
        if self._where is None or time.monotonic() < self._next:
            return None
        now = time.monotonic()
        self._next = now + CHECK_EVERY_S
        if _tcp(*self._where, timeout=1) is None:
            self._failing_since = None
            return None
        if self._failing_since is None:
            self._failing_since = now
        gone = time.monotonic() - self._failing_since
        return gone if gone >= LOST_AFTER_S else None
