"""End-to-end runs against a local OpenAI-compatible endpoint: outputs, provenance, resume, budget."""

from __future__ import annotations

import json
import shutil

import pytest

from typer.testing import CliRunner

import distillflow as df
from distillflow.cli import app
from tests.support import pipeline_yaml
from distillflow.errors import TeacherError

STEPS = """  - kind: generate
    num_generations: 2
  - kind: verify
    check: contains
    reference: reference
  - kind: filter
    where: "verify_pass and len(response) > 3"
"""


def _requests(ep) -> int:
    return ep.stats["requests"]


def test_run_writes_dataset_with_provenance(endpoint, write_yaml, tmp_path):
    spec = df.load(write_yaml(pipeline_yaml(endpoint.base_url, STEPS)))
    res = df.run(spec, out=tmp_path / "run", progress=False)
    out = res.out_dir
    for f in ("data/curated.jsonl", "data/curated.parquet", "data/rejected.jsonl", "manifest.json", "README.md", "pipeline.yaml"):
        assert (out / f).exists(), f
    assert (out / "distiset" / "curated").exists()
    from distilabel.distiset import Distiset

    dist = Distiset.load_from_disk(str(out / "distiset"))  # distilabel's own loader reads it back
    assert dist["curated"].num_rows == res.manifest["curated"]
    assert dist["curated"][0]["response"] == res.curated[0]["response"]
    assert dist["rejected"].num_rows == res.manifest["rejected"]
    m = json.loads((out / "manifest.json").read_text())
    # 4 prompts x 2 generations; the fake teacher echoes the question, so only 'Say hi' contains its reference
    assert m["counts"]["generate"] == {"kind": "generate", "in": 4, "out": 8, "rejected": 0}
    assert m["curated"] == 2 and m["rejected"] == 6
    assert m["teachers"]["teacher"]["requests"] == 8 and m["cost_usd"] > 0
    row = res.curated[0]
    assert row["prompt"] == "Say hi" and row["response"] == "Answer: Say hi"
    prov = row["provenance"]
    assert prov["teacher"]["model"] == "fake-teacher" and prov["teacher"]["params"]["temperature"] == 0.5
    assert prov["verifiers"]["verify"]["pass"] is True and prov["filters_passed"] == ["filter"]
    assert prov["tokens"]["output"] > 0 and prov["source"]["row"] == 1
    rej = res.rejected[0]
    assert rej["rejected_by"] == "filter" and "verify_pass" in rej["reason"]
    card = (out / "README.md").read_text()
    assert "Teachers and their declared terms" in card and "fake-teacher" in card
    lines = (out / "data" / "curated.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["id"] == row["id"]


def test_changing_a_filter_reruns_only_that_step(endpoint, write_yaml, tmp_path):
    path = write_yaml(pipeline_yaml(endpoint.base_url, STEPS))
    df.run(df.load(path), out=tmp_path / "run", progress=False)
    before = _requests(endpoint)
    path.write_text(path.read_text().replace("len(response) > 3", "len(response) > 1000"))
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert _requests(endpoint) == before  # no teacher call for the cached generation
    assert res.manifest["curated"] == 0
    assert res.manifest["teachers"]["teacher"]["cached"] == 8


def test_budget_cap_stops_cleanly_and_resumes(endpoint, write_yaml, tmp_path):
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n    num_generations: 4\n",
                         extra="budget: {max_cost_usd: 0.0008}")
    text = text.replace("input_per_1m: 1.0, output_per_1m: 2.0", "input_per_1m: 1.0, output_per_1m: 10.0")
    path = write_yaml(text)
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert res.manifest["status"] == "budget_exhausted"
    assert 0 < res.manifest["curated"] < 16
    assert res.manifest["cost_usd"] <= 0.0008
    got = res.manifest["curated"]
    before = _requests(endpoint)
    path.write_text(text.replace("max_cost_usd: 0.0008", "max_cost_usd: 1.0"))
    res2 = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert res2.manifest["status"] == "complete" and res2.manifest["curated"] == 16
    assert _requests(endpoint) - before == 16 - got  # answers already received are not bought again


def test_a_request_failing_after_retries_is_quarantined_and_the_run_completes(endpoint, write_yaml, tmp_path):
    rows = """
    - {question: "What is 2+2?", answer: "4"}
    - {question: '@@{"status": 503, "retry_after": 0, "message": "overloaded"}', answer: "x"}
    - {question: "Say hi", answer: "hi"}"""
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n", rows=rows).replace(
        "    price:", "    max_retries: 1\n    price:")
    path = write_yaml(text)
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert res.manifest["status"] == "complete" and res.manifest["curated"] == 2
    [q] = res.rejected
    assert q["rejected_by"] == "generate" and q["reason"] == "teacher_error" and q["attempts"] == 2
    assert q["error"] == "HTTP 503: overloaded (gave up after 2 attempts)" and q["retryable"] is True
    assert q["prompt"].startswith('@@{"status": 503') and q["teacher"] == "teacher"
    on_disk = [json.loads(line) for line in (tmp_path / "run" / "data" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["attempts"]) for r in on_disk] == [("teacher_error", 2)]
    # The failure was not cached as an answer: with the endpoint healed, a fresh ask pays only for it.
    before = _requests(endpoint)
    path.write_text(text.replace('"status": 503, "retry_after": 0', '"status": 503, "times": 0, "retry_after": 0'))
    res2 = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert res2.manifest["curated"] == 3 and res2.rejected == [] and _requests(endpoint) - before == 1


def test_a_sustained_outage_stops_the_run_with_the_resume_hint(endpoint, write_yaml, tmp_path):
    rows = "".join(f"""\n    - {{question: '@@{{"status": 500, "message": "down"}} {i}', answer: "x"}}""" for i in range(30))
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n", rows=rows).replace(
        "    price:", "    max_retries: 0\n    concurrency: 1\n    outage: {failures_in_a_row: 5}\n    price:")
    path = write_yaml(text)
    before = _requests(endpoint)
    with pytest.raises(TeacherError) as info:
        df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert type(info.value).__name__ == "TeacherOutageError" and info.value.exit_code == 1
    msg = str(info.value)
    assert "teacher 'teacher' looks down: 5 requests in a row failed after their retries" in msg
    assert "HTTP 500: down" in msg and "run the same command to resume" in msg
    assert "the records whose requests failed before it stopped are asked again" in msg
    assert _requests(endpoint) - before == 5  # stopped dispatching at once (one request in flight at a time)
    assert not (tmp_path / "run" / "data" / "curated.jsonl").exists()
    assert (tmp_path / "run" / "cache" / "outage.json").is_file()  # what the same command reads to resume


def test_an_outage_seen_only_once_every_request_is_answered_still_stops_the_run(endpoint, write_yaml, tmp_path):
    """All requests in flight at once (fewer than the window), all failing: the breaker opens on the
    last answers, when nothing is left to send. Before, the lane kept that to itself and the run
    ended complete, exit 0, every record quarantined as a teacher error (which a rerun does not ask
    again without --retry-errors)."""
    rows = "".join(f"""\n    - {{question: '@@{{"status": 500, "message": "down"}} all {i}', answer: "x"}}""" for i in range(12))
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n", rows=rows).replace(
        "    price:", "    max_retries: 0\n    concurrency: 64\n    outage: {failures_in_a_row: 5}\n    price:")
    path = write_yaml(text)
    with pytest.raises(TeacherError) as info:
        df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert type(info.value).__name__ == "TeacherOutageError" and info.value.exit_code == 1
    assert "looks down" in str(info.value)
    assert not (tmp_path / "run" / "data" / "curated.jsonl").exists()
    assert (tmp_path / "run" / "cache" / "outage.json").is_file()


OUTAGE_STEPS = """  - kind: generate
  - kind: verify
    check: contains
    reference: reference
  - kind: filter
    where: "verify_pass"
"""


def test_the_same_command_after_an_outage_asks_again_what_failed_while_the_teacher_was_down(write_yaml, tmp_path):
    from benchmarks.fake_endpoint import EndpointThread

    rows = "".join(f'\n    - {{question: "question {i}", answer: "{i}"}}' for i in range(12))
    with EndpointThread(latency=(0.0, 0.0), down_after=6) as ep:
        text = pipeline_yaml(ep.base_url, OUTAGE_STEPS, rows=rows, extra="execution: {shard_size: 2, shards_in_flight: 1}",
                             teacher_extra="    max_retries: 0\n    concurrency: 1\n    outage: {failures_in_a_row: 3}")
        path = write_yaml(text)
        with pytest.raises(TeacherError, match="looks down"):
            df.run(df.load(path), out=tmp_path / "run", progress=False)
        st = CliRunner().invoke(app, ["status", str(tmp_path / "run")], env={"COLUMNS": "300"})
        assert st.exit_code == 0 and "stopped by a teacher outage (teacher 'teacher' looks down: 3 requests in a row" in st.output
        # one request at a time: 6 answered (shards 0-2), then shard 3's two failed and were committed
        # as quarantined, and shard 4's first failure was the third in a row
        assert (ep.stats["completions"], ep.stats["refused_down"]) == (6, 3)
        # the invocation that stopped is named in the file and in the commits it made
        [stopped] = json.loads((tmp_path / "run" / "cache" / "outage.json").read_text())["attempts"]
        assert len(stopped) == 12
        ep.stats["down"] = False  # the teacher is back
        res = df.run(df.load(path), out=tmp_path / "run", progress=False)
        # the plain rerun asked shard 3's two again (and the six never answered), and the steps after
        # generate saw them: every record curated, none lost, no answer bought twice
        assert res.manifest["status"] == "complete" and res.manifest["quarantined"] == 0
        assert res.manifest["curated"] == 12 and sorted(r["reference"] for r in res.curated) == sorted(str(i) for i in range(12))
        assert ep.stats["completions"] == 12 and ep.stats["requests"] == 12 + 3
        assert not (tmp_path / "run" / "cache" / "outage.json").exists()
        assert "outage" not in CliRunner().invoke(app, ["status", str(tmp_path / "run")]).output
        again = df.run(df.load(path), out=tmp_path / "run", progress=False)
        assert again.manifest["curated"] == 12 and ep.stats["requests"] == 15


def test_after_an_outage_only_the_stopped_runs_transient_failures_are_asked_again(endpoint, write_yaml, tmp_path):
    """A record quarantined after a transient error by an earlier, complete run is not asked again
    by the run after an outage (that is --retry-errors' job); those the stopped invocations
    quarantined are. The outage here is cache/outage.json as a stopped run of another invocation
    writes it (the real outage path is the test above, whose rerun relies on the ids matching)."""
    rows = """
    - {question: "What is 2+2?", answer: "4"}
    - {question: '@@{"status": 503, "retry_after": 0, "message": "busy"} (old failure)', answer: "x"}"""
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n", rows=rows).replace("    price:", "    max_retries: 0\n    price:")
    path = write_yaml(text)
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert (res.manifest["status"], res.manifest["curated"], res.manifest["quarantined"]) == ("complete", 1, 1)
    assert res.rejected[0]["retryable"] is True
    marker = tmp_path / "run" / "cache" / "outage.json"
    before = _requests(endpoint)
    marker.write_text(json.dumps({"at": "2026-12-04T10:00:00Z", "error": "teacher 'teacher' looks down",
                                  "attempts": ["0123456789ab"]}))
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert _requests(endpoint) == before  # not asked again: quarantined by a run that did not stop
    assert (res.manifest["status"], res.manifest["quarantined"]) == ("complete", 1) and not marker.exists()
    # a file from a version that did not name the invocations: any transient failure is asked again
    marker.write_text(json.dumps({"at": "2026-12-04T10:00:00Z", "error": "teacher 'teacher' looks down"}))
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert _requests(endpoint) == before + 1
    assert (res.manifest["status"], res.manifest["quarantined"]) == ("complete", 1) and not marker.exists()


def test_a_ctrl_c_after_the_breaker_opened_still_records_the_outage(write_yaml, tmp_path, monkeypatch):
    # The Ctrl-C is raised where the breaker opens (the one thing mocked: a signal landing in that
    # window, between the breaker opening and the run stopping on its outage, cannot be timed here)
    from benchmarks.fake_endpoint import EndpointThread
    from distillflow.engine.scheduler import CircuitBreaker

    record = CircuitBreaker.record

    def interrupted(self, ok, error=None):
        was_open = self.is_open
        now_open = record(self, ok, error)
        if now_open and not was_open:
            raise KeyboardInterrupt
        return now_open

    monkeypatch.setattr(CircuitBreaker, "record", interrupted)
    rows = "".join(f'\n    - {{question: "question {i}", answer: "{i}"}}' for i in range(12))
    with EndpointThread(latency=(0.0, 0.0), down_after=6) as ep:
        text = pipeline_yaml(ep.base_url, OUTAGE_STEPS, rows=rows, extra="execution: {shard_size: 2, shards_in_flight: 1}",
                             teacher_extra="    max_retries: 0\n    concurrency: 1\n    outage: {failures_in_a_row: 3}")
        path = write_yaml(text)
        with pytest.raises(KeyboardInterrupt):
            df.run(df.load(path), out=tmp_path / "run", progress=False)
        # recorded as the outage it was: the same command asks again what failed while it was down
        assert (tmp_path / "run" / "cache" / "outage.json").is_file()
        assert "3 requests in a row" in (tmp_path / "run" / "cache" / "outage.json").read_text()
        monkeypatch.setattr(CircuitBreaker, "record", record)
        ep.stats["down"] = False
        res = df.run(df.load(path), out=tmp_path / "run", progress=False)
        assert res.manifest["status"] == "complete" and res.manifest["quarantined"] == 0
        assert res.manifest["curated"] == 12 and ep.stats["completions"] == 12
        assert not (tmp_path / "run" / "cache" / "outage.json").exists()


def _flaky_second(endpoint, write_yaml, tag: str):
    """generate ▸ verify ▸ filter over three prompts, the second failing twice with 503 before it
    answers (quarantined after its 2 attempts); ``tag`` keeps its fault count apart from other
    tests' (the endpoint counts attempts per prompt text)."""
    rows = f"""
    - {{question: "What is 2+2? 4", answer: "4"}}
    - {{question: '@@{{"status": 503, "times": 2, "retry_after": 0}} 4 {tag}', answer: "4"}}
    - {{question: "Say hi", answer: "hi"}}"""
    text = pipeline_yaml(endpoint.base_url, OUTAGE_STEPS, rows=rows).replace("    price:", "    max_retries: 1\n    price:")
    return write_yaml(text)


def test_retry_errors_reaches_the_steps_after_the_one_that_failed(endpoint, write_yaml, tmp_path):
    path = _flaky_second(endpoint, write_yaml, "(reaches)")
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert (res.manifest["curated"], res.manifest["quarantined"]) == (2, 1)
    res = df.run(df.load(path), out=tmp_path / "run", progress=False, retry_errors=True)
    # verify and filter ran again on the shard whose generation changed (their stored output lacked it)
    assert (res.manifest["curated"], res.manifest["quarantined"]) == (3, 0)
    assert any(r["prompt"].startswith("@@") for r in res.curated)


def test_a_global_step_after_a_retried_shard_runs_again_on_the_later_shards(endpoint, write_yaml, tmp_path):
    # shard 0's record fails at first; shard 1 has a record with the same reference, which dedup kept
    # while shard 0's was missing; once shard 0's is answered it comes first and shard 1's is the duplicate
    rows = """
    - {question: '@@{"status": 503, "times": 2, "retry_after": 0} first', answer: "same"}
    - {question: "second", answer: "same"}
    - {question: "third", answer: "other"}"""
    steps = "  - kind: generate\n  - {kind: dedup, columns: [reference]}\n"
    text = pipeline_yaml(endpoint.base_url, steps, rows=rows, extra="execution: {shard_size: 1}").replace(
        "    price:", "    max_retries: 1\n    price:")
    path = write_yaml(text)
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert sorted(r["prompt"] for r in res.curated) == ["second", "third"]
    res = df.run(df.load(path), out=tmp_path / "run", progress=False, retry_errors=True)
    assert [r["prompt"][:2] for r in res.curated] == ["@@", "th"]
    assert [r["prompt"] for r in res.rejected if r["rejected_by"] == "dedup"] == ["second"]


def test_permanent_error_rejects_only_that_record(endpoint, write_yaml, tmp_path):
    rows = """
    - {question: '@@{"status": 400, "message": "prompt too long"}', answer: "x"}
    - {question: "Say hi", answer: "hi"}"""
    path = write_yaml(pipeline_yaml(endpoint.base_url, "  - kind: generate\n", rows=rows))
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert res.manifest["curated"] == 1
    [r] = res.rejected
    assert (r["rejected_by"], r["reason"], r["error"], r["attempts"], r["retryable"]) == (
        "generate", "teacher_error", "HTTP 400: prompt too long", 1, False)


def test_a_failed_judge_request_quarantines_its_row(endpoint, write_yaml, tmp_path):
    # The judge's endpoint is down (nothing listens on port 9): both rows are quarantined by the
    # judge with the connection error, the run completes (2 failures do not open the breaker).
    steps = "  - kind: generate\n    teachers: [teacher]\n  - kind: judge\n    teacher: judge\n"
    text = pipeline_yaml(endpoint.base_url, steps).replace("steps:\n", """  - name: judge
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: fake-teacher
    max_retries: 0
steps:
""", 1)
    rows_in = 4
    res = df.run(df.load(write_yaml(text)), out=tmp_path / "run", progress=False)
    assert res.manifest["status"] == "complete" and res.manifest["curated"] == 0
    assert len(res.rejected) == rows_in
    for r in res.rejected:
        assert (r["rejected_by"], r["reason"], r["attempts"], r["retryable"]) == ("judge", "teacher_error", 1, True)
        assert r["error"].startswith("connection error to http://127.0.0.1:9/v1/chat/completions")
        assert r["response"].startswith("Answer: ")  # the teacher's answer is kept in the rejected row


def test_logprobs_become_filterable_columns(endpoint, write_yaml, tmp_path):
    steps = "  - kind: generate\n  - kind: filter\n    where: 'logprob_min > -0.035'\n"
    text = pipeline_yaml(endpoint.base_url, steps).replace("max_tokens: 32}", "max_tokens: 32, logprobs: true}")
    res = df.run(df.load(write_yaml(text)), out=tmp_path / "run", progress=False)
    # fake teacher: token i has logprob -0.01*(i+1); 'Answer: Say hi' has 3 tokens -> min -0.03
    assert [r["prompt"] for r in res.curated] == ["Say hi"]
    assert res.curated[0]["logprob_mean"] == pytest.approx(-0.02)


def test_multi_teacher_best_of_and_branch_merge(endpoint, write_yaml, tmp_path):
    second = f"""  - name: second
    provider: openai
    base_url: {endpoint.base_url}
    model: fake-teacher
    params: {{temperature: 0.9, max_tokens: 32}}"""
    steps = """  - kind: generate
    num_generations: 2
  - {id: check, kind: verify, check: contains, reference: reference}
  - {id: grade, kind: judge, teacher: teacher, after: [generate]}
  - {id: best, kind: best_of, by: check_pass, after: [check, grade]}
"""
    res = df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps, teacher_extra=second))), out=tmp_path / "r", progress=False)
    m = res.manifest
    assert m["counts"]["generate"]["out"] == 4 * 2 * 2
    assert m["counts"]["best"]["out"] == 4 and m["counts"]["best"]["rejected"] == 12
    assert {r["teacher"] for r in res.rejected} == {"teacher", "second"}
    kept = res.curated[0]
    assert "check_pass" in kept and "grade_status" in kept  # both branches' columns merged
    assert set(kept["provenance"]["verifiers"]) == {"check"} and set(kept["provenance"]["judges"]) == {"grade"}


def test_source_options_heldout_system_prompt_dedup(endpoint, write_yaml, tmp_path):
    rows = "".join(f'\n    - {{question: "Question number {i}?", answer: "{i}"}}' for i in range(10))
    rows += '\n    - {question: "Question number 3?", answer: "3"}'
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n  - {kind: dedup, method: exact, columns: [response]}\n", rows=rows)
    text = text.replace("  columns:", "  system_prompt: Be brief.\n  shuffle: true\n  seed: 1\n  heldout: {size: 3, seed: 0}\n  columns:")
    res = df.run(df.load(write_yaml(text)), out=tmp_path / "r", progress=False)
    assert len(res.heldout) == 3 and res.manifest["heldout"] == 3
    assert res.manifest["counts"]["source"]["rejected"] == 1  # the duplicate prompt, with its reason
    assert any(r["reason"] == "duplicate prompt" for r in res.rejected)
    held = {r["prompt"] for r in res.heldout}
    assert not held & {r["prompt"] for r in res.curated}
    assert res.curated[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (res.out_dir / "data" / "heldout.jsonl").read_text().count("\n") == 3


def test_push_to_hub_without_token_keeps_outputs(endpoint, write_yaml, tmp_path, monkeypatch):
    from distillflow.errors import ConfigurationError

    monkeypatch.delenv("DF_HUB_TOKEN", raising=False)
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n",
                         extra="output: {push_to_hub: {repo_id: me/data, token_env: DF_HUB_TOKEN}}")
    with pytest.raises(ConfigurationError, match="DF_HUB_TOKEN is not set") as info:
        df.run(df.load(write_yaml(text)), out=tmp_path / "run", progress=False)
    assert "outputs are saved" in str(info.value)
    assert (tmp_path / "run" / "data" / "curated.jsonl").read_text().count("\n") == 4


def test_the_collector_skips_the_pre_run_heap_during_a_run_only(endpoint, write_yaml, tmp_path):
    import gc

    from distillflow.engine.runner import _settled_heap

    with _settled_heap():
        assert gc.get_freeze_count() > 1000  # the imports: not scanned by the run's collections
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a process that froze objects itself keeps them frozen, no more, no less
    own = gc.get_freeze_count()
    # Frozen objects that lose their last reference still leave the frozen set (a few, depending on
    # what earlier tests left behind), so the count may only fall a little. 10,000 new objects that
    # stay alive show whether anything froze them: the count would grow by at least that many.
    alive = [[i] for i in range(10_000)]
    try:
        with _settled_heap():
            assert own - 1_000 < gc.get_freeze_count() <= own
        assert own - 1_000 < gc.get_freeze_count() <= own
    finally:
        gc.unfreeze()
    assert len(alive) == 10_000
    res = df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, STEPS))), out=tmp_path / "run", progress=False)
    assert res.manifest["status"] == "complete" and gc.get_freeze_count() == 0


def _stop_at(monkeypatch, step_id: str, shard: int):
    """Make the next run raise when it reaches step ``step_id`` of shard ``shard`` (a run killed there)."""
    from distillflow.engine.runner import NodeRunner

    real = NodeRunner.node

    async def node(self, k, nid, outputs, state):
        if nid == step_id and k == shard:
            raise KeyboardInterrupt
        return await real(self, k, nid, outputs, state)

    monkeypatch.setattr(NodeRunner, "node", node)
    return lambda: monkeypatch.setattr(NodeRunner, "node", real)


def test_a_retry_run_stopped_after_the_retried_step_loses_nothing(endpoint, write_yaml, tmp_path, monkeypatch):
    path = _flaky_second(endpoint, write_yaml, "(stopped)")
    assert df.run(df.load(path), out=tmp_path / "run", progress=False).manifest["quarantined"] == 1
    restore = _stop_at(monkeypatch, "verify", 0)
    with pytest.raises(KeyboardInterrupt):  # generate's new output is committed, verify's not yet
        df.run(df.load(path), out=tmp_path / "run", progress=False, retry_errors=True)
    restore()
    # the plain rerun: verify and filter were forgotten when generate's commit was replaced
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert (res.manifest["curated"], res.manifest["quarantined"]) == (3, 0)


def test_a_retry_run_stopped_before_a_later_shard_of_a_global_step_keeps_one_of_the_duplicates(
        endpoint, write_yaml, tmp_path, monkeypatch):
    rows = """
    - {question: '@@{"status": 503, "times": 2, "retry_after": 0} first (stopped)', answer: "same"}
    - {question: "second", answer: "same"}
    - {question: "third", answer: "other"}"""
    text = pipeline_yaml(endpoint.base_url, "  - kind: generate\n  - {kind: dedup, columns: [reference]}\n", rows=rows,
                         extra="execution: {shard_size: 1}").replace("    price:", "    max_retries: 1\n    price:")
    path = write_yaml(text)
    df.run(df.load(path), out=tmp_path / "run", progress=False)
    restore = _stop_at(monkeypatch, "dedup", 1)
    with pytest.raises(KeyboardInterrupt):  # shard 0 done anew; dedup of shard 1 not yet
        df.run(df.load(path), out=tmp_path / "run", progress=False, retry_errors=True)
    restore()
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    assert sorted(r["prompt"][:2] for r in res.curated) == ["@@", "th"]


def test_a_lost_commit_recomputed_with_new_answers_takes_the_later_steps_commits_with_it(
        endpoint, write_yaml, tmp_path, monkeypatch):
    # generate's commit for the shard is lost (a kill inside the commit, an unreadable file) while
    # verify's and filter's survive; generate computed again now gets the answer that failed before
    path = _flaky_second(endpoint, write_yaml, "(lost)")
    assert df.run(df.load(path), out=tmp_path / "run", progress=False).manifest["curated"] == 2
    [gen] = (tmp_path / "run" / "cache" / "shards" / "generate").glob("*/0000000")
    shutil.rmtree(gen)
    restore = _stop_at(monkeypatch, "filter", 0)
    with pytest.raises(KeyboardInterrupt):  # generate and verify committed anew, filter not yet
        df.run(df.load(path), out=tmp_path / "run", progress=False)
    restore()
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)  # filter's old commit went with verify's
    assert (res.manifest["curated"], res.manifest["quarantined"]) == (3, 0)


def test_a_verifier_module_that_cannot_be_imported_stops_the_run_before_any_request(endpoint, write_yaml, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cwd fallback finds no such module either
    steps = "  - kind: generate\n  - {kind: verify, id: mine, check: 'no_such_module_xyz:fn'}\n"
    p = write_yaml(pipeline_yaml(endpoint.base_url, steps))
    before = _requests(endpoint)
    res = CliRunner().invoke(app, ["run", str(p), "--out", str(tmp_path / "run"), "--no-progress"])
    assert _requests(endpoint) == before  # no teacher answer was paid for a run that could not finish
    assert res.exit_code == 1, res.output
    assert "step 'mine': cannot import module 'no_such_module_xyz'" in res.output + str(res.stderr or "")
    assert not (tmp_path / "run" / "cache" / "requests.sqlite").exists()
