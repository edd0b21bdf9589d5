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


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
