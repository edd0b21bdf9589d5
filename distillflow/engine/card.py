"""The dataset card (README.md of a run): teachers with their declared terms, judges, filters, counts."""

from __future__ import annotations

import json


def _terms(t) -> str:
    allowed = "allowed" if t.terms.allows_training else "**NOT allowed**"
    src = f" ([terms]({t.terms.source}))" if t.terms.source and t.terms.source.startswith("http") else (
        f" ({t.terms.source})" if t.terms.source else " (no source declared)"
    )
    return f"training on outputs {allowed}{src}"


def render_dataset_card(spec, manifest: dict, curated: list[dict]) -> str:
    teachers_used = manifest.get("teachers", {})
    lines = [
        "---",
        "tags:",
        "- synthetic",
        "- distillation",
        "- distillflow",
        f"pretty_name: {spec.name}",
        "---",
        "",
        f"# {spec.name}",
        "",
        (spec.description or "A distillation dataset built with distillflow.").strip(),
        "",
        f"Built by a distillflow pipeline (spec hash `{manifest['spec_hash']}`, status **{manifest['status']}**): "
        f"{manifest['curated']} curated records, {manifest['rejected']} rejected (each with the step and reason), "
        f"{manifest['heldout']} prompts held out for evaluation.",
        "",
        "## Teachers and their declared terms",
        "",
        "| teacher | provider | model | params | terms of use | answers | tokens in/out | est. cost (USD) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in spec.teachers:
        s = teachers_used.get(t.name, {})
        params = json.dumps(t.params.model_dump(exclude_none=True, exclude_defaults=True)) or "{}"
        lines.append(
            f"| {t.name} | {t.provider} | `{t.model}` | `{params}` | {_terms(t)} | {s.get('requests', 0)} | "
            f"{s.get('input_tokens', 0)}/{s.get('output_tokens', 0)} | {s.get('cost_usd', 0):.4f} |"
        )
    forbidden = [t.name for t in spec.teachers if not t.terms.allows_training]
    if forbidden:
        lines += ["", f"> **Warning:** the declared terms of {', '.join(forbidden)} do not allow training models on their outputs."]
    lines += _batch_lines(manifest.get("batches"))
    lines += ["", "## Steps", "", "| step | kind | settings | in | kept | rejected |", "| --- | --- | --- | --- | --- | --- |"]
    counts = manifest.get("counts", {})
    src = counts.get("source", {})
    lines.append(f"| source | {spec.source.kind} | `{spec.source.path or spec.source.dataset or 'inline'}` | {src.get('in', 0)} | {src.get('out', 0)} | {src.get('rejected', 0)} |")
    for step in spec.steps:
        c = counts.get(step.id, {})
        settings = step.model_dump(mode="json", exclude_defaults=True, exclude={"id", "kind", "after"})
        lines.append(
            f"| {step.id} | {step.kind} | `{json.dumps(settings, ensure_ascii=False)[:120]}` | {c.get('in', '')} | {c.get('out', '')} | {c.get('rejected', '')} |"
        )
    lines += [
        "",
        "## Provenance",
        "",
        "Every record has a `provenance` column: prompt source and row, teacher provider/model/params, "
        "judge scores and rationales, verifier results, the filters it passed, tokens and estimated cost. "
        "Rejected records are in the `rejected` split with `rejected_by` (step id) and `reason`.",
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset('json', data_files='data/curated.jsonl', split='train')",
        "```",
        "",
    ]
    return "\n".join(lines)


def _batch_lines(batches: dict | None) -> list[str]:
    """Which answers came through provider batch APIs (``mode: batch`` teachers), at batch prices."""
    if not batches or not batches.get("teachers"):
        return []
    lines = ["", "## Answers through provider batch APIs", "",
             "These teachers answered through their provider's batch API (about half the online price, "
             "up to 24 h); the answers are cached by request and none was paid twice.", "",
             "| teacher | answers through batches | batches | cost at batch prices (USD) |", "| --- | --- | --- | --- |"]
    for name, t in sorted(batches["teachers"].items()):
        lines.append(f"| {name} | {t.get('answers', 0)} | {t.get('batches', 0)} | {t.get('cost_usd', 0):.4f} |")
    return lines
