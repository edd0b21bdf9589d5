"""Per-request answer cache: resuming a run never pays for an answer twice.

One SQLite table ``answers(key → JSON of ChatResult)`` in WAL mode with ``synchronous=NORMAL``:
a committed answer survives ``kill -9`` (not power loss), and commits are cheap (~0.2 ms, no
fsync). An answer is committed at once when the last commit is at least ``flush_interval_s``
(20 ms) old; otherwise it waits, with at most 49 others, for a timer or the next commit. So a
kill loses at most ~20 ms of answers, a slow run commits every answer, and a 250 req/s run costs
at most ~50 commits per second instead of 250.

A failed commit (disk full, read-only directory) keeps its answers buffered and raises
:class:`~distillflow.errors.OutputWriteError` naming the path and what is stored. A 1 MiB
reserve file (``requests.sqlite.reserve``, made while there is space) is deleted on the first
failed commit so that the answers already received still fit before the run stops. A commit
that fails in the background timer raises nothing there (no traceback from a callback): its
error is raised by the next ``put``/``flush``/``close``.

WAL needs every process that opens the file to be on one machine (its index lives in shared
memory), which holds for the local backend and for a Ray cluster on one machine. A Ray run whose
directory is on a network filesystem (NFS, CephFS, Lustre, SMB, a FUSE mount...) has readers on
other hosts, so its files use a rollback journal (``journal_mode=TRUNCATE``) instead:
:func:`cache_journal` decides, ``DISTILLFLOW_CACHE_JOURNAL=wal|truncate`` overrides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from distillflow.engine.client import ChatResult
# stored values only (keys always use stdlib json, so they never change with installs)
from distillflow.engine.outputs import dumps as _dump_value, loads as _load_value
from distillflow.errors import ConfigurationError, OutputWriteError

__all__ = ["RequestCache", "SharedCache", "cache_journal", "filesystem_type", "request_key", "sibling_path"]

# Stored as a JSON list: text, input_tokens, output_tokens, token_logprobs, finish_reason,
# latency_s[, top_logprobs]. `cached` and `meta` are not stored (meta belongs to the caller's rows).
# The 7th item is only written when present, so caches written before it read back unchanged.
_CHUNK = 500  # keys per SELECT: SQLite's default variable limit is far above it

JOURNALS = ("wal", "truncate")
JOURNAL_ENV = "DISTILLFLOW_CACHE_JOURNAL"
# filesystems whose files other hosts may open too: SQLite's WAL does not work across hosts there
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs",
               "beegfs", "ocfs2", "gfs2", "9p", "virtiofs", "panfs", "orangefs", "pvfs2", "wekafs", "quobyte", "davfs"}


def _unescape(field: str) -> str:
    # mountinfo writes a space, tab, newline or backslash in a path as an octal escape (\040)
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str | Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` is on ("ext4", "nfs4", "fuse.sshfs"...), from Linux's
    /proc/self/mountinfo (the mount with the longest matching mount point); None where that cannot
    be read (another OS)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(os.path.abspath(path))  # (symbolic links followed as far as they exist)
    best, fstype = -1, None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # (a later mount over the same point hides the earlier)
            best, fstype = len(point), right.split()[0]
    return fstype


def is_network_fs(fstype: str | None) -> bool:
    """Whether files on a filesystem of this type may be opened from other hosts too (unknown: yes)."""
    return fstype is None or fstype in _NETWORK_FS or fstype.startswith("fuse")  # (fuse, fuse.*, fuseblk)


def cache_journal(run_dir: str | Path) -> str:
    """The journal for a Ray run's answer caches in ``run_dir``: WAL on a local filesystem (every
    process that opens them is on this machine), a rollback journal ("truncate") on a network one,
    where workers on other hosts read them. ``DISTILLFLOW_CACHE_JOURNAL`` (wal or truncate) overrides."""
    chosen = os.environ.get(JOURNAL_ENV, "").strip().lower()
    if chosen:
        if chosen not in JOURNALS:
            raise ConfigurationError(f"{JOURNAL_ENV}={chosen!r}: it takes 'wal' or 'truncate' (or unset it to let "
                                     "distillflow choose by the run directory's filesystem)")
        return chosen
    return "truncate" if is_network_fs(filesystem_type(run_dir)) else "wal"


def request_key(provider: str, model: str, base_url: str | None, params: dict,
                messages: list[dict], sample_index: int) -> str:
    """Stable cache key: sha256 hex of the canonical JSON of everything that shapes an answer.

    Params set to None are dropped (``{"seed": None}`` asks the same as ``{}``) and a trailing
    slash on ``base_url`` does not matter.
    """
    canonical = {
        "provider": provider,
        "model": model,
        "base_url": (base_url or "").rstrip("/"),
        "params": {k: v for k, v in params.items() if v is not None},
        "messages": messages,
        "sample_index": int(sample_index),
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """SQLite cache of successful :class:`ChatResult` s keyed by :func:`request_key`.

    Safe to call from the asyncio thread and from other threads (one lock, one connection).
    Call :meth:`close` (or use it as a context manager) to commit the last buffered answers.
    """

    def __init__(self, path: str | Path, flush_every: int = 50, flush_interval_s: float = 0.02,
                 reserve_bytes: int = 1 << 20, journal: str = "wal"):
        if journal not in JOURNALS:
            raise ValueError(f"journal must be one of {JOURNALS}, not {journal!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reserve_bytes = reserve_bytes
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._make_reserve()
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self._lock = threading.RLock()
        self._pending: list[tuple[str, str]] = []
        self._timer_armed = False
        self._armed_at = 0.0
        self._last_commit = 0.0
        self._closed = False
        self._failure: sqlite3.Error | None = None  # a failed commit: later calls raise OutputWriteError
        self._reported = False  # whether a caller was told of _failure
        # isolation_level=None: we issue BEGIN/COMMIT ourselves around each batch.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")
        # (a file another connection has open stays in the mode it is in: SQLite answers that mode)
        self.journal = self._db.execute(f"PRAGMA journal_mode={journal.upper()}").fetchone()[0].lower()
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    # -- writes ---------------------------------------------------------------------------
    def put(self, result: ChatResult) -> None:
        """Buffer a successful result (errors and already-cached results are ignored)."""
        if result.error is not None or result.cached:
            return
        stored = [result.text, result.input_tokens, result.output_tokens,
                  result.token_logprobs, result.finish_reason, result.latency_s]
        if result.top_logprobs is not None:
            stored.append(result.top_logprobs)
        value = _dump_value(stored)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"RequestCache({self.path}) is closed")
            self._pending.append((result.key, value))
            self._raise_pending_error()
            now = time.monotonic()
            if len(self._pending) >= self.flush_every or now - self._last_commit >= self.flush_interval_s:
                self._flush_locked()
            elif not self._timer_armed or now - self._armed_at > self.flush_interval_s:
                # (A timer older than the interval was lost with its event loop: arm anew.)
                self._arm_timer(self._last_commit + self.flush_interval_s - now)

    def _arm_timer(self, delay: float) -> None:
        # A timer bounds how long an answer waits for its commit when puts stop coming.
        self._timer_armed = True
        self._armed_at = time.monotonic()
        delay = max(0.001, delay)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            t = threading.Timer(delay, self._timer_flush)
            t.daemon = True
            t.start()
        else:
            loop.call_later(delay, self._timer_flush)

    def _timer_flush(self) -> None:
        # Runs as an event-loop or thread callback, where an exception would only print a
        # traceback: a failure is remembered (in _flush_locked) and raised by the next call.
        with self._lock:
            try:
                self._flush_locked()
            except Exception:
                self._reported = False  # nobody heard of it yet: the next caller will

    def _flush_locked(self) -> None:
        self._timer_armed = False
        if not self._pending or self._closed:
            return
        self._last_commit = time.monotonic()
        try:
            self._commit(self._pending)
        except sqlite3.Error as exc:
            self._failure = exc
            # Disk full or read-only: give back the reserve and try once more, so that every
            # answer received is stored before the run stops (it must stop: the disk is full).
            if not self._use_reserve():
                raise self._fail() from None
            try:
                self._commit(self._pending)
            except sqlite3.Error:
                raise self._fail() from None
            self._pending = []
            raise self._fail() from None
        self._pending = []

    def _commit(self, rows: list[tuple[str, str]]) -> None:
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:  # rows stay in self._pending: nothing received is dropped
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _make_reserve(self) -> None:
        # Space set aside while there is some, given back when the disk fills (see _flush_locked).
        if self.reserve_bytes and not self._reserve.exists():
            try:
                with open(self._reserve, "wb") as fh:
                    fh.truncate(0)
                    fh.write(b"\0" * self.reserve_bytes)  # written, not sparse: the blocks are really held
            except OSError:
                self._reserve.unlink(missing_ok=True)

    def _use_reserve(self) -> bool:
        try:
            size = self._reserve.stat().st_size
            self._reserve.unlink()
        except OSError:
            return False
        return size > 0

    def _fail(self) -> OutputWriteError:
        """The error for the last failed commit, with what is stored now."""
        self._reported = True
        try:
            stored = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.Error:
            stored = "?"
        lost = (f"{len(self._pending)} answers received last could not be written" if self._pending
                else "every answer received is stored")
        return OutputWriteError(
            f"cannot write the answer cache {self.path} ({self._failure}): the disk is full or the directory is "
            f"read-only. {stored} answers are stored there ({lost}). Free space (or make the directory "
            "writable) and run the same command again to resume — stored answers are not requested again."
        )

    def _raise_pending_error(self) -> None:
        # A commit failed: the caller hears of it once (also when it failed in the background
        # timer, which cannot raise), with the counts of that moment; while answers still cannot
        # be written, every later put/flush/close raises again.
        if self._failure is not None:
            self._flush_locked()  # answers still pending get one more chance (raises if they fail)
            if not self._reported:
                raise self._fail()
            self._failure = None  # already raised once, and now everything is stored: carry on

    def flush(self) -> None:
        """Commit buffered answers now (raises OutputWriteError when they cannot be written)."""
        with self._lock:
            self._raise_pending_error()
            self._flush_locked()

    # -- reads ----------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """Cached results for those of ``keys`` that are present, marked ``cached=True``."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, ChatResult] = {}
        with self._lock:
            self._flush_locked()
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(
                    f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk
                ):
                    text, inp, outp, lps, finish, latency, *rest = _load_value(value)
                    out[key] = ChatResult(key, text, inp, outp, lps, finish, None, latency, True, {},
                                          top_logprobs=rest[0] if rest else None)
        return out

    def count(self) -> int:
        """Number of answers stored (buffered ones included)."""
        with self._lock:
            self._flush_locked()
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        """Commit what is buffered and close the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._raise_pending_error()
                self._flush_locked()
            finally:
                self._closed = True
                self._db.close()

    # -- sibling files (one per Ray worker process: no two processes write one file) -------------
    def siblings(self) -> list[Path]:
        """The other processes' files beside this one: ``requests-<worker>.sqlite``."""
        return sorted(p for p in self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}") if p != self.path)

    def absorb(self) -> int:
        """Copy every sibling file's answers into this one and delete the sibling (call it only
        while no other process writes them: before a run's workers start, after they finished).
        Returns how many answers were new here."""
        n = 0
        with self._lock:
            self._raise_pending_error()
            self._flush_locked()
            for p in self.siblings():
                try:
                    self._db.execute("ATTACH DATABASE ? AS sibling", (str(p),))
                except sqlite3.Error:
                    continue
                try:
                    cur = self._db.execute("INSERT OR IGNORE INTO answers SELECT key, value FROM sibling.answers")
                    n += max(0, cur.rowcount)
                except sqlite3.Error:  # an empty file (its process died before creating the table)
                    pass
                finally:
                    self._db.execute("DETACH DATABASE sibling")
                for q in (p, *(p.with_name(p.name + x) for x in ("-wal", "-shm", "-journal", ".reserve"))):
                    q.unlink(missing_ok=True)
        return n

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"



def sibling_path(main: Path, worker: str) -> Path:
    """Where worker ``worker`` keeps its answers beside the run's ``requests.sqlite``."""
    return main.with_name(f"{main.stem}-{worker}{main.suffix}")


class SharedCache:
    """The request cache of one process among several (Ray workers, the Ray driver): answers are
    written to ``own`` only, and read from ``own``, the run's main file and every sibling file
    (merged on read). The driver folds the siblings into the main file (:meth:`RequestCache.absorb`)
    when no worker writes them."""

    def __init__(self, own: RequestCache, main: Path):
        self.own, self.main = own, Path(main)
        self._readers: dict[Path, sqlite3.Connection] = {}

    def put(self, result: ChatResult) -> None:
        self.own.put(result)

    def flush(self) -> None:
        self.own.flush()

    def _others(self) -> list[Path]:
        m = self.main
        paths = [m, *sorted(m.parent.glob(f"{m.stem}-*{m.suffix}"))]
        return [p for p in paths if p != self.own.path and p.is_file()]

    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        keys = list(dict.fromkeys(keys))
        out = self.own.get_many(keys)
        missing = [k for k in keys if k not in out]
        for p in self._others() if missing else ():
            db = self._readers.get(p)
            try:
                if db is None:
                    db = self._readers[p] = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
                for i in range(0, len(missing), _CHUNK):
                    chunk = missing[i : i + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, value in db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk):
                        text, inp, outp, lps, finish, latency, *rest = _load_value(value)
                        out[key] = ChatResult(key, text, inp, outp, lps, finish, None, latency, True, {},
                                              top_logprobs=rest[0] if rest else None)
            except sqlite3.Error:  # a file being created or deleted: its answers are asked again
                self._readers.pop(p, None)
                continue
            missing = [k for k in missing if k not in out]
            if not missing:
                break
        return out

    def close(self, own: bool = True) -> None:
        for db in self._readers.values():
            db.close()
        self._readers.clear()
        if own:
            self.own.close()
