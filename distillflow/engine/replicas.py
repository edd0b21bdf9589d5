"""Several endpoints (replicas) serving one teacher: least-loaded routing, resting, probes.

A teacher whose ``base_url`` is a list runs on several servers of the same open-weights model
(vLLM, TGI, ...). The client asks a :class:`ReplicaSet` which replica to use for each attempt:

    replicas = ReplicaSet(["http://a:8000/v1", "http://b:8000/v1"])
    ticket = replicas.pick()          # least-loaded healthy replica (None: all resting)
    ...send to ticket.url...; replicas.mark_ok(ticket) or replicas.mark_failed(ticket, "timeout")
    replicas.release(ticket)          # always, in a finally

A replica that fails (connection error, timeout, 5xx) *rests*: it gets no requests for
``rest_base_s`` seconds, doubling with each consecutive failure up to ``rest_max_s``. When its rest
is over it gets exactly one request, the *probe*, while the others keep going elsewhere; the
probe's success makes it healthy again, its failure rests it twice as long. Requests that were in
flight when a replica started resting can still fail (or succeed) afterwards: they carry the
replica's old epoch and only count in the stats, so one outage rests a replica once, not once
per request in flight.

The window, RPM and TPM limits are not here: they belong to the teacher (one window shared by
all replicas, enforced by the scheduler). :class:`ReplicaSet` has no I/O and no asyncio (its clock
is injected so tests can drive it); :func:`route` wraps a client's ``attempt`` coroutine with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from distillflow.engine.scheduler import PermanentError, TransientError

__all__ = ["ReplicaSet", "Ticket", "replica_manifest", "route"]

HEALTHY, RESTING, PROBING = "healthy", "resting", "probing"


@dataclass(frozen=True, slots=True)
class Ticket:
    """One attempt's claim on a replica, returned by :meth:`ReplicaSet.pick`."""

    index: int
    url: str
    epoch: int
    probe: bool


class _Replica:
    __slots__ = ("url", "in_flight", "epoch", "failures", "rest_until", "probe_out",
                 "requests", "ok", "failed", "probes", "rests", "last_error")

    def __init__(self, url: str):
        self.url = url
        self.in_flight = 0
        self.epoch = 0  # bumped each time the replica starts resting
        self.failures = 0  # consecutive failed epochs, sets the next rest's length
        self.rest_until: float | None = None  # None: healthy
        self.probe_out = False  # a probe request is in flight
        self.requests = self.ok = self.failed = self.probes = self.rests = 0
        self.last_error: str | None = None


class ReplicaSet:
    """Health and load of a teacher's replicas; thread-safe, no I/O.

    ``rest_base_s`` / ``rest_max_s``: the first rest after a failure, and the cap of its
    doubling. ``clock`` returns seconds (monotonic); tests pass a fake one.
    """

    def __init__(self, urls: Sequence[str], *, rest_base_s: float = 1.0, rest_max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        urls = [u.rstrip("/") for u in urls]
        if not urls:
            raise ValueError("ReplicaSet needs at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate replica URLs: {urls}")
        self._replicas = [_Replica(u) for u in urls]
        self.rest_base_s = float(rest_base_s)
        self.rest_max_s = float(rest_max_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0  # rotates the tie-break so equal loads spread evenly

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self._replicas]

    def __len__(self) -> int:
        return len(self._replicas)

    # -- routing ------------------------------------------------------------------------------
    def pick(self) -> Ticket | None:
        """Claim a replica for one attempt, or None when every replica is resting or probing.

        A replica whose rest is over and that has no probe in flight is probed first (so it can
        rejoin); otherwise the healthy replica with the fewest requests in flight is chosen.
        """
        with self._lock:
            now = self._clock()
            reps = self._replicas
            n = len(reps)
            best = None
            start = self._turn
            self._turn = (start + 1) % n
            for k in range(n):
                r = reps[(start + k) % n]
                if r.rest_until is not None:
                    if now >= r.rest_until and not r.probe_out:
                        r.probe_out = True
                        r.probes += 1
                        return self._claim(r, (start + k) % n, probe=True)
                    continue
                if best is None or r.in_flight < reps[best].in_flight:
                    best = (start + k) % n
            if best is None:
                return None
            return self._claim(reps[best], best, probe=False)

    def _claim(self, r: _Replica, index: int, probe: bool) -> Ticket:
        r.in_flight += 1
        r.requests += 1
        return Ticket(index, r.url, r.epoch, probe)

    def release(self, ticket: Ticket) -> None:
        """End an attempt (call it once per :meth:`pick`, after marking the outcome)."""
        with self._lock:
            r = self._replicas[ticket.index]
            r.in_flight -= 1
            if ticket.probe and r.epoch == ticket.epoch:
                r.probe_out = False  # unresolved (e.g. cancelled): the next pick may probe again

    def mark_ok(self, ticket: Ticket) -> None:
        """The replica answered (any HTTP status below 500: the server is up)."""
        with self._lock:
            r = self._replicas[ticket.index]
            r.ok += 1
            if r.epoch != ticket.epoch:
                return  # sent before the replica started resting: says nothing about it now
            if ticket.probe or r.rest_until is None:
                r.failures = 0
                r.rest_until = None
                r.probe_out = False

    def mark_failed(self, ticket: Ticket, reason: str = "") -> None:
        """The attempt failed because of the replica (connection error, timeout, 5xx): rest it."""
        with self._lock:
            r = self._replicas[ticket.index]
            r.failed += 1
            r.last_error = reason or r.last_error
            if r.epoch != ticket.epoch:
                return  # the same outage as the failure that started the current rest
            rest = min(self.rest_max_s, self.rest_base_s * (2 ** min(r.failures, 32)))
            r.failures += 1
            r.epoch += 1
            r.rests += 1
            r.rest_until = self._clock() + rest
            r.probe_out = False

    # -- waiting ------------------------------------------------------------------------------
    def ready_in(self) -> float | None:
        """Seconds until :meth:`pick` can succeed: 0 if it can now; None while a probe is in
        flight (its outcome decides: wait for it); else the time left of the shortest rest."""
        with self._lock:
            now = self._clock()
            waits = []
            for r in self._replicas:
                if r.rest_until is None:
                    return 0.0
                if r.probe_out:
                    return None
                waits.append(max(0.0, r.rest_until - now))
            return min(waits)

    def last_error(self) -> str | None:
        """The most recent failure reason of any replica (for error messages)."""
        with self._lock:
            errors = [r.last_error for r in self._replicas if r.last_error]
        return errors[-1] if errors else None

    # -- reporting ------------------------------------------------------------------------------
    def stats(self) -> list[dict]:
        """Per replica, in ``base_url`` order: url, state, requests (attempts sent, probes
        included), ok, failed, probes, rests (times it was rested), in_flight, last_error."""
        with self._lock:
            now = self._clock()
            out = []
            for r in self._replicas:
                if r.rest_until is None:
                    state = HEALTHY
                elif now < r.rest_until:
                    state = RESTING
                else:
                    state = PROBING
                out.append({"url": r.url, "state": state, "requests": r.requests, "ok": r.ok,
                            "failed": r.failed, "probes": r.probes, "rests": r.rests,
                            "in_flight": r.in_flight, "last_error": r.last_error})
            return out


def route(replicas: ReplicaSet, attempt: Callable[..., Awaitable], targets: Sequence[tuple],
          poll_s: float = 0.05) -> Callable[[object], Awaitable]:
    """Wrap ``attempt(request, *target)`` so that each call goes to a replica of ``replicas``.

    ``targets[i]`` are the extra arguments that send to replica ``i``. An attempt that fails
    because of its replica (a :class:`TransientError` without an HTTP status, i.e. a connection
    error or timeout, or with a 5xx) rests that replica and is sent again at once to another
    one when one can take it: no retry of the scheduler's policy is spent. When every replica
    is resting the call raises :class:`TransientError` with ``retry_after`` set to the end of
    the shortest rest, so the scheduler's retry policy bounds the wait; while a probe is in
    flight the call waits for its outcome (bounded by the request timeout).
    """
    n = len(replicas)

    async def routed(req):
        hops = 0
        while True:
            ticket = replicas.pick()
            while ticket is None:
                wait = replicas.ready_in()
                if wait is None:  # a replica is being probed: its outcome decides, not a retry
                    await asyncio.sleep(poll_s)
                elif wait > 0:
                    raise TransientError(
                        f"all {n} replicas are resting after failures (last error: {replicas.last_error()})",
                        retry_after=wait,
                    )
                ticket = replicas.pick()
            try:
                result = await attempt(req, *targets[ticket.index])
            except TransientError as exc:
                if exc.status is not None and exc.status < 500:  # 429/408/409: up, just busy
                    replicas.mark_ok(ticket)
                    raise
                replicas.mark_failed(ticket, str(exc))
                hops += 1
                if hops < n and replicas.ready_in() == 0.0:
                    continue  # another replica takes it now (release runs first, in finally)
                raise
            except PermanentError:  # the server answered (400, malformed body): it is up
                replicas.mark_ok(ticket)
                raise
            else:
                replicas.mark_ok(ticket)
                return result
            finally:
                replicas.release(ticket)

    return routed


def replica_manifest(clients: dict) -> dict:
    """The manifest's ``replicas`` section: ``{teacher name: [per-replica stats]}`` for the
    clients (``{name: client}``) that route over several replicas; other clients are skipped."""
    out = {}
    for name, client in sorted(clients.items()):
        stats = getattr(client, "replica_stats", None)
        rows = stats() if callable(stats) else None
        if rows:
            out[name] = [{k: v for k, v in row.items() if k not in ("in_flight",)} for row in rows]
    return out
