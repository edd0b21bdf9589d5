import copy
import random

import pytest

from distillflow.errors import UsageError
from distillflow.steps.curate import (
    best_of,
    exact_dedup,
    filter_rows,
    length_filter,
    near_dedup,
    normalize_text,
    refusal_filter,
)


def make_row(i, response="ok", **extra):
    row = {
        "id": f"rec{i:02d}",
        "prompt_id": extra.pop("prompt_id", f"p{i}"),
        "prompt": extra.pop("prompt", f"question {i}"),
        "response": response,
        "teacher": extra.pop("teacher", "t1"),
        "generation_index": extra.pop("generation_index", 0),
        "provenance": extra.pop("provenance", {"filters_passed": ["earlier"], "judges": {}}),
    }
    row.update(extra)
    return row


def ids(rows):
    return [r["id"] for r in rows]


# --------------------------------------------------------------------------- shared contract

def test_kept_rows_get_provenance_and_inputs_are_untouched():
    rows = [make_row(0, judge_score=5.0), make_row(1, judge_score=2.0), {"id": "bare", "judge_score": 4}]
    before = copy.deepcopy(rows)
    kept, rejected = filter_rows(rows, "judge_score >= 4", "good")
    assert rows == before  # never mutated
    assert ids(kept) == ["rec00", "bare"]
    assert kept[0]["provenance"]["filters_passed"] == ["earlier", "good"]
    assert kept[0]["provenance"]["judges"] == {}
    assert kept[1]["provenance"] == {"filters_passed": ["good"]}  # created when missing
    assert rejected[0]["rejected_by"] == "good"
    assert rejected[0]["reason"] == "filter 'judge_score >= 4' was false (judge_score=2.0)"
    assert "rejected_by" not in rows[1]


def test_filter_reason_shows_every_referenced_column():
    rows = [make_row(0, response="hi", judge_score=None)]
    _, rejected = filter_rows(rows, "judge_score>=4 and len(response)>1", "f")
    assert rejected[0]["reason"] == "filter 'judge_score >= 4 and len(response) > 1' was false (judge_score=None, response='hi')"


def test_filter_eval_error_rejects_or_raises():
    rows = [make_row(0, judge_score="high"), make_row(1, judge_score=5)]
    kept, rejected = filter_rows(rows, "judge_score >= 4", "f")
    assert ids(kept) == ["rec01"]
    assert "could not be evaluated" in rejected[0]["reason"] and "'high'" in rejected[0]["reason"]
    with pytest.raises(Exception, match="step 'f', record rec00"):
        filter_rows(rows, "judge_score >= 4", "f", on_error="raise")


def test_filter_unknown_column_is_a_usage_error_with_hint():
    with pytest.raises(UsageError, match="no row has a column 'judge_scroe' — did you mean 'judge_score'"):
        filter_rows([make_row(0, judge_score=1)], "judge_scroe > 1", "f")


# --------------------------------------------------------------------------- length

def test_length_filter_chars_and_words():
    rows = [make_row(0, "one"), make_row(1, "one two three"), make_row(2, "x" * 50), make_row(3, None)]
    kept, rejected = length_filter(rows, "len", min_words=2, max_chars=20)
    assert ids(kept) == ["rec01"]
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons["rec00"] == "response has 1 word, fewer than min_words=2"
    assert reasons["rec02"] == "response has 50 chars, more than max_chars=20"
    assert reasons["rec03"] == "response has 0 words, fewer than min_words=2"
    assert all(r["rejected_by"] == "len" for r in rejected)


def test_length_filter_other_column_and_bounds():
    rows = [make_row(0, prompt="a b c d e"), make_row(1, prompt="a b")]
    kept, rejected = length_filter(rows, "len", column="prompt", max_words=3, min_chars=1)
    assert ids(kept) == ["rec01"] and rejected[0]["reason"] == "prompt has 5 words, more than max_words=3"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "set at least one"),
        ({"min_chars": 10, "max_chars": 5}, "min_chars=10 is greater than max_chars=5"),
        ({"min_words": -1}, "min_words must be a non-negative integer"),
        ({"max_words": 2.5}, "max_words must be a non-negative integer"),
    ],
)
def test_length_filter_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message):
        length_filter([make_row(0)], "len", **kwargs)


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize(
    "text,phrase",
    [
        ("I'm sorry, but I can't help with that request.", "I'm sorry, but I can't"),
        ("I’m sorry, but I cannot provide that.", "I’m sorry, but I cannot"),
        ("As an AI language model, I do not have opinions.", "As an AI language model"),
        ("Unfortunately I cannot assist with this.", "I cannot assist"),
        ("i can't comply with that", "i can't comply"),
        ("I must respectfully decline.", "I must respectfully decline"),
        ("I apologize, but I cannot write that.", "I apologize, but I cannot"),
        ("That goes against my guidelines.", "goes against my guidelines"),
    ],
)
def test_refusal_filter_rejects_refusals_and_names_phrase(text, phrase):
    kept, rejected = refusal_filter([make_row(0, text)], "no_refusals")
    assert kept == []
    assert rejected[0]["reason"].startswith(f'refusal: response contains "{phrase}"')


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",
        "I can't help but notice the pattern: it doubles each step.",
        "Sorry for the delay! Here is the code.",
        "You cannot assist a process that has already finished.",
    ],
)
def test_refusal_filter_keeps_normal_answers(text):
    kept, rejected = refusal_filter([make_row(0, text)], "no_refusals")
    assert ids(kept) == ["rec00"] and rejected == []


def test_refusal_filter_extra_patterns_and_bad_regex():
    rows = [make_row(0, "Nope, not doing it."), make_row(1, "Sure!")]
    kept, rejected = refusal_filter(rows, "r", extra_patterns=[r"\bnope\b"])
    assert ids(kept) == ["rec01"]
    assert rejected[0]["reason"] == "refusal: response contains \"Nope\" (extra pattern '\\\\bnope\\\\b')"
    with pytest.raises(UsageError, match="invalid regex"):
        refusal_filter(rows, "r", extra_patterns=["(unclosed"])


# --------------------------------------------------------------------------- exact dedup

def test_exact_dedup_normalizes_case_and_whitespace():
    rows = [
        make_row(0, "The Answer  is 4", prompt="What is 2+2?"),
        make_row(1, "the answer is 4\n", prompt="what  is 2+2?"),
        make_row(2, "The answer is 4", prompt="What is 3+1?"),
        make_row(3, "THE ANSWER IS 4", prompt="What is 2+2?"),
    ]
    kept, rejected = exact_dedup(rows, "dedup")
    assert ids(kept) == ["rec00", "rec02"]
    assert [r["reason"] for r in rejected] == ["exact duplicate of rec00 (prompt, response, normalized)"] * 2
    kept_r, rej_r = exact_dedup(rows, "dedup", columns=("response",))
    assert ids(kept_r) == ["rec00"] and len(rej_r) == 3


def test_exact_dedup_column_boundaries_matter():
    rows = [make_row(0, "c", prompt="ab"), make_row(1, "bc", prompt="a")]
    kept, _ = exact_dedup(rows, "d")
    assert len(kept) == 2


def test_normalize_text():
    assert normalize_text("  Hi\n\tTHERE ") == "hi there"
    assert normalize_text(None) == ""
    assert normalize_text("Straße") == "strasse"


# --------------------------------------------------------------------------- near dedup

BASE = (
    "Photosynthesis is the process by which green plants and some other organisms use sunlight "
    "to synthesize foods from carbon dioxide and water. It generally involves the green pigment "
    "chlorophyll and generates oxygen as a byproduct, which is released into the atmosphere and "
    "supports nearly all animal life on the planet through the food chain and respiration."
)


def test_near_dedup_catches_lightly_edited_copies_but_not_different_texts():
    paraphrase = BASE.replace("green plants", "green Plants").replace("nearly all", "almost all") + "!"
    different = (
        "The mitochondria is the powerhouse of the cell; it converts nutrients into adenosine "
        "triphosphate through cellular respiration, a multi-step process occurring in its inner membrane."
    )
    rows = [make_row(0, BASE), make_row(1, different), make_row(2, paraphrase), make_row(3, "")]
    kept, rejected = near_dedup(rows, "near")
    assert ids(kept) == ["rec00", "rec01", "rec03"]
    assert ids(rejected) == ["rec02"]
    reason = rejected[0]["reason"]
    assert reason.startswith("near-duplicate of rec00 (estimated Jaccard ")
    assert reason.endswith(">= 0.85 on response 3-grams)")
    assert float(reason.split("Jaccard ")[1].split()[0]) >= 0.85
    assert kept[0]["provenance"]["filters_passed"][-1] == "near"


def test_near_dedup_threshold_controls_what_counts():
    rng = random.Random(3)
    words = BASE.split()
    edited = list(words)
    for k in rng.sample(range(len(words)), 8):  # ~15% of words changed
        edited[k] = "zzz" + str(k)
    rows = [make_row(0, BASE), make_row(1, " ".join(edited))]
    assert len(near_dedup(rows, "n", threshold=0.9)[1]) == 0
    assert len(near_dedup(rows, "n", threshold=0.3)[1]) == 1


def test_near_dedup_compares_with_kept_rows_only_and_is_deterministic():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [[rng.choice(vocab) for _ in range(80)] for _ in range(200)]
    rows = [make_row(i, " ".join(d)) for i, d in enumerate(docs)]
    # 50 copies with one word changed each, appended after the originals
    for k in range(50):
        d = list(docs[k])
        d[rng.randrange(80)] = "changed"
        rows.append(make_row(200 + k, " ".join(d)))
    kept, rejected = near_dedup(rows, "n")
    assert len(kept) + len(rejected) == 250
    assert set(ids(rejected)) <= {f"rec{200 + k:02d}" for k in range(50)}
    assert len(rejected) >= 45  # one word in 80 → Jaccard ≈ 0.93
    for r in rejected:
        dup_of = int(r["reason"].split("near-duplicate of rec")[1].split()[0])
        assert dup_of == int(r["id"][3:]) - 200
    again = near_dedup(rows, "n")
    assert ids(again[0]) == ids(kept)
    other_seed = near_dedup(rows, "n", seed=7)
    assert abs(len(other_seed[1]) - len(rejected)) <= 5


def test_near_dedup_short_texts_and_bad_params():
    rows = [make_row(0, "yes"), make_row(1, "Yes."), make_row(2, "no")]
    kept, rejected = near_dedup(rows, "n", ngram=3)
    assert ids(kept) == ["rec00", "rec02"] and ids(rejected) == ["rec01"]
    with pytest.raises(UsageError, match="threshold must be in"):
        near_dedup(rows, "n", threshold=1.5)
    with pytest.raises(UsageError, match="num_perm must be a power of two"):
        near_dedup(rows, "n", num_perm=100)


# --------------------------------------------------------------------------- best-of

def test_best_of_keeps_highest_per_group_with_reasons():
    rows = [
        make_row(0, prompt_id="A", judge_score=3.0, generation_index=0),
        make_row(1, prompt_id="A", judge_score=5.0, generation_index=1),
        make_row(2, prompt_id="A", judge_score=None, generation_index=2),
        make_row(3, prompt_id="B", judge_score=2.0),
    ]
    kept, rejected = best_of(rows, "pick", by="judge_score")
    assert ids(kept) == ["rec01", "rec03"]
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons["rec00"] == "best_of: rec01 scored higher (by=judge_score: 5.0 vs 3.0)"
    assert reasons["rec02"] == "best_of: rec01 scored higher (by=judge_score: 5.0 vs None)"


def test_best_of_lower_is_better_and_bools():
    rows = [make_row(0, prompt_id="A", cost=0.3), make_row(1, prompt_id="A", cost=0.1)]
    kept, rejected = best_of(rows, "cheap", by="cost", higher_is_better=False)
    assert ids(kept) == ["rec01"]
    assert rejected[0]["reason"] == "best_of: rec01 scored lower (by=cost: 0.1 vs 0.3)"
    rows = [make_row(0, prompt_id="A", ok_pass=False), make_row(1, prompt_id="A", ok_pass=True)]
    assert ids(best_of(rows, "b", by="ok_pass")[0]) == ["rec01"]


def test_best_of_ties_go_to_lowest_generation_index_then_teacher():
    rows = [
        make_row(0, prompt_id="A", judge_score=4.0, generation_index=1, teacher="a"),
        make_row(1, prompt_id="A", judge_score=4.0, generation_index=0, teacher="z"),
        make_row(2, prompt_id="A", judge_score=4.0, generation_index=0, teacher="m"),
    ]
    kept, rejected = best_of(rows, "pick", by="judge_score")
    assert ids(kept) == ["rec02"]
    assert rejected[0]["reason"].startswith("best_of: rec02 won the tie (by=judge_score: tie at 4.0")


def test_best_of_all_none_and_errors():
    rows = [make_row(0, prompt_id="A", s=None), make_row(1, prompt_id="A", s=None, generation_index=-1)]
    kept, _ = best_of(rows, "b", by="s")
    assert ids(kept) == ["rec01"]
    with pytest.raises(UsageError, match="must be a number or a bool, got str 'high' in record rec00"):
        best_of([make_row(0, s="high")], "b", by="s")
    with pytest.raises(UsageError, match="no row has a column 'scroe'"):
        best_of([make_row(0, score=1)], "b", by="scroe")


def test_best_of_group_by_several_columns():
    rows = [
        make_row(0, prompt_id="A", teacher="x", s=1),
        make_row(1, prompt_id="A", teacher="y", s=2),
        make_row(2, prompt_id="A", teacher="x", s=3),
    ]
    kept, _ = best_of(rows, "b", by="s", group_by=("prompt_id", "teacher"))
    assert ids(kept) == ["rec01", "rec02"]
