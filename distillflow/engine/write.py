"""A run's outputs, written as shards finish: curated/rejected/held-out JSONL + Parquet, the
distilabel Distiset, manifest.json, the dataset card.

    writer = OutputWriter(run_dir, node_ids)
    writer.add(curated_rows, {"filter": rejected_rows, ...})   # shard after shard, in order
    writer.add_part(render_part(curated_rows, rejected))        # the same, rendered elsewhere (a Ray worker)
    writer.finish(plan, prompts, manifest)                      # Parquet, Distiset, card; atomic renames

Memory stays flat: rows go straight to files. The curated Parquet is written as shards arrive
while the rows' schema holds (nested or mixed-type columns as JSON text), so the end of a run
has little left to do; when a later shard changes the schema (or its table cannot be brought to
the run's schema without changing a value), and for the rejected rows, Parquet
is built from the JSONL in batches with one schema for the whole file. The Distiset is streamed
from that Parquet. A run killed before ``finish`` leaves the last complete outputs
in place: everything is written under temporary names and renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from distillflow.engine.outputs import _NESTED, flat_value, iter_jsonl
from distillflow.engine.outputs import dumps as _dumps
from distillflow.errors import ConfigurationError

_BATCH = 4096


class OutputWriter:
    def __init__(self, out: Path, node_ids: list[str]):
        self.out = Path(out)
        self.data = self.out / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out / "cache" / "out.tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.node_ids = list(node_ids)
        self.curated_fh = (self.tmp / "curated.jsonl").open("w", encoding="utf-8")
        self.rejected_fh = {n: (self.tmp / f"rejected-{n}.jsonl").open("w", encoding="utf-8") for n in node_ids}
        self.counts = {"curated": 0, "rejected": 0, "heldout": 0}
        self.sample: list[dict] = []  # a few curated rows, for the card
        # each column's value types, gathered as rows arrive: the Parquet schema needs no extra pass at the end
        self.kinds: dict[str, dict[str, set]] = {"curated": {}, **{f"rejected-{n}": {} for n in node_ids}}
        self.curated_pq = ParquetSink(self.tmp / "curated.parquet")  # written as rows arrive

    def add(self, curated: list[dict], rejected: dict[str, list[dict]]) -> None:
        """One shard's curated rows and each step's rejected rows (shard after shard, in order)."""
        self.add_part(render_part(curated, rejected, table=not self.curated_pq.broken))

    def add_part(self, part: "ShardPart") -> None:
        """One shard's outputs rendered where the shard ran (:func:`render_part`): its text is
        appended as it is, its Arrow table goes to the curated Parquet; no row is parsed here."""
        kinds = self.kinds["curated"]
        if part.n_curated:
            self.curated_fh.write(part.curated_jsonl)
            merge_kinds(kinds, part.curated_kinds)
            self.counts["curated"] += part.n_curated
            self.curated_pq.add_table(part.curated_table, kinds)
        if len(self.sample) < 3:
            self.sample += part.sample[: 3 - len(self.sample)]
        for nid, text in part.rejected_jsonl.items():
            self.rejected_fh[nid].write(text)
            merge_kinds(self.kinds[f"rejected-{nid}"], part.rejected_kinds[nid])
            self.counts["rejected"] += part.n_rejected[nid]

    def close(self) -> None:
        for fh in [self.curated_fh, *self.rejected_fh.values()]:
            if not fh.closed:
                fh.close()
        self.curated_pq.close()

    def finish(self, plan, prompts, manifest: dict) -> None:
        """Assemble the final files (rejected: the source's drops, then each step's, in graph order)."""
        from distillflow.engine.card import render_dataset_card

        whole = self.curated_pq.finish(self.kinds["curated"])
        self.close()
        tmp = self.tmp
        rejected_kinds: dict[str, set] = {}  # in the file's order: the source's drops, then each step's
        with (tmp / "rejected.jsonl").open("wb") as out:
            n = 0
            for r in prompts.dropped_rows() if prompts is not None else ():
                out.write((_dumps(r) + "\n").encode())
                note_kinds(rejected_kinds, r)
                n += 1
            self.counts["rejected"] += n
            for nid in self.node_ids:
                for k, ts in self.kinds[f"rejected-{nid}"].items():
                    rejected_kinds.setdefault(k, set()).update(ts)
                part = tmp / f"rejected-{nid}.jsonl"
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out)
                part.unlink()
        with (tmp / "heldout.jsonl").open("w", encoding="utf-8") as out:
            for r in prompts.heldout_rows() if prompts is not None else ():
                out.write(_dumps(r) + "\n")
                self.counts["heldout"] += 1
        if not whole:  # the schema changed along the way: convert the complete JSONL
            jsonl_to_parquet(tmp / "curated.jsonl", tmp / "curated.parquet", kinds=self.kinds["curated"])
        jsonl_to_parquet(tmp / "rejected.jsonl", tmp / "rejected.parquet", kinds=rejected_kinds)
        for name in ("curated.jsonl", "rejected.jsonl", "heldout.jsonl", "curated.parquet", "rejected.parquet"):
            os.replace(tmp / name, self.data / name)
        _distiset(self.out, tmp)
        spec = plan.spec
        (self.out / "pipeline.yaml").write_text(spec.to_yaml(), encoding="utf-8")
        (self.out / "graph.mmd").write_text(plan.graph.mermaid() + "\n", encoding="utf-8")
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        (self.out / "README.md").write_text(render_dataset_card(spec, manifest, self.sample), encoding="utf-8")
        shutil.rmtree(tmp, ignore_errors=True)
        if spec.output.push_to_hub:
            push_to_hub(spec, self.out)


class ShardPart:
    """What one shard adds to a run's outputs, rendered where the shard ran (a Ray worker renders
    its shards' parts and writes them to the run directory, so that the driver appends text and
    Arrow buffers instead of unpickling and re-encoding every row): the curated rows as JSONL text
    and as an Arrow table of their own schema, each step's rejected rows as JSONL text, the value
    kinds of every column (for the files' schemas), counts, and the first curated rows (the card)."""

    __slots__ = ("curated_jsonl", "curated_table", "curated_kinds", "n_curated", "rejected_jsonl",
                 "rejected_kinds", "n_rejected", "sample")

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


def render_part(curated: list[dict], rejected: dict[str, list[dict]], table: bool = True) -> ShardPart:
    """The :class:`ShardPart` of one shard's curated rows and each step's rejected rows (without
    the Arrow table when ``table`` is false: the sink has given up)."""
    part = ShardPart()
    part.curated_jsonl, part.curated_kinds = _jsonl(curated)
    part.n_curated = len(curated)
    part.curated_table = arrow_table(curated, parquet_schema(part.curated_kinds)) if curated and table else None
    part.sample = [dict(r) for r in curated[:3]]
    part.rejected_jsonl, part.rejected_kinds, part.n_rejected = {}, {}, {}
    for nid, rows in rejected.items():
        if rows:
            part.rejected_jsonl[nid], part.rejected_kinds[nid] = _jsonl(rows)
            part.n_rejected[nid] = len(rows)
    return part


def _jsonl(rows: list[dict]) -> tuple[str, dict[str, set]]:
    """``rows`` as JSONL text, and their columns' value kinds (:func:`note_kinds`)."""
    kinds: dict[str, set] = {}
    lines = []
    for r in rows:
        lines.append(_dumps(r))
        note_kinds(kinds, r)
    return ("\n".join(lines) + "\n" if lines else ""), kinds


def merge_kinds(into: dict[str, set], kinds: dict[str, set]) -> None:
    """Add the value kinds ``kinds`` (columns in first-seen order) to ``into``, as :func:`note_kinds`
    would have done row by row."""
    for k, ts in kinds.items():
        s = into.get(k)
        if s is None:
            into[k] = set(ts)
        else:
            s |= ts


def note_kinds(kinds: dict[str, set], row: dict) -> None:
    """Add ``row``'s value types to ``kinds`` (column -> set of type names; nested values are "json")."""
    for k, v in row.items():
        s = kinds.get(k)
        if s is None:
            s = kinds[k] = set()
        if v is not None:
            s.add("json" if (k in _NESTED or isinstance(v, (dict, list, tuple))) else type(v).__name__)


def parquet_schema(kinds: dict[str, set]):
    """One Arrow schema for rows of these value kinds: bool, int64, float64 (ints and floats mixed),
    otherwise text (nested values as JSON text, mixed types as their text)."""
    import pyarrow as pa

    fields = []
    for k, ts in kinds.items():
        if ts <= {"bool"} and ts:
            t = pa.bool_()
        elif ts == {"int"}:
            t = pa.int64()
        elif ts and ts <= {"int", "float"}:
            t = pa.float64()
        else:
            t = pa.string()
        fields.append(pa.field(k, t))
    return pa.schema(fields or [pa.field("id", pa.string())])


def arrow_table(rows: list[dict], schema):
    """``rows`` as a Table of ``schema`` (see :func:`parquet_schema`)."""
    from math import isfinite

    import pyarrow as pa

    text_cols = {f.name for f in schema if f.type == pa.string()}
    float_cols = {f.name for f in schema if f.type == pa.float64()}
    out = []
    for r in rows:
        row = {}
        for f in schema.names:
            v = r.get(f)
            if type(v) is float and not isfinite(v):
                v = None  # NaN and ±inf: null, as the JSONL has them (orjson writes null)
            if v is not None:
                v = flat_value(f, v)
                if f in text_cols and not isinstance(v, str):
                    v = str(v)
                elif f in float_cols and type(v) is int:  # as Python rounds it (Arrow refuses ints above 2**53)
                    v = float(v)
            row[f] = v
        out.append(row)
    return pa.Table.from_pylist(out, schema=schema)


def jsonl_to_parquet(src: Path, dest: Path, kinds: dict[str, set] | None = None) -> int:
    """Parquet of a JSONL file in bounded memory, written in batches with one schema for the file.

    ``kinds`` (from :func:`note_kinds` over every row, in the file's column order) saves the pass
    that would otherwise read the file once for the schema.
    """
    import pyarrow.parquet as pq

    if kinds is None:
        kinds = {}
        for r in iter_jsonl(src):
            note_kinds(kinds, r)
    schema = parquet_schema(kinds)
    n = 0
    with pq.ParquetWriter(dest, schema) as writer:
        batch: list[dict] = []
        for r in iter_jsonl(src):
            n += 1
            batch.append(r)
            if len(batch) >= _BATCH:
                writer.write_table(arrow_table(batch, schema))
                batch.clear()
        if batch or n == 0:
            writer.write_table(arrow_table(batch, schema))
    return n


class ParquetSink:
    """Parquet written while shards arrive, as long as their schema holds (see :class:`OutputWriter`).

    Each shard comes as an Arrow table of its own rows' schema (:func:`render_part`). A batch of at
    least ``min_rows`` rows is written with the schema of every row seen so far; a shard's table is
    brought to it where that changes no value (a column the shard lacks or holds only nulls in,
    whole numbers in a column that also holds floats). When a later shard changes the schema (a new
    column, an int column that gets a float) or a table cannot be brought to it, the sink gives up
    and ``finish`` returns False: the caller converts the complete JSONL instead. In the common case
    the Parquet file is ready when the last shard arrives and the end of a run costs nothing for it.
    """

    def __init__(self, path: Path, min_rows: int = 1000):
        self.path, self.min_rows = Path(path), min_rows
        self.buf: list = []  # Arrow tables
        self.n_buf = 0
        self.writer = None
        self.schema = None
        self.broken = False

    def add_table(self, table, kinds: dict[str, set]) -> None:
        """One shard's table (None: no rows); ``kinds``: the writer's running kinds, this shard's included."""
        if self.broken or table is None:
            return
        self.buf.append(table)
        self.n_buf += table.num_rows
        if self.n_buf >= self.min_rows:
            self._flush(kinds)

    def _flush(self, kinds: dict[str, set]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = parquet_schema(kinds)
        if self.writer is None:
            self.schema = schema
            self.writer = pq.ParquetWriter(self.path, schema)
        elif not schema.equals(self.schema):
            return self._give_up()
        tables = [conform(t, schema) for t in self.buf]
        if any(t is None for t in tables):
            return self._give_up()
        self.writer.write_table(pa.concat_tables(tables) if tables else arrow_table([], schema))
        self.buf, self.n_buf = [], 0

    def _give_up(self) -> None:
        self.close()
        self.broken = True
        self.buf, self.n_buf = [], 0

    def finish(self, kinds: dict[str, set]) -> bool:
        """Write what is buffered and close; True when the file holds every row with the final schema."""
        if not self.broken and (self.buf or self.writer is None):
            self._flush(kinds)
        self.close()
        return not self.broken

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def conform(table, schema):
    """``table`` with exactly ``schema``'s columns and types, or None where that would change a
    value: a missing or all-null column becomes nulls of the column's type, int64 becomes float64
    (exactly, as Python's float() does, or None); any other difference gives None."""
    import pyarrow as pa

    if table.schema.equals(schema):
        return table
    names = set(table.column_names)
    if any(n not in schema.names for n in names):
        return None
    cols = []
    for f in schema:
        if f.name not in names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type == f.type:
            cols.append(col)
        elif col.null_count == len(col):
            cols.append(pa.nulls(table.num_rows, f.type))
        elif col.type == pa.int64() and f.type == pa.float64():
            try:
                cols.append(col.cast(f.type, safe=True))
            except pa.ArrowInvalid:
                return None
        elif col.type == pa.int64() and f.type == pa.string():  # Arrow spells an int as str() does
            cols.append(col.cast(f.type))
        else:
            return None
    return pa.Table.from_arrays(cols, schema=schema)


def parquet_dataset(path: Path, cache_dir: Path):
    """A ``datasets.Dataset`` memory-mapped from a Parquet file (an empty file gives an empty dataset)."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return Dataset(pf.schema_arrow.empty_table())
    return Dataset.from_parquet(str(path), cache_dir=str(cache_dir))


def _distiset(out: Path, tmp: Path) -> None:
    """The distilabel Distiset (`distiset/curated`, `distiset/rejected`: what `Distiset.save_to_disk`
    writes, loadable with `Distiset.load_from_disk` / `datasets.load_from_disk`), streamed batch by
    batch from the Parquet files: reading them through `datasets` would map every page of the data
    into this process, so peak memory would grow with the run."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    staging = tmp / "distiset"
    for split in ("curated", "rejected"):
        pf = pq.ParquetFile(out / "data" / f"{split}.parquet")
        schema = pf.schema_arrow.remove_metadata()
        d = staging / split
        d.mkdir(parents=True)
        digest = hashlib.sha256(schema.to_string().encode())
        with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in pf.iter_batches(batch_size=_BATCH):
                writer.write_batch(batch)
                digest.update(str(batch.num_rows).encode())
        info = {"citation": "", "description": "", "features": arrow_features(schema),
                "homepage": "", "license": ""}
        state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": digest.hexdigest()[:16],
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                 "_output_all_columns": False, "_split": None}
        (d / "dataset_info.json").write_text(json.dumps(info, indent=2))
        (d / "state.json").write_text(json.dumps(state, indent=2))
    target = out / "distiset"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


_VALUE_TYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float", "double", "string", "large_string", "null"}
_DTYPE_NAMES = {"float": "float32", "double": "float64"}


def arrow_features(schema) -> dict:
    """The `datasets` Features dict (`dataset_info.json`) of a schema of flat columns.

    The Parquet we write has only bool, int64, float64 and string columns: for those this is what
    ``datasets.Features.from_arrow_schema(schema).to_dict()`` returns, without importing `datasets`
    (about a second of start-up at the end of every run). Other types go through `datasets`.
    """
    out = {}
    for field in schema:
        name = str(field.type)
        if name not in _VALUE_TYPES:
            from datasets import Features

            return Features.from_arrow_schema(schema).to_dict()
        out[field.name] = {"dtype": _DTYPE_NAMES.get(name, name), "_type": "Value"}
    return out


def push_to_hub(spec, out: Path) -> None:
    """Push the curated split and the card to the Hub (token from the env var named in the YAML)."""
    cfg = spec.output.push_to_hub
    token = os.environ.get(cfg.token_env)
    if not token:
        raise ConfigurationError(
            f"output.push_to_hub: environment variable {cfg.token_env} is not set — export it, or remove push_to_hub. "
            f"The run's outputs are saved in {out}."
        )
    from datasets import Dataset
    from huggingface_hub import HfApi

    try:
        Dataset.from_parquet(str(out / "data" / "curated.parquet")).push_to_hub(cfg.repo_id, private=cfg.private, token=token)
        HfApi(token=token).upload_file(
            path_or_fileobj=str(out / "README.md"), path_in_repo="README.md", repo_id=cfg.repo_id, repo_type="dataset"
        )
    except Exception as e:
        raise ConfigurationError(f"push to the Hub failed ({type(e).__name__}: {e}); outputs are saved in {out}") from None
