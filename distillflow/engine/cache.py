"""Per-request answer cache: resuming a run never pays for an answer twice.

One SQLite table ``answers(key → JSON of ChatResult)`` in WAL mode with ``synchronous=NORMAL``:
a committed answer survives ``kill -9`` (not power loss), and commits are cheap. Writes are
buffered and committed every 50 answers or 0.2 s, whichever comes first, so a kill loses at
most ~0.2 s of answers while a 250 req/s run costs ~5 commits per second instead of 250.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from distillflow.engine.client import ChatResult

__all__ = ["RequestCache", "request_key"]

# Stored fields; `cached` and `meta` are not stored (meta belongs to the caller's rows).
_FIELDS = ("text", "input_tokens", "output_tokens", "token_logprobs", "finish_reason", "latency_s")
_CHUNK = 500  # keys per SELECT: SQLite's default variable limit is far above it


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

    def __init__(self, path: str | Path, flush_every: int = 50, flush_interval_s: float = 0.2):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self._lock = threading.RLock()
        self._pending: list[tuple[str, str]] = []
        self._timer_armed = False
        self._armed_at = 0.0
        self._closed = False
        # isolation_level=None: we issue BEGIN/COMMIT ourselves around each batch.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    # -- writes ---------------------------------------------------------------------------
    def put(self, result: ChatResult) -> None:
        """Buffer a successful result (errors and already-cached results are ignored)."""
        if result.error is not None or result.cached:
            return
        value = json.dumps([getattr(result, f) for f in _FIELDS], ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._closed:
                raise RuntimeError(f"RequestCache({self.path}) is closed")
            self._pending.append((result.key, value))
            if len(self._pending) >= self.flush_every:
                self._flush_locked()
            elif not self._timer_armed:
                self._arm_timer()
            elif time.monotonic() - self._armed_at > self.flush_interval_s:
                # The timer is late or lost (its event loop ended): commit here instead.
                self._flush_locked()

    def _arm_timer(self) -> None:
        # A timer bounds how long a lone answer waits for its commit when puts stop coming.
        self._timer_armed = True
        self._armed_at = time.monotonic()
        try:
            import asyncio

            loop = asyncio.get_running_loop()
        except RuntimeError:
            t = threading.Timer(self.flush_interval_s, self.flush)
            t.daemon = True
            t.start()
        else:
            loop.call_later(self.flush_interval_s, self.flush)

    def _flush_locked(self) -> None:
        self._timer_armed = False
        if not self._pending or self._closed:
            return
        rows, self._pending = self._pending, []
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def flush(self) -> None:
        """Commit buffered answers now."""
        with self._lock:
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
                    text, inp, outp, lps, finish, latency = json.loads(value)
                    out[key] = ChatResult(key, text, inp, outp, lps, finish, None, latency, True, {})
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
            self._flush_locked()
            self._closed = True
            self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

