"""ReplicaSet (routing, resting, probes) with an injected clock, and route() around an attempt.

Unit tests: no network. ``route`` is driven by a scripted ``attempt`` coroutine standing in for
HTTP (the real HTTP path is tested in test_replicas_run.py against local endpoints).
"""

from __future__ import annotations

import asyncio

import pytest

from distillflow.engine.replicas import ReplicaSet, replica_manifest, route
from distillflow.engine.scheduler import PermanentError, TransientError

A, B, C = "http://a:1/v1", "http://b:1/v1", "http://c:1/v1"


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(urls=(A, B, C), **kw):
    clock = Clock()
    return ReplicaSet(list(urls), clock=clock, **kw), clock


def test_least_loaded_spreads_and_follows_releases():
    rs, _ = make()
    first = [rs.pick() for _ in range(3)]
    assert sorted(t.url for t in first) == [A, B, C]  # one each before any gets a second
    second = [rs.pick() for _ in range(3)]
    assert sorted(t.url for t in second) == [A, B, C]
    b_ticket = next(t for t in first if t.url == B)
    rs.release(b_ticket)  # B now has 1 in flight, the others 2
    assert rs.pick().url == B
    assert [s["in_flight"] for s in rs.stats()] == [2, 2, 2]
    assert all(not t.probe for t in first + second)


def test_failed_replica_rests_with_doubling_backoff_and_one_probe():
    rs, clock = make(rest_base_s=1.0, rest_max_s=4.0)
    t = rs.pick()
    while t.url != B:  # get a ticket on B
        rs.release(t)
        t = rs.pick()
    rs.mark_failed(t, "connection refused")
    rs.release(t)
    # resting for 1 s: 20 picks never touch B
    picks = [rs.pick() for _ in range(20)]
    assert {p.url for p in picks} == {A, C}
    for p in picks:
        rs.release(p)
    assert rs.stats()[1]["state"] == "resting"
    clock.t += 1.0
    probe = rs.pick()
    assert (probe.url, probe.probe) == (B, True)
    # while the probe is out, B gets nothing else
    others = [rs.pick() for _ in range(10)]
    assert {p.url for p in others} == {A, C}
    for p in others:
        rs.release(p)
    rs.mark_failed(probe, "connection refused")
    rs.release(probe)
    clock.t += 1.999  # second rest is 2 s
    assert all(rs.pick().url != B for _ in range(5))
    clock.t += 0.001
    probe = rs.pick()
    assert probe.url == B and probe.probe
    rs.mark_failed(probe, "timeout")
    rs.release(probe)
    # third rest would be 4 s; fourth 8 s is capped at rest_max_s=4
    clock.t += 4.0
    probe = rs.pick()
    assert probe.probe
    rs.mark_failed(probe, "timeout")
    rs.release(probe)
    clock.t += 3.999
    assert rs.ready_in() == 0.0  # A and C are healthy
    assert all(rs.pick().url != B for _ in range(5))
    clock.t += 0.001
    probe = rs.pick()
    assert probe.url == B and probe.probe
    # a successful probe makes B healthy and resets the back-off
    rs.mark_ok(probe)
    rs.release(probe)
    s = rs.stats()[1]
    assert (s["state"], s["probes"], s["rests"], s["failed"], s["last_error"]) == ("healthy", 4, 4, 4, "timeout")
    t = rs.pick()
    while t.url != B:
        t = rs.pick()
    rs.mark_failed(t, "HTTP 503")
    clock.t += 1.0  # back to a 1 s rest
    p = rs.pick()
    assert p.url == B and p.probe


def test_failures_of_requests_sent_before_the_rest_do_not_extend_it():
    rs, clock = make([A, B])
    picks = [rs.pick() for _ in range(4)]
    a_tickets = [t for t in picks if t.url == A]
    assert len(a_tickets) == 2  # least-loaded: two each
    first, stale = a_tickets[:2]
    rs.mark_failed(first, "connection reset")
    rs.mark_failed(stale, "connection reset")  # same outage: counted, not a second rest
    rs.mark_ok(stale)  # nor does a late success of an old request revive it
    s = rs.stats()[0]
    assert (s["state"], s["rests"], s["failed"], s["ok"]) == ("resting", 1, 2, 1)
    clock.t += 1.0  # the rest is still the first one's 1 s
    p = rs.pick()
    assert p.url == A and p.probe


def test_all_resting_reports_the_wait_and_a_probe_in_flight():
    rs, clock = make([A, B])
    ta, tb = rs.pick(), rs.pick()
    rs.mark_failed(ta, "down")
    clock.t += 0.5
    rs.mark_failed(tb, "down")
    for t in (ta, tb):
        rs.release(t)
    assert rs.pick() is None
    assert rs.ready_in() == pytest.approx(0.5)  # the first one's rest ends first
    clock.t += 0.5
    probe = rs.pick()
    assert probe.url == ta.url and probe.probe
    assert rs.pick() is None
    assert rs.ready_in() is None  # wait for the probe's outcome
    rs.release(probe)  # cancelled before an outcome: the next pick may probe again
    again = rs.pick()
    assert again.url == ta.url and again.probe


def test_bad_urls():
    with pytest.raises(ValueError, match="at least one"):
        ReplicaSet([])
    with pytest.raises(ValueError, match="duplicate"):
        ReplicaSet([A, A + "/"])


def test_stats_and_manifest_section():
    rs, clock = make([A, B])
    t = rs.pick()
    rs.mark_ok(t)
    rs.release(t)
    t = rs.pick()
    rs.mark_failed(t, "HTTP 502: bad gateway")
    rs.release(t)
    assert rs.stats() == [
        {"url": A, "state": "healthy", "requests": 1, "ok": 1, "failed": 0, "probes": 0, "rests": 0,
         "in_flight": 0, "last_error": None},
        {"url": B, "state": "resting", "requests": 1, "ok": 0, "failed": 1, "probes": 0, "rests": 1,
         "in_flight": 0, "last_error": "HTTP 502: bad gateway"},
    ]

    class Client:
        def replica_stats(self):
            return rs.stats()

    class Single:
        def replica_stats(self):
            return None

    section = replica_manifest({"t": Client(), "solo": Single(), "other": object()})
    assert list(section) == ["t"]
    assert section["t"][1] == {"url": B, "state": "resting", "requests": 1, "ok": 0, "failed": 1, "probes": 0,
                               "rests": 1, "last_error": "HTTP 502: bad gateway"}


# ---------------------------------------------------------------------------- route()

def _run(coro):
    return asyncio.run(coro)


def test_route_moves_a_failed_attempt_to_another_replica_without_raising():
    rs = ReplicaSet([A, B, C], clock=Clock())  # frozen: B's 1 s rest cannot end during a slow run
    sent = []

    async def attempt(req, url):
        sent.append(url)
        if url == B:
            raise TransientError("connection refused")
        return f"{req} from {url}"

    routed = route(rs, attempt, [(A,), (B,), (C,)])

    async def main():
        return [await routed(i) for i in range(6)]

    out = _run(main())
    assert len(out) == 6 and all("from " + B not in r for r in out)
    assert sent.count(B) == 1  # rested after its first failure: nothing more in the next 1 s
    s = {row["url"]: row for row in rs.stats()}
    assert (s[B]["failed"], s[B]["state"], s[A]["ok"] + s[C]["ok"]) == (1, "resting", 6)


def test_route_429_and_4xx_do_not_rest_and_are_raised():
    rs = ReplicaSet([A, B])

    async def attempt(req, url):
        if req == "busy":
            raise TransientError("HTTP 429: slow down", retry_after=1.0, status=429)
        raise PermanentError("HTTP 400: bad request")

    routed = route(rs, attempt, [(A,), (B,)])
    with pytest.raises(TransientError, match="429"):
        _run(routed("busy"))
    with pytest.raises(PermanentError, match="400"):
        _run(routed("bad"))
    assert [row["state"] for row in rs.stats()] == ["healthy", "healthy"]
    assert sum(row["ok"] for row in rs.stats()) == 2


def test_route_all_down_raises_with_the_wait_until_the_first_rest_ends():
    rs = ReplicaSet([A, B], rest_base_s=5.0, clock=Clock())  # frozen: no time passes between the calls

    async def attempt(req, url):
        raise TransientError(f"HTTP 503: overloaded at {url}", status=503)

    routed = route(rs, attempt, [(A,), (B,)])
    with pytest.raises(TransientError, match="HTTP 503") as first:
        _run(routed(0))  # tried A then B: both rested, the last error is raised
    assert first.value.retry_after is None
    with pytest.raises(TransientError, match=r"all 2 replicas are resting after failures \(last error: HTTP 503") as info:
        _run(routed(1))
    assert info.value.retry_after == pytest.approx(5.0)
    assert [row["failed"] for row in rs.stats()] == [1, 1]


def test_route_waits_for_a_probe_then_uses_the_recovered_replica():
    clock = Clock()
    rs = ReplicaSet([A, B], clock=clock)
    gate = None
    calls = []

    async def attempt(req, url):
        calls.append((req, url))
        if req == "probe":
            await gate.wait()  # a slow probe: the other request waits for its outcome
        return url

    routed = route(rs, attempt, [(A,), (B,)], poll_s=0.01)
    ta, tb = rs.pick(), rs.pick()
    rs.mark_failed(ta, "down")
    clock.t += 0.5
    rs.mark_failed(tb, "down")
    rs.release(ta)
    rs.release(tb)
    clock.t += 0.5  # A's rest is over, B rests until the fake clock moves again (it will not)

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        probe = asyncio.ensure_future(routed("probe"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(routed("next"))
        await asyncio.sleep(0.1)
        assert calls == [("probe", A)]  # "next" is waiting, not raising, not sent
        gate.set()
        return await probe, await second

    assert _run(main()) == (A, A)
    assert calls == [("probe", A), ("next", A)]
    assert [row["state"] for row in rs.stats()] == ["healthy", "resting"]

