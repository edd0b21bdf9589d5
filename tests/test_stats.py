"""The study's statistics against values computed by hand (and by SciPy / R for the t quantiles)."""

from __future__ import annotations

import math

import pytest

from distillflow.stats import difference, summarize, t975


def test_t_quantiles_match_the_table_and_interpolate_between_rows():
    assert t975(4) == 2.776
    assert t975(9) == 2.262
    # scipy.stats.t.ppf(0.975, 35) = 2.0301, ppf(0.975, 5.5) = 2.5064 (interpolated in 1/df: within 0.005)
    assert abs(t975(35) - 2.0301) < 0.002
    assert abs(t975(5.5) - 2.5064) < 0.005
    assert abs(t975(10_000) - 1.9602) < 0.001
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0.5)


def test_summarize_known_sample():
    s = summarize([0.62, 0.71, 0.55, 0.80, 0.66])
    assert s.n == 5
    assert s.mean == pytest.approx(0.668)
    # sample sd: sqrt(sum((x - 0.668)^2) / 4) = sqrt(0.03548 / 4)
    assert s.sd == pytest.approx(math.sqrt(0.03548 / 4))
    half = 2.776 * s.sd / math.sqrt(5)
    assert (s.lo, s.hi) == (pytest.approx(0.668 - half), pytest.approx(0.668 + half))
    assert s.pct() == "66.8% ± 9.4 [55.1, 78.5]"


def test_summarize_edge_cases():
    one = summarize([0.5])
    assert (one.mean, one.sd, one.lo, one.hi, one.n) == (0.5, 0.0, 0.5, 0.5, 1)
    flat = summarize([0.3, 0.3, 0.3])
    assert (flat.sd, flat.lo, flat.hi) == (0.0, pytest.approx(0.3), pytest.approx(0.3))
    with pytest.raises(ValueError, match="no values"):
        summarize([])


def test_welch_difference_known_inputs():
    a, b = [0.9, 0.8, 0.85], [0.7, 0.75, 0.6]
    d = difference(a, b)
    assert d.mean == pytest.approx(0.85 - 0.6833333)
    va, vb = 0.0025 / 3, (0.0058333333) / 3  # sample variances 0.0025 and 0.00583 over n
    assert d.sd == pytest.approx(math.sqrt(va + vb), rel=1e-4)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert df == pytest.approx(3.448, abs=0.001)
    assert d.lo == pytest.approx(d.mean - t975(df) * d.sd)
    assert d.excludes_zero()
    overlap = difference([0.5, 0.7, 0.6], [0.55, 0.65, 0.5])
    assert not overlap.excludes_zero()
    same = difference([0.4, 0.4], [0.4, 0.4])
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_study_table_from_known_results():
    from distillflow.stats import study_table

    results = {"seeds": 3, "steps": 150, "reference": {"teacher_unseen": 0.8, "teacher_mixed": 1.0,
                                                       "base_unseen": 0.0, "base_mixed": 0.0},
               "runs": {"unfiltered_sft": [{"unseen": x, "mixed": x} for x in (0.4, 0.5, 0.6)],
                        "verified_sft": [{"unseen": x, "mixed": x} for x in (0.6, 0.7, 0.8)],
                        "verified_kd": []}}
    text = study_table(results)
    lines = text.splitlines()
    assert lines[0].startswith("3 training seeds per arm, 150 steps each")
    # mean 0.5, sd 0.1, half-width 4.303 * 0.1 / sqrt(3) = 0.2484; retention unseen = x / 0.8
    assert "| unfiltered sft (n=3) | 50.0% ± 10.0 [25.2, 74.8] | 62.5% ± 12.5 [31.4, 93.6] | 50.0% ± 10.0 [25.2, 74.8] |" in text
    assert "| teacher | 80.0% | | 100.0% | |" in text
    assert "verified kd" not in text  # an arm without runs is left out, and so are its differences
    # Welch: diff 0.2, se sqrt(2 * 0.01 / 3) = 0.08165, df = 4 -> t 2.776 -> half 0.2267
    assert "| verified sft − unfiltered sft | +20.0 pts [-2.7, +42.7] | +20.0 pts [-2.7, +42.7] |" in text


def test_study_table_says_when_each_seed_is_its_own_teacher_draw():
    from distillflow.stats import study_table

    results = {"seeds": 2, "steps": 10, "draws": "per-seed", "lr_scheduler": "constant_with_warmup",
               "reference": {"teacher_unseen": 1.0, "teacher_mixed": 1.0, "base_unseen": 0.0, "base_mixed": 0.0},
               "runs": {"verified_sft": [{"unseen": 0.9, "mixed": 0.9}, {"unseen": 1.0, "mixed": 1.0}]}}
    first = study_table(results).splitlines()[0]
    assert first.startswith("2 seeds per arm (seed i: teacher sampling seed i, shared by every arm, and training seed i)")
    assert "10 steps each, constant_with_warmup learning rate;" in first


def test_arms_that_share_each_seeds_teacher_draw_are_compared_pairwise():
    from distillflow.stats import arm_difference, paired_by_seed, study_table

    ref = {"teacher_unseen": 1.0, "teacher_mixed": 1.0, "base_unseen": 0.0, "base_mixed": 0.0}
    runs = {"verified_sft": [{"seed": s, "unseen": x, "mixed": x} for s, x in enumerate((0.9, 0.7, 0.8))],
            "unfiltered_sft": [{"seed": s, "unseen": x, "mixed": x} for s, x in enumerate((0.8, 0.6, 0.7))]}
    paired = {"seeds": 3, "steps": 10, "draws": "per-seed", "reference": ref, "runs": runs}
    d, was_paired = arm_difference(paired, "verified_sft", "unfiltered_sft", "unseen"), paired_by_seed(paired)
    # every seed differs by exactly 0.1: paired, the interval is the point; Welch would be wide
    assert was_paired and round(d.mean, 9) == 0.1 and round(d.lo, 9) == round(d.hi, 9) == 0.1
    assert "| difference (paired by seed, 95% interval) | unseen | mixed |" in study_table(paired)
    assert "| verified sft − unfiltered sft | +10.0 pts [+10.0, +10.0] (excludes 0)" in study_table(paired)
    one_draw = {**paired, "draws": "one"}
    w, was_paired = arm_difference(one_draw, "verified_sft", "unfiltered_sft", "unseen"), paired_by_seed(one_draw)
    assert not was_paired and w.lo < 0 < w.hi
    assert "| difference (Welch 95% interval) |" in study_table(one_draw)
    uneven = {**paired, "runs": {**runs, "unfiltered_sft": runs["unfiltered_sft"][:2]}}
    assert not paired_by_seed(uneven)  # seeds differ: Welch
