from collections import Counter

from distillflow.review.push import score_band, stratified_sample
from distillflow.review.schema import JudgeInfo
from tests.review.records import make_row

JUDGE = JudgeInfo("judge", "judge_score", (1.0, 5.0), 4.0)


def _rows():
    # 60 big (40 high, 20 low) + 20 small (10 high, 5 mid, 5 unscored)
    rows = [make_row(i, score=5.0, teacher="big") for i in range(40)]
    rows += [make_row(100 + i, score=1.0, teacher="big") for i in range(20)]
    rows += [make_row(200 + i, score=4.0, teacher="small") for i in range(10)]
    rows += [make_row(300 + i, score=3.0, teacher="small") for i in range(5)]
    rows += [make_row(400 + i, score=None, teacher="small") for i in range(5)]
    return rows


def test_bands():
    assert [score_band(make_row(0, score=s), JUDGE) for s in (4, 3.5, 3, 2.9, None)] == ["high", "mid", "mid", "low", "unscored"]


def test_sample_size_proportions_and_every_stratum():
    sample = stratified_sample(_rows(), 16, JUDGE, seed=0)
    assert len(sample) == 16 and len({r["id"] for r in sample}) == 16
    strata = Counter((r["teacher"], score_band(r, JUDGE)) for r in sample)
    assert strata[("big", "high")] == 8 and strata[("big", "low")] == 4
    assert strata[("small", "high")] == 2
    assert strata[("small", "mid")] == 1 and strata[("small", "unscored")] == 1


def test_sample_is_deterministic_and_seed_dependent():
    ids = lambda s: [r["id"] for r in s]  # noqa: E731
    assert ids(stratified_sample(_rows(), 10, JUDGE, seed=1)) == ids(stratified_sample(_rows(), 10, JUDGE, seed=1))
    assert ids(stratified_sample(_rows(), 10, JUDGE, seed=1)) != ids(stratified_sample(_rows(), 10, JUDGE, seed=2))


def test_already_pushed_rows_count_first_so_a_grown_run_tops_up():
    rows = _rows()
    first = stratified_sample(rows[:60], 10, JUDGE)
    keep = {r["id"] for r in first}
    second = stratified_sample(rows, 20, JUDGE, keep=keep)
    assert keep <= {r["id"] for r in second} and len(second) == 20
    assert stratified_sample(rows, 5, JUDGE, keep=keep) == [r for r in rows if r["id"] in keep]


def test_sample_larger_than_rows_takes_all():
    assert len(stratified_sample(_rows()[:7], 50, JUDGE)) == 7
