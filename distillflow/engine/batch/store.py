"""Provider batches of a run, in SQLite next to the request cache: what was submitted, where, and
what came back — so a rerun after Ctrl-C or ``kill -9`` collects instead of paying twice.

    store = BatchStore(run_dir / "cache" / "batches.sqlite")
    store.live_keys("teacher")        # {request key: submission} of batches not yet collected
    store.summary()                    # per-batch rows for `distillflow status RUN_DIR`

A submission's row is written *before* the provider is asked to create the batch (state
``pending``), with the request keys it holds; the provider's batch id is added once known
(``submitted``). A ``pending`` row found on resume is looked up at the provider (by the
submission id sent as metadata) and adopted, or marked ``abandoned`` if the provider never got
it. Results are kept once downloaded (``collected``): an answer is downloaded once, and the
store records which answers came through which batch and at what cost.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from distillflow.engine.client import ChatResult

__all__ = ["BatchStore", "LIVE_STATES"]

LIVE_STATES = ("pending", "submitted")  # the provider may still be answering these lines

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    submission TEXT PRIMARY KEY,     -- our id, sent to the provider as metadata where possible
    batch_id TEXT,                   -- the provider's id (NULL while pending)
    teacher TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,          -- base_url + model: a batch belongs to one endpoint
    state TEXT NOT NULL,             -- pending | submitted | collected | abandoned
    provider_status TEXT,
    n_requests INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL,
    est_cost_usd REAL NOT NULL,      -- upper bound at batch prices, held against the budget
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    errored INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS lines (
    submission TEXT NOT NULL,
    key TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    outcome TEXT,                    -- NULL until the batch is collected
    error TEXT,
    retryable INTEGER,               -- 1: the error may pass on resubmission (5xx, rate limit, expiry)
    PRIMARY KEY (submission, key)
);
CREATE INDEX IF NOT EXISTS lines_key ON lines (key);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    submission TEXT NOT NULL,
    value TEXT NOT NULL,             -- text, input_tokens, output_tokens, logprobs, finish_reason
    cost_usd REAL NOT NULL
);
"""


class BatchStore:
    """SQLite record of provider batches (WAL; every write commits, so it survives ``kill -9``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(lines)")}
        if "retryable" not in cols:  # a store written before line retryability was recorded
            self._db.execute("ALTER TABLE lines ADD COLUMN retryable INTEGER")

    # -- submissions ----------------------------------------------------------------------
    def add_pending(self, submission: str, teacher: str, provider: str, endpoint: str,
                    keys: dict[str, str], n_bytes: int, est_cost_usd: float) -> None:
        """Record a batch about to be created; ``keys`` maps request key -> custom_id."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO batches (submission, teacher, provider, endpoint, state, n_requests, n_bytes,"
                " est_cost_usd, created_at, updated_at) VALUES (?,?,?,?, 'pending', ?,?,?,?,?)",
                (submission, teacher, provider, endpoint, len(keys), n_bytes, est_cost_usd, now, now),
            )
            self._db.executemany("INSERT INTO lines (submission, key, custom_id) VALUES (?,?,?)",
                                 [(submission, k, c) for k, c in keys.items()])
            self._db.execute("COMMIT")

    def set_submitted(self, submission: str, batch_id: str) -> None:
        self._exec("UPDATE batches SET batch_id=?, state='submitted', updated_at=? WHERE submission=?",
                   (batch_id, time.time(), submission))

    def set_abandoned(self, submission: str) -> None:
        self._exec("UPDATE batches SET state='abandoned', updated_at=? WHERE submission=?", (time.time(), submission))

    def set_status(self, submission: str, provider_status: str, completed: int, failed: int) -> None:
        self._exec("UPDATE batches SET provider_status=?, completed=?, failed=?, updated_at=? WHERE submission=?",
                   (provider_status, completed, failed, time.time(), submission))

    def collect(self, submission: str, provider_status: str,
                outcomes: list[tuple],
                results: list[tuple[ChatResult, float]]) -> None:
        """Store a finished batch in one transaction: each line's (key, outcome, error[, retryable])
        and the successful results with their cost; the batch becomes ``collected``."""
        counts = {"succeeded": 0, "errored": 0, "expired": 0, "cancelled": 0}
        outcomes = [(o[0], o[1], o[2], None if len(o) < 4 else int(bool(o[3]))) for o in outcomes]
        for _, outcome, _, _ in outcomes:
            if outcome in counts:
                counts[outcome] += 1
        cost = sum(c for _, c in results)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("UPDATE lines SET outcome=?, error=?, retryable=? WHERE submission=? AND key=?",
                                     [(o, e, r, submission, k) for k, o, e, r in outcomes])
                self._db.executemany(
                    "INSERT OR IGNORE INTO results (key, submission, value, cost_usd) VALUES (?,?,?,?)",
                    [(r.key, submission, json.dumps([r.text, r.input_tokens, r.output_tokens, r.token_logprobs,
                                                     r.finish_reason]), c) for r, c in results])
                self._db.execute(
                    "UPDATE batches SET state='collected', provider_status=?, succeeded=?, errored=?, expired=?,"
                    " cancelled=?, completed=?, failed=?, cost_usd=?, ended_at=?, updated_at=? WHERE submission=?",
                    (provider_status, counts["succeeded"], counts["errored"], counts["expired"], counts["cancelled"],
                     counts["succeeded"], len(outcomes) - counts["succeeded"], cost, now, now, submission))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------
    def live(self, teacher: str | None = None) -> list[dict]:
        """Batches the provider may still be answering (pending or submitted)."""
        q = "SELECT * FROM batches WHERE state IN ('pending','submitted')"
        args: tuple = ()
        if teacher is not None:
            q += " AND teacher=?"
            args = (teacher,)
        return self._rows(q + " ORDER BY created_at", args)

    def live_keys(self, teacher: str) -> dict[str, str]:
        """{request key: submission} for lines in live batches of ``teacher``."""
        with self._lock:
            return dict(self._db.execute(
                "SELECT l.key, l.submission FROM lines l JOIN batches b ON b.submission=l.submission"
                " WHERE b.teacher=? AND b.state IN ('pending','submitted')", (teacher,)).fetchall())

    def line_keys(self, submission: str) -> dict[str, str]:
        """{custom_id: request key} of one submission."""
        with self._lock:
            return dict(self._db.execute("SELECT custom_id, key FROM lines WHERE submission=?",
                                         (submission,)).fetchall())

    def line_submissions(self, submission: str) -> dict[str, str]:
        """{request key: outcome or None} of one submission."""
        with self._lock:
            return dict(self._db.execute("SELECT key, outcome FROM lines WHERE submission=?",
                                         (submission,)).fetchall())

    def line_history(self, keys: list[str]) -> dict[str, dict]:
        """For keys submitted at least once: ``attempts`` (submissions the provider got) and the
        latest one's ``outcome`` (None while live), ``error``, ``retryable`` and ``created_at``."""
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for key, outcome, error, retryable, created in self._db.execute(
                    "SELECT l.key, l.outcome, l.error, l.retryable, b.created_at FROM lines l"
                    " JOIN batches b ON b.submission=l.submission"
                    f" WHERE b.state != 'abandoned' AND l.key IN ({marks}) ORDER BY b.created_at", chunk
                ):
                    h = out.setdefault(key, {"attempts": 0})
                    h.update(attempts=h["attempts"] + 1, outcome=outcome, error=error,
                             retryable=bool(retryable), created_at=created)
        return out

    def live_teachers(self) -> set[str]:
        """Teachers with batches the provider may still be answering."""
        with self._lock:
            return {t for (t,) in self._db.execute(
                "SELECT DISTINCT teacher FROM batches WHERE state IN ('pending','submitted')")}

    def outstanding_usd(self) -> float:
        """Estimated cost of every live batch (all teachers): held against the budget."""
        with self._lock:
            return float(self._db.execute(
                "SELECT COALESCE(SUM(est_cost_usd),0) FROM batches WHERE state IN ('pending','submitted')"
            ).fetchone()[0])

    def results(self, keys: list[str]) -> dict[str, tuple[ChatResult, float, str]]:
        """Downloaded answers among ``keys``: {key: (result, cost_usd, submission)}."""
        out: dict[str, tuple[ChatResult, float, str]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for key, sub, value, cost in self._db.execute(
                    f"SELECT key, submission, value, cost_usd FROM results WHERE key IN ({marks})", chunk
                ):
                    text, inp, outp, lps, finish = json.loads(value)
                    out[key] = (ChatResult(key, text, inp, outp, lps, finish, None, 0.0), cost, sub)
        return out

    def summary(self) -> list[dict]:
        """Every batch, oldest first (for `distillflow status`, manifests and cards)."""
        return self._rows("SELECT * FROM batches ORDER BY created_at", ())

    def totals(self) -> dict:
        """Answers that came through batches and their cost, per teacher."""
        with self._lock:
            rows = self._db.execute(
                "SELECT b.teacher, COUNT(*), COALESCE(SUM(r.cost_usd),0) FROM results r"
                " JOIN batches b ON b.submission=r.submission GROUP BY b.teacher").fetchall()
        return {t: {"answers": n, "cost_usd": round(c, 6)} for t, n, c in rows}

    # -- plumbing -------------------------------------------------------------------------
    def _exec(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple) -> list[dict]:
        with self._lock:
            cur = self._db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
