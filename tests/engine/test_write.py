"""The output writer's pieces that need no endpoint: the one-pass Parquet schema and the Distiset's features."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillflow.engine.write import OutputWriter, ParquetSink, arrow_features, jsonl_to_parquet, note_kinds

ROWS = [
    {"id": "a", "n": 1, "x": 1.5, "ok": True, "meta": {"k": [1, 2]}, "mixed": 1, "maybe": None},
    {"id": "b", "n": 2, "x": 2, "ok": False, "meta": {"k": []}, "mixed": "two", "maybe": 3, "late": [1]},
]


def _write(tmp_path, rows):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def test_kinds_gathered_as_rows_arrive_give_the_schema_of_a_full_pass(tmp_path):
    src = _write(tmp_path, ROWS)
    two_pass, one_pass = tmp_path / "a.parquet", tmp_path / "b.parquet"
    kinds: dict = {}
    for r in ROWS:
        note_kinds(kinds, r)
    assert jsonl_to_parquet(src, two_pass) == jsonl_to_parquet(src, one_pass, kinds=kinds) == 2
    a, b = pq.read_table(two_pass), pq.read_table(one_pass)
    assert a.schema == b.schema and a.to_pylist() == b.to_pylist()
    types = {f.name: str(f.type) for f in b.schema}
    assert types == {"id": "string", "n": "int64", "x": "double", "ok": "bool", "meta": "string",
                     "mixed": "string", "maybe": "int64", "late": "string"}
    assert json.loads(b.column("meta")[0].as_py()) == {"k": [1, 2]} and b.column("late")[0].as_py() is None


def _sink(tmp_path, batches, min_rows=2, name="live.parquet"):
    """Shards rendered apart (as Ray workers do) and added to a sink, as the writer does."""
    from distillflow.engine.write import merge_kinds, render_part

    sink, kinds = ParquetSink(tmp_path / name, min_rows=min_rows), {}
    for rows in batches:
        part = render_part(rows, {})
        merge_kinds(kinds, part.curated_kinds)
        sink.add_table(part.curated_table, kinds)
    return sink.finish(kinds), kinds


def test_parquet_written_as_rows_arrive_equals_the_conversion_of_the_jsonl(tmp_path):
    rows = [{"id": f"r{i}", "n": i, "x": i / 2, "ok": i % 2 == 0, "meta": {"i": [i]}, "t": ("a", i)}
            for i in range(7)]
    whole, kinds = _sink(tmp_path, [rows[:3], rows[3:4], rows[4:]])
    assert whole
    jsonl_to_parquet(_write(tmp_path, rows), tmp_path / "ref.parquet")
    live, ref = pq.read_table(tmp_path / "live.parquet"), pq.read_table(tmp_path / "ref.parquet")
    assert live.schema == ref.schema and live.to_pylist() == ref.to_pylist()
    assert live.num_rows == 7 and json.loads(live.column("t")[6].as_py()) == ["a", 6]


@pytest.mark.parametrize("late", [{"id": "z", "n": 1.5}, {"id": "z", "n": 1, "new": "col"}])
def test_a_schema_change_after_the_first_batch_gives_up_for_the_full_conversion(tmp_path, late):
    first = [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    whole, _ = _sink(tmp_path, [first, [late, {"id": "c", "n": 3}]])
    assert whole is False  # the caller converts the JSONL (OutputWriter.finish does)
    whole, _ = _sink(tmp_path, [first, [{"id": "c", "n": 3}]], min_rows=100)  # one batch at the end: fine
    assert whole and pq.read_table(tmp_path / "live.parquet").num_rows == 3


def test_the_writer_keeps_rejected_columns_in_file_order(tmp_path, monkeypatch):
    import distillflow.engine.card as card

    monkeypatch.setattr(card, "render_dataset_card", lambda spec, manifest, sample: "card\n")  # needs a full spec
    w = OutputWriter(tmp_path / "run", ["judge", "filter"])
    w.add([{"id": "c1"}], {"filter": [{"id": "f1", "reason": "short", "f_only": 1}], "judge": []})
    w.add([], {"judge": [{"id": "j1", "score": 2.0}], "filter": []})

    class NoPrompts:
        heldout_positions = []

        def dropped_rows(self):
            return iter([{"id": "d1", "why": "empty"}])

        def heldout_rows(self):
            return iter([])

    class Plan:
        class spec:
            output = type("O", (), {"push_to_hub": None})()

            @staticmethod
            def to_yaml():
                return "name: t\n"

        class graph:
            @staticmethod
            def mermaid():
                return "graph TD"

    w.finish(Plan, NoPrompts(), {"name": "t"})
    assert (tmp_path / "run" / "README.md").read_text() == "card\n"
    assert pq.read_table(tmp_path / "run" / "data" / "curated.parquet").to_pylist() == [{"id": "c1"}]
    t = pq.read_table(tmp_path / "run" / "data" / "rejected.parquet")
    # the source's drops first, then the steps in graph order (judge before filter), as in the JSONL
    assert t.column_names == ["id", "why", "score", "reason", "f_only"]
    assert t.column("id").to_pylist() == ["d1", "j1", "f1"]


@pytest.mark.parametrize("types", [
    [pa.bool_(), pa.int64(), pa.float64(), pa.string(), pa.null()],
    [pa.int32(), pa.float32(), pa.large_string(), pa.uint8()],
    [pa.list_(pa.int64()), pa.string()],  # not a flat column: `datasets` itself answers
])
def test_distiset_features_are_what_datasets_writes(types):
    from datasets import Features

    schema = pa.schema([pa.field(f"c{i}", t) for i, t in enumerate(types)])
    assert arrow_features(schema) == Features.from_arrow_schema(schema).to_dict()


def _parts_sink(tmp_path, shards, min_rows=1000):
    return _sink(tmp_path, shards, min_rows=min_rows, name="parts.parquet")


@pytest.mark.parametrize("min_rows", [1, 1000])
def test_shards_of_their_own_schemas_are_brought_to_the_runs_where_no_value_changes(tmp_path, min_rows):
    # shard 1 lacks `late` and holds only nulls in `maybe`; shard 2's `x` values are whole numbers
    # (int64 in its own table) where shard 1 has floats: float64 for the run, as a full pass says
    shards = [[{"id": "a", "x": 1.5, "maybe": None}, {"id": "b", "x": 2.5, "maybe": None}],
              [{"id": "c", "x": 3, "maybe": 7, "late": "z"}]]
    whole, kinds = _parts_sink(tmp_path, shards, min_rows=min_rows)
    if min_rows == 1:  # a batch per shard: the second changes the run's schema (as rows did before)
        assert whole is False
        return
    assert whole
    jsonl_to_parquet(_write(tmp_path, shards[0] + shards[1]), tmp_path / "ref.parquet")
    got, ref = pq.read_table(tmp_path / "parts.parquet"), pq.read_table(tmp_path / "ref.parquet")
    assert got.schema == ref.schema and got.to_pylist() == ref.to_pylist()
    assert {f.name: str(f.type) for f in got.schema} == {"id": "string", "x": "double", "maybe": "int64", "late": "string"}


def test_a_shard_whose_values_would_change_gives_up_and_the_writer_converts_the_jsonl(tmp_path):
    # bool in one shard, int in the next: the run's column is text ("True", "2"), which Arrow's cast
    # of a bool column would spell otherwise: the sink gives up; the files are still what rows give
    shards = [[{"id": "a", "v": True}], [{"id": "b", "v": 2}]]
    whole, _ = _parts_sink(tmp_path, shards)
    assert whole is False
    w = OutputWriter(tmp_path / "run", [])
    for rows in shards:
        w.add(rows, {})
    assert w.curated_pq.finish(w.kinds["curated"]) is False
    w.close()
    jsonl_to_parquet(w.tmp / "curated.jsonl", tmp_path / "conv.parquet", kinds=w.kinds["curated"])
    assert pq.read_table(tmp_path / "conv.parquet").to_pylist() == [{"id": "a", "v": "True"}, {"id": "b", "v": "2"}]


def test_parts_rendered_elsewhere_give_the_files_of_the_rows_one_by_one(tmp_path):
    """Parts pickled as a worker's files, appended by a writer, against a reference built row by
    row (each row's JSON line, the Parquet converted from the complete JSONL)."""
    import pickle

    from distillflow.engine.outputs import dumps
    from distillflow.engine.write import render_part

    shards = [([{"id": f"c{i}", "n": i, "x": i / 2 if i % 2 else i, "meta": {"i": [i]}} for i in range(k, k + 3)],
               {"judge": [{"id": f"j{k}", "score": k / 2}], "filter": []}) for k in (0, 3, 6)]
    w = OutputWriter(tmp_path / "parts", ["judge", "filter"])
    for curated, rejected in shards:
        w.add_part(pickle.loads(pickle.dumps(render_part(curated, rejected), protocol=5)))
    assert w.curated_pq.finish(w.kinds["curated"])  # ints and floats in `x`: float64, on the fast path
    w.close()
    curated = [r for c, _ in shards for r in c]
    assert w.counts == {"curated": 9, "rejected": 3, "heldout": 0}
    assert w.sample == curated[:3]
    assert (w.tmp / "curated.jsonl").read_text() == "".join(dumps(r) + "\n" for r in curated)
    assert (w.tmp / "rejected-judge.jsonl").read_text() == "".join(dumps(r) + "\n" for _, rj in shards for r in rj["judge"])
    assert (w.tmp / "rejected-filter.jsonl").read_text() == ""
    ref = tmp_path / "ref.parquet"
    jsonl_to_parquet(_write(tmp_path, curated), ref)
    got = pq.read_table(w.tmp / "curated.parquet")
    assert got.schema == pq.read_table(ref).schema and got.to_pylist() == pq.read_table(ref).to_pylist()
    assert got.column("x").to_pylist()[:3] == [0.0, 0.5, 2.0]


def test_an_int_beyond_2_53_in_a_float_column_is_rounded_as_python_does(tmp_path):
    rows = [{"id": "a", "x": 2**60 + 1}, {"id": "b", "x": 0.5}]
    assert jsonl_to_parquet(_write(tmp_path, rows), tmp_path / "big.parquet") == 2  # Arrow refused it before
    assert pq.read_table(tmp_path / "big.parquet").column("x").to_pylist() == [float(2**60 + 1), 0.5]
    whole, _ = _parts_sink(tmp_path, [rows[:1], rows[1:]])
    assert whole is False  # the shard's int64 column cannot be cast exactly: the JSONL is converted


def test_ints_in_one_shard_and_text_in_another_stay_on_the_fast_path(tmp_path):
    shards = [[{"id": "a", "answer": 7}, {"id": "b", "answer": -12}], [{"id": "c", "answer": "x"}]]
    whole, kinds = _parts_sink(tmp_path, shards)
    assert whole
    jsonl_to_parquet(_write(tmp_path, shards[0] + shards[1]), tmp_path / "ref.parquet", kinds=kinds)
    got, ref = pq.read_table(tmp_path / "parts.parquet"), pq.read_table(tmp_path / "ref.parquet")
    assert got.schema == ref.schema and got.to_pylist() == ref.to_pylist()


def test_nan_and_infinity_are_null_in_the_parquet_as_in_the_jsonl(tmp_path):
    """A score that came out NaN or infinite: JSON has no such numbers (orjson writes null), and the
    Parquet holds null too, not NaN, so both files and the Dataset built from them agree."""
    import math

    from distillflow.engine.write import render_part

    rows = [{"id": "a", "score": 0.5, "note": "x"}, {"id": "b", "score": math.nan, "note": math.inf},
            {"id": "c", "score": -math.inf, "note": "z"}]
    w = OutputWriter(tmp_path / "run", [])
    w.add_part(render_part(rows, {}))
    assert w.curated_pq.finish(w.kinds["curated"])
    w.close()
    lines = [json.loads(line) for line in (w.tmp / "curated.jsonl").read_text().splitlines()]
    got = pq.read_table(w.tmp / "curated.parquet").to_pylist()
    assert [r["score"] for r in lines] == [0.5, None, None] == [r["score"] for r in got]
    assert [r["note"] for r in lines] == ["x", None, "z"] == [r["note"] for r in got]
    ref = tmp_path / "ref.parquet"  # the full conversion (the path when the fast one gives up) agrees
    jsonl_to_parquet(w.tmp / "curated.jsonl", ref)
    assert pq.read_table(ref).to_pylist() == got
