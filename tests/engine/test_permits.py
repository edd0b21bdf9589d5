"""Permits shared by many processes (engine/permits.py): the book's bounds with known inputs, leases
of a dead worker coming back, and gates of several "workers" (one loop here) against one book."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from distillflow.engine.cache import RequestCache, SharedCache, sibling_path
from distillflow.engine.client import ChatResult
from distillflow.engine.permits import Gate, Limits, PermitBook


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_slots_never_exceed_concurrency_across_workers():
    book = PermitBook({"t": Limits(concurrency=8)}, clock=Clock())
    got = [book.exchange(w, "t", want=5)["slots"] for w in ("a", "b", "c")]
    assert got == [5, 3, 0]
    assert book.in_use("t") == 8
    assert book.exchange("c", "t", give_back=0, want=8)["slots"] == 0
    book.exchange("a", "t", give_back=2)
    assert book.exchange("c", "t", want=8)["slots"] == 2
    assert book.in_use("t") == 8
    # giving back more than one holds never frees another worker's slots
    book.exchange("c", "t", give_back=50)
    assert book.in_use("t") == 6


def test_leases_of_a_dead_worker_come_back_after_the_ttl():
    clock = Clock()
    book = PermitBook({"t": Limits(concurrency=4)}, ttl_s=10.0, clock=clock)
    assert book.exchange("dead", "t", want=4)["slots"] == 4
    clock.t += 5
    book.renew("alive")
    assert book.exchange("alive", "t", want=4)["slots"] == 0  # "dead" is only 5 s quiet
    clock.t += 6  # 11 s since "dead" last called
    assert book.exchange("alive", "t", want=4)["slots"] == 4
    assert book.expired == ["dead"]
    assert book.in_use("t") == 4


def test_renewing_keeps_a_slow_workers_lease():
    clock = Clock()
    book = PermitBook({"t": Limits(concurrency=2)}, ttl_s=10.0, clock=clock)
    book.exchange("slow", "t", want=2)
    for _ in range(5):  # 30 s of long requests, renewed every 6 s
        clock.t += 6
        book.renew("slow")
        assert book.exchange("other", "t", want=1)["slots"] == 0
    assert book.expired == []


def test_budget_reserves_an_estimate_per_slot_and_reconciles_actual_cost():
    book = PermitBook({"t": Limits(concurrency=10)}, max_cost_usd=1.0, clock=Clock())
    assert book.exchange("a", "t", est=0.3, want=10)["slots"] == 3  # 3 x 0.3 reserved
    assert book.exchange("b", "t", est=0.3, want=10)["slots"] == 0
    assert not book.budget_hit  # "a" still holds reservations that may come back unused
    # the three requests cost 0.1 each: 0.7 of room is left
    got = book.exchange("a", "t", give_back=3, cost=0.3, est=0.3, want=10)
    assert got["slots"] == 2 and book.spent == 0.3
    got = book.exchange("a", "t", give_back=2, cost=0.6, est=0.3, want=10)
    assert got["slots"] == 0 and got["budget_hit"] and book.budget_hit
    assert book.spent <= 1.0
    assert book.exchange("b", "t", est=0.3, want=1)["slots"] == 0  # stopped for everyone


def test_answers_paid_outside_the_slots_count_toward_the_budget():
    # cached, replayed or batch answers a worker reports with charge(): the cap is on the run's whole cost
    book = PermitBook({"t": Limits(concurrency=10)}, max_cost_usd=1.0, clock=Clock())
    book.charge(0.5)
    assert book.exchange("a", "t", est=0.2, want=10)["slots"] == 2  # 0.5 of room: two estimates
    book.charge(0.45)
    got = book.exchange("a", "t", give_back=2, cost=0.04, est=0.2, want=10)
    assert got["slots"] == 0 and got["budget_hit"] and book.spent == pytest.approx(0.99)


def test_rpm_tokens_come_from_one_bucket():
    clock = Clock()
    book = PermitBook({"t": Limits(concurrency=100, rpm=600)}, clock=clock)  # 10 per second, 1 s burst
    assert book.exchange("a", "t", want_rate=50)["rate"] == 10
    got = book.exchange("b", "t", want_rate=50)
    assert got["rate"] == 0 and 0 < got["wait"] <= 0.1 + 1e-9
    clock.t += 0.5
    assert book.exchange("b", "t", want_rate=50)["rate"] == 5
    book.exchange("a", "t", unused_rate=3)  # leased, not used: back to the bucket
    assert book.exchange("b", "t", want_rate=50)["rate"] == 3


def test_tpm_grants_by_estimated_tokens_and_takes_back_the_unused():
    clock = Clock()
    book = PermitBook({"t": Limits(concurrency=100, tpm=6000)}, clock=clock)  # 100 tokens per second
    assert book.exchange("a", "t", want_rate=10, tokens_each=30)["rate"] == 3
    assert book.exchange("a", "t", want_rate=10, tokens_each=30)["rate"] == 0
    book.exchange("a", "t", unused_tokens=60)  # the three used 10 tokens each
    assert book.exchange("a", "t", want_rate=10, tokens_each=30)["rate"] == 2


def test_a_worker_that_cannot_get_slots_caps_the_others_at_a_fair_share():
    book = PermitBook({"t": Limits(concurrency=8)}, clock=Clock())
    assert book.exchange("a", "t", want=8) == {"slots": 8, "rate": 0, "wait": 0.0, "budget_hit": False,
                                               "held": 8, "cap": None, "tripped": None}  # alone: no cap
    got = book.exchange("b", "t", want=8)
    assert got["slots"] == 0 and got["cap"] is None  # "b" waits (nobody else does: no cap for "b")
    assert book.cap("a", "t") == 4  # two active workers: 8 // 2 each
    # "a" gives back its surplus; "b" gets no more than its share, "a" cannot take it back
    book.exchange("a", "t", give_back=4)
    assert book.exchange("b", "t", want=8)["slots"] == 4
    assert book.exchange("a", "t", want=4)["slots"] == 0
    # "b" has nothing queued any more: its share is free for "a" again, uncapped
    book.exchange("b", "t", give_back=4, idle=True)
    assert book.cap("a", "t") is None
    assert book.exchange("a", "t", want=4)["slots"] == 4


def test_a_holder_waiting_in_awatch_hears_at_once_that_its_share_shrank():
    book = PermitBook({"t": Limits(concurrency=6)})

    async def go():
        book.exchange("a", "t", want=6)
        watch = asyncio.ensure_future(book.awatch("a", "t", timeout=5.0))
        await asyncio.sleep(0.01)
        assert not watch.done()  # nobody else wants slots: it waits (no polling)
        t0 = asyncio.get_running_loop().time()
        waiter = asyncio.ensure_future(book.aexchange("b", "t", want=6, max_wait_s=5.0))
        got = await asyncio.wait_for(watch, 1.0)
        assert got == {"cap": 3, "held": 6, "tripped": None}
        assert asyncio.get_running_loop().time() - t0 < 0.5
        await book.aexchange("a", "t", give_back=3)  # the surplus comes back: "b" is served
        assert (await asyncio.wait_for(waiter, 1.0))["slots"] == 3
        # the known cap does not wake it again; a change does ("b" leaves)
        again = asyncio.ensure_future(book.awatch("a", "t", timeout=5.0, known=3))
        await asyncio.sleep(0.01)
        assert not again.done()
        await book.aexchange("b", "t", give_back=3, idle=True)
        assert (await asyncio.wait_for(again, 1.0))["cap"] is None

    asyncio.run(go())


def test_a_refused_worker_hears_once_that_slots_are_free_not_at_every_watch():
    """A worker refused while it held slots stays "wanting" until it asks again or goes idle; its
    own slots may serve its requests meanwhile, so it may never ask. Its watch says once that
    slots are free; the next watch waits (it answered at once, watch after watch, before: ~500
    calls a second between two Ray workers until the refused one went idle)."""
    book = PermitBook({"t": Limits(concurrency=4)})

    async def go():
        book.exchange("a", "t", want=2)
        book.exchange("b", "t", want=2)
        assert book.exchange("a", "t", want=2)["slots"] == 0  # refused: "a" wants 2 more
        book.exchange("b", "t", give_back=2, idle=True)  # "b" is done: its slots are free
        first = await asyncio.wait_for(book.awatch("a", "t", timeout=5.0, known=None), 1.0)
        assert first == {"cap": None, "held": 2, "tripped": None}  # told at once
        again = asyncio.ensure_future(book.awatch("a", "t", timeout=5.0, known=None))
        await asyncio.sleep(0.01)
        assert not again.done()  # told already: it waits (for a change or its timeout)
        # it asks again (and is served): a later refusal is told again
        book.exchange("c", "t", want=1)
        assert book.exchange("a", "t", want=2)["slots"] == 1
        book.exchange("c", "t", give_back=1, idle=True)
        assert (await asyncio.wait_for(again, 1.0))["held"] == 3
        assert book.watches == 2

    asyncio.run(go())


async def _send(gate: Gate, queue: list, state: dict, pause: Callable[[], float],
                after: Callable[[], None] | None = None) -> None:
    """One coroutine of a worker's window: takes requests off ``queue`` while there are any, each
    holding a slot of ``gate`` for ``pause()`` seconds; ``state`` counts in flight, the most at
    once and those done; ``after()`` runs after each release."""
    while queue:
        queue.pop()
        assert await gate.acquire(len(queue) + 1)
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        await asyncio.sleep(pause())
        state["in_flight"] -= 1
        state["done"] = state.get("done", 0) + 1
        gate.release()
        if after is not None:
            after()


@pytest.mark.parametrize("rpm", [None, 60_000], ids=["slots", "slots+rpm"])
def test_a_worker_with_requests_always_queued_does_not_starve_another(rpm):
    """Two workers' gates with watches: "a" has a long stream of requests, "b" joins later with a
    few. Before fair shares "a" kept every slot and "b" waited at the owner in 2-second rounds.
    (With an RPM limit a gate at its share still asks for rate tokens: it once waited forever.)"""
    book = PermitBook({"t": Limits(concurrency=8, rpm=rpm)}, ttl_s=6.0)
    done: dict[str, float] = {}

    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        state = {"in_flight": 0, "max": 0}

        async def call(**kw):
            await asyncio.sleep(0)
            return await book.aexchange(**kw)

        async def worker(name: str, start: float, n: int):
            await asyncio.sleep(start)

            async def watch(known, timeout):
                return await book.awatch(name, "t", timeout, known)

            gate = Gate(call, name, "t", book.teachers["t"].limits, ttl_s=6.0, watch=watch)
            queue = list(range(n))
            gate.idle = lambda: not queue

            await asyncio.gather(*(_send(gate, queue, state, lambda: 0.002) for _ in range(8)))
            done[name] = loop.time() - t0
            await gate.close()

        await asyncio.gather(worker("a", 0.0, 1500), worker("b", 0.05, 100))
        return state["max"]

    top = asyncio.run(asyncio.wait_for(go(), 20))
    assert top <= 8
    assert done["b"] < 0.6, done  # 100 requests at its share of 4: ~0.05 s, not a 2 s wait
    assert done["b"] < done["a"]
    assert book.in_use("t") == 0 and not book.teachers["t"].wanting


async def _workers(book: PermitBook, n_workers: int, n_requests: int, concurrency: int, die: str | None = None):
    """Gates of ``n_workers`` workers, each sending ``n_requests`` fake requests with a window of
    ``concurrency`` coroutines; returns (max in flight, completed, gates)."""
    state = {"in_flight": 0, "max": 0, "done": 0}

    async def call(**kw):
        await asyncio.sleep(0)  # a hop, as through Ray
        return await book.aexchange(**kw)

    async def renew_of(name):
        book.renew(name)

    async def worker(name: str):
        gate = Gate(call, name, "t", book.teachers["t"].limits, ttl_s=book.ttl_s, linger_s=0.01,
                    renew=lambda: renew_of(name))
        queue = list(range(n_requests))

        def dies() -> None:
            if name == die and state["done"] >= 5:
                raise asyncio.CancelledError  # this worker dies holding its slots

        try:
            await asyncio.gather(*(_send(gate, queue, state, lambda: random.uniform(0.0005, 0.003), dies)
                                   for _ in range(concurrency)))
        except asyncio.CancelledError:
            if gate._renewer is not None:
                gate._renewer.cancel()  # a dead process renews nothing
            if gate._flush is not None:
                gate._flush.cancel()
            return gate
        await gate.close()
        return gate

    gates = await asyncio.gather(*(worker(f"w{i}") for i in range(n_workers)))
    return state["max"], state["done"], gates


def test_gates_of_several_workers_hold_the_global_bound_with_few_hub_calls():
    random.seed(7)
    book = PermitBook({"t": Limits(concurrency=6)})
    top, done, gates = asyncio.run(_workers(book, n_workers=4, n_requests=150, concurrency=6))
    assert done == 600
    assert top <= 6
    assert top >= 3  # the window was used
    assert book.in_use("t") == 0  # every slot came back
    assert book.calls < 600 / 4  # leases in batches: far fewer hub calls than requests


def test_a_dead_workers_slots_come_back_to_the_others():
    random.seed(3)
    book = PermitBook({"t": Limits(concurrency=4)}, ttl_s=0.3)
    top, done, gates = asyncio.run(_workers(book, n_workers=2, n_requests=40, concurrency=4, die="w0"))
    assert top <= 4
    assert gates[1].held == 0
    assert "w0" in book.expired  # w1 went on with w0's slots once its lease expired
    assert done >= 40
    assert book.in_use("t") == 0


def test_a_gate_stops_when_the_budget_is_spent():
    book = PermitBook({"t": Limits(concurrency=4)}, max_cost_usd=0.05)

    async def go():
        async def call(**kw):
            return await book.aexchange(**kw)

        gate = Gate(call, "w", "t", book.teachers["t"].limits, budget=True, linger_s=0.001)
        sent = 0
        while await gate.acquire(1, est=0.01):
            sent += 1
            gate.release(cost=0.01)
        return sent

    sent = asyncio.run(go())
    assert sent == 5 and book.spent <= 0.05 + 1e-9 and book.budget_hit


def _answer(key: str) -> ChatResult:
    return ChatResult(key, f"answer {key}", 3, 4, None, "stop", None, 0.01)


def test_worker_caches_are_read_merged_and_absorbed_by_the_driver(tmp_path):
    main = tmp_path / "cache" / "requests.sqlite"
    one = SharedCache(RequestCache(sibling_path(main, "w1")), main)
    two = SharedCache(RequestCache(sibling_path(main, "w2")), main)
    one.put(_answer("k1"))
    one.flush()
    got = two.get_many(["k1", "k2"])  # a retried shard on another worker finds w1's answers
    assert list(got) == ["k1"] and got["k1"].cached and got["k1"].text == "answer k1"
    one.close()
    two.close()
    with RequestCache(main) as driver:
        assert driver.absorb() == 1
        assert not list(main.parent.glob("requests-*"))
        assert driver.get_many(["k1"])["k1"].text == "answer k1"


def test_every_retry_takes_a_rate_token_from_the_book_as_a_first_attempt_does():
    """Ray's lanes: requests failing with a retryable error N times take N+1 RPM tokens (and TPM
    tokens per attempt) from the one book, not one per request (the local backend's limiter
    charges every attempt too); a request holds its slot through its retries."""
    import sys
    import threading
    from pathlib import Path
    from types import SimpleNamespace

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # benchmarks/ is not an installed package
        sys.path.insert(0, root)
    from benchmarks.fake_endpoint import EndpointThread
    from distillflow.engine.client import ChatRequest, OpenAICompatibleClient
    from distillflow.engine.lanes import Lane
    from distillflow.engine.ledger import Ledger
    from distillflow.spec.models import TeacherSpec

    n, fails, rpm = 6, 2, 6000.0
    book = PermitBook({"t": Limits(concurrency=4, rpm=rpm, tpm=10_000_000)})
    taken = {"rpm": 0, "tpm": 0.0}
    exchange = book.exchange

    def counting(worker, teacher, **kw):  # what the book's buckets gave out, less what came back
        got = exchange(worker, teacher, **kw)
        taken["rpm"] += got["rate"] - kw.get("unused_rate", 0)
        taken["tpm"] += got["rate"] * kw.get("tokens_each", 0.0) - kw.get("unused_tokens", 0.0)
        return got

    book.exchange = counting

    async def call(**kw):
        await asyncio.sleep(0)
        return await book.aexchange(**kw)

    with EndpointThread(max_concurrency=64, latency=(0.001, 0.002)) as ep:
        teacher = TeacherSpec(name="t", provider="openai", model="fake-teacher", base_url=ep.base_url, concurrency=4)
        client = OpenAICompatibleClient(ep.base_url, "fake-teacher", api_key="sk-test", concurrency=4,
                                        backoff_base_s=0.001, max_retries=5)
        run = SimpleNamespace(ledger=Ledger(), stop_event=threading.Event(),
                              cache=SimpleNamespace(put=lambda res: None),
                              reporter=SimpleNamespace(advance=lambda *a, **k: None))

        async def go():
            gate = Gate(call, "w", "t", book.teachers["t"].limits, linger_s=0.01)
            lane = Lane(teacher, client, run, gate=gate)
            gate.idle = lane.queue.empty
            content = '@@{"status": 429, "times": %d}' % fails
            requests = [ChatRequest(f"k{i}", [{"role": "user", "content": f"{content} {i}"}], {"max_tokens": 8})
                        for i in range(n)]
            results, failures = await lane.ask("step", requests)
            await lane.close()
            return results, failures, gate

        results, failures, gate = asyncio.run(asyncio.wait_for(go(), 20))
        sent = ep.stats["requests"]
    assert len(results) == n and not failures
    assert all(r.attempts == fails + 1 for r in results.values())
    assert sent == n * (fails + 1)
    assert taken["rpm"] == n * (fails + 1)  # before: n (retries were free)
    assert gate.rate == 0 and book.in_use("t") == 0


def test_a_worker_that_gave_back_every_slot_asks_again_instead_of_waiting_for_its_watch():
    """A refusal is remembered until the watch answers, so that a worker that holds slots waits
    for its own requests to give them back instead of asking the owner again and again. But
    once the worker has given back every slot (its queue ran dry, the lingering slots went back),
    none of its own will come back: its next requests must ask the owner at once. They used to
    wait for the watch's timeout (ttl_s / 3 = 2 s here): one two-node run in 30-60 took ~2.5 s
    instead of ~0.8 s, its last shard's 250 requests waiting with nothing in flight."""
    book = PermitBook({"t": Limits(concurrency=2)}, ttl_s=6.0)

    async def go():
        loop = asyncio.get_running_loop()

        def gate_of(name):
            async def watch(known, timeout):
                return await book.awatch(name, "t", timeout, known)

            g = Gate(book.aexchange, name, "t", book.teachers["t"].limits, ttl_s=6.0, watch=watch, linger_s=0.01)
            g.retry_s = 0.05
            return g

        a, b = gate_of("a"), gate_of("b")
        assert await a.acquire(1) and await b.acquire(1)  # one slot each: every slot is out
        b_queue = ["queued"]
        b.idle = lambda: not b_queue
        second = asyncio.ensure_future(b.acquire(2))  # b wants another: refused while it holds one
        for _ in range(20):
            await asyncio.sleep(0.01)
            if b._refused:
                break
        assert b._refused and not second.done()
        b.release()  # b's own request ends: its slot serves the waiting one
        assert await asyncio.wait_for(second, 1)
        b.release()
        b_queue.clear()  # b's queue runs dry: its lingering slot goes back, it holds nothing
        for _ in range(100):
            await asyncio.sleep(0.01)
            if b.held == 0:
                break
        assert b.held == 0
        b_queue.append("next shard")  # b's next shard: a slot is free at the owner right away
        t0 = loop.time()
        assert await asyncio.wait_for(b.acquire(1), 3)
        waited = loop.time() - t0
        b.release()
        a.release()
        await a.close()
        await b.close()
        return waited

    waited = asyncio.run(asyncio.wait_for(go(), 15))
    assert waited < 0.5, waited  # not the watch's 2 s


def test_a_trip_in_one_worker_stops_the_others_at_once():
    """Worker "a"'s circuit breaker opens (the teacher looks down): the book grants that teacher
    nothing more, and worker "b", whose request waits for a slot while every slot is out, hears it through its
    waiting watch: its acquire returns False at once (not after the watch's 2 s) and its own
    breaker opens with a's reason, naming the worker."""
    from distillflow.engine.scheduler import CircuitBreaker

    book = PermitBook({"t": Limits(concurrency=2)}, ttl_s=6.0)
    told = []

    async def run():
        loop = asyncio.get_running_loop()

        def gate_of(name):
            async def watch(known, timeout):
                return await book.awatch(name, "t", timeout, known)

            async def trip(**kw):
                told.append((name, kw))
                book.trip(name, "t", **kw)

            g = Gate(book.aexchange, name, "t", book.teachers["t"].limits, ttl_s=6.0, watch=watch, trip=trip)
            g.breaker = CircuitBreaker("t", failures_in_a_row=3, seconds_without_success=None)
            g.breaker.on_open = g.trip
            return g

        a, b = gate_of("a"), gate_of("b")
        assert await a.acquire(1) and await b.acquire(1)  # one slot each: every slot is out
        waiting = asyncio.ensure_future(b.acquire(2))  # b wants another: it waits (refused, watching)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        t0 = loop.time()
        for _ in range(3):  # a's requests fail: its breaker opens
            a.breaker.record(False, "HTTP 500: down")
        assert a.tripped and await a.acquire(1) is False  # a sends nothing more
        assert await asyncio.wait_for(waiting, 1.0) is False  # b hears it through its watch
        heard_after = loop.time() - t0
        assert b.tripped and b.breaker.is_open
        assert await b.acquire(1) is False
        got = book.exchange("c", "t", want=1, want_rate=1)  # nobody gets anything for that teacher
        a.release()
        b.release()
        await a.close()
        await b.close()
        return heard_after, got, str(b.breaker.error())

    heard_after, got, msg = asyncio.run(asyncio.wait_for(run(), 10))
    assert heard_after < 0.5, heard_after  # not the watch's 2 s timeout
    assert told == [("a", {"reason": "3 requests in a row failed after their retries", "error": "HTTP 500: down"})]
    assert got["slots"] == 0 and got["tripped"]["worker"] == "a"
    assert "3 requests in a row failed after their retries in Ray worker a (last error: HTTP 500: down)" in msg
    assert book.in_use("t") == 0


def _count_parks(gate: Gate) -> dict:
    """Counts the times a request of ``gate`` goes to wait (its ``_sleep``)."""
    seen = {"parks": 0}
    sleep = gate._sleep

    async def counting(timeout=None):
        seen["parks"] += 1
        await sleep(timeout)

    gate._sleep = counting
    return seen


def test_requests_beyond_a_gates_share_are_not_woken_for_every_answer():
    """Two workers share a teacher's 8 slots, each with a window of 8 requesters: each holds its
    fair share of 4 and 4 requesters wait. A finished request's requester takes its next request
    and the slot it freed in the same step of the loop; the gate used to wake a waiting requester
    for that slot too, which found it gone and waited again: a wake-up, a future and a timer for
    every answer (397 and 92–116 parks of the two workers here, against about 10 each now)."""
    book = PermitBook({"t": Limits(concurrency=8)}, ttl_s=6.0)
    state: dict = {"in_flight": 0, "max": 0}

    async def go():
        async def worker(name: str):
            async def watch(known, timeout):
                return await book.awatch(name, "t", timeout, known)

            gate = Gate(book.aexchange, name, "t", book.teachers["t"].limits, ttl_s=6.0, watch=watch)
            queue = list(range(400))
            gate.idle = lambda: not queue
            seen = _count_parks(gate)
            await asyncio.gather(*(_send(gate, queue, state, lambda: 0.0) for _ in range(8)))
            await gate.close()
            return seen["parks"]

        return await asyncio.gather(worker("a"), worker("b"))

    parks = asyncio.run(asyncio.wait_for(go(), 20))
    assert state["done"] == 800 and state["max"] <= 8
    assert max(parks) < 100, parks
    assert book.in_use("t") == 0


def test_a_slot_its_requester_does_not_take_back_wakes_a_waiting_request():
    """The other side of the test above: when the requester that freed a slot has nothing more
    to send, a waiting request gets the slot on the loop's next turn, not after the gate's retry
    wait (30 s here) or the watch's timeout."""
    book = PermitBook({"t": Limits(concurrency=2)}, ttl_s=60.0)

    async def go():
        gate = Gate(book.aexchange, "w", "t", book.teachers["t"].limits, ttl_s=60.0)
        gate.retry_s = 30.0
        assert await gate.acquire(1) and await gate.acquire(1)  # every slot is out
        waiting = asyncio.ensure_future(gate.acquire(1))
        for _ in range(50):  # refused by the owner while it holds slots: waits for one of its own
            await asyncio.sleep(0.01)
            if gate._refused:
                break
        assert gate._refused and not waiting.done()
        gate.release()  # that request's requester has nothing more to send: it takes no slot
        assert await asyncio.wait_for(waiting, 1)
        gate.release()
        gate.release()
        await gate.close()

    asyncio.run(asyncio.wait_for(go(), 10))
    assert book.in_use("t") == 0


def test_a_request_waiting_for_a_slot_when_the_run_stops_is_not_sent():
    """A run that stops (Ctrl-C, SIGTERM, another shard's error) sends nothing more; the requests in
    flight finish. A request that had been taken off the lane's queue and was waiting in the gate
    for a slot used to be sent when a slot came back, after the stop."""
    import sys
    import threading
    import time
    from pathlib import Path
    from types import SimpleNamespace

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # benchmarks/ is not an installed package
        sys.path.insert(0, root)
    from benchmarks.fake_endpoint import EndpointThread
    from distillflow.engine.client import ChatRequest, OpenAICompatibleClient
    from distillflow.engine.lanes import Lane
    from distillflow.engine.ledger import Ledger
    from distillflow.spec.models import TeacherSpec

    book = PermitBook({"t": Limits(concurrency=1)})  # one slot: the other requesters wait in the gate

    with EndpointThread(max_concurrency=64, latency=(1.0, 1.0)) as ep:  # (time to see three waiting)
        teacher = TeacherSpec(name="t", provider="openai", model="fake-teacher", base_url=ep.base_url, concurrency=4)
        client = OpenAICompatibleClient(ep.base_url, "fake-teacher", api_key="sk-test", concurrency=4, max_retries=0)
        run = SimpleNamespace(ledger=Ledger(), stop_event=threading.Event(),
                              cache=SimpleNamespace(put=lambda res: None),
                              reporter=SimpleNamespace(advance=lambda *a, **k: None))

        async def go():
            gate = Gate(book.aexchange, "w", "t", book.teachers["t"].limits, linger_s=0.01)
            lane = Lane(teacher, client, run, gate=gate)
            gate.idle = lane.queue.empty
            requests = [ChatRequest(f"k{i}", [{"role": "user", "content": f"q {i}"}], {"max_tokens": 8})
                        for i in range(6)]
            asking = asyncio.ensure_future(lane.ask("step", requests))
            deadline = time.monotonic() + 10
            while not (ep.stats["requests"] >= 1 and gate.waiting >= 3):  # one sent, three waiting
                assert time.monotonic() < deadline, (ep.stats["requests"], gate.waiting)
                await asyncio.sleep(0.01)
            run.stop_event.set()
            results, failures = await asking
            await lane.close()
            return results, failures

        results, failures = asyncio.run(asyncio.wait_for(go(), 20))
        sent = ep.stats["requests"]
    assert sent == 1, sent  # the one in flight, nothing after the stop
    assert len(results) == 1 and not failures
    assert book.in_use("t") == 0


def test_requests_waiting_in_the_gate_give_up_at_once_when_their_lane_stops():
    """A lane that stops (the run stops, its budget is spent) sends nothing more: the requests
    waiting in its gate give up at once instead of waiting for a slot they would give straight back
    (here the gate's retry wait, 30 s; at a fair share, the watch's timeout)."""
    import threading
    from types import SimpleNamespace

    from distillflow.engine.client import OpenAICompatibleClient
    from distillflow.engine.lanes import Lane
    from distillflow.engine.ledger import Ledger
    from distillflow.spec.models import TeacherSpec

    book = PermitBook({"t": Limits(concurrency=1)}, ttl_s=60.0)
    teacher = TeacherSpec(name="t", provider="openai", model="m", base_url="http://127.0.0.1:9/v1", concurrency=4)
    run = SimpleNamespace(ledger=Ledger(), stop_event=threading.Event())

    async def go():
        gate = Gate(book.aexchange, "w", "t", book.teachers["t"].limits, ttl_s=60.0)
        gate.retry_s = 30.0
        lane = Lane(teacher, OpenAICompatibleClient(teacher.base_url, "m", api_key="sk-test", concurrency=4), run,
                    gate=gate)
        assert await gate.acquire(1)  # the only slot
        waiting = [asyncio.ensure_future(gate.acquire(1)) for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if gate._refused and gate.waiting == 3:
                break
        assert gate._refused and gate.waiting == 3
        run.stop_event.set()
        assert lane.should_stop()  # what a requester checks after its answer: the lane stops
        assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [False, False, False]
        assert not gate.try_acquire() and not await gate.acquire(1)
        gate.release()
        await gate.close()

    asyncio.run(asyncio.wait_for(go(), 10))
    assert book.in_use("t") == 0


def test_slots_linger_after_the_last_answer_not_the_first():
    """A worker's requests come in bursts (its shards), with short gaps when its lane's queue is
    empty and nothing is in flight. Slots stay ``linger_s`` after the last answer: the gate used to
    give every slot back ``linger_s`` after the first answer that found no request waiting, in
    whatever gap that fell, and ask for them again at the next burst (two calls to the owner)."""
    book = PermitBook({"t": Limits(concurrency=4)})
    state: dict = {"in_flight": 0, "max": 0}

    async def go():
        loop = asyncio.get_running_loop()
        gate = Gate(book.aexchange, "w", "t", book.teachers["t"].limits, linger_s=0.25)
        queue: list = []
        gate.idle = lambda: not queue
        t0 = loop.time()
        while loop.time() - t0 < 1.3:  # bursts over five lingers, each gap (30 ms) far shorter than one
            queue.extend(range(4))
            await asyncio.gather(*(_send(gate, queue, state, lambda: 0.005) for _ in range(4)))
            await asyncio.sleep(0.03)
        calls = gate.calls
        held = gate.held
        for _ in range(200):  # then idle: everything goes back after the linger
            await asyncio.sleep(0.01)
            if gate.held == 0:
                break
        gone = gate.held == 0
        await gate.close()
        return calls, held, gone

    calls, held, gone = asyncio.run(asyncio.wait_for(go(), 20))
    assert calls == 1 and held == 4, (calls, held)  # one lease for all the bursts
    assert gone and book.in_use("t") == 0


def _count_tpm(book: PermitBook) -> dict:
    """{"tpm": what the book's TPM bucket gave out, less what came back}, kept up to date."""
    net = {"tpm": 0.0}
    exchange = book.exchange

    def counting(worker, teacher, **kw):
        got = exchange(worker, teacher, **kw)
        net["tpm"] += got["rate"] * kw.get("tokens_each", 0.0) - kw.get("unused_tokens", 0.0)
        return got

    book.exchange = counting
    return net


def test_tpm_tokens_come_back_as_reserved_when_a_larger_request_raises_the_estimate():
    """The owner deducts ``rate x tokens_each`` for each lease, at the estimate the gate sent then. A
    longer prompt later raises the gate's estimate; the requests that hold tokens leased at the old
    one must give back what was reserved for them less what they used, not the new estimate less it
    (that returned tokens nobody had taken, and the cluster's TPM limit could be overrun by them)."""
    book = PermitBook({"t": Limits(concurrency=10, tpm=600_000)})  # 10,000 tokens a second: never short
    net = _count_tpm(book)  # what the book's TPM bucket gave out, less what came back

    async def go(keyed: bool):
        async def call(**kw):
            return await book.aexchange(**kw)

        gate = Gate(call, "w", "t", book.teachers["t"].limits, linger_s=0.01)
        keys = [f"k{i}" if keyed else None for i in range(5)]
        assert await gate.acquire(hint=4, tokens=10, key=keys[0])  # leases 4 rate tokens at 10 tokens each
        for k in keys[1:4]:
            assert gate.try_acquire(10, k)
        assert await gate.acquire(hint=2, tokens=100, key=keys[4])  # a long prompt: leased at 100 each
        for k in keys[:4]:  # each short one used what it was estimated at
            gate.release(used_tokens=10, key=k)
        owed_back = gate.unused_tokens  # (sent with the next call to the owner)
        gate.release(used_tokens=100, key=keys[4])
        await gate.close()
        return gate, owed_back

    for keyed in (True, False):
        net["tpm"] = 0.0
        gate, owed_back = asyncio.run(asyncio.wait_for(go(keyed), 10))
        assert gate.rate == 0 and book.in_use("t") == 0
        # before: 4 x (100 - 10) = 360 tokens came back that had never been taken (net -220)
        assert net["tpm"] == pytest.approx(4 * 10 + 100), keyed
        if keyed:  # by key, each request gives back exactly what was reserved for it less what it used
            assert owed_back == 0
        else:  # (without keys, the average of those in flight: (40 + 100) / 5 - 10 each, made good by the last)
            assert owed_back == pytest.approx(4 * (28 - 10))


def test_a_request_is_not_sent_on_a_token_leased_at_a_smaller_tpm_estimate():
    """Rate tokens held from a lease at a short prompt's estimate do not carry a longer one: they go
    back with the call that leases tokens at the new estimate (a long request on a short lease was
    charged the difference only after its answer, at the worker's next call to the owner: later
    grants meanwhile could take the cluster past its TPM limit)."""
    book = PermitBook({"t": Limits(concurrency=10, tpm=600_000)})
    net = _count_tpm(book)

    async def go():
        async def call(**kw):
            return await book.aexchange(**kw)

        gate = Gate(call, "w", "t", book.teachers["t"].limits, linger_s=0.01)
        assert await gate.acquire(hint=4, tokens=10, key="s0")  # 4 rate tokens leased at 10 each
        assert gate.try_acquire(10, "s1")
        assert gate.rate == 2 and net["tpm"] == 40
        assert not gate.try_acquire(100, "long")  # the two held were leased at 10
        assert await gate.acquire(hint=1, tokens=100, key="long")
        reserved = gate._in_flight["long"]
        assert gate.rate == 0  # the two short-leased tokens went back with the call that leased its own
        for key, used in (("s0", 10), ("s1", 10), ("long", 100)):
            gate.release(used_tokens=used, key=key)
        await gate.close()
        return reserved

    reserved = asyncio.run(asyncio.wait_for(go(), 10))
    assert reserved == 100  # before: 10, the short lease's
    assert net["tpm"] == pytest.approx(10 + 10 + 100)
