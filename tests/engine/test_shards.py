"""Shard store: rows round-trip exactly through Parquet, commits are atomic, other settings are pruned."""

from __future__ import annotations

import os

from distillflow.engine.shards import ShardStore, read_rows, rows_to_table, table_to_rows, write_rows

ROWS = [
    {"id": "a", "n": 1, "x": 1.5, "ok": True, "text": "héllo ✓", "messages": [{"role": "user", "content": "hi"}],
     "provenance": {"judges": {"j": {"score": 4.0}}}, "maybe": None, "mixed": 1, "big": 2**62},
    {"id": "b", "n": 2, "x": 2.0, "ok": False, "text": "", "messages": [], "provenance": {},
     "maybe": "now", "mixed": "one", "big": -(2**62), "only_here": [1, {"a": None}]},
    {"id": "c", "n": None, "x": None, "ok": None, "text": None, "messages": None, "provenance": None,
     "maybe": None, "mixed": 2.5, "big": 0},
]


def test_rows_round_trip_exactly_including_absent_keys_and_mixed_types(tmp_path):
    assert table_to_rows(rows_to_table(ROWS)) == ROWS
    write_rows(tmp_path / "r.parquet", ROWS)
    back = read_rows(tmp_path / "r.parquet")
    assert back == ROWS
    assert "only_here" not in back[0] and back[1]["only_here"] == [1, {"a": None}]
    assert [type(r["mixed"]) for r in back] == [int, str, float]
    assert read_rows_empty(tmp_path) == []


def read_rows_empty(tmp_path):
    write_rows(tmp_path / "empty.parquet", [])
    return read_rows(tmp_path / "empty.parquet")


def test_scalar_columns_are_stored_natively(tmp_path):
    import pyarrow as pa

    t = rows_to_table(ROWS)
    assert t.schema.field("n").type == pa.int64() and t.schema.field("x").type == pa.float64()
    assert t.schema.field("ok").type == pa.bool_() and t.schema.field("text").type == pa.string()


def test_commit_is_atomic_and_a_half_written_shard_is_ignored(tmp_path):
    store = ShardStore(tmp_path)
    assert store.get("judge", "h1", 0) is None
    # what kill -9 leaves mid-write: a temporary directory, never the final name
    half = tmp_path / "judge" / "h1" / ".0000000.tmp-12345"
    half.mkdir(parents=True)
    (half / "kept.parquet").write_bytes(b"PAR1 partial")
    assert store.get("judge", "h1", 0) is None and store.committed("judge", "h1") == 0
    store.put("judge", "h1", 0, ROWS[:2], ROWS[2:], {"usage": {}, "units": 2})
    kept, rejected, meta = store.get("judge", "h1", 0)
    assert (kept, rejected, meta["units"]) == (ROWS[:2], ROWS[2:], 2)
    assert store.committed("judge", "h1") == 1
    assert not any(p.name.startswith(f".0000000.tmp-{os.getpid()}") for p in (tmp_path / "judge" / "h1").iterdir())
    # recomputing a shard replaces it whole
    store.put("judge", "h1", 0, ROWS[:1], [], {"units": 1})
    assert store.get("judge", "h1", 0)[0] == ROWS[:1]


def test_prune_forgets_outputs_of_other_settings(tmp_path):
    store = ShardStore(tmp_path)
    store.put("filter", "old", 0, ROWS, [], {})
    store.put("filter", "new", 0, ROWS[:1], [], {})
    store.prune("filter", "new")
    assert store.get("filter", "old", 0) is None and store.get("filter", "new", 0) is not None
