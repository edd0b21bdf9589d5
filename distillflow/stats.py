"""Small-sample statistics for the demo study: mean ± sd, Student-t 95% intervals, differences between arms.

    s = summarize([0.62, 0.71, 0.55, 0.80, 0.66])
    s.mean, s.sd, s.lo, s.hi                 # 0.668, 0.0942, 0.551, 0.785
    d = difference([0.9, 0.8, 0.85], [0.7, 0.75, 0.6])   # Welch interval of mean(a) - mean(b)
    d = arm_difference(study, "verified_sft", "unfiltered_sft", "unseen")   # paired by seed where it can be

Imports nothing from distillflow, so the report (HTML), the model card (train) and the study script
all read ``study.json`` through :func:`study_table` without crossing the layer contracts.
No SciPy: the t quantiles come from a table (two-sided 95%), interpolated in 1/df between its rows,
which is exact at the tabulated degrees of freedom and within 0.002 elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Interval", "arm_difference", "difference", "paired_by_seed", "study_table", "summarize", "t975"]

# Student t 0.975 quantiles (two-sided 95%) by degrees of freedom.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
_Z975 = 1.960


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df`` may be fractional, Welch)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    keys = sorted(_T975)
    if df in _T975:
        return _T975[int(df)]
    if df > keys[-1]:
        lo_df, lo_t, hi_inv, hi_t = keys[-1], _T975[keys[-1]], 0.0, _Z975
        w = (1 / lo_df - 1 / df) / (1 / lo_df - hi_inv)
        return lo_t + w * (hi_t - lo_t)
    lo = max(k for k in keys if k < df)
    hi = min(k for k in keys if k > df)
    w = (1 / lo - 1 / df) / (1 / lo - 1 / hi)  # linear in 1/df: t is nearly linear there
    return _T975[lo] + w * (_T975[hi] - _T975[lo])


@dataclass(frozen=True)
class Interval:
    """A mean with its sample standard deviation, its 95% interval and the sample size."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def pct(self, digits: int = 1) -> str:
        """``62.0% ± 4.1 [56.9, 67.1]`` (as percentages of a proportion)."""
        f = f"{{:.{digits}f}}"
        return (f"{f.format(100 * self.mean)}% ± {f.format(100 * self.sd)} "
                f"[{f.format(100 * self.lo)}, {f.format(100 * self.hi)}]")

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "lo": self.lo, "hi": self.hi, "n": self.n}


def summarize(values: list[float]) -> Interval:
    """Mean, sample sd (n - 1) and the Student-t 95% interval of the mean. One value: sd 0, interval = it."""
    xs = [float(x) for x in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, 0.0, mean, mean, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, sd, mean - half, mean + half, n)


def difference(a: list[float], b: list[float]) -> Interval:
    """mean(a) - mean(b) with Welch's 95% interval (unequal variances; for arms that are not paired).

    ``sd`` is the standard error of the difference. When both arms have zero variance the
    interval is the point difference.
    """
    sa, sb = summarize(a), summarize(b)
    diff = sa.mean - sb.mean
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0 or sa.n < 2 or sb.n < 2:
        return Interval(diff, se, diff, diff, min(sa.n, sb.n))
    df = (va + vb) ** 2 / ((va ** 2 / (sa.n - 1) if va else 0) + (vb ** 2 / (sb.n - 1) if vb else 0))
    half = t975(max(1.0, df)) * se
    return Interval(diff, se, diff - half, diff + half, min(sa.n, sb.n))


def paired_by_seed(results: dict) -> bool:
    """Whether a ``study.json``'s arms can be compared seed by seed: every seed is its own teacher draw
    shared by the arms (``draws: per-seed``) and every arm with two runs or more ran the same seeds."""
    if results.get("draws") != "per-seed":
        return False
    seeds = {frozenset(r["seed"] for r in recs) for recs in results["runs"].values() if len(recs) >= 2}
    return len(seeds) == 1


def arm_difference(results: dict, a: str, b: str, key: str) -> Interval:
    """Arm ``a`` minus arm ``b`` on ``key`` in a ``study.json``. Paired (:func:`paired_by_seed`): seed i
    of one arm and seed i of the other saw the same teacher samples, and the interval is the
    Student-t interval of the per-seed differences. Otherwise Welch's (unpaired)."""
    ra = {r["seed"]: r[key] for r in results["runs"][a]} if paired_by_seed(results) else {}
    rb = {r["seed"]: r[key] for r in results["runs"][b]} if ra else {}
    if ra and ra.keys() == rb.keys():
        return summarize([ra[s] - rb[s] for s in sorted(ra)])
    return difference([r[key] for r in results["runs"][a]], [r[key] for r in results["runs"][b]])


#: The study's comparisons, (arm, baseline): the differences its table reports.
STUDY_DIFFS = [("verified_sft", "unfiltered_sft"), ("verified_kd", "verified_sft"), ("verified_kd", "unfiltered_sft")]


def study_table(results: dict) -> str:
    """The Markdown table of a ``study.json`` (``benchmarks/study.py``): base -> arms -> teacher, greedy exact
    match on unseen problems (the headline) and on the mixed held-out prompts, retention, differences."""
    ref = results["reference"]
    runs = {arm: recs for arm, recs in results["runs"].items() if recs}
    if results.get("draws") == "per-seed":  # each seed: its own teacher draw, shared by the arms, and training seed
        what = (f"{results['seeds']} seeds per arm (seed i: teacher sampling seed i, shared by every arm, and "
                f"training seed i), {results['steps']} steps each")
    else:
        what = f"{results['seeds']} training seeds per arm, {results['steps']} steps each, same teacher samples"
    if results.get("lr_scheduler"):
        what += f", {results['lr_scheduler']} learning rate"
    lines = [f"{what}; greedy exact match, mean ± sd [95% interval]",
             "",
             "| arm | unseen problems (headline) | retention, unseen | mixed held-out prompts | retention, mixed |",
             "| --- | --- | --- | --- | --- |",
             f"| base student | {100 * ref['base_unseen']:.1f}% | | {100 * ref['base_mixed']:.1f}% | |"]
    for arm, recs in runs.items():
        u, m = summarize([r["unseen"] for r in recs]), summarize([r["mixed"] for r in recs])
        ru = summarize([r["unseen"] / ref["teacher_unseen"] for r in recs])
        rm = summarize([r["mixed"] / ref["teacher_mixed"] for r in recs])
        lines.append(f"| {arm.replace('_', ' ')} (n={u.n}) | {u.pct()} | {ru.pct()} | {m.pct()} | {rm.pct()} |")
    lines.append(f"| teacher | {100 * ref['teacher_unseen']:.1f}% | | {100 * ref['teacher_mixed']:.1f}% | |")
    diffs = [(a, b) for a, b in STUDY_DIFFS if len(runs.get(a, [])) >= 2 and len(runs.get(b, [])) >= 2]
    if diffs:
        what = "paired by seed, 95% interval" if paired_by_seed(results) else "Welch 95% interval"
        lines += ["", f"| difference ({what}) | unseen | mixed |", "| --- | --- | --- |"]

    def fmt(d: Interval) -> str:
        return (f"{100 * d.mean:+.1f} pts [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"
                + (" (excludes 0)" if d.excludes_zero() else ""))

    for a, b in diffs:
        du, dm = arm_difference(results, a, b, "unseen"), arm_difference(results, a, b, "mixed")
        lines.append(f"| {a.replace('_', ' ')} − {b.replace('_', ' ')} | {fmt(du)} | {fmt(dm)} |")
    return "\n".join(lines)
