"""A teacher on three replicas (real local HTTP endpoints), one of them stopped mid-run.

The stopped replica's port is then taken by a listener that accepts and drops every connection
(a dead server behind a live port), so every request that still reaches it is counted on the
server side and can be compared with the client's probes.
"""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest

import distillflow as df
from benchmarks.fake_endpoint import EndpointThread, SharedGauge
from distillflow.engine.client import ChatRequest, OpenAICompatibleClient
from distillflow.engine.providers import base_url, preflight_teacher, teacher_identity
from distillflow.spec.models import TeacherSpec

pytestmark = pytest.mark.timeout(120)


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class DeadPort:
    """Accepts connections on a port and closes them at once, counting them."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def test_client_routes_around_a_stopped_replica_within_one_window():
    gauge = SharedGauge()
    eps = [EndpointThread(max_concurrency=64, latency=(0.04, 0.08), gauge=gauge).start() for _ in range(3)]
    a, b, c = eps
    n, window = 400, 6
    client = OpenAICompatibleClient([e.base_url for e in eps], "fake-teacher", concurrency=window,
                                    timeout_s=10, max_retries=3)
    results: dict[str, list] = {}
    reqs = [ChatRequest(key=f"k{i}", messages=[{"role": "user", "content": f"q{i}"}], params={"max_tokens": 8})
            for i in range(n)]
    done = threading.Event()
    dead = None

    def run():
        try:
            client.run(reqs, lambda r: results.setdefault(r.key, []).append(r))
        finally:
            done.set()

    t = threading.Thread(target=run, daemon=True)
    try:
        t.start()
        wait_for(lambda: b.stats["completions"] >= 40, what="replica b to answer 40 requests")
        b.stop()
        # B is rested by the first failure of its requests in flight; from then on it may only be probed
        wait_for(lambda: client.replica_stats()[1]["rests"] >= 1, what="replica b to be rested")
        probes_before = client.replica_stats()[1]["probes"]
        dead = DeadPort(_port(b.base_url))
        # A probe counted between these two reads may have met the closed port before the bind (on a
        # loaded machine b.stop() can outlast B's 1 s rest): it may or may not reach the dead port.
        probes_bound = client.replica_stats()[1]["probes"]
        stopped_at = time.monotonic()
        assert done.wait(90), "the run did not finish"
        t.join(5)
        after_s = time.monotonic() - stopped_at
    finally:
        for e in (a, c):
            e.stop()
        if dead is not None:
            dead.close()

    # every request answered exactly once, none failed
    assert sorted(results) == sorted(r.key for r in reqs)
    assert all(len(v) == 1 and v[0].error is None for v in results.values())
    assert {v[0].text for v in results.values()} == {f"Answer: q{i}" for i in range(n)}
    # the teacher's window held across the three replicas together
    assert gauge.max <= window
    stats = client.replica_stats()
    sb = stats[1]
    assert sb["url"] == b.base_url and sb["rests"] >= 1
    # the run outlived B's first rest (1 s), so B was probed, and each probe failed on the dead port
    probes = sb["probes"] - probes_before
    assert after_s > 1.5 and probes >= 1
    # nothing but probes reached the stopped replica, and every probe sent after the bind did
    assert probes - (probes_bound - probes_before) <= dead.connections <= probes
    assert probes <= math.log2(after_s + 1) + 1  # rests of 1, 2, 4, ... s: one probe at the end of each
    # answers: A and C took everything B did not answer before it stopped
    assert stats[0]["ok"] + stats[2]["ok"] + sb["ok"] == n
    assert a.stats["completions"] + c.stats["completions"] >= n - b.stats["completions"]
    assert stats[0]["failed"] == stats[2]["failed"] == 0


def test_all_replicas_down_fails_the_request_with_the_cause():
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}/v1" for s in socks]
    for s in socks:
        s.close()  # nothing listens there: connection refused
    client = OpenAICompatibleClient(urls, "m", concurrency=2, timeout_s=5, max_retries=2)
    out = []
    t0 = time.monotonic()
    client.run([ChatRequest("k", [{"role": "user", "content": "q"}], {})], out.append)
    assert len(out) == 1 and out[0].transient
    assert "gave up after 3 attempts" in out[0].error
    assert "connection error" in out[0].error or "all 2 replicas are resting" in out[0].error
    assert time.monotonic() - t0 < 30
    assert all(s["failed"] >= 1 for s in client.replica_stats())


PIPELINE = """name: replicas
source:
  kind: inline
  rows: {rows}
teachers:
  - name: teacher
    provider: vllm_server
    base_url: {urls}
    model: fake-teacher
    concurrency: 4
    params: {{max_tokens: 16}}
steps:
  - kind: generate
"""


def _pipeline(urls, n: int) -> str:
    rows = "[" + ", ".join(f'{{prompt: "question {i}"}}' for i in range(n)) + "]"
    url_yaml = urls if isinstance(urls, str) else "[" + ", ".join(urls) + "]"
    return PIPELINE.format(rows=rows, urls=url_yaml)


def test_pipeline_run_with_a_replica_stopped_midway_and_the_cache_survives_replica_changes(write_yaml, tmp_path):
    gauge = SharedGauge()
    eps = [EndpointThread(latency=(0.03, 0.06), gauge=gauge).start() for _ in range(3)]
    a, b, c = eps
    n = 120
    try:
        spec = df.load(write_yaml(_pipeline([e.base_url for e in eps], n)))
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("res", df.run(spec, out=tmp_path / "run", progress=False)),
                             daemon=True)
        t.start()
        wait_for(lambda: b.stats["completions"] >= 10, what="replica b to answer 10 requests")
        b.stop()
        t.join(90)
        assert not t.is_alive(), "the run did not finish"
        res = box["res"]
        prompts = [r["prompt"] for r in res.curated]
        assert sorted(prompts) == sorted(f"question {i}" for i in range(n))  # each exactly once
        assert all(r["response"] == "Answer: " + r["prompt"] for r in res.curated)
        assert res.manifest["teachers"]["teacher"]["new"] == n
        assert gauge.max <= 4
        before = a.stats["requests"] + c.stats["requests"]

        # Replica B removed, then A alone: the first URL is the teacher's identity, so every
        # answer comes from the request cache and no endpoint is asked again.
        spec2 = df.load(write_yaml(_pipeline([a.base_url, c.base_url], n), name="p2.yaml"))
        res2 = df.run(spec2, out=tmp_path / "run", progress=False)
        assert res2.manifest["teachers"]["teacher"]["new"] == 0
        assert a.stats["requests"] + c.stats["requests"] == before
        spec3 = df.load(write_yaml(_pipeline(a.base_url, n), name="p3.yaml"))
        res3 = df.run(spec3, out=tmp_path / "run", progress=False)
        assert res3.manifest["teachers"]["teacher"]["new"] == 0 and res3.manifest["curated"] == n
        assert a.stats["requests"] + c.stats["requests"] == before
    finally:
        for e in (a, c):
            e.stop()


def test_identity_is_the_first_url(tmp_path):
    one = TeacherSpec(name="t", provider="vllm_server", model="m", base_url="http://a:1/v1")
    many = TeacherSpec(name="t", provider="vllm_server", model="m", base_url=["http://a:1/v1", "http://b:1/v1"])
    assert base_url(many) == base_url(one) == "http://a:1/v1"
    assert teacher_identity(many) == teacher_identity(one)
    assert teacher_identity(many)["base_url"] == "http://a:1/v1"
    other_first = TeacherSpec(name="t", provider="vllm_server", model="m", base_url=["http://b:1/v1", "http://a:1/v1"])
    assert teacher_identity(other_first) != teacher_identity(one)


def test_preflight_names_the_down_replicas():
    with EndpointThread(latency=(0, 0)) as up1, EndpointThread(latency=(0, 0)) as up2:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        s.close()
        t = TeacherSpec(name="t", provider="vllm_server", model="fake-teacher",
                        base_url=[up1.base_url, down, up2.base_url])
        ok, detail = preflight_teacher(t)
        assert not ok
        assert detail.startswith(f"1 of 3 replicas down — DOWN {down}: cannot reach the teacher endpoint {down}/models")
        assert f"Up: {up1.base_url}, {up2.base_url}." in detail
        t_ok = TeacherSpec(name="t", provider="vllm_server", model="fake-teacher", base_url=[up1.base_url, up2.base_url])
        ok, detail = preflight_teacher(t_ok)
        assert ok and detail == f"all 2 replicas reachable, model 'fake-teacher' served: {up1.base_url}, {up2.base_url}"
