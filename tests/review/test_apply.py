"""Applying pulled reviews to rows: pure, idempotent, and faithful to the row contract."""

import copy

from distillflow.review.pull import apply, decide, trainable
from tests.review.records import make_row


def resp(user, decision, status="submitted", **values):
    return {"user": user, "status": status, "values": {"decision": decision, **values}}


def _records():
    return [
        {"id": make_row(1)["id"], "responses": [resp("ann", "accept", quality=5)]},
        {"id": make_row(2)["id"], "responses": [resp("ann", "reject", comment="wrong sum")]},
        {"id": make_row(3)["id"], "responses": [resp("ann", "accept", corrected_response="Fixed answer 3", quality=4)]},
        {"id": make_row(4)["id"], "responses": [resp("ann", "accept", status="draft")]},  # drafts do not count
        {"id": make_row(5)["id"], "responses": []},  # pushed, nobody answered
    ]


def _rows():
    return [make_row(i) for i in range(1, 7)]  # row 6 was never pushed


def test_apply_moves_rejections_applies_corrections_and_marks_the_rest():
    rejected_before = [dict(make_row(9), rejected_by="filter", reason="too short")]
    curated, rejected, decisions = apply(_rows(), rejected_before, _records())
    by_id = {r["id"]: r for r in curated}
    assert [r["id"] for r in curated] == [make_row(i)["id"] for i in (1, 3, 4, 5, 6)]
    assert rejected[0]["rejected_by"] == "filter"  # untouched
    gone = rejected[1]
    assert gone["id"] == make_row(2)["id"] and gone["rejected_by"] == "review" and gone["reason"] == "review: wrong sum"
    assert gone["provenance"]["review"]["decision"] == "rejected"
    fixed = by_id[make_row(3)["id"]]
    assert fixed["response"] == "Fixed answer 3"
    assert fixed["provenance"]["review"] == {
        "decision": "accepted", "reviewer": "ann", "quality": 4.0, "comment": None, "corrected": True,
        "original_response": "answer 3",
    }
    assert by_id[make_row(1)["id"]]["provenance"]["review"]["corrected"] is False
    assert by_id[make_row(4)["id"]]["provenance"]["review"] == {"decision": "unreviewed", "pushed": True}
    assert by_id[make_row(6)["id"]]["provenance"]["review"] == {"decision": "unreviewed", "pushed": False}
    assert set(decisions) == {make_row(i)["id"] for i in (1, 2, 3)}
    # the rest of the provenance is kept
    assert fixed["provenance"]["judges"]["judge"]["score"] == 4.0


def test_apply_is_idempotent_and_follows_changed_minds():
    curated, rejected, _ = apply(_rows(), [], _records())
    again = apply(copy.deepcopy(curated), copy.deepcopy(rejected), _records())
    assert again[0] == curated and again[1] == rejected
    # the reviewer now accepts row 2 and withdraws the correction of row 3
    changed = _records()
    changed[1]["responses"] = [resp("ann", "accept")]
    changed[2]["responses"] = [resp("ann", "accept")]
    curated2, rejected2, _ = apply(curated, rejected, changed)
    assert rejected2 == []
    row2 = next(r for r in curated2 if r["id"] == make_row(2)["id"])
    assert "rejected_by" not in row2 and "reason" not in row2
    row3 = next(r for r in curated2 if r["id"] == make_row(3)["id"])
    assert row3["response"] == "answer 3" and row3["provenance"]["review"]["corrected"] is False


def test_decide_majority_tie_rejects_and_comments_are_attributed():
    two = decide([resp("ann", "accept"), resp("bob", "reject", comment="hallucinated")], "x")
    assert two["decision"] == "rejected" and two["reviewer"] == "ann, bob"
    assert two["comment"] == "bob: hallucinated" and two["reviewers"] == {"ann": True, "bob": False}
    three = decide([resp("ann", "accept"), resp("bob", "reject"), resp("cy", "accept", quality=3)], "x")
    assert three["decision"] == "accepted" and three["quality"] == 3
    assert decide([resp("ann", "accept", status="discarded")], "x") is None
    # a "correction" equal to the original is no correction
    assert decide([resp("ann", "accept", corrected_response=" x ")], "x")["corrected"] is False


def test_trainable_required_keeps_only_accepted():
    curated, _, _ = apply(_rows(), [], _records())
    assert len(trainable(curated, "optional")) == 5
    assert [r["id"] for r in trainable(curated, "required")] == [make_row(1)["id"], make_row(3)["id"]]
