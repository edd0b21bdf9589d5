"""The fake endpoint's fault mode (benchmarks/faults.py): which attempts fail is a function of the
seed, the prompt and the attempt number, not of the order concurrent requests arrive in, so a rerun
of the benchmark with the same seed quarantines the same records (before, one seeded generator was
drawn in arrival order: 45, 39 and 31 quarantined in three runs of the same command)."""

from __future__ import annotations

import random

from benchmarks.fake_endpoint import FAULTS, _fault_for


def _attempts(order: list[str], seed: int = 0, rate: float = 0.2) -> dict:
    tries: dict = {}
    got: dict = {}
    for content in order:
        n = tries.get(content, 0)
        got[(content, n)] = _fault_for(seed, content, tries, rate)
    return got


def test_the_same_attempts_fail_the_same_way_whatever_the_arrival_order():
    prompts = [f"Question {i}" for i in range(300)]
    order = [p for p in prompts for _ in range(3)]  # three attempts at each
    shuffled = list(order)
    random.Random(7).shuffle(shuffled)
    first, second = _attempts(order), _attempts(shuffled)
    assert first == second
    faults = [k for k in first.values() if k is not None]
    assert 0.14 < len(faults) / len(first) < 0.26  # the rate asked for
    assert set(faults) == set(FAULTS)  # every kind is drawn


def test_another_seed_fails_other_attempts():
    order = [f"Question {i}" for i in range(300)]
    assert _attempts(order, seed=0) != _attempts(order, seed=1)


def test_a_rate_of_zero_never_fails_and_one_always_does():
    order = [f"q{i}" for i in range(50)]
    assert set(_attempts(order, rate=0.0).values()) == {None}
    assert None not in _attempts(order, rate=1.0).values()
