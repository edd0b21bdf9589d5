"""The prompt store: the source read once, normalised, into SQLite; shards are read back by position.

    prompts = PromptStore.prepare(spec.source, base_dir, run_dir / "cache" / "source", shard_size=1000)
    prompts.n_shards, prompts.shard(0)         # the first shard's rows, in order
    prompts.heldout_rows()                      # an iterator, never a list of the run

Reading streams the file (JSONL line by line, Parquet by record batch); duplicate prompts are found
by SQLite's unique index, not a Python set, so memory stays flat whatever the number of prompts.
The order (seeded shuffle, limit, held-out draw) is the same as :func:`engine.source.load_source`:
8 bytes per prompt for the permutation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import threading
from pathlib import Path

from distillflow.engine.outputs import dumps as _dumps, iter_jsonl, loads as _loads
from distillflow.engine.source import _mapping, _resolve, iter_raw, normalize_row, select_positions

_CHUNK = 500


def content_key(src, base_dir: Path | None) -> str:
    """Hash of what the normalised prompts depend on: the file's bytes and the mapping settings."""
    content = None
    if src.path:
        p = _resolve(src.path, base_dir)
        if p.is_file():
            h = hashlib.sha256()
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            content = h.hexdigest()
        elif p.is_dir():
            content = sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())
    fields = src.model_dump(mode="json", include={"kind", "path", "dataset", "config", "split", "rows", "columns", "system_prompt"})
    blob = json.dumps([fields, content], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class PromptStore:
    """Normalised prompts of one source in ``<root>/<content key>/`` (see module docstring)."""

    def __init__(self, directory: Path, src, shard_size: int):
        self.dir = directory
        meta = json.loads((directory / "meta.json").read_text())
        self.n_valid, self.n_dropped, self.n_raw = meta["valid"], meta["dropped"], meta["raw"]
        self.order, held, self.used = select_positions(self.n_valid, src)
        from array import array

        held_set = set(held)
        self.heldout_positions = held
        self.train_positions = array("q", (p for p in range(self.used) if p not in held_set))
        self.shard_size = shard_size
        self.n_train = len(self.train_positions)
        self.n_shards = math.ceil(self.n_train / shard_size) if self.n_train else 0
        self._db = sqlite3.connect(str(directory / "prompts.sqlite"), check_same_thread=False)
        self._lock = threading.Lock()  # shards are read from worker threads

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def prepare(cls, src, base_dir: Path | None, root: Path, shard_size: int, on_row=None) -> "PromptStore":
        key = content_key(src, base_dir)
        final = Path(root) / key
        if not (final / "meta.json").is_file():
            if Path(root).is_dir():  # prompts of another source version: no longer needed
                for old in Path(root).iterdir():
                    shutil.rmtree(old, ignore_errors=True)
            tmp = Path(root) / f".{key}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                _build(src, base_dir, tmp, on_row)
            except sqlite3.OperationalError as e:  # "database or disk is full": the place is wrong, say so
                import errno

                shutil.rmtree(tmp, ignore_errors=True)
                code = errno.ENOSPC if "full" in str(e) else errno.EROFS
                raise OSError(code, f"cannot write the prompt store ({e})", str(tmp)) from None
            os.replace(tmp, final)  # committed whole, or rebuilt on the next run
        return cls(final, src, shard_size)

    # -- reading -----------------------------------------------------------------------------
    def _rows_at(self, positions) -> list[dict]:
        seqs = [self.order[p] for p in positions]
        found: dict[int, dict] = {}
        for i in range(0, len(seqs), _CHUNK):
            chunk = seqs[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                got = self._db.execute(f"SELECT seq, data FROM rows WHERE seq IN ({marks})", chunk).fetchall()
            for seq, data in got:
                found[seq] = _loads(data)
        return [found[s] for s in seqs]

    def shard(self, k: int) -> list[dict]:
        lo = k * self.shard_size
        return self._rows_at(self.train_positions[lo : lo + self.shard_size])

    def heldout_rows(self):
        for i in range(0, len(self.heldout_positions), _CHUNK):
            yield from self._rows_at(self.heldout_positions[i : i + _CHUNK])

    def dropped_rows(self):
        return iter_jsonl(self.dir / "dropped.jsonl")

    def close(self) -> None:
        self._db.close()


def _build(src, base_dir, directory: Path, on_row) -> None:
    origin = src.path or src.dataset or "inline"
    db = sqlite3.connect(str(directory / "prompts.sqlite"))
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, pid TEXT NOT NULL UNIQUE, data TEXT NOT NULL)")
    raw_iter = iter_raw(src, base_dir)
    head = []
    for r in raw_iter:
        head.append(r)
        if len(head) >= 50:
            break
    mapping = _mapping(src, head, origin)
    valid = dropped = raw = 0
    insert = "INSERT OR IGNORE INTO rows (seq, pid, data) VALUES (?, ?, ?)"
    with (directory / "dropped.jsonl").open("w", encoding="utf-8") as drop_fh:
        db.execute("BEGIN")

        def rows():
            yield from head
            yield from raw_iter

        for i, r in enumerate(rows()):
            raw += 1
            row, reason = normalize_row(r, i, mapping, src, origin)
            if not reason:
                cur = db.execute(insert, (valid, row["prompt_id"], _dumps(row)))
                if cur.rowcount == 1:
                    valid += 1
                else:
                    reason = "duplicate prompt"
            if reason:
                dropped += 1
                drop_fh.write(_dumps({**row, "rejected_by": "source", "reason": reason}) + "\n")
            if on_row is not None and raw % 10_000 == 0:
                on_row(raw)
        db.execute("COMMIT")
    db.close()
    (directory / "meta.json").write_text(json.dumps({"valid": valid, "dropped": dropped, "raw": raw}))
