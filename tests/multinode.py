"""A Ray cluster of separate "hosts" on one machine, for tests/test_multinode.py.

Contract:
- `Cluster(shared, n=3, extra=0)` is a context manager. It builds `n` Ray nodes (node 0 the head) and `extra`
  hosts on the same network that run no Ray (a machine that is not a node), each:
  - its own network namespace `vsr-mn-<pid>-<k>` with one veth link to a bridge that lives in a namespace of its
    own (`vsr-mn-<pid>-br`); addresses 10.213.0.<k+1>/24 exist only inside these namespaces, there is no route
    out and nothing is added to the host's network: no traffic leaves the namespaces the harness creates;
  - its own PID, mount and UTS namespace (`unshare`): its own process table, hostname `node<k>` (`host<k>` for
    the extra ones), and private tmpfs on `/tmp`, `/dev/shm` and `/mnt`;
  - the host folder `shared` bound at `/mnt/shared` (`SHARED`): the same folder at the same path on every host;
  - 1 CPU for Ray (`ray start --num-cpus 1`), its session files in its own `/tmp`, no dashboard, no usage stats.
- `run(k, argv, cwd, timeout)` runs a command on host k (`nsenter` into its namespaces) and returns the
  CompletedProcess; `popen(k, argv, cwd)` starts one (the caller bounds it: `Popen.wait(timeout)`). Every call is
  bounded: `run` raises `subprocess.TimeoutExpired` after killing the command.
- `kill(k)` kills host k at once, every process in it (SIGKILL to its PID namespace's init), as a machine that
  loses power; `path(k, p)` is where host k's path `p` is seen from this machine (`/proc/<init>/root/p`).
- `tasks(k)` is the set of Ray task names running on host k now (the `ray::<name>` process titles Ray gives a
  worker while it runs a task); `Watcher(cluster)` records them in the background.
- Teardown, whatever happens (exit of the `with`, an exception, an `atexit` when the interpreter ends early):
  every host's PID namespace is killed and every namespace and link deleted. What a run killed outright left
  (namespaces named after a process that is gone) is removed when the next cluster is built (`sweep`).
- `unavailable()` says why such a cluster cannot be built here (not root, no `ip`/`unshare`/`nsenter`, namespaces
  refused), or None.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .conftest import default_signals

SHARED = "/mnt/shared"
PORT = 6379
_NET = "10.213.0"


def _bin(name: str) -> str:
    """A tool beside this Python (the venv's `ray`), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def unavailable() -> str | None:
    if sys.platform != "linux":
        return "needs Linux namespaces"
    if os.geteuid() != 0:
        return "needs root (network, PID and mount namespaces)"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2 / util-linux)"
    for path in (sys.prefix, str(Path(__file__).resolve().parents[1])):
        if path == "/tmp" or path.startswith(("/tmp/", "/mnt/", "/dev/shm/")):
            return f"{path} is under a folder every node replaces with its own (/tmp, /mnt, /dev/shm)"
    name = f"vsr-mn-probe-{os.getpid()}"
    try:
        probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
        if probe.returncode != 0:
            return f"cannot create a network namespace: {probe.stderr.strip()}"
        test = subprocess.run(
            ["ip", "netns", "exec", name, "unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if test.returncode != 0:
            return f"cannot create PID/mount/UTS namespaces: {test.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
    return None


_INIT = r"""
set -e
mount -t tmpfs -o size=16m vsr-mnt /mnt
mkdir /mnt/shared
mount --bind "$VSR_MN_SHARED" /mnt/shared
mount -t tmpfs -o size=1g,mode=1777 vsr-tmp /tmp
mount -t tmpfs -o size=1g vsr-shm /dev/shm
hostname "$VSR_MN_NAME"
echo ready
exec sleep 100000
"""


class Cluster:
    def __init__(self, shared: Path, n: int = 3, extra: int = 0, logs: Path | None = None):
        self.shared, self.n, self.extra = Path(shared), n, extra
        self.prefix = f"vsr-mn-{os.getpid()}"
        self.bridge = f"{self.prefix}-br"
        self.logs = Path(logs) if logs else Path(tempfile.mkdtemp(prefix="vsr-mn-logs-"))
        self.inits: dict[int, subprocess.Popen] = {}
        self.pids: dict[int, int] = {}
        self.namespaces: list[str] = []
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("TMPDIR", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "HOME") and not k.startswith("PYTEST")
        }
        self.env.update(
            RAY_USAGE_STATS_ENABLED="0", HOME="/tmp/home", PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        )

    def ip(self, k: int) -> str:
        return f"{_NET}.{k + 1}"

    @property
    def head(self) -> str:
        return f"{self.ip(0)}:{PORT}"

    def ns(self, k: int) -> str:
        return f"{self.prefix}-{k}"

    def __enter__(self) -> Cluster:
        sweep()
        atexit.register(self.close)
        try:
            self._network()
            for k in range(self.n + self.extra):
                self._boot(k)
            for k in range(self.n):
                self._ray_start(k)
            self._wait_nodes()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ building
    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def _network(self) -> None:
        self._ip("netns", "add", self.bridge)
        self.namespaces.append(self.bridge)
        self._ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.bridge, "link", "set", "br0", "up")
        for k in range(self.n + self.extra):
            ns = self.ns(k)
            self._ip("netns", "add", ns)
            self.namespaces.append(ns)
            # created inside the bridge's namespace, so the host's never holds either end, not even for a moment
            self._ip("-n", self.bridge, "link", "add", f"p{k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip("-n", self.bridge, "link", "set", f"p{k}", "master", "br0", "up")
            self._ip("-n", ns, "addr", "add", f"{self.ip(k)}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    def _boot(self, k: int) -> None:
        name = f"node{k}" if k < self.n else f"host{k}"
        env = {**self.env, "VSR_MN_SHARED": str(self.shared), "VSR_MN_NAME": name}
        argv = ["ip", "netns", "exec", self.ns(k), "unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc"]
        argv += ["--propagation", "private", "sh", "-c", _INIT]
        err = open(self.logs / f"init{k}.err", "w")  # noqa: SIM115 - kept open by the child
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        self.inits[k] = proc
        line = _readline(proc, timeout=20)
        if line.strip() != "ready":
            raise RuntimeError(f"host {k} did not start: {(self.logs / f'init{k}.err').read_text().strip()}")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        self.pids[k] = int(children[0])  # the namespace's init (its PID 1): `sleep`

    def _ray_start(self, k: int) -> None:
        common = ["--node-ip-address", self.ip(k), "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        common += ["--object-store-memory", str(100 * 1024 * 1024), "--temp-dir", "/tmp/ray"]
        if k == 0:
            argv = [_bin("ray"), "start", "--head", "--port", str(PORT), "--include-dashboard=false", *common]
        else:
            argv = [_bin("ray"), "start", "--address", self.head, *common]
        for _ in range(3):  # on a loaded machine a node may time out waiting for the head's GCS: try again
            r = self.run(k, argv, timeout=120)
            if r.returncode == 0:
                return
            self.run(k, [_bin("ray"), "stop", "--force"], timeout=60)
        raise RuntimeError(f"ray start on node {k}: {r.stdout[-2000:]}{r.stderr[-2000:]}")

    def _wait_nodes(self, timeout: float = 90) -> None:
        """Until the head counts every node alive (`ray.init` from node 0 itself, as a node's own driver)."""
        probe = f"import ray; ray.init(address='{self.head}', logging_level=50); print(sum(n['Alive'] for n in ray.nodes()))"
        deadline = time.monotonic() + timeout
        said = ""
        while time.monotonic() < deadline:
            try:
                r = self.run(0, [sys.executable, "-c", probe], timeout=30)
                said = f"{r.stdout[-500:]}{r.stderr[-1500:]}"
                if r.returncode == 0 and r.stdout.split()[-1:] == [str(self.n)]:
                    return
            except subprocess.TimeoutExpired:
                said = "ray.init did not return in 30 s"
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {self.n} nodes: {said}")

    # ------------------------------------------------------------------ using
    def _argv(self, k: int, argv: list, cwd: str) -> list[str]:
        enter = ["nsenter", "-t", str(self.pids[k]), "-n", "-m", "-u", "-p", "--"]
        return [*enter, "sh", "-c", 'cd "$0" && mkdir -p "$HOME" && exec "$@"', cwd, *map(str, argv)]

    def run(self, k: int, argv: list, cwd: str = "/", timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        """Output through files, not pipes: a daemon the command leaves (ray start) keeps a pipe open."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(self._argv(k, argv, cwd), stdout=out, stderr=err, text=True, env={**self.env, **env})
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    def popen(self, k: int, argv: list, cwd: str = "/", **env: str) -> subprocess.Popen:
        """In a process group of its own: `stop(proc)` ends the command with it (nsenter forks it). Stop signals
        are at their defaults there (`default_signals`: a suite started with SIGINT ignored would hand that on)."""
        return subprocess.Popen(
            self._argv(k, argv, cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **env},
            start_new_session=True,
            preexec_fn=default_signals,
        )

    def path(self, k: int, p: str) -> Path:
        return Path(f"/proc/{self.pids[k]}/root") / p.lstrip("/")

    def kill(self, k: int) -> None:
        pid = self.pids.get(k)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc = self.inits.get(k)
        if proc is not None:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def tasks(self, k: int) -> set[str]:
        """The Ray tasks running on host k: its processes (same network namespace) titled `ray::<task>`."""
        return set(self._titled(k).values())

    def pause(self, k: int, task: str) -> int:
        """SIGSTOP the processes of host k that run `task` now (a task that takes long); how many."""
        stopped = 0
        for pid, title in self._titled(k).items():
            if title == task:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped += 1
                except ProcessLookupError:
                    pass
        return stopped

    def _titled(self, k: int) -> dict[int, str]:
        try:
            mine = os.readlink(f"/proc/{self.pids[k]}/ns/net")
        except OSError:
            return {}
        found = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                if title.startswith("ray::") and os.readlink(entry / "ns/net") == mine:
                    found[int(entry.name)] = title[5:].split()[0] if title[5:] else ""
            except OSError:
                continue
        return found

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        for k in list(self.inits):
            self.kill(k)
        self.inits.clear()
        for ns in reversed(self.namespaces):
            _delete(ns)
        self.namespaces.clear()
        atexit.unregister(self.close)


class Watcher:
    """Records, every 20 ms until stopped, which Ray tasks each node of `cluster` runs: `seen[k]` is the set of
    task names seen on node k."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.seen: dict[int, set[str]] = {k: set() for k in range(cluster.n)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for k in self.seen:
                self.seen[k] |= self.cluster.tasks(k)
            self._stop.wait(0.02)


def _delete(ns: str) -> None:
    """Kill whatever still runs in network namespace `ns` (`ip netns pids`), then delete it (and its links)."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=20)


def sweep() -> None:
    """Remove what an earlier run killed before its teardown (SIGKILL, a lost machine) left: the namespaces of a
    process that no longer exists."""
    import re

    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    for line in r.stdout.splitlines():
        m = re.match(r"(vsr-mn-(\d+)-\S+)", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            _delete(m.group(1))


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()
