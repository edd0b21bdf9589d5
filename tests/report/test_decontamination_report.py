"""The report's retention section shows, per scored set, whether training data was decontaminated."""

from __future__ import annotations

from pathlib import Path

from distillflow.report.collect import RunData
from distillflow.report.html import _decontamination


def data(manifest, tasks=()):
    results = {"metrics": [], "lm_eval": {"tasks": {t: {} for t in tasks}}}
    return RunData(run_dir=Path("run"), manifest=manifest, eval_results=results)


def test_covered_sets_name_the_step_and_n():
    html = _decontamination(data({"decontamination": {"decon": {"sets": ["heldout", "gsm8k"], "ngram": 13}}}, ["gsm8k"]))
    assert "<td class=\"\">heldout</td><td class=\"\">yes</td><td class=\"\">decon (13-grams)</td>" in html
    assert "<td class=\"\">gsm8k</td><td class=\"\">yes</td>" in html
    assert "Warning" not in html


def test_uncovered_sets_warn():
    html = _decontamination(data({"decontamination": {"decon": {"sets": ["heldout"], "ngram": 13}}}, ["mmlu"]))
    assert '<td class="">mmlu</td><td class=""><span class="warn">no</span></td>' in html
    assert "Warning: the training data was not decontaminated against &#x27;mmlu&#x27;" in html
    html = _decontamination(data({}))
    assert "not decontaminated against &#x27;heldout&#x27;" in html
