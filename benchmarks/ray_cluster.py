"""A real Ray cluster on this machine, on loopback: a head node plus worker nodes, each its own raylet.

    with LocalRayCluster(node_cpus=[1, 1]) as cluster:      # head with 1 CPU + one more node with 1 CPU
        distillflow.run(plan, backend="ray", address=cluster.address)

Outside a network namespace Ray binds the machine's external address whatever it is told, so this
must run inside one (see ENVIRONMENT.md): :func:`namespaced` wraps a command in ``unshare -n`` with
loopback up, and everything that talks to the cluster (driver, endpoints) runs in there too.
The nodes are ``ray start --block`` processes owned by us, each in its own session, stopped by
signalling them (and their process groups), never with ``ray stop`` (which stops every Ray
process of the machine, other people's included).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ray_bin() -> str:
    """The ``ray`` command of this interpreter's installation (else the one on PATH: Ray installed
    with ``pip --target``, as on a machine without it)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or str(beside))


def namespaced(argv: list[str]) -> list[str]:
    """``argv`` run in a new network namespace whose loopback is up (needs root)."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *argv]


def namespace_problem() -> str | None:
    """Why a Ray cluster cannot start here (None when it can)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'distillflow[ray]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip are not installed (util-linux, iproute2)"
    if os.geteuid() != 0:
        return "a private network namespace (unshare -n) needs root"
    r = subprocess.run(namespaced(["true"]), capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare -n failed: {r.stderr.strip()}"
    return None


def run_namespaced(module: str) -> None:
    """For a benchmark's ``main``: unless already inside one (``DISTILLFLOW_NETNS=1``), run
    ``python -m module`` with this command line again in a network namespace of its own (Ray must
    run on a private loopback) and exit with its status; or exit naming why a cluster cannot start."""
    if os.environ.get("DISTILLFLOW_NETNS") == "1":
        return
    problem = namespace_problem()
    if problem:
        sys.exit(f"cannot start a local Ray cluster: {problem}")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, DISTILLFLOW_NETNS="1", PYTHONPATH=path, RAY_USAGE_STATS_ENABLED="0")
    sys.exit(subprocess.call(namespaced([sys.executable, "-m", module, *sys.argv[1:]]), env=env, cwd=str(ROOT)))


class LocalRayCluster:
    """Head (``node_cpus[0]`` CPUs) + one worker node per further entry; ``address`` is HOST:PORT."""

    def __init__(self, node_cpus: list[int] = (1, 1), port: int = 6390, ready_timeout_s: float = 240.0,
                 env: dict[str, str | None] | None = None, wrap: dict[int, list[str]] | None = None):
        self.node_cpus = list(node_cpus)
        self.extra_env = dict(env or {})  # for the nodes; None removes a variable
        # node index (0: the head) -> a command that runs its `ray start` (e.g. in a mount namespace)
        self.wrap = dict(wrap or {})
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.ready_timeout_s = ready_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="dfr", dir="/tmp"))  # short: Ray's unix socket paths live in it

    def _env(self) -> dict:
        # Authentication off unless asked for: Ray 2.60 turns it on for a head that finds a token in
        # ~/.ray/auth_token (which any plain ray.init() on the machine writes), and the plain
        # ray.init(address=...) of connect() would then be refused.
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        # the head's Ray Client server waits 30 s for the process it starts per client driver; on a
        # loaded 2-core machine one such start failed a test run (ray://: "Initialization failure from
        # server"), with a second cluster running beside it
        env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "120")
        # the nodes' workers import distillflow (and test modules) from this checkout
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        for k, v in self.extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def _start(self, args: list[str], log: str, node: int = 0) -> None:
        with open(self.tmp / log, "wb") as fh:
            cmd = [*self.wrap.get(node, []), ray_bin(), "start", *args, "--block"]
            self.procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                               env=self._env(), start_new_session=True, cwd=str(ROOT)))

    def start(self) -> "LocalRayCluster":
        self._start(["--head", f"--port={self.port}", f"--num-cpus={self.node_cpus[0]}", "--num-gpus=0",
                     "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--include-dashboard=false",
                     f"--temp-dir={self.tmp / 'ray'}"], "head.log")
        for i, cpus in enumerate(self.node_cpus[1:]):
            # A temporary directory of its own: nodes on one machine otherwise share the head's
            # session directory, where two joining at once can pick the same plasma store socket
            # ("bind: Address already in use"; the driver then waits 60 s for a node that died and
            # aborts) — seen with three nodes or more, in about half the clusters started.
            self._start([f"--address={self.address}", f"--num-cpus={cpus}", "--num-gpus=0",
                         "--node-ip-address=127.0.0.1", f"--temp-dir={self.tmp / f'n{i + 1}'}"], f"node{i + 1}.log", i + 1)
        return self

    def wait_head_started(self, node: int = 0) -> None:
        """Wait, without joining, until the head (or node ``node``) says its runtime started (for a
        driver in another process)."""
        deadline = time.monotonic() + self.ready_timeout_s
        log = self.tmp / ("head.log" if node == 0 else f"node{node}.log")
        while "Ray runtime started" not in (log.read_text(errors="replace") if log.is_file() else ""):
            if len(self.procs) > node and self.procs[node].poll() is not None:
                raise RuntimeError(f"ray node {node} exited ({self.procs[node].returncode}): see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray node {node} did not start in {self.ready_timeout_s}s: see {log}")
            time.sleep(0.2)

    def wait_ready(self, ray) -> None:
        """Poll (with ``ray`` connected) until every node is alive."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= len(self.node_cpus):
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a ray node exited ({p.returncode}): see {self.tmp}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(alive)} of {len(self.node_cpus)} Ray nodes alive after {self.ready_timeout_s}s")
            time.sleep(0.5)

    def connect(self):
        """``ray`` connected to this cluster as a driver, every node up."""
        import logging

        import ray

        deadline = time.monotonic() + self.ready_timeout_s
        while True:  # the head may still be starting
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        self.wait_ready(ray)
        return ray

    def stop(self) -> None:
        for p in reversed(self.procs):  # worker nodes first, then the head
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever the node left behind in its session (raylet, workers, gcs)
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
