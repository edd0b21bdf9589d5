"""The shard store: each step's output for each shard, committed atomically as Parquet.

    store = ShardStore(run_dir / "cache" / "shards")
    store.put("judge", step_hash, 7, kept, rejected, meta={"usage": {...}})   # atomic
    kept, rejected, meta = store.get("judge", step_hash, 7)                     # None if not committed

A shard of a step is a directory ``<step>/<hash>/<shard>/`` holding ``kept.parquet``,
``rejected.parquet`` and ``meta.json``; it is written under a temporary name and renamed into
place, so after ``kill -9`` a shard is either committed whole or absent. Rows round-trip exactly:
scalar columns are stored natively; nested, mixed-type or sometimes-absent columns as JSON text
(named in the file's metadata).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from distillflow.engine.outputs import dumps as _dumps, loads as _loads

_MISSING = object()
_META_JSON = b"distillflow.json_columns"
_META_OPT = b"distillflow.optional_columns"
_MAX_INT = 2**63 - 1


def _column_type(values: list):
    """The Arrow type for a column's present values, or None when it must be JSON text."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if kinds == {str}:
        return pa.string()
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64() if all(v is None or -_MAX_INT <= v <= _MAX_INT for v in values) else None
    if kinds == {float}:
        return pa.float64()
    return None


def rows_to_table(rows: list[dict]):
    """A pyarrow Table that :func:`table_to_rows` turns back into exactly ``rows``."""
    import pyarrow as pa

    columns: dict[str, None] = {}
    for r in rows:
        for k in r:
            columns.setdefault(k, None)
    arrays, json_cols, optional = {}, [], []
    for c in columns:
        vals = [r.get(c, _MISSING) for r in rows]
        if any(v is _MISSING for v in vals):
            optional.append(c)
            json_cols.append(c)
            arrays[c] = pa.array([None if v is _MISSING else _dumps(v) for v in vals], pa.string())
            continue
        t = _column_type(vals)
        if t is None:
            json_cols.append(c)
            arrays[c] = pa.array([_dumps(v) for v in vals], pa.string())
        else:
            arrays[c] = pa.array(vals, t)
    table = pa.table(arrays) if arrays else pa.table({"__empty__": pa.array([], pa.null())})
    meta = {_META_JSON: json.dumps(json_cols).encode(), _META_OPT: json.dumps(optional).encode()}
    return table.replace_schema_metadata(meta)


def table_to_rows(table) -> list[dict]:
    meta = table.schema.metadata or {}
    json_cols = set(json.loads(meta.get(_META_JSON, b"[]")))
    optional = set(json.loads(meta.get(_META_OPT, b"[]")))
    if table.column_names == ["__empty__"]:
        return []
    rows = table.to_pylist()
    if not json_cols:
        return rows
    for r in rows:
        for c in json_cols:
            v = r[c]
            if v is None and c in optional:
                del r[c]
            else:
                r[c] = _loads(v)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(rows_to_table(rows), path, compression="zstd")


def read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return table_to_rows(pq.read_table(path))


class ShardStore:
    """Committed step outputs per shard; see the module docstring."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, step_id: str, h: str, shard: int) -> Path:
        return self.root / step_id / h / f"{shard:07d}"

    def has(self, step_id: str, h: str, shard: int) -> bool:
        return (self._dir(step_id, h, shard) / "meta.json").is_file()

    def get(self, step_id: str, h: str, shard: int):
        d = self._dir(step_id, h, shard)
        if not (d / "meta.json").is_file():
            return None
        try:
            meta = json.loads((d / "meta.json").read_text())
            return read_rows(d / "kept.parquet"), read_rows(d / "rejected.parquet"), meta
        except Exception:  # unreadable (a disk error): recompute this shard
            return None

    def get_meta(self, step_id: str, h: str, shard: int) -> dict | None:
        p = self._dir(step_id, h, shard) / "meta.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except Exception:
            return None

    def put(self, step_id: str, h: str, shard: int, kept: list[dict], rejected: list[dict], meta: dict) -> None:
        final = self._dir(step_id, h, shard)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_rows(tmp / "kept.parquet", kept)
        write_rows(tmp / "rejected.parquet", rejected)
        (tmp / "meta.json").write_text(json.dumps(meta, default=str))
        if final.exists():  # a recomputed shard (e.g. --retry-errors) replaces the old one
            self.drop(step_id, h, shard)
        os.replace(tmp, final)  # the commit: a directory appears whole or not at all

    def drop(self, step_id: str, h: str, shard: int) -> None:
        """Forget one commit (its meta.json first: a half-deleted directory is no commit)."""
        d = self._dir(step_id, h, shard)
        (d / "meta.json").unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    def drop_after(self, step_id: str, h: str, shard: int) -> None:
        """Forget the commits of every shard after ``shard``."""
        d = self.root / step_id / h
        for child in d.iterdir() if d.is_dir() else ():
            if child.name.isdigit() and int(child.name) > shard:
                self.drop(step_id, h, int(child.name))

    def prune(self, step_id: str, keep_hash: str) -> None:
        """Forget a step's outputs computed with other settings (a changed step reruns from here)."""
        d = self.root / step_id
        if d.is_dir():
            for child in d.iterdir():
                if child.name != keep_hash:
                    shutil.rmtree(child, ignore_errors=True)

    def committed(self, step_id: str, h: str) -> int:
        d = self.root / step_id / h
        return sum(1 for p in d.glob("*/meta.json")) if d.is_dir() else 0
