"""Prompt sources: JSONL, CSV, Parquet, a `datasets` directory, a Hub dataset, inline rows.

    rows, heldout, dropped = load_source(spec.source, base_dir=Path("."))
    rows[0]["prompt"], rows[0]["messages"]
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from distillflow.errors import ConfigurationError, Problem, SpecError, did_you_mean
from distillflow.steps.base import prompt_id

_ROLES = {"system", "user", "assistant", "tool"}


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else (base_dir / p)


def read_raw(src, base_dir: Path | None = None) -> list[dict]:
    """Read the source's rows as plain dicts, before mapping (in memory; runs stream :func:`iter_raw`)."""
    return list(iter_raw(src, base_dir))


def _read_hub(src) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(src.dataset, src.config, split=src.split)
    except Exception as e:
        raise ConfigurationError(
            f"could not load Hub dataset '{src.dataset}' (split '{src.split}'): {e} — check the id, your network, "
            "and HF_TOKEN for private datasets; offline, use kind: disk / jsonl instead"
        ) from None
    return ds.to_list()


def peek_columns(src, base_dir: Path | None = None) -> set[str] | None:
    """Column names of a local source, for static checks (None when unknown without reading much)."""
    try:
        if src.kind == "jsonl":
            with _resolve(src.path, base_dir).open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        return set(json.loads(line))
        if src.kind == "csv":
            with _resolve(src.path, base_dir).open(encoding="utf-8", newline="") as fh:
                return set(next(csv.reader(fh)))
        if src.kind == "parquet":
            import pyarrow.parquet as pq

            return set(pq.read_schema(_resolve(src.path, base_dir)).names)
    except Exception:
        return None
    return None


def _mapping(src, first_rows: list[dict], origin: str) -> dict:
    """The column mapping {ours: theirs}, checked against the first rows; SpecError when a column is missing."""
    mapping = dict(src.columns)
    if "prompt" not in mapping and "messages" not in mapping:
        if first_rows and "messages" in first_rows[0] and "prompt" not in first_rows[0]:
            mapping["messages"] = "messages"
        else:
            mapping["prompt"] = "prompt"
    if first_rows:
        present = set().union(*(r.keys() for r in first_rows[:50]))
        problems = []
        for ours, theirs in mapping.items():
            if theirs not in present:
                problems.append(
                    Problem(
                        f"source.columns.{ours}",
                        f"column '{theirs}' is not in the source",
                        None,
                        did_you_mean(theirs, present) or f"source columns: {', '.join(sorted(present))}",
                    )
                )
        if problems:
            raise SpecError(problems, origin)
    return mapping


def normalize_row(r: dict, i: int, mapping: dict, src, origin: str) -> tuple[dict, str | None]:
    """One raw row -> (row with `prompt`, `system`, `messages`, `prompt_id`, `source`, provenance; reason or None)."""
    renamed_from = set(mapping.values())
    row = {k: v for k, v in r.items() if k not in renamed_from}
    for ours, theirs in mapping.items():
        row[ours] = r.get(theirs)
    reason = None
    if "messages" in mapping:
        msgs = row.get("messages")
        if isinstance(msgs, str):
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                msgs = None
        if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str) for m in msgs
        ):
            reason = "messages is not a list of {role, content} with roles system/user/assistant"
            msgs = []
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        # a trailing assistant turn is the old answer, not part of the prompt
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
    else:
        text = row.get("prompt")
        if text is None or (isinstance(text, str) and not text.strip()):
            reason = "empty prompt"
        msgs = [{"role": "user", "content": "" if text is None else str(text)}]
    if src.system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": src.system_prompt})
    users = [m["content"] for m in msgs if m["role"] == "user"]
    if not reason and not users:
        reason = "no user message"
    row["messages"] = msgs
    row["prompt"] = users[-1] if users else ""
    sys_msgs = [m["content"] for m in msgs if m["role"] == "system"]
    row["system"] = sys_msgs[0] if sys_msgs else None
    row["prompt_id"] = prompt_id(msgs)
    row["source"] = {"name": origin, "kind": src.kind, "row": i}
    row["provenance"] = {"source": dict(row["source"]), "filters_passed": []}
    return row, reason


def normalize_rows(raw: list[dict], src, origin: str) -> tuple[list[dict], list[dict]]:
    """Apply the column mapping and build `prompt`, `system`, `messages`, `prompt_id`, `source`.

    Returns (rows, dropped) where dropped rows carry `rejected_by="source"` and a reason.
    """
    mapping = _mapping(src, raw, origin)
    rows, dropped, seen = [], [], set()
    for i, r in enumerate(raw):
        row, reason = normalize_row(r, i, mapping, src, origin)
        if not reason and row["prompt_id"] in seen:
            reason = "duplicate prompt"
        if reason:
            dropped.append({**row, "rejected_by": "source", "reason": reason})
            continue
        seen.add(row["prompt_id"])
        rows.append(row)
    return rows, dropped


def select_positions(n: int, src) -> tuple[object, list[int], int]:
    """Which valid rows train, in which order: (order, held-out positions, number of positions used).

    ``order[i]`` is the index (in file order) of the row at position i: the seeded shuffle when
    ``shuffle`` is on (the same permutation ``random.Random(seed).shuffle`` gives a list of n rows).
    Positions ``< used`` are read (``limit``); the held-out ones are drawn from them with their seed.
    Memory: 8 bytes per row.
    """
    from array import array

    order = array("q", range(n))
    if src.shuffle:
        random.Random(src.seed).shuffle(order)
    used = min(n, src.limit) if src.limit else n
    heldout: list[int] = []
    if src.heldout:
        k = src.heldout.size if src.heldout.size else max(1, round(used * src.heldout.fraction))
        if k >= used:
            raise ConfigurationError(
                f"source.heldout: asks for {k} held-out prompts but only {used} were read — lower heldout.size"
            )
        heldout = sorted(random.Random(src.heldout.seed).sample(range(used), k))
    return order, heldout, used


def load_source(src, base_dir: Path | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """Read, map, shuffle, limit, and split off held-out prompts: (rows, heldout, dropped).

    In memory, for small sources and tools; runs stream through :func:`iter_raw` instead.
    """
    origin = src.path or src.dataset or "inline"
    raw = read_raw(src, base_dir)
    rows, dropped = normalize_rows(raw, src, origin)
    order, held, used = select_positions(len(rows), src)
    chosen = set(held)
    heldout = [rows[order[i]] for i in held]
    train = [rows[order[i]] for i in range(used) if i not in chosen]
    return train, heldout, dropped


def iter_raw(src, base_dir: Path | None = None, batch_rows: int = 2048):
    """Yield the source's raw rows one by one without holding the file in memory."""
    kind = src.kind
    if kind == "inline":
        yield from (dict(r) for r in src.rows)
        return
    if kind == "hub":
        yield from _read_hub(src)
        return
    path = _resolve(src.path, base_dir)
    if not path.exists():
        raise ConfigurationError(f"source.path: '{path}' does not exist — check the path (relative paths are relative to the YAML file)")
    try:
        if kind == "jsonl":
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise ConfigurationError(f"{path}:{i}: not valid JSON ({e.msg}) — each line must be one JSON object") from None
                        if not isinstance(obj, dict):
                            raise ConfigurationError(f"{path}:{i}: a line is a {type(obj).__name__}, not a JSON object — each line must be one object")
                        yield obj
            return
        if kind == "csv":
            with path.open(encoding="utf-8", newline="") as fh:
                yield from (dict(r) for r in csv.DictReader(fh))
            return
        if kind == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield from batch.to_pylist()
            return
        if kind == "disk":
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise ConfigurationError(f"source.split: '{src.split}' not in {path} (splits: {', '.join(ds)})")
                ds = ds[src.split]
            for start in range(0, len(ds), batch_rows):
                yield from ds.select(range(start, min(start + batch_rows, len(ds)))).to_list()
            return
    except ConfigurationError:
        raise
    except Exception as e:  # a corrupt file is a user problem: name it
        raise ConfigurationError(f"could not read {kind} source {path}: {e}") from None
    raise AssertionError(kind)
