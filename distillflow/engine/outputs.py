"""Row files: JSONL and Parquet readers/writers shared by the engine and the integrations.

    write_jsonl(path, rows); rows = read_jsonl(path); write_parquet(path, rows)

Kept free of distilabel so review/, train/ and evaluate/ can use it (see engine/write.py).
"""

from __future__ import annotations

import json
from pathlib import Path

_NESTED = ("messages", "source", "provenance")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path, tolerant: bool = False) -> list[dict]:
    """Rows of a JSONL file ([] when absent). ``tolerant`` skips unparseable lines (a torn last
    line after a crash must not stop a report)."""
    if not Path(path).is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    if not tolerant:
                        raise
    return out


def _flat(rows: list[dict]) -> list[dict]:
    """Parquet wants one type per column: nested, schema-varying columns become JSON text."""
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            row[k] = json.dumps(v, ensure_ascii=False, default=str) if k in _NESTED or isinstance(v, (dict, list)) else v
        out.append(row)
    return out


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = _flat(rows)
    try:
        table = pa.Table.from_pylist(flat)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed scalar types in a column (e.g. a user column): store everything as text
        cols = sorted({k for r in flat for k in r})
        table = pa.Table.from_pylist([{k: None if r.get(k) is None else str(r.get(k)) for k in cols} for r in flat])
    pq.write_table(table, path)


class Rows:
    """The rows of a run's JSONL file, read lazily: ``len``, iteration, indexing and slicing.

    Nothing is held in memory between calls; indexing reads up to the row asked for. For
    column-wise work on large runs use ``RunResult.dataset()`` (memory-mapped Parquet).
    """

    def __init__(self, path: Path, count: int | None = None):
        self.path = Path(path)
        self._count = count

    def __iter__(self):
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.__iter__())
        return self._count

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index] if (index.start or 0) < 0 or (index.stop or 0) < 0 else _islice(self, index)
        if index < 0:
            index += len(self)
        for i, row in enumerate(self):
            if i == index:
                return row
        raise IndexError(index)

    def to_list(self) -> list[dict]:
        return list(self)

    def __add__(self, other):
        return list(self) + list(other)

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"Rows({str(self.path)!r}, {len(self)} rows)"


def _islice(rows: Rows, s: slice) -> list[dict]:
    from itertools import islice

    return list(islice(iter(rows), s.start, s.stop, s.step))
