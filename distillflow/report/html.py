"""`distillflow report RUN_DIR`: one self-contained HTML file (no script, no external URL).

    path = render_report("runs/quickstart")                  # runs/quickstart/report.html
    path = render_report("runs/quickstart", "/tmp/r.html")

Sections: summary, pipeline graph (inline SVG), funnel, teachers (tokens, cost, scores),
review agreement, training loss, retention. Figures are matplotlib PNGs embedded as data URIs.
"""

from __future__ import annotations

import json

import time
from html import escape
from pathlib import Path

from distillflow.report import plots
from distillflow.report.collect import RunData, collect
from distillflow.report.dag import DagNode, dag_from_graph, dag_from_mermaid, dag_svg
from distillflow.report.funnel import funnel
from distillflow.results import COLUMNS, format_retention, metric_rows

__all__ = ["render_report", "render_html"]

CSS = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --accent:#2563eb; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: var(--ink);
       margin: 0; background: #f8fafc; line-height: 1.45; }
header { background: #0f172a; color: #f8fafc; padding: 24px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; color: #cbd5e1; }
header code { background: #1e293b; color: #e2e8f0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 40px 60px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { flex: 1 1 140px; background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.card .v { font-size: 22px; font-weight: 700; }
.card .k { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin: 6px 0 10px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: var(--muted); font-style: italic; margin: 4px 0; }
.note { color: var(--muted); font-size: 13px; }
.warn { color: #b45309; font-weight: 600; }
.funnel .row { display: grid; grid-template-columns: 110px 80px 1fr 300px; align-items: center; gap: 12px; margin: 6px 0; }
.funnel .name { font-weight: 600; }
.funnel .count { font-weight: 700; text-align: right; font-variant-numeric: tabular-nums; }
.funnel .bar { background: #eff6ff; border-radius: 6px; height: 24px; }
.funnel .fill { background: var(--accent); height: 100%; border-radius: 6px; min-width: 2px; }
.funnel .absent .bar { background: repeating-linear-gradient(45deg, #f1f5f9, #f1f5f9 6px, #e2e8f0 6px, #e2e8f0 12px); }
.dagwrap { overflow-x: auto; }
img.plot { max-width: 100%; display: block; margin: 8px 0; }
code { background: #f1f5f9; padding: 1px 5px; border-radius: 4px; font-size: 13px; }
.ret { font-weight: 700; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 20px; }
"""


def _fmt_int(v) -> str:
    return "—" if v is None else f"{int(v):,}"


def _fmt_cost(v) -> str:
    return "—" if v is None else f"${float(v):,.4f}"


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def _img(uri: str | None, alt: str) -> str:
    return f'<img class="plot" alt="{escape(alt)}" src="{uri}">' if uri else ""


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    th = "".join(f'<th class="{"num" if i >= numeric_from else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i >= numeric_from else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------ sections

def _summary(data: RunData) -> str:
    m = data.manifest
    cards = [("prompts", _fmt_int((m.get("counts") or {}).get("source", {}).get("out"))),
             ("curated", _fmt_int(m.get("curated"))), ("rejected", _fmt_int(m.get("rejected"))),
             ("held out", _fmt_int(m.get("heldout"))), ("est. cost", _fmt_cost(m.get("cost_usd")))]
    if data.eval_results:
        first = next((x for x in data.eval_results.get("metrics", []) if x.get("retention") is not None), None)
        if first:
            cards.append((f"retention ({first['id']})", format_retention(first['retention'])))
    html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>' for k, v in cards
    ) + "</div>"
    if m.get("status") and m["status"] != "complete":
        html += f'<p class="note">run status: {escape(str(m["status"]))}</p>'
    return html


def _dag(data: RunData) -> str:
    nodes: list[DagNode]
    if data.graph is not None:
        nodes = dag_from_graph(data.graph, data.manifest.get("counts") or {})
    elif data.mermaid:
        nodes = dag_from_mermaid(data.mermaid)
    else:
        return _missing("No pipeline graph: pipeline.yaml and graph.mmd are missing or unreadable.")
    for n in nodes:
        if n.id == "curated":
            n.detail = f"{data.manifest.get('curated', '?')} rows"
    last = "curated"
    if data.review_dir:
        nodes.append(DagNode("review", "review", [last], f"{data.reviewed or 0} reviewed"))
        last = "review"
    if data.train_dir:
        nodes.append(DagNode("train", "train", [last], f"{data.trained} examples" if data.trained is not None else ""))
        last = "train"
    if data.eval_results or data.heldout_count:
        nodes.append(DagNode("heldout", "heldout", ["source"], f"{data.heldout_count} prompts", dashed=True))
        if data.eval_results:
            nodes.append(DagNode("eval", "eval", ["heldout", last], f"{data.eval_results.get('prompts')} prompts"))
    note = f'<p class="note">{escape(data.spec_error)}</p>' if data.spec_error else ""
    return f'<div class="dagwrap">{dag_svg(nodes)}</div>{note}'


def _funnel(data: RunData) -> str:
    stages = funnel(data)
    top = max([s.count for s in stages if s.count] or [1])
    rows = []
    for s in stages:
        if s.count is None:
            rows.append(f'<div class="row absent"><div class="name">{escape(s.name)}</div><div class="count">—</div>'
                        f'<div class="bar"></div><div class="note">{escape(s.note)}</div></div>')
            continue
        width = 100 * s.count / top if top else 0
        rows.append(f'<div class="row"><div class="name">{escape(s.name)}</div><div class="count">{s.count:,}</div>'
                    f'<div class="bar"><div class="fill" style="width:{width:.1f}%"></div></div>'
                    f'<div class="note">{escape(s.note)}</div></div>')
    steps = []
    timings = data.manifest.get("timings") or {}
    for sid, c in (data.manifest.get("counts") or {}).items():
        if not isinstance(c, dict):
            continue
        steps.append([escape(sid), escape(str(c.get("kind", "source" if sid == "source" else ""))), _fmt_int(c.get("in")),
                      _fmt_int(c.get("out")), _fmt_int(c.get("rejected")),
                      f"{timings[sid]:.2f}" if isinstance(timings.get(sid), (int, float)) else "—"])
    table = _table(["step", "kind", "in", "out", "rejected", "seconds"], steps, numeric_from=2) if steps else ""
    return '<div class="funnel">' + "".join(rows) + "</div><h3>Per step</h3>" + table


def _judge_steps(data: RunData) -> dict[str, tuple[float, float]]:
    if data.spec is not None:
        return {s.id: tuple(s.scale) for s in data.spec.steps if s.kind == "judge"}
    cols = {k for r in data.curated[:50] + data.rejected[:50] for k in r}
    return {c[: -len("_score")]: None for c in cols if c.endswith("_score") and c[: -len("_score")] + "_status" in cols}


def _verify_steps(data: RunData) -> list[str]:
    if data.spec is not None:
        return [s.id for s in data.spec.steps if s.kind == "verify"]
    cols = {k for r in data.curated[:50] + data.rejected[:50] for k in r}
    return sorted(c[: -len("_pass")] for c in cols if c.endswith("_pass"))


def _teachers(data: RunData) -> str:
    parts = []
    usage = data.manifest.get("teachers") or {}
    if usage:
        rows = [[escape(n), _fmt_int(t.get("requests")), _fmt_int(t.get("cached")), _fmt_int(t.get("new")),
                 _fmt_int(t.get("failed")), _fmt_int(t.get("input_tokens")), _fmt_int(t.get("output_tokens")),
                 _fmt_cost(t.get("cost_usd"))] for n, t in usage.items()]
        rows.append(["<b>total</b>", "", "", "", "", _fmt_int(sum(t.get("input_tokens") or 0 for t in usage.values())),
                     _fmt_int(sum(t.get("output_tokens") or 0 for t in usage.values())),
                     f"<b>{_fmt_cost(data.manifest.get('cost_usd'))}</b>"])
        parts.append("<h3>Tokens and cost</h3>")
        parts.append(_table(["teacher", "requests", "cached", "new", "failed", "input tokens", "output tokens",
                             "est. cost"], rows))
        parts.append(_img(plots.usage_chart(usage), "tokens and cost per teacher"))
        batches = (data.manifest.get("batches") or {}).get("teachers") or {}
        if batches:  # mode: batch teachers: which answers came through provider batches, at what cost
            parts.append("<h3>Answers through provider batch APIs</h3>")
            parts.append(_table(["teacher", "answers through batches", "batches", "cost at batch prices"],
                                [[escape(n), _fmt_int(t.get("answers")), _fmt_int(t.get("batches")),
                                  _fmt_cost(t.get("cost_usd"))] for n, t in sorted(batches.items())]))
    else:
        parts.append(_missing("No token or cost records in manifest.json."))

    judges, verifiers = _judge_steps(data), _verify_steps(data)
    answered = [r for r in data.curated + data.rejected if r.get("teacher") and "response" in r]
    kept_ids = {r.get("id") for r in data.curated}
    names = list(dict.fromkeys(r["teacher"] for r in answered))
    if names:
        header = ["teacher", "answers", "kept"] + [f"{v} pass" for v in verifiers] + [f"{j} mean" for j in judges]
        rows = []
        for name in names:
            mine = [r for r in answered if r["teacher"] == name]
            row = [escape(name), _fmt_int(len(mine)), _fmt_int(sum(r.get("id") in kept_ids for r in mine))]
            for v in verifiers:
                vals = [bool(r[f"{v}_pass"]) for r in mine if r.get(f"{v}_pass") is not None]
                row.append(f"{100 * sum(vals) / len(vals):.1f}%" if vals else "—")
            for j in judges:
                vals = [float(r[f"{j}_score"]) for r in mine if isinstance(r.get(f"{j}_score"), (int, float))]
                row.append(f"{sum(vals) / len(vals):.2f}" if vals else "—")
            rows.append(row)
        parts.append("<h3>Answers per teacher</h3>" + _table(header, rows))
    parts.append("<h3>Judge scores per teacher</h3>")
    if not judges:
        parts.append(_missing("No judge step in this pipeline: no scores to plot."))
    else:
        scores = {j: {n: [float(r[f"{j}_score"]) for r in answered if r["teacher"] == n
                          and isinstance(r.get(f"{j}_score"), (int, float))] for n in names} for j in judges}
        uri = plots.score_histograms(scores, {j: s for j, s in judges.items() if s})
        if uri:
            parts.append(_img(uri, "judge score histograms per teacher")
                         + '<p class="note">All judged answers, kept and rejected.</p>')
        else:
            parts.append(_missing("The judge gave no usable scores (every reply was unscored)."))
    return "\n".join(parts)


def _fmt_any(key: str, v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if any(w in key for w in ("agreement", "precision", "recall", "rate")) and 0 <= v <= 1:
            return f"{100 * v:.1f}%"
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return escape(", ".join(f"{k.replace('_', ' ')}: {_fmt_any(k, x)}" for k, x in v.items()))
    return escape(str(v))


def _review(data: RunData) -> str:
    if not data.review_dir:
        return _missing("No review: this run was not reviewed in Argilla (add a `review:` section, then "
                        "`distillflow review push` / `pull`).")
    if not data.agreement:
        return (f"<p>{_fmt_int(data.reviewed)} records reviewed.</p>"
                + _missing("No review agreement yet: run `distillflow review pull RUN_DIR` after reviewers submit."))
    parts = [f"<p>{_fmt_int(data.reviewed)} records reviewed.</p>"]
    for key, block in data.agreement.items():
        title = key.replace("_", " ").replace("vs", "vs.")
        if isinstance(block, dict):
            rows = [[escape(k.replace("_", " ")), _fmt_any(k, v)] for k, v in block.items()]
            parts.append(f"<h3>{escape(title)}</h3>" + _table(["", "value"], rows))
        else:
            parts.append(f"<p><b>{escape(title)}</b>: {_fmt_any(key, block)}</p>")
    return "\n".join(parts)


def _training(data: RunData) -> str:
    if not data.train_dir:
        return _missing("Not trained: run `distillflow train RUN_DIR`.")
    if not data.loss_history:
        return _missing("No training logs: no trainer_state.json with a log history under train/ "
                        "(training has not run, or it was a --dry-run).")
    losses = [e for e in data.loss_history if isinstance(e.get("loss"), (int, float))]
    parts = [_img(plots.loss_curve(data.loss_history), "training loss curve")]
    if losses:
        first, last = losses[0], losses[-1]
        summary = {"steps logged": len(losses), "first loss": f"{first['loss']:.4f} (step {first.get('step')})",
                   "last loss": f"{last['loss']:.4f} (step {last.get('step')})"}
        if last.get("epoch") is not None:
            summary["epochs"] = f"{last['epoch']:.2f}"
        parts.append(_table(["", "value"], [[escape(k), escape(str(v))] for k, v in summary.items()]))
    if data.spec is not None and getattr(data.spec, "train", None) is not None:
        from distillflow.spec.train import mode_text, sampling_seeds

        parts.append(f"<p>mode: <b>{escape(mode_text(data.spec))}</b>; teacher sampling seeds: "
                     f"{escape(sampling_seeds(data.spec))}; training seed: {escape(str(data.spec.train.seed))}</p>")
    rel = data.trainer_state_path.relative_to(data.run_dir) if data.trainer_state_path else ""
    parts.append(f'<p class="note">from <code>{escape(str(rel))}</code></p>')
    return "\n".join(parts)


def _retention(data: RunData) -> str:
    res = data.eval_results
    if not res:
        return _missing("No evaluation: run `distillflow eval RUN_DIR` to compare the trained student with its teacher.")

    rows = [[escape(label), base, student, teacher, f'<span class="ret">{retention}</span>']
            for label, base, student, teacher, retention in metric_rows(res)]
    models = res.get("models", {})
    teacher = models.get("teacher", {})
    parts = [f"<p>{_fmt_int(res.get('prompts'))} held-out prompts; teacher <b>{escape(str(teacher.get('name', '?')))}</b> "
             f"(<code>{escape(str(teacher.get('model', '')))}</code>). Retention = trained student / teacher.</p>",
             _table(["metric", *COLUMNS], rows),
             _img(plots.retention_chart(res.get("metrics", [])), "retention per metric")]
    who = [[escape(m.get("label", k)), f"<code>{escape(str(m.get('path') or m.get('model') or ''))}</code>",
            escape(f"{m['seconds']:.1f}") if isinstance(m.get("seconds"), (int, float)) else "—"]
           for k, m in models.items()]
    parts.append(_table(["model", "path / id", "seconds"], who, numeric_from=2))
    parts.append(_decontamination(data))
    notes = [n for n in (res.get("notes") or []) if not str(n).startswith("training data was not decontaminated")]
    lm = res.get("lm_eval") or {}
    if lm.get("status") == "skipped" and "not installed" in str(lm.get("reason")):
        notes.append(lm["reason"])
    notes += [m["note"] for m in res.get("metrics", []) if m.get("note")]
    parts += [f'<p class="note">{escape(n)}</p>' for n in notes]
    return "\n".join(parts)


def _decontamination(data: RunData) -> str:
    """Per scored set (held-out prompts, lm-eval tasks): was the training data decontaminated against it?

    Reads the manifest's ``decontamination`` block ({step_id: {"sets": [...], "ngram": n}}), so it
    also holds for results written before ``distillflow eval`` recorded it.
    """
    raw = data.manifest.get("decontamination")
    entries = {str(k): v for k, v in raw.items() if isinstance(v, dict) and isinstance(v.get("sets"), list)} \
        if isinstance(raw, dict) else {}
    tasks = ((data.eval_results or {}).get("lm_eval") or {}).get("tasks") or {}
    scored = ["heldout", *(str(t) for t in tasks if str(t).casefold() != "heldout")]
    rows, missing = [], []
    for name in scored:
        steps = [(sid, e.get("ngram")) for sid, e in entries.items()
                 if name.casefold() in {str(x).casefold() for x in e["sets"]}]
        if steps:
            how = ", ".join(f"{sid} ({n}-grams)" if isinstance(n, int) else sid for sid, n in steps)
            rows.append([escape(name), "yes", escape(how)])
        else:
            rows.append([escape(name), '<span class="warn">no</span>', "—"])
            missing.append(name)
    parts = [_table(["scored set", "training data decontaminated against it", "step"], rows, numeric_from=3)]
    if missing:
        names = ", ".join(f"'{n}'" for n in missing)
        parts.append(f'<p class="note warn">Warning: the training data was not decontaminated against {escape(names)}; '
                     "scores there may be inflated by overlap. Add a <code>decontaminate</code> step (it always covers "
                     "the held-out prompts; list other sets under <code>sets</code> with the same <code>name</code>) "
                     "and run the pipeline again.</p>")
    return "\n".join(parts)


def _study(data: RunData) -> str | None:
    """The study table (``RUN_DIR/study.json`` from benchmarks/study.py) as HTML tables; None without one."""
    path = Path(data.run_dir) / "study.json"
    if not path.is_file():
        return None
    from distillflow.stats import study_table

    try:
        text = study_table(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError) as e:
        return _missing(f"study.json could not be read: {e}")
    parts, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if rows:
            parts.append(_table(rows[0], [[escape(c) for c in r] for r in rows[2:]]))
            rows = []
        if line:
            parts.append(f"<p>{escape(line)}</p>")
    return "\n".join(parts)


# ------------------------------------------------------------------ assembly

def render_html(data: RunData) -> str:
    """The report's HTML text for collected run data."""
    m = data.manifest
    name = m.get("name") or (data.spec.name if data.spec is not None else data.run_dir.name)
    sub = (f"run <code>{escape(str(data.run_dir))}</code> · started {escape(str(m.get('started', '?')))} · "
           f"{m.get('seconds', 0):.1f} s · spec {escape(str(m.get('spec_hash', '')))}")
    sections = [
        _section("summary", "Summary", _summary(data)),
        _section("dag", "Pipeline", _dag(data)),
        _section("funnel", "Funnel", _funnel(data)),
        _section("teachers", "Teachers", _teachers(data)),
        _section("review", "Review: judge and human agreement", _review(data)),
        _section("training", "Training", _training(data)),
        _section("retention", "Retention: student vs teacher", _retention(data)),
        *([_section("study", "Study: arms over several seeds", study)] if (study := _study(data)) else []),
    ]
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>distillflow report — {escape(name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>distillflow report — {escape(name)}</h1><p>{sub}</p></header><main>"
        + "\n".join(sections)
        + f"</main><footer>generated by distillflow {escape(_version())} on {generated} · one self-contained file</footer>"
        "</body></html>\n"
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("distillflow")
    except Exception:
        return ""


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); return its path."""
    data = collect(run_dir)
    path = Path(out) if out else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(path)
    return path
