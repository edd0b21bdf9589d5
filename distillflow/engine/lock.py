"""One run per run directory: a lock file created atomically, with the holder's host, pid and start.

    with RunLock(out_dir):          # raises RunLockedError (exit 2) naming the holder
        run_pipeline(spec, out_dir)

The lock is ``<out_dir>/.distillflow.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+). It holds JSON: ``host``, ``pid``, ``started`` (UTC), ``heartbeat``
(epoch seconds, refreshed every ``heartbeat_s`` by a daemon thread) and, on Linux, the pid's
start time in clock ticks (so a reused pid is not mistaken for the holder). A lock is stale —
and taken over with a message — when its holder is on this host and its process is gone, or on
another host and its heartbeat is older than ``stale_after_s`` (5 minutes by default). The same
process may enter a lock on the same directory again (nested ``RunLock``s are counted), so the
CLI and the engine can both hold it without deadlocking each other.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from distillflow.errors import OutputWriteError, RunLockedError

__all__ = ["LOCK_NAME", "RunLock", "read_lock"]

LOCK_NAME = ".distillflow.lock"
_held: dict[str, list] = {}  # resolved lock path -> [RunLock, depth] held by this process
_held_guard = threading.Lock()


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
        return int(raw[raw.rindex(")") + 2:].split()[19])  # field 22 of stat(5)
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def read_lock(out_dir: str | Path) -> dict | None:
    """The lock's content for ``out_dir`` (None when unlocked; ``{}`` when unreadable)."""
    path = Path(out_dir) / LOCK_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "an unknown process (the lock file is unreadable)"
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"


class RunLock:
    """Hold ``<out_dir>/.distillflow.lock`` for the duration of a ``with`` block.

    ``notify(message)`` receives the takeover message when a stale lock is replaced (default:
    print to stderr). ``heartbeat_s`` / ``stale_after_s`` tune the cross-host staleness rule.
    """

    def __init__(self, out_dir: str | Path, *, heartbeat_s: float = 30.0, stale_after_s: float = 300.0,
                 notify: Callable[[str], None] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.notify = notify or (lambda msg: sys.stderr.write(msg + "\n"))
        self.took_over: str | None = None  # the takeover message, if a stale lock was replaced
        self._info: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key = ""

    # -- acquire / release ---------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock (or raise RunLockedError naming its holder)."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(
                f"cannot create the run directory {self.out_dir} ({exc.strerror or exc}): "
                "choose a writable --out (or output.dir)."
            ) from None
        self._key = str(self.path.resolve())
        with _held_guard:
            entry = _held.get(self._key)
            if entry is not None:  # this process already holds it (CLI around the engine)
                entry[1] += 1
                self._info = entry[0]._info
                return self
        for _ in range(5):  # a few rounds: a racing process may take over a stale lock first
            if self._create():
                with _held_guard:
                    _held[self._key] = [self, 1]
                self._start_heartbeat()
                return self
            info = read_lock(self.out_dir)
            if info is None:
                continue  # released meanwhile: try again
            stale = self._stale_reason(info)
            if stale is None:
                raise RunLockedError(
                    f"the run directory {self.out_dir} is in use by {_describe(info)}. Wait for that run "
                    f"to finish or stop it, or use another --out. (If that process is gone, delete {self.path}.)"
                )
            if self._take_over(info):
                self.took_over = (f"note: took over the lock of {self.out_dir} left by {_describe(info)} "
                                  f"({stale}); resuming from its cache.")
                self.notify(self.took_over)
        raise RunLockedError(f"could not lock {self.out_dir}: other processes keep taking its lock ({self.path})")

    def _create(self) -> bool:
        now = time.time()
        self._info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "heartbeat": now,
        }
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputWriteError(
                f"cannot write to the run directory {self.out_dir} ({exc.strerror or exc}): it is read-only "
                "or the disk is full. Choose a writable --out, or free space, and run again."
            ) from None
        try:
            os.write(fd, json.dumps(self._info).encode())
        finally:
            os.close(fd)
        return True

    def _stale_reason(self, info: dict) -> str | None:
        if not info:  # half-written (killed between create and write) or garbage
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return None
            return f"unreadable, {age:.0f}s old" if age > self.stale_after_s else None
        if info.get("host") == socket.gethostname():
            pid = int(info.get("pid") or 0)
            if pid <= 0 or not _pid_alive(pid):
                return "its process is gone"
            start = info.get("proc_start")
            if start is not None and _proc_start(pid) not in (None, start):
                return "its pid now belongs to another process"
            return None
        age = time.time() - float(info.get("heartbeat") or 0)
        if age > self.stale_after_s:
            return f"no heartbeat for {age:.0f}s"
        return None

    def _take_over(self, info: dict) -> bool:
        # Move the stale file aside under a unique name, check it is the one judged stale
        # (another process may have replaced it meanwhile), then create ours.
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = {}
        if moved != info:  # a live lock taken meanwhile by someone else: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)
        return moved == info

    def release(self) -> None:
        """Drop the lock (only when it is still ours)."""
        with _held_guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._key]
        owner = entry[0]
        owner._stop.set()
        if owner._thread is not None:
            owner._thread.join(5)
        if read_lock(owner.out_dir) == owner._info:
            owner.path.unlink(missing_ok=True)

    # -- heartbeat -----------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="distillflow-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if read_lock(self.out_dir) != self._info:
                return  # no longer ours (deleted by hand or taken over): never overwrite another's lock
            info = {**self._info, "heartbeat": time.time()}
            tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(info), encoding="utf-8")
                os.replace(tmp, self.path)
                self._info = info
            except OSError:  # full disk: the pid rule still protects a same-host lock
                tmp.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.out_dir)!r})"
