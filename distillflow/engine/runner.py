"""Execute a validated pipeline graph: source -> steps (cached per step) -> outputs.

    result = run_pipeline(spec, out_dir="runs/qa")
    result.manifest["counts"]["filter"]     # {"in": 40, "out": 31, "rejected": 9}

Resume works at two levels: every teacher answer is cached by request (cache/requests.sqlite), and
every step's output by a hash of the step and everything upstream (cache/steps/), so changing a
filter threshold reruns only that filter and what follows it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from distillflow.engine.ledger import Ledger
from distillflow.engine.progress import NullReporter
from distillflow.errors import ConfigurationError
from distillflow.graph import SOURCE, build_graph


@dataclass
class RunContext:
    spec: object
    out_dir: Path
    base_dir: Path
    cache: object
    ledger: Ledger
    reporter: object
    objects: dict
    stop_event: threading.Event = field(default_factory=threading.Event)
    _clients: dict = field(default_factory=dict)

    @property
    def cache_path(self) -> Path:
        return self.out_dir / "cache" / "requests.sqlite"

    def client(self, teacher):
        if teacher.name not in self._clients:
            from distillflow.engine.providers import build_client

            self._clients[teacher.name] = build_client(teacher)
        return self._clients[teacher.name]


@dataclass
class RunResult:
    out_dir: Path
    curated: list[dict]
    rejected: list[dict]
    heldout: list[dict]
    manifest: dict
    notes: list[str] = field(default_factory=list)  # messages for the user (e.g. the review push)


def _h(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_hash(spec, base_dir: Path) -> str:
    src = spec.source
    content = None
    if src.path:
        p = Path(src.path) if Path(src.path).is_absolute() else base_dir / src.path
        if p.is_file():
            content = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            content = sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())
    return _h("source", src.model_dump(mode="json"), content)


def _step_hash(spec, step, parent_hashes: list[str], objects: dict) -> str:
    teachers = []
    for name in (getattr(step, "teachers", None) or ([step.teacher] if getattr(step, "teacher", None) else [])):
        t = spec.teacher(name)
        teachers.append(t.model_dump(mode="json", include={"provider", "model", "base_url", "params"}))
    if step.kind == "generate" and not step.teachers:
        teachers = [t.model_dump(mode="json", include={"name", "provider", "model", "base_url", "params"}) for t in spec.teachers]
    obj = objects.get(step.id)
    obj_id = None if obj is None else f"{type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return _h(step.model_dump(mode="json"), parent_hashes, teachers, obj_id)


class StepCache:
    """One gzip'd JSON file per (step id, hash): {"kept": [...], "rejected": [...]}."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, step_id: str, h: str) -> Path:
        return self.root / f"{step_id}-{h}.json.gz"

    def get(self, step_id: str, h: str):
        p = self._path(step_id, h)
        if not p.exists():
            return None
        try:
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                data = json.load(fh)
            return data["kept"], data["rejected"], data.get("usage", {})
        except Exception:  # a half-written file after kill -9: recompute
            return None

    def put(self, step_id: str, h: str, kept, rejected, usage: dict) -> None:
        for old in self.root.glob(f"{step_id}-*.json.gz"):
            old.unlink()
        tmp = self._path(step_id, h).with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
            json.dump({"kept": kept, "rejected": rejected, "usage": usage}, fh, default=str)
        tmp.replace(self._path(step_id, h))


def _merge(parents: list[list[dict]]) -> list[dict]:
    """Join parent outputs on record id (prompt_id before generation); keep rows present in all."""
    if len(parents) == 1:
        return parents[0]
    key = "id" if all(p and "id" in p[0] for p in parents if p) else "prompt_id"
    index = [{r[key]: r for r in p} for p in parents]
    out = []
    for r in parents[0]:
        k = r[key]
        if not all(k in ix for ix in index[1:]):
            continue
        merged = dict(r)
        prov = json.loads(json.dumps(r.get("provenance") or {}, default=str))
        for ix in index[1:]:
            other = ix[k]
            merged.update({c: v for c, v in other.items() if c not in merged or c not in ("provenance",)})
            op = other.get("provenance") or {}
            for section in ("judges", "verifiers"):
                prov.setdefault(section, {}).update(op.get(section) or {})
            passed = prov.setdefault("filters_passed", [])
            passed += [f for f in op.get("filters_passed") or [] if f not in passed]
        merged["provenance"] = prov
        out.append(merged)
    return out


def run_step(ctx: RunContext, step, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    from distillflow.engine.llm_steps import run_generate, run_judge
    from distillflow.steps import curate, verify

    kind = step.kind
    if kind == "generate":
        return run_generate(ctx, step, rows)
    if kind == "judge":
        return run_judge(ctx, step, rows)
    if kind == "distilabel":
        from distillflow.engine.distilabel_steps import run_distilabel_step

        return run_distilabel_step(ctx, step, rows)
    if kind == "reward":
        from distillflow.engine.reward import run_reward_step

        return run_reward_step(ctx, step, rows)
    ctx.reporter.step_start(step.id, kind, len(rows))
    if kind == "verify":
        import inspect

        fn = ctx.objects.get(step.id) or verify.resolve_verifier(step.check)
        params = dict(step.params)
        sig = inspect.signature(fn).parameters
        if step.reference and ("reference_column" in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())):
            params["reference_column"] = step.reference
        out = verify.verify_rows(rows, step.id, fn, params), []
    elif kind == "filter":
        from distillflow.spec.expr import parse

        out = curate.filter_rows(rows, parse(step.where), step.id)
    elif kind == "length_filter":
        out = curate.length_filter(rows, step.id, column=step.column, min_chars=step.min_chars, max_chars=step.max_chars,
                                   min_words=step.min_words, max_words=step.max_words)
    elif kind == "refusal_filter":
        out = curate.refusal_filter(rows, step.id, column=step.column, extra_patterns=tuple(step.patterns))
    elif kind == "dedup":
        if step.method == "exact":
            out = curate.exact_dedup(rows, step.id, columns=tuple(step.columns))
        else:
            out = curate.near_dedup(rows, step.id, column=step.column, threshold=step.threshold)
    elif kind == "best_of":
        out = curate.best_of(rows, step.id, by=step.by, group_by=step.group_by, higher_is_better=step.higher_is_better)
    else:  # pragma: no cover - the schema admits no other kinds
        raise AssertionError(kind)
    ctx.reporter.advance(step.id, len(rows), ctx.ledger.spent)
    return out


def run_pipeline(spec, out_dir=None, reporter=None, objects: dict | None = None, fresh: bool = False) -> RunResult:
    """Run `spec` into `out_dir`, resuming from its caches. See module docstring."""
    from distillflow.engine.cache import RequestCache
    from distillflow.engine.write import write_outputs
    from distillflow.engine.providers import missing_env, resolve_local_models
    from distillflow.engine.source import load_source
    from distillflow.engine.validate import describe_step_factory, source_columns

    base_dir = Path(getattr(spec, "_base_dir", None) or Path.cwd())
    resolve_local_models(spec, base_dir)
    objects = {**(getattr(spec, "_objects", None) or {}), **(objects or {})}
    graph = build_graph(spec, describe=describe_step_factory(objects), extra_source_columns=source_columns(spec, base_dir))
    used = set()
    for n in graph.order:
        st = graph.nodes[n].step
        if st is not None and st.kind == "generate":
            used |= set(st.teachers or [t.name for t in spec.teachers])
        elif st is not None and getattr(st, "teacher", None):
            used.add(st.teacher)
    problems = missing_env(spec, used)
    if problems:
        raise ConfigurationError("\n".join(problems))

    out = Path(out_dir) if out_dir else _default_out(spec, base_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        import shutil

        shutil.rmtree(out / "cache", ignore_errors=True)
    (out / "cache").mkdir(exist_ok=True)
    reporter = reporter or NullReporter()
    ledger = Ledger(spec.budget.max_cost_usd)
    cache = RequestCache(out / "cache" / "requests.sqlite")
    ctx = RunContext(spec, out, base_dir, cache, ledger, reporter, objects)
    step_cache = StepCache(out / "cache" / "steps")
    started = time.time()
    counts: dict[str, dict] = {}
    timings: dict[str, float] = {}
    status = "complete"
    try:
        rows, heldout, dropped = load_source(spec.source, base_dir)
        outputs: dict[str, list[dict]] = {SOURCE: rows}
        hashes = {SOURCE: _source_hash(spec, base_dir)}
        rejected: list[dict] = list(dropped)
        counts[SOURCE] = {"in": len(rows) + len(dropped) + len(heldout), "out": len(rows), "rejected": len(dropped), "heldout": len(heldout)}
        for nid in graph.order[1:]:
            node = graph.nodes[nid]
            step = node.step
            t0 = time.time()
            inp = _merge([outputs[p] for p in node.parents])
            h = _step_hash(spec, step, [hashes[p] for p in node.parents], objects)
            cached = step_cache.get(nid, h)
            if cached is not None:
                kept, rej, usage = cached
                ledger.replay(usage)
                reporter.step_start(nid, step.kind, len(inp))
                reporter.advance(nid, len(inp), ledger.spent, cached=True)
            else:
                before, snap = ledger.budget_hit, ledger.snapshot()
                kept, rej = run_step(ctx, step, inp)
                if not ledger.budget_hit or before:
                    step_cache.put(nid, h, kept, rej, ledger.since(snap))
            reporter.step_end(nid, f"{len(kept)} kept, {len(rej)} rejected")
            outputs[nid], hashes[nid] = kept, h
            rejected += rej
            counts[nid] = {"kind": step.kind, "in": len(inp), "out": len(kept), "rejected": len(rej)}
            timings[nid] = round(time.time() - t0, 3)
            if ledger.budget_hit:
                status = "budget_exhausted"
        curated = outputs[graph.sink]
    except KeyboardInterrupt:
        ctx.stop_event.set()
        raise
    finally:
        cache.close()
    manifest = {
        "name": spec.name,
        "spec_hash": spec.spec_hash(),
        "status": status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "counts": counts,
        "curated": len(curated),
        "rejected": len(rejected),
        "heldout": len(heldout),
        "teachers": ledger.to_dict(),
        "cost_usd": round(ledger.spent, 6),
        "budget": {"max_cost_usd": spec.budget.max_cost_usd, "exhausted": ledger.budget_hit},
        "timings": timings,
        "sink": graph.sink,
    }
    write_outputs(spec, out, curated, rejected, heldout, manifest, graph)
    return RunResult(out, curated, rejected, heldout, manifest)


def _default_out(spec, base_dir: Path) -> Path:
    if spec.output.dir:
        p = Path(spec.output.dir)
        return p if p.is_absolute() else base_dir / p
    return Path.cwd() / "runs" / spec.name
