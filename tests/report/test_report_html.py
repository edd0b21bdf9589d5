"""The HTML report from real run files: sections, funnel numbers, DAG, missing stages, errors."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from tests.report.report_fixture import LengthJudge, add_later_stages, build_run, expected_funnel


@pytest.fixture(scope="module")
def bare_run(endpoint, tmp_path_factory):
    judge = LengthJudge()
    try:
        yield build_run(tmp_path_factory.mktemp("report"), endpoint.base_url, judge.base_url)
    finally:
        judge.close()


@pytest.fixture
def full_run(bare_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bare_run, run, ignore=shutil.ignore_patterns("cache", "distiset"))
    add_later_stages(run)
    return run


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_funnel_numbers_come_from_the_run(bare_run):
    from distillflow.report.collect import collect
    from distillflow.report.funnel import funnel

    want = expected_funnel(bare_run)
    got = {s.name: s.count for s in funnel(collect(bare_run))}
    assert {k: got[k] for k in want} == want and want["kept"] > 0
    assert got["reviewed"] is None and got["trained"] is None


def test_bare_run_report_says_what_is_missing(bare_run, tmp_path):
    from distillflow.report import render_report

    path = render_report(bare_run, tmp_path / "r.html")
    html = path.read_text()
    text = _text(html)
    assert "No review" in text and "Not trained" in text and "No evaluation: run `distillflow eval RUN_DIR`" in text
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html  # not even the teachers' endpoints
    # one PNG for tokens/cost and one for the judge histograms, embedded
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2
    for name in ("source", "generate", "check", "quality", "keep", "curated", "heldout"):
        assert f"<title>{name} (" in html, name
    want = expected_funnel(bare_run)
    for stage in ("prompts", "generations", "judged", "kept"):
        assert re.search(rf'<div class="name">{stage}</div><div class="count">{want[stage]:,}</div>', html), stage
    for teacher in ("alpha", "beta", "referee (judge)"):
        assert teacher in text


def test_full_report_shows_review_training_and_retention(full_run):
    from distillflow.report import render_report

    html = render_report(full_run).read_text()
    assert (full_run / "report.html").is_file()
    text = _text(html)
    assert "judge vs. human" in text and "75.0%" in text and "4 records reviewed" in text
    assert re.search(r'<div class="name">reviewed</div><div class="count">4</div>', html)
    assert re.search(r'<div class="name">trained</div><div class="count">3</div>', html)
    assert "last loss 0.8400 (step 8)" in text and "first loss 2.9000 (step 1)" in text
    assert "verifier pass rate (check: contains) 10.0% 45.0% 90.0% 50%" in text
    assert "judge score (helpfulness, by referee) 2.00 / 5 3.50 / 5 4.00 / 5 88%" in text
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 4  # + loss curve + retention chart
    for node in ("review", "train", "eval"):
        assert f"<title>{node} (" in html


def test_agreement_json_is_read_when_present(full_run):
    from distillflow.report import render_report

    (full_run / "review" / "report.json").unlink()
    (full_run / "review" / "agreement.json").write_text(json.dumps({"judge_vs_human": {"n": 10, "agreement": 0.9}}))
    text = _text(render_report(full_run).read_text())
    assert "90.0%" in text and "judge vs. human" in text


def test_dag_from_mermaid_matches_the_graph(bare_run):
    from distillflow.report.collect import collect
    from distillflow.report.dag import dag_from_graph, dag_from_mermaid

    data = collect(bare_run)
    a = {(n.id, n.kind, tuple(n.parents)) for n in dag_from_graph(data.graph)}
    b = {(n.id, n.kind, tuple(n.parents)) for n in dag_from_mermaid(data.mermaid)}
    assert a == b


def test_unreadable_pipeline_falls_back_to_graph_mmd(full_run):
    from distillflow.report import render_report

    (full_run / "pipeline.yaml").write_text("name: [broken")
    html = render_report(full_run).read_text()
    assert "<title>quality (judge)" in html and "<title>keep (filter)" in html


def test_cli_writes_the_report_and_rejects_a_non_run(bare_run, tmp_path):
    from distillflow.cli import app

    out = tmp_path / "sub" / "r.html"
    res = CliRunner().invoke(app, ["report", str(bare_run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "not a distillflow run directory" in res.output and "Traceback" not in res.output


def test_report_shows_the_study_table(full_run):
    from distillflow.report import render_report

    study = {"seeds": 2, "steps": 150, "reference": {"teacher_unseen": 1.0, "teacher_mixed": 1.0,
                                                     "base_unseen": 0.0, "base_mixed": 0.0},
             "runs": {"verified_sft": [{"unseen": 0.3, "mixed": 0.5}, {"unseen": 0.5, "mixed": 0.5}]}}
    (full_run / "study.json").write_text(json.dumps(study))
    text = _text(render_report(full_run).read_text())
    assert "Study: arms over several seeds" in text
    assert "2 training seeds per arm, 150 steps each" in text
    # mean 0.4, sd 0.1414, t(1) = 12.706 -> half-width 1.2706
    assert "verified sft (n=2) 40.0% ± 14.1 [-87.1, 167.1]" in text
