"""Sliding-window scheduling shared by every teacher client: window, rate limits, retries.

A fixed set of ``concurrency`` worker coroutines pulls requests from one shared iterator, so
exactly ``concurrency`` requests are in flight while work remains (a finished request is
replaced at once; nothing waits for a batch's slowest member). Each worker passes the RPM/TPM
token buckets before dispatching and retries transient failures with exponential backoff and
full jitter, honoring ``Retry-After``.

This module has no HTTP knowledge: a client supplies ``attempt(request)``, a coroutine that
returns a :class:`~distillflow.engine.client.ChatResult` or raises :class:`TransientError` /
:class:`PermanentError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = [
    "CircuitBreaker",
    "PermanentError",
    "RateLimiter",
    "RetryPolicy",
    "TokenBucket",
    "TransientError",
    "estimate_tokens",
    "parse_retry_after",
    "run_window",
]


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, 408/409, connection error, timeout).

    ``status`` is the HTTP status when the server answered (None: no answer at all), so that
    replica routing can tell a down server (None, 5xx) from a busy one (429).
    """

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class PermanentError(Exception):
    """A failure that retrying cannot fix (400, 401, 404 and other 4xx)."""


class CircuitBreaker:
    """Opens on a sustained teacher outage, so that a run stops instead of failing every record.

    A request *fails* here when it still fails after all its retries with a transient error
    (permanent 4xx errors are the request's fault, not an outage, and count for nothing); any
    answer *succeeds* and closes the count. The breaker opens when either

    - ``failures_in_a_row`` requests in a row failed (default 20), or
    - no request succeeded for ``seconds_without_success`` (default 600) and at least
      ``min_failures`` (3) requests failed in a row meanwhile (one slow failure is no outage).

    With 20% of attempts failing at random and 6 retries, a request fails with probability
    0.2**7 ≈ 1e-5, so 20 in a row never happens by chance; a dead endpoint opens it after
    20 requests. ``clock`` is injectable for tests.

        breaker = CircuitBreaker("gpt", failures_in_a_row=20)
        breaker.record(ok=False, error="HTTP 503")   # True once the breaker is open
        breaker.is_open, breaker.reason
    """

    def __init__(self, name: str = "teacher", failures_in_a_row: int = 20,
                 seconds_without_success: float | None = 600.0, min_failures: int = 3,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.failures_in_a_row = max(1, int(failures_in_a_row))
        self.seconds_without_success = seconds_without_success
        self.min_failures = max(1, int(min_failures))
        self._clock = clock
        self.last_success = clock()
        self.consecutive = 0
        self.last_error: str | None = None
        self.reason: str | None = None
        # called once when this breaker opens on its own count (engine/ray_executor.py tells the
        # other workers through the permit hub, whose word opens theirs: open_elsewhere)
        self.on_open: Callable[[str, str | None], None] | None = None

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def start(self) -> None:
        """Restart the no-success clock (a new batch of requests begins; time spent elsewhere
        in the run, e.g. in other steps, is no outage)."""
        if self.consecutive == 0:
            self.last_success = self._clock()

    def record(self, ok: bool, error: str | None = None) -> bool:
        """Count one finished request; return whether the breaker is (now) open."""
        now = self._clock()
        if ok:
            self.consecutive = 0
            self.last_success = now
            return self.is_open
        self.consecutive += 1
        self.last_error = error
        if self.is_open:
            return True
        quiet = now - self.last_success
        if self.consecutive >= self.failures_in_a_row:
            self.reason = f"{self.consecutive} requests in a row failed after their retries"
        elif (self.seconds_without_success is not None and quiet >= self.seconds_without_success
              and self.consecutive >= self.min_failures):
            self.reason = (f"no request succeeded for {quiet:.0f}s while {self.consecutive} "
                           "requests in a row failed after their retries")
        if self.is_open and self.on_open is not None:
            self.on_open(self.reason, self.last_error)
        return self.is_open

    def open_elsewhere(self, reason: str, last_error: str | None, where: str) -> None:
        """Open because the same teacher's breaker opened in another process (``where``)."""
        if not self.is_open:
            self.reason = f"{reason} in {where}"
            self.last_error = last_error

    def error(self) -> Exception:
        """The exception a run stops with once the breaker is open."""
        from distillflow.errors import TeacherOutageError

        return TeacherOutageError(
            f"teacher '{self.name}' looks down: {self.reason} (last error: {self.last_error}). "
            "Every answer received so far is cached; fix the endpoint (or the teacher's outage: "
            "settings) and run the same command to resume — cached answers are not requested again, "
            "and the records whose requests failed before it stopped are asked again."
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Fractional seconds are accepted (some gateways send them). Returns None when absent or
    unparseable, and never a negative number.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class RetryPolicy:
    """Exponential backoff with full jitter: ``uniform(0, min(max, base * 2**attempt))``.

    A server-provided ``Retry-After`` wins (plus a little jitter so that the workers that got
    the same 429 do not all come back in the same millisecond).
    """

    def __init__(self, max_retries: int = 6, base_s: float = 0.5, max_s: float = 60.0):
        self.max_retries = max(0, int(max_retries))
        self.base_s = base_s
        self.max_s = max_s

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            # Honored even above max_s: coming back earlier only earns another 429.
            return min(retry_after, 600.0) + random.uniform(0, 0.1 * retry_after + 0.05)
        return random.uniform(0, min(self.max_s, self.base_s * (2**attempt)))


class TokenBucket:
    """An asyncio token bucket that may go into debt.

    ``rate_per_s`` tokens refill per second up to ``capacity``. ``acquire(n)`` waits until the
    bucket holds ``min(n, capacity)`` tokens and then takes all ``n`` (the balance may go
    negative), so a request larger than the burst size still passes and the long-run rate
    is still exact. ``adjust(delta)`` corrects an estimate after the fact. Waiters are served
    first-come first-served (one lock), so a large request is not starved by small ones.
    """

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self.rate = float(rate_per_s)
        self.capacity = max(1.0, float(capacity))
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self, n: float) -> float:
        """Take ``n`` tokens if available and return 0.0, else return the seconds to wait."""
        self._refill()
        need = min(n, self.capacity)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        """Wait for and take ``n`` tokens."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                wait = self.try_take(n)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)

    def adjust(self, delta: float) -> None:
        """Give back (positive) or take (negative) tokens, e.g. actual minus estimated usage."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + delta)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits (either may be None).

    Buckets hold one second's worth of budget (at least one request), not a full minute:
    providers enforce per-minute limits on shorter windows, so a minute-sized burst at start
    would earn 429s.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, burst_s: float = 1.0):
        self.rpm_bucket = TokenBucket(rpm / 60.0, rpm / 60.0 * burst_s) if rpm else None
        self.tpm_bucket = TokenBucket(tpm / 60.0, tpm / 60.0 * burst_s) if tpm else None

    @property
    def counts_tokens(self) -> bool:
        """Whether callers need to estimate tokens at all (skip the work otherwise)."""
        return self.tpm_bucket is not None

    async def acquire(self, est_tokens: float = 0.0) -> None:
        """Wait until one request of ``est_tokens`` may be sent."""
        if self.rpm_bucket is not None:
            await self.rpm_bucket.acquire(1.0)
        if self.tpm_bucket is not None:
            await self.tpm_bucket.acquire(est_tokens)

    def correct(self, est_tokens: float, actual_tokens: float) -> None:
        """Replace a request's estimated token cost with its actual usage."""
        if self.tpm_bucket is not None and actual_tokens > 0:
            self.tpm_bucket.adjust(est_tokens - actual_tokens)


def estimate_tokens(messages: list[dict], params: dict) -> int:
    """Rough prompt-plus-completion token estimate: characters / 4 + ``max_tokens``."""
    chars = 0
    for m in messages:
        c = m.get("content")
        chars += len(c) if isinstance(c, str) else len(str(c or ""))
    return chars // 4 + 4 * len(messages) + int(params.get("max_tokens") or 0)


async def run_window(
    requests: Iterable[Any],
    attempt: Callable[[Any], Awaitable[Any]],
    on_result: Callable[[Any], None],
    make_error: Callable[[Any, str, float], Any],
    *,
    concurrency: int,
    limiter: RateLimiter | None = None,
    retry: RetryPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    usage_of: Callable[[Any], int] | None = None,
    breaker: CircuitBreaker | None = None,
    recharge: Callable[[Any], Awaitable[bool]] | None = None,
) -> None:
    """Run ``requests`` (an iterable, or an async iterable fed while running) through ``attempt``
    with ``concurrency`` requests in flight.

    ``on_result`` is called once per dispatched request, in completion order, with either
    ``attempt``'s result or ``make_error(request, message, elapsed_s)`` after the retries are
    spent. ``should_stop()`` is checked before each new request is taken from the iterator;
    requests never taken produce no result. If ``on_result`` (or the iterator) raises, the
    other workers are cancelled and the exception propagates. Each result gets ``attempts``
    (how many times it was sent). With a ``breaker``, a request that fails transiently after
    its retries is just a failed result; once the breaker opens, no new request is taken,
    requests waiting to retry give up, and ``breaker.error()`` is raised after every
    in-flight result was delivered. ``recharge(request)`` is awaited before every retry (not
    before a first attempt): limits shared with other processes charge each attempt there
    (engine/permits.py, :meth:`~distillflow.engine.permits.Gate.retake`); when it returns False
    the request gives up.
    """
    # An async iterable (a queue fed while the window runs) or a plain iterable.
    ait = requests.__aiter__() if hasattr(requests, "__aiter__") else None
    it = None if ait is not None else iter(requests)
    retry = retry or RetryPolicy()
    limited = limiter is not None and (limiter.rpm_bucket is not None or limiter.tpm_bucket is not None)
    count_tokens = limited and limiter.counts_tokens
    perf = time.perf_counter
    sleep = asyncio.sleep

    async def worker() -> None:
        while True:
            # Checked before taking the next request, so it also sees what the last
            # on_result did (e.g. a budget just exhausted); untaken requests stay untouched.
            if should_stop is not None and should_stop():
                return
            if breaker is not None and breaker.is_open:
                return
            try:  # one shared iterator: each request goes to exactly one worker
                req = await ait.__anext__() if ait is not None else next(it)
            except (StopIteration, StopAsyncIteration):
                return
            est = estimate_tokens(req.messages, req.params) if count_tokens else 0
            t0 = perf()
            tries = 0
            last: Exception | None = None
            while True:
                if limited:
                    await limiter.acquire(est)
                if tries and recharge is not None and not await recharge(req):
                    result = make_error(req, f"{last} (gave up after {tries} attempts: no rate permit "
                                             "for a retry, the run is stopping)", perf() - t0)
                    tries -= 1  # (this attempt was not sent)
                    break
                try:
                    result = await attempt(req)
                except TransientError as exc:
                    last = exc
                    if tries >= retry.max_retries or (breaker is not None and breaker.is_open):
                        result = make_error(req, f"{exc} (gave up after {tries + 1} attempts)", perf() - t0)
                        result.transient = True
                        if breaker is not None:
                            breaker.record(False, str(exc))
                        break
                    await sleep(retry.delay(tries, exc.retry_after))
                    if breaker is not None and breaker.is_open:  # opened meanwhile: no more attempts
                        result = make_error(req, f"{exc} (gave up after {tries + 1} attempts: the teacher looks down)",
                                            perf() - t0)
                        result.transient = True
                        break
                    tries += 1
                    continue
                except PermanentError as exc:
                    result = make_error(req, str(exc), perf() - t0)
                    break
                except Exception as exc:  # e.g. an unserializable message: fail this request only
                    result = make_error(req, f"{type(exc).__name__}: {exc}", perf() - t0)
                    break
                if count_tokens and usage_of is not None:
                    limiter.correct(est, usage_of(result))
                if tries:
                    result.latency_s = perf() - t0
                if breaker is not None:
                    breaker.record(True)
                break
            result.attempts = tries + 1
            on_result(result)

    # Checked once before starting so a stopped run dispatches nothing at all.
    if should_stop is not None and should_stop():
        return
    if breaker is not None:
        if breaker.is_open:
            raise breaker.error()
        breaker.start()
    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, int(concurrency)))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # cancelled (Ctrl-C): stop every worker before unwinding
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()
    if breaker is not None and breaker.is_open:
        raise breaker.error()
