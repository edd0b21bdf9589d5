"""Shards stream through the steps: outputs equal one big shard's, steps overlap, resume is per shard."""

from __future__ import annotations

import json

import distillflow as df
from benchmarks.fake_endpoint import EndpointThread

PREFIX = "Please explain the following carefully, with an example a student would remember, " * 2  # > 160 chars


def _rows(n: int = 30) -> str:
    # The endpoint answers "Answer: " + the first 160 characters, so prompts in the same group of 5 get the
    # same response: exact dedup on the response must reject them across shard boundaries, in order.
    out = []
    for i in range(n):
        text = f"group {i // 5:02d}: {PREFIX} item {i}" if i % 3 else f"short question {i}"
        out.append({"question": text, "answer": str(i)})
    return "".join(f"\n    - {json.dumps(r)}" for r in out)


def _yaml(url: str, shard_size: int, in_flight: int, where: str = "len(response) > 5") -> str:
    return f"""name: stream
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{_rows()}
teachers:
  - {{name: teacher, provider: openai, base_url: "{url}", model: fake-teacher, params: {{max_tokens: 32, seed: 1}}}}
steps:
  - {{kind: generate, num_generations: 2}}
  - {{kind: verify, check: contains, reference: reference}}
  - {{kind: best_of, by: verify_pass}}
  - {{kind: filter, where: "{where}"}}
  - {{kind: dedup, columns: [response]}}
execution: {{shard_size: {shard_size}, shards_in_flight: {in_flight}}}
"""


def _files(run) -> dict[str, str]:
    return {name: (run / "data" / name).read_text() for name in ("curated.jsonl", "rejected.jsonl", "heldout.jsonl")}


def test_many_small_shards_give_exactly_the_outputs_of_one_shard(endpoint, write_yaml, tmp_path):
    one = df.run(df.load(write_yaml(_yaml(endpoint.base_url, 1000, 1), "one.yaml")), out=tmp_path / "one", progress=False)
    many = df.run(df.load(write_yaml(_yaml(endpoint.base_url, 4, 3), "many.yaml")), out=tmp_path / "many", progress=False)
    assert many.manifest["execution"]["shards"] == 8 and one.manifest["execution"]["shards"] == 1
    assert _files(tmp_path / "many") == _files(tmp_path / "one")
    for key in ("curated", "rejected", "counts", "teachers"):
        assert many.manifest[key] == one.manifest[key], key
    dedup = [r for r in many.rejected if r["rejected_by"] == "dedup"]
    # long prompts of one group share a response (the endpoint echoes 160 characters): all but the
    # first of each group are duplicates, some found in another shard than their first
    groups: dict[int, int] = {}
    for i in range(30):
        if i % 3:
            groups[i // 5] = groups.get(i // 5, 0) + 1
    expected = sum(n - 1 for n in groups.values())
    assert expected == 14 and len(dedup) == expected
    assert all(r["reason"].startswith("exact duplicate of ") for r in dedup)
    assert {json.loads(line)["prompt"][:8] for line in (tmp_path / "many" / "data" / "curated.jsonl").open()} >= {"group 00", "group 05"}
    assert many.manifest["curated"] == 30 - expected
    assert many.dataset("curated").num_rows == 30 - expected  # memory-mapped from the Parquet file


def test_steps_overlap_and_a_rerun_skips_every_committed_shard(write_yaml, tmp_path):
    with EndpointThread(latency=(0.02, 0.04)) as ep:
        path = write_yaml(_yaml(ep.base_url, 5, 2), "p.yaml")
        res = df.run(df.load(path), out=tmp_path / "run", progress=False)
        sent = ep.stats["requests"]
        assert sent == 60  # 30 prompts x 2 generations
        timings = res.manifest["timings"]
        assert set(timings) == {"generate", "verify", "best_of", "filter", "dedup"}
        shards = tmp_path / "run" / "cache" / "shards"
        committed = sorted(p.relative_to(shards).as_posix() for p in shards.glob("*/*/*/meta.json"))
        assert len(committed) == 5 * 6  # 5 steps x 6 shards
        again = df.run(df.load(path), out=tmp_path / "run", progress=False)
        assert ep.stats["requests"] == sent  # nothing asked again
        assert again.manifest["teachers"]["teacher"]["cached"] == 60 and again.manifest["teachers"]["teacher"]["new"] == 0
        # a changed filter reruns the filter and what follows, from committed upstream shards
        before = {p: p.stat().st_mtime_ns for p in (shards / "generate").glob("*/*/meta.json")}
        changed = df.run(df.load(write_yaml(_yaml(ep.base_url, 5, 2, where="len(response) > 500"), "p2.yaml")),
                         out=tmp_path / "run", progress=False)
        assert ep.stats["requests"] == sent
        assert {p: p.stat().st_mtime_ns for p in (shards / "generate").glob("*/*/meta.json")} == before
        assert changed.manifest["curated"] == 0 and changed.manifest["counts"]["filter"]["rejected"] == 30


def test_a_judge_works_on_early_shards_while_later_ones_are_generated(tmp_path, write_yaml):
    with EndpointThread(latency=(0.01, 0.02), grade=True) as ep:
        text = _yaml(ep.base_url, 5, 2).replace(
            "  - {kind: verify, check: contains, reference: reference}\n  - {kind: best_of, by: verify_pass}\n",
            "  - {kind: judge, teacher: teacher}\n  - {kind: best_of, by: judge_score}\n")
        res = df.run(df.load(write_yaml(text)), out=tmp_path / "run", progress=False)
    stamps = json.loads((tmp_path / "run" / "manifest.json").read_text())["step_spans"]
    # shard 2's generation starts only after shard 0 went through every step, judge included
    assert stamps["judge"][0] < stamps["generate"][1]
    assert res.manifest["counts"]["judge"]["in"] == 60
    assert all(r["judge_status"] == "scored" for r in res.curated)
