"""Row files and the JSON codec: the one home of row I/O for the engine and the integrations.

    write_jsonl(path, rows); rows = read_jsonl(path); for row in iter_jsonl(path): ...
    write_parquet(path, rows); text = dumps(row); row = loads(text)

Imports nothing of distillflow's, so review/, train/, evaluate/ and report/ use it as the engine's
public surface (see engine/write.py for the run's bounded-memory writers).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["Rows", "dumps", "dumps_bytes", "flat_value", "iter_jsonl", "loads", "read_json", "read_jsonl", "write_jsonl",
           "write_parquet"]

_NESTED = ("messages", "source", "provenance")


def _std_dumps(v) -> str:
    return json.dumps(v, ensure_ascii=False, default=str, separators=(",", ":"))


def _ascii_dumps(v) -> str:
    return json.dumps(v, default=str, separators=(",", ":"))


try:  # orjson is ~5x faster, but only used when something else already installed it
    import orjson as _orjson

    def dumps(v) -> str:
        """Compact JSON text of ``v`` (orjson when installed; stdlib json where orjson refuses)."""
        try:
            return _orjson.dumps(v).decode()
        except TypeError:  # e.g. a non-str key or a lone surrogate: stdlib json copes (escaped, so
            return _ascii_dumps(v)  # the text still encodes as UTF-8 for SQLite and Parquet)

    # HTTP bodies: strict, a value JSON cannot carry raises TypeError (that request fails alone)
    dumps_bytes = _orjson.dumps

    loads = _orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    dumps = _std_dumps

    def dumps_bytes(v) -> bytes:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()

    loads = json.loads


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict | None:
    """A JSON object file's content: None when it is absent, unreadable or not an object (a run
    directory's ``manifest.json``, ``eval/results.json``, ``review/report.json`` ...)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def iter_jsonl(path: Path, tolerant: bool = False):
    """The rows of a JSONL file one at a time (none when it is absent). ``tolerant`` skips
    unparseable lines (a torn last line after a crash must not stop a report)."""
    if not Path(path).is_file():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = loads(line)
                except ValueError:  # orjson's JSONDecodeError is a ValueError too
                    if not tolerant:
                        raise
                    continue
                yield row


def read_jsonl(path: Path, tolerant: bool = False) -> list[dict]:
    """Rows of a JSONL file ([] when absent); see :func:`iter_jsonl`."""
    return list(iter_jsonl(path, tolerant))


def flat_value(key: str, v):
    """Parquet wants one type per column: nested, schema-varying values become JSON text."""
    return dumps(v) if key in _NESTED or isinstance(v, (dict, list, tuple)) else v


def _flat(rows: list[dict]) -> list[dict]:
    return [{k: flat_value(k, v) for k, v in r.items()} for r in rows]


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
        return iter_jsonl(self.path)

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
