"""Teacher limits shared by many processes: one book of permits, leased in batches.

    book = PermitBook({"gpt": Limits(concurrency=8, rpm=600)}, max_cost_usd=5.0)   # one owner
    book.exchange("worker-1", "gpt", want=8, want_rate=8)   # {"slots": 8, "rate": 8, ...}

    gate = Gate(call, "worker-1", "gpt", limits)            # in each worker process
    if await gate.acquire(hint, est_cost): ...send one request...; gate.release(cost)

The Ray backend sends teacher requests from the worker processes that run the steps; the only
thing they share is this book, owned by one actor (engine/ray_executor.py). A worker leases what
it needs for the requests it has queued in one call and gives back what it no longer uses, so
the owner answers a few calls per hundred requests while:

- **concurrency** is a hard global bound: a request is sent only while its process holds a slot,
  and the book never has more than ``concurrency`` slots out;
- **RPM/TPM** come out of the book's token buckets (a leased token is spent at once or given
  back); every attempt takes one, a retry too (:meth:`Gate.retake`);
- **the budget** is reserved: every slot out holds the largest estimated cost of one request,
  a slot comes back with the actual cost of the request it carried (with a budget, slots are
  used once), and no slot is granted when spent + reserved + one more estimate passes the cap
  (the budget counts as spent once that holds with nothing reserved);
- **leases expire**: a worker that does not call for ``ttl_s`` (it renews while it holds slots)
  is taken for dead, and its slots and reservations come back;
- **an outage stops every worker**: when a worker's circuit breaker opens for a teacher it says so
  (:meth:`PermitBook.trip`); from then on the book grants that teacher nothing, and every other
  worker hears it in its next reply or at once through its waiting watch: its breaker opens with
  the same reason and its queued requests are not sent;
- **shares are fair under contention**: while another worker wants slots it cannot get, a worker
  holds at most ``concurrency // active workers`` (its *cap*). A holder keeps one call waiting at
  the owner (:meth:`PermitBook.awatch`, which also renews its lease) that answers as soon as it
  holds more than its cap, and gives the surplus back as its requests finish. Without this, a
  worker that always has requests queued keeps every slot and another waits for seconds.

No Ray here: :class:`PermitBook` is plain bookkeeping (a clock can be injected), :class:`Gate`
calls the owner through an injected coroutine function.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from distillflow.engine.scheduler import CircuitBreaker, TokenBucket

__all__ = ["Gate", "Limits", "PermitBook", "outage_of"]


@dataclass(frozen=True)
class Limits:
    concurrency: int
    rpm: float | None = None
    tpm: float | None = None


@dataclass
class _Held:
    slots: int = 0
    est: float = 0.0  # reserved cost per slot (the largest estimate this worker reported)
    seen: float = 0.0


@dataclass
class _Teacher:
    limits: Limits
    rpm: TokenBucket | None
    tpm: TokenBucket | None
    held: dict = field(default_factory=dict)  # worker -> _Held
    wanting: dict = field(default_factory=dict)  # worker -> slots it asked for and did not get
    told: set = field(default_factory=set)  # wanting workers whose watch said slots are free (once)
    tripped: dict | None = None  # {"worker", "reason", "error"}: a worker's circuit breaker opened

    @property
    def out(self) -> int:
        return sum(h.slots for h in self.held.values())


def _elsewhere(info: dict) -> tuple:
    """:meth:`CircuitBreaker.open_elsewhere`'s arguments for a trip the owner recorded
    (``info``: :meth:`PermitBook.trip`'s ``{"worker", "reason", "error"}``)."""
    return info["reason"], info.get("error"), f"Ray worker {info['worker']}"


def outage_of(teacher: str, info: dict) -> Exception:
    """The TeacherOutageError of ``teacher``'s trip as the owner recorded it (``info``)."""
    breaker = CircuitBreaker(teacher)
    breaker.open_elsewhere(*_elsewhere(info))
    return breaker.error()


def _wake_all(waiters: set) -> None:
    """Wake every call waiting on ``waiters`` (:func:`_woken`, :func:`_wait_until`)."""
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


async def _woken(waiters: set, timeout: float) -> None:
    """Wait until :func:`_wake_all` wakes ``waiters`` or ``timeout`` passed."""
    fut = asyncio.get_running_loop().create_future()
    waiters.add(fut)
    try:
        await asyncio.wait({fut}, timeout=timeout)  # (not wait_for: it can swallow a cancellation)
    finally:
        waiters.discard(fut)
        if not fut.done():
            fut.cancel()


async def _wait_until(pred: Callable[[], bool], waiters: set, timeout: float) -> None:
    """Return once ``pred()`` holds (checked whenever ``waiters`` are woken) or ``timeout`` passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        left = end - loop.time()
        if left <= 0:
            return
        await _woken(waiters, left)


class PermitBook:
    """The one owner of every teacher's slots, rate buckets and the budget (see module doc)."""

    def __init__(self, limits: dict[str, Limits], max_cost_usd: float | None = None, ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_cost_usd = max_cost_usd
        self.spent = 0.0
        self.budget_hit = False
        self.calls = 0
        self.watches = 0  # awatch calls (each a call to the owner, like an exchange)
        self.expired: list[str] = []  # workers whose leases expired (for the run's record)
        self.longest_wait_s = 0.0  # the longest a worker holding nothing waited here for a slot
        self.teachers = {}
        for name, lim in limits.items():
            rpm = TokenBucket(lim.rpm / 60.0, lim.rpm / 60.0, clock=clock) if lim.rpm else None
            tpm = TokenBucket(lim.tpm / 60.0, lim.tpm / 60.0, clock=clock) if lim.tpm else None
            self.teachers[name] = _Teacher(lim, rpm, tpm)
        self.seen: dict[str, float] = {}
        # futures of calls waiting here, woken by setting their result (not asyncio.Condition: on
        # Python 3.11 a Condition.wait under wait_for that is cancelled can leave a task that never
        # ends, and "Lock is not acquired"; a cancelled test loop hung on it, one run in six)
        self._slot_waiters: set = set()  # aexchange calls waiting for a slot to come back
        self._watchers: set = set()  # holders' awatch calls

    # -- leases -----------------------------------------------------------------------------------
    def reserved(self) -> float:
        return sum(h.slots * h.est for t in self.teachers.values() for h in t.held.values())

    def expire(self) -> None:
        """Take back the slots of workers that stopped calling (dead processes or nodes)."""
        now = self.clock()
        dead = [w for w, t in self.seen.items() if now - t > self.ttl_s]
        for w in dead:
            del self.seen[w]
            self.expired.append(w)
            for t in self.teachers.values():
                t.held.pop(w, None)
                t.wanting.pop(w, None)
                t.told.discard(w)
        if dead:
            self._reshaped()

    def cap(self, worker: str, teacher: str) -> int | None:
        """The most slots ``worker`` may hold while another worker wants slots it cannot get
        (None: nobody else waits, no cap)."""
        t = self.teachers[teacher]
        if not any(w != worker for w in t.wanting):
            return None
        active = {w for w, h in t.held.items() if h.slots > 0} | set(t.wanting) | {worker}
        return max(1, t.limits.concurrency // len(active))

    def _grantable(self, worker: str, teacher: str, want: int) -> int:
        """How many of ``want`` slots ``worker`` would get now (concurrency, cap, budget)."""
        t = self.teachers[teacher]
        h = t.held.get(worker) or _Held()
        slots = max(0, min(want, t.limits.concurrency - t.out))
        cap = self.cap(worker, teacher)
        if cap is not None:  # another worker waits: no more than a fair share
            slots = min(slots, max(0, cap - h.slots))
        if self.max_cost_usd is not None and h.est > 0 and slots:
            room = self.max_cost_usd - self.spent - self.reserved()
            slots = max(0, min(slots, int(room // h.est)))
        return slots

    def renew(self, worker: str) -> None:
        self.seen[worker] = self.clock()

    def charge(self, cost: float) -> None:
        """Answers the run uses that no slot of this book paid for (cached, replayed, collected
        from provider batches) count toward the budget too."""
        self.spent += cost

    def exchange(self, worker: str, teacher: str, give_back: int = 0, cost: float = 0.0, est: float = 0.0,
                 want: int = 0, want_rate: int = 0, tokens_each: float = 0.0, unused_tokens: float = 0.0,
                 unused_rate: int = 0, idle: bool = False) -> dict:
        """Give back ``give_back`` slots (and the actual ``cost`` of the requests they carried),
        lease up to ``want`` more slots (each reserving ``est``) and up to ``want_rate`` requests'
        worth of rate tokens (``tokens_each`` TPM tokens apiece); ``unused_tokens`` goes back to the
        TPM bucket (estimates above the actual usage), ``unused_rate`` leased rate tokens to the
        RPM bucket; ``idle``: the worker has nothing queued (it wants nothing more). Returns what was
        granted: ``slots``, ``rate``, ``wait`` (seconds until a rate token is due, when none was
        granted), ``budget_hit``, ``held`` (the worker's slots now), ``cap`` (see :meth:`cap`)."""
        self.calls += 1
        self.renew(worker)
        self.expire()
        t = self.teachers[teacher]
        if want > 0 or idle:  # (it asks again: a later refusal is told again)
            t.told.discard(worker)
        shape = self._shape(t)
        h = t.held.setdefault(worker, _Held())
        h.slots = max(0, h.slots - give_back)
        self.spent += cost
        if est > h.est:
            h.est = est
        if unused_tokens and t.tpm is not None:
            t.tpm.adjust(unused_tokens)
        if unused_rate and t.rpm is not None:
            t.rpm.adjust(unused_rate)
        slots = 0
        if want > 0 and not self.budget_hit and not t.tripped:
            slots = self._grantable(worker, teacher, want)
            if slots == 0 and self.max_cost_usd is not None and h.est > 0 and self.reserved() == 0 \
                    and self.max_cost_usd - self.spent < h.est:  # spent + one more estimate passes the cap
                self.budget_hit = True
            h.slots += slots
        if want > slots and not self.budget_hit and not t.tripped:
            t.wanting[worker] = want - slots
        elif want > 0 or idle:
            t.wanting.pop(worker, None)
        if self._shape(t) != shape:
            self._reshaped()
        rate, wait = 0, 0.0
        if want_rate > 0 and not self.budget_hit and not t.tripped:
            rate = want_rate
            if t.rpm is not None:
                t.rpm._refill()
                rate = min(rate, int(max(0.0, t.rpm.tokens)))
            if t.tpm is not None and tokens_each > 0:
                t.tpm._refill()
                rate = min(rate, int(max(0.0, t.tpm.tokens) // tokens_each))
                if rate == 0 and t.tpm.tokens >= min(tokens_each, t.tpm.capacity):
                    rate = 1  # one request above the burst size still passes (the bucket goes into debt)
            if rate:
                if t.rpm is not None:
                    t.rpm.tokens -= rate
                if t.tpm is not None:
                    t.tpm.tokens -= rate * tokens_each
            else:
                waits = []
                if t.rpm is not None:
                    waits.append((1.0 - t.rpm.tokens) / t.rpm.rate)
                if t.tpm is not None and tokens_each > 0:
                    need = min(tokens_each, t.tpm.capacity)
                    waits.append(max(0.0, (need - t.tpm.tokens) / t.tpm.rate))
                wait = max([w for w in waits if w > 0] or [0.01])
        return {"slots": slots, "rate": rate, "wait": wait, "budget_hit": self.budget_hit, "held": h.slots,
                "cap": self.cap(worker, teacher), "tripped": t.tripped}

    def trip(self, worker: str, teacher: str, reason: str, error: str | None = None) -> None:
        """``worker``'s circuit breaker for ``teacher`` opened (a sustained outage): grant that
        teacher nothing more, and tell every worker (the first word counts)."""
        t = self.teachers[teacher]
        if t.tripped is None:
            t.tripped = {"worker": worker, "reason": reason, "error": error}
            t.wanting.clear()
            self._reshaped()
            _wake_all(self._slot_waiters)  # (waiting for a slot: none comes for that teacher)

    @staticmethod
    def _shape(t: _Teacher) -> tuple:
        """What the caps depend on: who wants slots, who holds some."""
        return frozenset(t.wanting), frozenset(w for w, h in t.held.items() if h.slots > 0)

    def _reshaped(self) -> None:
        """The caps may have changed: holders waiting in :meth:`awatch` hear it now."""
        _wake_all(self._watchers)

    async def awatch(self, worker: str, teacher: str, timeout: float, known: int | None = None) -> dict:
        """Renew ``worker``'s lease and wait (up to ``timeout``) until its cap is no longer ``known``
        (the cap it last heard; None: none) or, if it was refused slots, until some are free for it;
        returns ``{"cap": ..., "held": ...}``. A holder keeps one such call waiting: it hears at once
        that its share shrank or grew, without polling."""
        self.watches += 1
        self.renew(worker)
        t = self.teachers[teacher]

        def free_for_it() -> bool:
            # refused earlier: told once when a slot is there for it. Once only: a worker whose
            # waiting requests were served by its own slots meanwhile does not ask, stays wanting
            # until it asks or goes idle, and would otherwise be answered at once, watch after watch
            return (worker in t.wanting and worker not in t.told and not self.budget_hit
                    and self._grantable(worker, teacher, 1) > 0)

        def changed() -> bool:
            if t.tripped:
                return True
            cap = self.cap(worker, teacher)
            if cap != known or worker not in t.held:
                return True
            return free_for_it()

        await _wait_until(changed, self._watchers, timeout)
        if free_for_it():
            t.told.add(worker)
        self.renew(worker)
        h = t.held.get(worker)
        return {"cap": self.cap(worker, teacher), "held": h.slots if h else 0, "tripped": t.tripped}

    async def aexchange(self, worker: str, teacher: str, max_wait_s: float = 2.0, **kw) -> dict:
        """:meth:`exchange`, but when every slot is out, wait (up to ``max_wait_s``) for one to come
        back instead of answering 0 at once (so a waiting worker does not poll)."""
        got = self.exchange(worker, teacher, **kw)
        if kw.get("give_back") or kw.get("unused_rate"):
            _wake_all(self._slot_waiters)
            self._reshaped()  # (a refused holder's watch: slots are free again)
        want = kw.get("want", 0)
        end = self.clock() + max_wait_s
        # (only a worker that holds nothing waits here: one that holds slots gets them back from its
        # own requests meanwhile, and asks again later)
        start = self.clock()
        while (want and got["slots"] == 0 and got["held"] == 0 and not got["budget_hit"] and not got["tripped"]
               and self.clock() < end):
            await _woken(self._slot_waiters, min(0.5, max(0.01, end - self.clock())))
            more = self.exchange(worker, teacher, est=kw.get("est", 0.0), want=want)
            got = {**got, "slots": more["slots"], "budget_hit": more["budget_hit"], "held": more["held"],
                   "cap": more["cap"], "tripped": more["tripped"]}
        self.longest_wait_s = max(self.longest_wait_s, self.clock() - start)
        return got

    def release_all(self, worker: str) -> None:
        """A worker is done (or known dead): everything it held comes back."""
        self.seen.pop(worker, None)
        for t in self.teachers.values():
            t.held.pop(worker, None)
            t.wanting.pop(worker, None)
            t.told.discard(worker)
        self._reshaped()

    def in_use(self, teacher: str) -> int:
        return self.teachers[teacher].out


class Gate:
    """One worker process's side of one teacher's permits (one asyncio loop).

    ``acquire(hint, est)`` returns True when a request may be sent now (it holds a slot and, with
    RPM/TPM limits, a rate token), False when the budget is spent; ``release(cost)`` when its
    answer (or final error) is in. Free slots are kept while requests wait and given back
    ``linger_s`` after the last one left; with a budget, a slot carries one request only.
    ``call(**kw)`` is the owner's :meth:`PermitBook.exchange` (through Ray, or directly in tests);
    ``watch(known=cap)`` its :meth:`PermitBook.awatch` (it renews the lease too), else ``renew()``
    is called every ``ttl_s / 3`` while slots are held. Slots above the cap the owner last
    answered go back as their requests finish. ``trip(reason=, error=)`` is the owner's
    :meth:`PermitBook.trip`: :meth:`trip` (the client's circuit breaker's ``on_open``) tells it,
    and once the owner says the teacher tripped anywhere, ``breaker`` (the client's) opens and
    ``acquire`` returns False with ``tripped`` set.
    """

    def __init__(self, call: Callable[..., Awaitable[dict]], worker: str, teacher: str, limits: Limits,
                 budget: bool = False, ttl_s: float = 10.0, linger_s: float = 0.05,
                 renew: Callable[[], Awaitable[None]] | None = None, tokens_each: float = 0.0,
                 watch: Callable[..., Awaitable[dict]] | None = None,
                 trip: Callable[..., Awaitable[None]] | None = None):
        self.call, self.worker, self.teacher, self.limits = call, worker, teacher, limits
        self.budget = budget
        self.ttl_s, self.linger_s = ttl_s, linger_s
        self.renew_call = renew
        self.watch_call = watch
        self.cap: int | None = None  # the most slots to hold while another worker waits (owner's word)
        self._payback: asyncio.Handle | None = None
        self.rate_limited = bool(limits.rpm or limits.tpm)
        self.tokens_each = tokens_each
        self.free = 0  # slots held, not carrying a request
        self.busy = 0  # slots carrying a request
        self.rate = 0  # rate tokens held
        # The TPM tokens the owner deducted: for the rate tokens held, per lease ([count, tokens each]:
        # at the estimate sent with it; ``tokens_each`` grows with longer prompts), and for each request
        # in flight (by its key; averaged over those taken without one). What goes back is what was
        # reserved less what was used.
        self._leases: collections.deque = collections.deque()
        self._in_flight: dict[str, float] = {}
        self._anon, self._anon_tokens = 0, 0.0
        self.back = 0  # slots to give back at the next call (used ones, with a budget)
        self.cost = 0.0  # actual cost of the requests those slots carried
        self.unused_tokens = 0.0  # TPM tokens leased above what the answers used
        self.waiting = 0
        self.retrying = 0  # retries of requests in flight waiting for a rate token (retake)
        self.idle: Callable[[], bool] = lambda: True  # no request queued behind the waiting ones
        self.stopped = False  # the budget is spent: nothing more is sent
        self.abandoned = False  # the lane stopped (the run stops): no request waits here any more
        self.trip_call = trip
        self.breaker = None  # the client's CircuitBreaker (opened here when the teacher tripped elsewhere)
        self._trip_info: dict | None = None  # {"worker", "reason", "error"}, as the owner records a trip
        self._trip_task: asyncio.Task | None = None
        self.calls = 0
        self._lock: asyncio.Lock | None = None
        self._flush: asyncio.TimerHandle | None = None
        self._released = 0  # releases so far; the flush waits until none came for linger_s
        self._flush_mark = 0
        self._renewer: asyncio.Task | None = None
        self._asking: asyncio.Task | None = None  # the call asking the owner for more, if any
        self._waiters: collections.deque = collections.deque()  # futures of requests waiting here
        self._waking: asyncio.Handle | None = None  # a check for freed slots at the loop's next turn
        self._retry_at = 0.0  # (loop time) a refused gate that holds slots asks again from then
        self.retry_s = 0.1  # (without a watch; with one, it asks again when the watch says so)
        self._refused = False  # refused while holding slots: wait for the watch

    @property
    def held(self) -> int:
        return self.free + self.busy

    async def _exchange(self, **kw) -> dict:
        kw.setdefault("give_back", 0)
        give, cost = self.back + kw.pop("give_back"), self.cost
        unused = self.unused_tokens + kw.pop("unused_tokens", 0.0)
        self.back, self.cost, self.unused_tokens = 0, 0.0, 0.0
        self.calls += 1
        got = await self.call(worker=self.worker, teacher=self.teacher, give_back=give, cost=cost,
                              unused_tokens=unused, **kw)
        if got["budget_hit"]:
            self.stopped = True
        self.cap = got.get("cap")
        self._heard(got)
        return got

    @property
    def tripped(self) -> bool:
        """The teacher's circuit breaker opened (here or in another worker)."""
        return self._trip_info is not None

    def _heard(self, got: dict) -> None:
        """The owner's word that the teacher tripped in some worker: stop sending, open the breaker."""
        info = got.get("tripped")
        if info and not self.tripped:
            self._trip_info = info
            if self.breaker is not None:
                self.breaker.open_elsewhere(*_elsewhere(info))
            self._wake(None)

    def outage(self) -> Exception | None:
        """The TeacherOutageError a request of a tripped gate fails with (None: not tripped)."""
        if not self.tripped:
            return None
        if self.breaker is not None and self.breaker.is_open:
            return self.breaker.error()
        return outage_of(self.teacher, self._trip_info)

    def trip(self, reason: str, error: str | None = None) -> None:
        """This worker's circuit breaker for the teacher opened: send nothing more, tell the owner."""
        if self.tripped:
            return
        self._trip_info = {"worker": self.worker, "reason": reason, "error": error}
        self._wake(None)
        if self.trip_call is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._trip_task = loop.create_task(self.trip_call(reason=reason, error=error))
        self._trip_task.add_done_callback(lambda t: t.cancelled() or t.exception())

    @property
    def _shut(self) -> bool:
        """No new request gets a slot here: the budget is spent, the teacher tripped, or the lane
        stopped (a retry of a request in flight still gets its rate token: :meth:`retake`)."""
        return self.stopped or self.tripped or self.abandoned

    def abandon(self) -> None:
        """The lane stopped (the run stops, or its budget is spent): requests waiting for a slot give
        up at once (:meth:`acquire` returns False) instead of waiting for one they would not use."""
        self.abandoned = True
        self._wake(None)

    def try_acquire(self, tokens: float = 0.0, key: str | None = None) -> bool:
        """:meth:`acquire` when it would not wait (a slot, and a rate token, held here and free):
        taken, True; else False, and the request awaits :meth:`acquire`. Called first for every
        request, it spares the common case a coroutine. ``key``: the request's (see :meth:`release`)."""
        if tokens > self.tokens_each:
            self.tokens_each = tokens
        if self._shut or not self._ready(tokens):
            return False
        self._take(key)
        return True

    def _take(self, key: str | None) -> None:
        """A request takes a free slot (and a rate token, with the TPM tokens reserved for it)."""
        self.free -= 1
        self.busy += 1
        if self.rate_limited:
            tokens = self._take_rate()
            if key is None:
                self._anon += 1
                self._anon_tokens += tokens
            else:
                self._in_flight[key] = tokens
        self._keep_alive()

    def _take_rate(self) -> float:
        """One rate token out of those held, the oldest lease's first; returns the TPM tokens reserved for it."""
        self.rate -= 1
        if not self._leases:
            return 0.0
        lease = self._leases[0]
        lease[0] -= 1
        if lease[0] <= 0:
            self._leases.popleft()
        return lease[1]

    def _lease(self, rate: int, each: float) -> None:
        """``rate`` rate tokens granted, ``each`` TPM tokens deducted for every one."""
        if rate > 0:
            self.rate += rate
            self._leases.append([rate, each])

    @property
    def reserved(self) -> float:
        """TPM tokens the owner deducted for the rate tokens held here."""
        return sum(n * each for n, each in self._leases)

    def _ended(self, key: str | None) -> float:
        """A request in flight ends (released, or not sent): the TPM tokens reserved for it."""
        if key is not None and key in self._in_flight:
            return self._in_flight.pop(key)
        if self._anon > 0:
            each = self._anon_tokens / self._anon
            self._anon -= 1
            self._anon_tokens -= each
            return each
        return 0.0

    async def acquire(self, hint: int = 1, est: float = 0.0, tokens: float = 0.0, key: str | None = None) -> bool:
        """Wait for a slot (and a rate token); False once the budget is spent. ``est``: the largest
        estimated cost of one request; ``tokens``: this request's estimated TPM tokens; ``key``: its
        key (see :meth:`release`)."""
        if tokens > self.tokens_each:
            self.tokens_each = tokens
        if self._lock is None:
            self._lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self.waiting += 1
        try:
            while True:
                if self._shut:
                    return False
                if self._ready(tokens):
                    self._take(key)
                    return True
                # one call to the owner at a time; meanwhile a slot our own requests give back
                # (release) serves a waiting request at once
                ask = self._asking
                if ask is None and loop.time() < self._retry_at:  # refused lately: not yet
                    await self._sleep(self._retry_at - loop.time())
                    continue
                if ask is None and self.free == 0 and self._at_cap():  # futile: the watch says when not
                    await self._sleep(self.ttl_s / 3)
                    continue
                if ask is None:
                    ask = self._asking = loop.create_task(self._ask(hint, est))
                    ask.add_done_callback(lambda _: self._wake(None))
                if not ask.done():
                    await self._sleep()
                if ask.done():
                    if self._asking is ask:
                        self._asking = None
                    if not ask.cancelled() and ask.exception() is not None:
                        raise ask.exception()
        finally:
            self.waiting -= 1

    async def retake(self, tokens: float = 0.0) -> bool:
        """A request that holds a slot (between :meth:`acquire` and :meth:`release`) is sent again, a
        retry: take a rate token for it as :meth:`acquire` does for a first attempt, from the
        tokens this gate holds, else leased from the owner (a batch for every retry waiting here).
        ``tokens``: its estimated TPM tokens. False once the owner grants nothing more (budget
        spent, owner gone): the request gives up. Without RPM/TPM limits, True at once."""
        if not self.rate_limited:
            return True
        if tokens > self.tokens_each:
            self.tokens_each = tokens
        if self._lock is None:
            self._lock = asyncio.Lock()
        self.retrying += 1
        try:
            while True:
                if self.rate > 0:
                    self._take_rate()  # (spent on the attempt that failed: nothing of it comes back)
                    self._keep_alive()
                    return True
                if self.stopped or self.tripped:
                    return False
                wait = 0.0
                async with self._lock:  # one call to the owner at a time (acquire's _ask too)
                    if self.rate > 0 or self.stopped:
                        continue
                    each = self.tokens_each
                    got = await self._exchange(want_rate=max(1, self.retrying), tokens_each=each)
                    self._lease(got["rate"], each)
                    if not got["rate"]:
                        wait = max(0.001, got["wait"])
                if wait:
                    await asyncio.sleep(wait)
        finally:
            self.retrying -= 1

    async def _sleep(self, timeout: float | None = None) -> None:
        """Wait until woken (a slot freed here: one waiter; an answer from the owner: all) or ``timeout``."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        timer = None if timeout is None else loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if not fut.done():  # (cancelled): _wake skips it
                fut.cancel()

    def _ready(self, tokens: float = 0.0) -> bool:
        """A free slot and, with RPM/TPM limits, a rate token; with TPM, one leased at an estimate of
        ``tokens`` at least (leases are taken in order: the oldest's), so that no request is sent on
        fewer reserved tokens than it is estimated at."""
        if self.free <= 0:
            return False
        if not self.rate_limited:
            return True
        return self.rate > 0 and (not self.limits.tpm or not self._leases or self._leases[0][1] >= tokens)

    def _drop_stale(self) -> tuple[int, float]:
        """With TPM: the rate tokens held that were leased at a smaller estimate than the gate's now
        (a longer prompt raised it), out of the queue: (how many, their reserved TPM tokens), to give
        back with the call that leases new ones at the new estimate."""
        if not self.limits.tpm:
            return 0, 0.0
        n, tokens = 0, 0.0
        keep: collections.deque = collections.deque()
        for lease in self._leases:
            if lease[1] < self.tokens_each:
                n += lease[0]
                tokens += lease[0] * lease[1]
            else:
                keep.append(lease)
        self._leases = keep
        self.rate -= n
        return n, tokens

    def _at_cap(self) -> bool:
        """Asking is futile (a running watch will say when it is not): holding a full fair share
        while another worker waits, or refused since the watch last answered while slots of its
        own will come back. A gate that holds none asks (the owner waits for a slot to come back)."""
        if self.watch_call is None or self._renewer is None or self._renewer.done() or self.held == 0:
            return False
        return self._refused or (self.cap is not None and self.held >= self.cap)

    def _wake(self, n: int | None = 1) -> None:
        """Wake ``n`` waiting requests (None: all), oldest first."""
        waiters = self._waiters
        while waiters and (n is None or n > 0):
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                if n is not None:
                    n -= 1

    async def _ask(self, hint: int, est: float) -> None:
        """Lease what the waiting requests need. A gate that holds slots and was refused waits
        ``retry_s`` before it asks again (its own requests give slots back meanwhile); one that
        holds none waits at the owner until a slot comes back."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._shut or self._ready(self.tokens_each) or not self.waiting:
                return
            n = max(1, min(self.limits.concurrency, max(hint, self.waiting)))
            want = max(0, n - self.free)
            stale, stale_tokens = self._drop_stale()
            want_rate = max(0, n - self.rate) if self.rate_limited else 0
            each = self.tokens_each
            got = await self._exchange(est=est, want=want, want_rate=want_rate, tokens_each=each,
                                       unused_rate=stale, unused_tokens=stale_tokens)
            self.free += got["slots"]
            self._lease(got["rate"], each)
            if self.stopped:
                return
            if got["slots"] == 0 and self.free == 0:
                if self.held > 0:
                    self._refused = True
                    self._retry_at = loop.time() + self.retry_s
                else:
                    await asyncio.sleep(0.005)  # every slot is out: someone gives one back soon
            elif self.rate_limited and self.rate == 0:
                await asyncio.sleep(max(0.001, got["wait"]))

    def release(self, cost: float = 0.0, used_tokens: float | None = None, key: str | None = None) -> None:
        """The request a slot carried is done (answered, or failed for good); ``used_tokens``: its
        actual TPM tokens (what was reserved for it beyond them goes back; below them, the owner takes
        the rest). ``key``: the request's, as given to :meth:`acquire`: the TPM tokens reserved for
        that request (without keys, the average of those in flight)."""
        reserved = self._ended(key) if self.rate_limited else 0.0
        self.busy = max(0, self.busy - 1)
        self._released += 1
        if used_tokens is not None and self.limits.tpm:
            self.unused_tokens += reserved - used_tokens
        if self.budget:  # a slot carries one request: back with its cost, at the next call
            self.back += 1
            self.cost += cost
        else:
            self._slot_back()
        if self.waiting == 0:
            self._schedule_flush()

    def unacquire(self, key: str | None = None) -> None:
        """A request took a slot (and a rate token) and is not sent after all (the run stopped while
        it waited for them): both come back unused."""
        reserved = self._ended(key) if self.rate_limited else 0.0
        self.busy = max(0, self.busy - 1)
        if self.rate_limited:
            self.rate += 1
            self._leases.appendleft([1, reserved])
        self._slot_back()
        if self.waiting == 0:
            self._schedule_flush()

    def _slot_back(self) -> None:
        """A slot no request carries any more: back to the owner now if this gate holds more than its
        fair share, else free here for a waiting request."""
        if self.cap is not None and self.held >= self.cap:  # above a fair share: back, now
            self.back += 1
            self._schedule_payback()
            if self.held == 0:  # nothing of ours comes back now: waiting requests ask the owner
                self._wake(None)
        else:
            self.free += 1
            self._wake_later()

    def _wake_later(self) -> None:
        """A slot was freed: wake a waiting request for it, unless the requester that freed it takes it
        back first. That requester takes its next request in the same step of the loop (its answer's
        callback, then the lane's queue, then :meth:`acquire`), so the check waits for the loop's next
        turn: woken at once, a waiter would find the slot gone and wait again, a wake-up, a future and a
        timer for nothing on every answer while more requests wait than the gate holds slots (two
        workers sharing a teacher's concurrency; measured ~9 us a request, more than the gate's own work)."""
        if not self._waiters or self._waking is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (no loop: called from a test's thread) wake one now, as before
            self._wake()
            return
        self._waking = loop.call_soon(self._wake_free)

    def _wake_free(self) -> None:
        self._waking = None
        if self.free > 0:  # a waiter per slot it can take; with RPM/TPM limits, per rate token too (one
            # at least: with no token here, that one asks the owner for more)
            self._wake(max(1, min(self.free, self.rate)) if self.rate_limited else self.free)

    def _schedule_payback(self) -> None:
        """Give back the slots above the cap soon (one call for all that finish within 5 ms)."""
        if self._payback is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def go() -> None:
            self._payback = None
            if self.back:
                task = loop.create_task(self._exchange())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

        self._payback = loop.call_later(0.005, go)

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._flush is None:
            self._flush_mark = self._released
            self._flush = loop.call_later(self.linger_s, self._flush_due)

    def _flush_due(self) -> None:
        """Slots linger ``linger_s`` after the last release, not after the first one that found no
        request waiting: a lane's queue runs dry for a moment between shards, and a flush then gave
        every slot back to ask for them again a few milliseconds later (two calls to the owner)."""
        loop = asyncio.get_running_loop()
        if self._released != self._flush_mark:  # released since: linger again
            self._flush_mark = self._released
            self._flush = loop.call_later(self.linger_s, self._flush_due)
            return
        loop.create_task(self.flush())

    async def flush(self, closing: bool = False) -> None:
        """Give back what no waiting request needs (free slots, used slots with their cost, rate tokens);
        ``closing``: everything, even with requests still queued (the lane stopped: none will be sent)."""
        self._flush = None
        busy = not closing and (self.waiting or not self.idle())
        if busy:  # (the next release schedules it again)
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            busy = not closing and (self.waiting or not self.idle())
            if busy or (self.free == 0 and self.back == 0 and self.rate == 0 and not self.unused_tokens):
                return
            free, rate, reserved = self.free, self.rate, self.reserved
            self.free = self.rate = 0
            self._leases.clear()
            if self.held == 0:  # everything goes back: an old refusal says nothing about the next ask
                self._refused, self._retry_at = False, 0.0
            await self._exchange(give_back=free, unused_tokens=reserved, unused_rate=rate, idle=True)

    async def close(self) -> None:
        if self._trip_task is not None:  # (the owner hears of the trip before this worker leaves)
            await asyncio.gather(self._trip_task, return_exceptions=True)
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self._payback is not None:
            self._payback.cancel()
            self._payback = None
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        if self._asking is not None:
            try:
                await self._asking
            except Exception:
                pass
            self._asking = None
        self.waiting = 0
        self.free += self.busy  # the window has stopped: nothing is in flight any more
        self.busy = 0
        self._in_flight.clear()  # (requests never released: what was reserved for them stays spent)
        self._anon, self._anon_tokens = 0, 0.0
        if self.free or self.back or self.rate or self.unused_tokens:
            await self.flush(closing=True)

    # -- keeping leases while requests are slow ------------------------------------------------
    def _keep_alive(self) -> None:
        if (self.renew_call is None and self.watch_call is None) or (self._renewer is not None and not self._renewer.done()):
            return
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        while self.held > 0 or self.back > 0:
            if self.watch_call is not None:  # renews, and answers early when our share shrinks
                got = await self.watch_call(known=self.cap, timeout=self.ttl_s / 3)
                if got is None:  # the owner is gone
                    return
                self.cap = got.get("cap")
                self._heard(got)
                if self.tripped:  # nothing more is granted for this teacher: renew only, no watch
                    self.watch_call = None
                    continue
                surplus = 0 if self.cap is None else min(self.free, self.held - self.cap)
                if surplus > 0:  # idle slots above the cap go back at once; busy ones as they finish
                    self.free -= surplus
                    self.back += surplus
                    self._schedule_payback()
                self._retry_at = 0.0  # (something changed: waiting requests may ask at once)
                self._refused = False
                self._wake(None)
                continue
            await asyncio.sleep(self.ttl_s / 3)
            if self.held > 0 or self.back > 0:
                await self.renew_call()


class PermitHub:
    """The books of every run of one Ray job, in one actor (engine/ray_executor.py makes it a named
    Ray actor on the driver's node, reused by the job's later runs: no new process per run).

    Plain methods here (no Ray import): ``open``/``close`` a run's :class:`PermitBook`,
    ``exchange``/``watch``/``renew`` for a run's workers (:class:`Gate` calls them), ``status``.
    """

    def __init__(self):
        import os

        self.books: dict[str, PermitBook] = {}
        self.pid = os.getpid()

    async def open(self, run: str, limits: dict, max_cost_usd: float | None, ttl_s: float) -> int:
        self.books[run] = PermitBook(limits, max_cost_usd, ttl_s=ttl_s)
        return self.pid

    async def exchange(self, run: str, **kw) -> dict:
        book = self.books.get(run)
        if book is None:  # the run is over: nothing more is sent
            return {"slots": 0, "rate": 0, "wait": 0.0, "budget_hit": True, "held": 0}
        return await book.aexchange(**kw)

    async def renew(self, run: str, worker: str) -> None:
        book = self.books.get(run)
        if book is not None:
            book.renew(worker)

    async def trip(self, run: str, **kw) -> None:
        book = self.books.get(run)
        if book is not None:
            book.trip(**kw)

    async def watch(self, run: str, worker: str, teacher: str, timeout: float, known: int | None = None) -> dict | None:
        book = self.books.get(run)
        if book is None:  # the run is over
            return None
        return await book.awatch(worker, teacher, timeout, known)

    async def charge(self, run: str, cost: float) -> None:
        book = self.books.get(run)
        if book is not None:
            book.charge(cost)

    async def status(self, run: str) -> dict:
        b = self.books[run]
        return {"spent": b.spent, "budget_hit": b.budget_hit, "pid": self.pid, "calls": b.calls, "watches": b.watches,
                "longest_wait_s": round(b.longest_wait_s, 3),
                "expired": list(b.expired), "in_use": {n: b.in_use(n) for n in b.teachers},
                "tripped": {n: t.tripped for n, t in b.teachers.items() if t.tripped}}

    async def close(self, run: str) -> dict:
        got = await self.status(run)
        del self.books[run]
        return got
