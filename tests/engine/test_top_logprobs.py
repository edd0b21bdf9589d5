"""Teacher top-k log-probabilities: parsed from an OpenAI-shaped body, cached (old caches still read),
computed for local transformers; and seeded local sampling (same seed -> same answers)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from distillflow.engine.cache import RequestCache
from distillflow.engine.client import ChatRequest, ChatResult, OpenAICompatibleClient, _parse_completion


def _body(top: bool = True) -> bytes:
    content = [
        {"token": "4", "logprob": -0.01, "top_logprobs": [{"token": "4", "logprob": -0.01},
                                                          {"token": "5", "logprob": -4.7}]},
        {"token": "2", "logprob": -0.2, "top_logprobs": [{"token": "2", "logprob": -0.2},
                                                         {"token": "3", "logprob": -1.8}]},
    ]
    return json.dumps({"choices": [{"message": {"content": "42"}, "finish_reason": "stop",
                                    "logprobs": {"content": content if top else None}}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()


def test_top_logprobs_are_asked_and_parsed_only_when_requested():
    client = OpenAICompatibleClient("http://127.0.0.1:9/v1", "m")
    req = ChatRequest("k", [{"role": "user", "content": "40+2?"}], {"top_logprobs": 2, "seed": 7}, {})
    assert json.loads(client._payload(req)) == {
        "model": "m", "messages": req.messages, "top_logprobs": 2, "logprobs": True, "seed": 7}
    res = _parse_completion(req, _body(), 0.1)
    assert res.top_logprobs == [[["4", -0.01], ["5", -4.7]], [["2", -0.2], ["3", -1.8]]]
    plain = ChatRequest("k", req.messages, {}, {})
    assert _parse_completion(plain, _body(), 0.1).top_logprobs is None
    assert _parse_completion(req, _body(top=False), 0.1).top_logprobs is None


def test_cache_keeps_top_logprobs_and_reads_caches_written_before_them(tmp_path):
    path = tmp_path / "c.sqlite"
    tops = [[["token_id:10", -0.1], ["token_id:9", -2.5]]]
    with RequestCache(path) as cache:
        cache.put(ChatResult("new", "4", 1, 1, None, "stop", None, 0.1, top_logprobs=tops))
    with sqlite3.connect(path) as db:  # a row as the previous version wrote it: six items
        db.execute("INSERT INTO answers VALUES (?, ?)", ("old", json.dumps(["7", 2, 1, [-0.3], "stop", 0.2])))
    with RequestCache(path) as cache:
        got = cache.get_many(["new", "old"])
    assert got["new"].top_logprobs == tops and got["new"].text == "4"
    assert got["old"].top_logprobs is None and (got["old"].text, got["old"].token_logprobs) == ("7", [-0.3])


def _local_answers(seed, temperature=2.0, top=None, model=None):
    from distillflow.engine.providers import make_request
    from distillflow.engine.providers import build_client, effective_params
    from distillflow.spec.models import TeacherSpec
    from examples.quickstart.arithmetic import demo_teacher_path

    params = {"temperature": temperature, "max_tokens": 6, "seed": seed}
    if top:
        params["top_logprobs"] = top
    t = TeacherSpec(name="t", provider="transformers", model=str(model or demo_teacher_path()), params=params, concurrency=8)
    reqs = []
    for i in range(8):
        for g in range(2):
            p = effective_params(t)
            p["seed"] += g
            reqs.append(make_request(t, [{"role": "user", "content": f"What is {11 + i}+{23 + 2 * i}?"}], p, g, {}))
    out: dict = {}
    build_client(t).run(reqs, lambda r: out.__setitem__(r.key, r))
    return [out[r.key] for r in reqs]


@pytest.mark.timeout(300)
def test_local_transformers_sampling_is_seeded_and_computes_top_logprobs():
    pytest.importorskip("distilabel")
    a = _local_answers(seed=3, top=3)
    b = _local_answers(seed=3, top=3)
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.top_logprobs for r in a] == [r.top_logprobs for r in b]
    # at temperature 2 the demo teacher spreads its mass: another seed draws other answers
    c = _local_answers(seed=4)
    assert [r.text for r in a] != [r.text for r in c]
    r = a[0]
    assert r.error is None and r.top_logprobs is not None
    # one entry per answer character plus the end-of-turn token, k=3 ids each, best first
    assert len(r.top_logprobs) == len(r.text) + 1
    for pos in r.top_logprobs:
        assert len(pos) == 3 and all(t.startswith("token_id:") for t, _ in pos)
        assert pos[0][1] >= pos[1][1] >= pos[2][1]
    # after a complete, correct answer <|end|> is the teacher's most likely next token (at T=2 a sample can
    # also stop early, after one digit, where a digit stays the most likely: only correct answers are checked)
    right = [x for k, x in enumerate(a) if x.text == str((11 + k // 2) + (23 + 2 * (k // 2)))]
    assert right, [x.text for x in a]
    assert all(x.top_logprobs[-1][0][0] == "token_id:3" for x in right), [(x.text, x.top_logprobs[-1]) for x in right]


@pytest.mark.timeout(300)
def test_local_sampling_does_not_depend_on_where_the_model_lies_or_on_asking_for_logprobs(tmp_path):
    """A clone in another directory, and a KD run that asks for top-k log-probabilities, draw the same
    teacher samples as the quickstart in this checkout (the seed once came from the cache key, which
    holds the model's absolute path and every param)."""
    import shutil

    pytest.importorskip("distilabel")
    from examples.quickstart.arithmetic import demo_teacher_path

    here = _local_answers(seed=5)
    moved = shutil.copytree(demo_teacher_path(), tmp_path / "elsewhere" / "teacher")
    there = _local_answers(seed=5, model=moved)
    with_top = _local_answers(seed=5, top=2)
    assert [r.text for r in there] == [r.text for r in here]
    assert [r.text for r in with_top] == [r.text for r in here]
    assert all(r.top_logprobs is not None for r in with_top) and all(r.top_logprobs is None for r in here)
    assert [r.key for r in there] != [r.key for r in here]  # the cache still tells the two models apart
