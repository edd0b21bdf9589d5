"""The demo numbers in docs/demo.md (moved there from the README, which links it) are the ones
`examples/quickstart/demo.py --json docs/demo_results.json` wrote (its last real run), not typed in by hand: change
one without the other and this fails."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_DOC = ROOT / "docs" / "demo.md"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_readme_demo_table_matches_the_recorded_run():
    res = json.loads((ROOT / "docs" / "demo_results.json").read_text())
    doc = DEMO_DOC.read_text()
    q, a = res["quickstart"], res["ablation"]
    rows = {
        "verified data (quickstart), greedy": (q["base"], q["student"], q["teacher"], q["retention"]),
        "verified data (quickstart), sampled at T=1": (q["sampled_base"], q["sampled_student"], q["sampled_teacher"],
                                                       q["sampled_retention"]),
        "unfiltered data (ablation), greedy": (a["base"], a["student"], a["teacher"], a["retention"]),
        "unfiltered data (ablation), sampled at T=1": (a["sampled_base"], a["sampled_student"], a["sampled_teacher"],
                                                       a["sampled_retention"]),
    }
    for label, values in rows.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| {label} |")), None)
        assert line is not None, f"docs/demo.md lost its row '{label}'"
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")][1:]
        assert cells == [_pct(v) for v in values], (label, cells)
    assert f"{q['curated']:,} verified examples" in doc
    assert f"{a['curated']:,} examples, {a['wrong_in_training_data']:,} of them wrong" in doc
    assert f"loss {q['loss_first']:.3f} → {q['loss_last']:.3f} ({q['steps']} steps" in doc


def test_readme_study_table_is_the_recorded_study():
    """docs/demo.md's study table is `study_table(docs/study_results.json)` verbatim (benchmarks/study.py --json)."""
    from distillflow.stats import study_table

    study = json.loads((ROOT / "docs" / "study_results.json").read_text())
    assert len(study["runs"]) == 3 and all(len(r) >= 5 for r in study["runs"].values())
    assert study_table(study) in DEMO_DOC.read_text()


def test_readme_study_summary_is_the_recorded_study():
    """The README's sentence on the study quotes docs/study_results.json (retention on unseen problems)."""
    from distillflow.stats import arm_difference, summarize

    study = json.loads((ROOT / "docs" / "study_results.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    teacher = study["reference"]["teacher_unseen"]

    def retention(arm: str):
        return summarize([r["unseen"] / teacher for r in study["runs"][arm]])

    v, u, k = retention("verified_sft"), retention("unfiltered_sft"), retention("verified_kd")
    assert (f"verified SFT **{100 * v.mean:.1f}%** ± {100 * v.sd:.1f} (95% interval of the mean "
            f"[{100 * v.lo:.1f}, {100 * v.hi:.1f}])") in readme
    assert f"unfiltered SFT {100 * u.mean:.1f}% ± {100 * u.sd:.1f}" in readme
    assert f"verified KD {100 * k.mean:.1f}% ± {100 * k.sd:.1f}" in readme

    def pts(a: str, b: str, unit: str = "") -> str:
        d = arm_difference(study, a, b, "unseen")  # paired by seed, as the study table computes it
        text = f"{100 * d.mean:+.1f}{unit} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"
        return text.replace("-", "−")

    assert f"verified − unfiltered SFT {pts('verified_sft', 'unfiltered_sft', ' points')}" in readme
    assert f"KD − verified SFT {pts('verified_kd', 'verified_sft')}" in readme


def test_demo_doc_quotes_the_study_teacher_draws():
    """docs/demo.md's ranges over the study's teacher draws are those in docs/study_results.json (teacher_data)."""
    study = json.loads((ROOT / "docs" / "study_results.json").read_text())
    draws = study["teacher_data"].values()
    assert len(draws) == study["seeds"]
    doc = " ".join(DEMO_DOC.read_text().split())

    def span(key: str) -> str:
        values = [d[key] for d in draws]
        return f"{min(values):,}–{max(values):,}"

    assert f"kept {span('verified')} verified examples, filter rejections {span('filter_rejected')}, and " \
           f"{span('unfiltered')} unfiltered ones" in doc
    assert {d["samples"] for d in draws} == {7600} and "7,600 teacher samples per draw" in doc
