from distillflow.review.agreement import between_reviewers, cohen_kappa, judge_vs_human, quality_gap


def test_judge_vs_human_on_a_known_set():
    # 10 records: judge accepts 6, humans accept 5; they match on 7.
    pairs = [(True, True)] * 4 + [(True, False)] * 2 + [(False, True)] * 1 + [(False, False)] * 3
    out = judge_vs_human(pairs)
    assert out["n"] == 10
    assert out["agreement"] == 0.7
    assert out["judge_precision"] == round(4 / 6, 4)
    assert out["judge_recall"] == 0.8
    # kappa: po=0.7, pe=0.6*0.5+0.4*0.5=0.5 -> 0.4
    assert out["kappa"] == 0.4
    assert out["confusion"] == {"judge_accept_human_accept": 4, "judge_accept_human_reject": 2,
                                "judge_reject_human_accept": 1, "judge_reject_human_reject": 3}


def test_kappa_undefined_and_perfect():
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True), (True, True)]) is None  # chance agreement is 1
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    assert judge_vs_human([])["agreement"] is None


def test_between_reviewers_counts_only_overlaps_and_every_pair():
    decisions = [
        {"ann": True, "bob": True},
        {"ann": True, "bob": False},
        {"ann": False, "bob": False, "cy": False},
        {"ann": True},  # one reviewer: no comparison
    ]
    out = between_reviewers(decisions)
    assert out["records"] == 3
    assert out["comparisons"] == 1 + 1 + 3
    assert out["agreement"] == 0.8
    assert out["pairs"]["ann ~ bob"] == {"n": 3, "agreement": round(2 / 3, 4), "kappa": 0.4}
    assert out["pairs"]["bob ~ cy"]["n"] == 1


def test_quality_gap():
    assert quality_gap([(5, 4), (2, 2), (1, 4)]) == {"n": 3, "mean_abs_diff": round(4 / 3, 4)}
    assert quality_gap([]) == {"n": 0, "mean_abs_diff": None}
