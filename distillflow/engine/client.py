"""A lean OpenAI-compatible chat client on aiohttp, built for request throughput.

On 2-core machines the client's CPU per request decides the rate as much as the endpoint
does (see ENVIRONMENT.md: bare aiohttp reaches ~97% of an endpoint's capacity, the openai SDK
~85%, httpx ~26%). So this client uses one ``aiohttp.ClientSession`` with keep-alive, encodes
each body once with the stdlib ``json`` (``orjson`` when already installed), and does no
per-request logging. Scheduling (sliding window, RPM/TPM buckets, retries) lives in
:mod:`distillflow.engine.scheduler` and is shared with the distilabel adapters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from distillflow.engine.scheduler import (
    CircuitBreaker,
    PermanentError,
    RateLimiter,
    RetryPolicy,
    TransientError,
    parse_retry_after,
    run_window,
)
from distillflow.engine.outputs import dumps_bytes as _dumps, loads as _loads  # orjson when installed
from distillflow.engine.replicas import ReplicaSet, route
from distillflow.errors import ConfigurationError

__all__ = [
    "ChatRequest",
    "ChatResult",
    "OpenAICompatibleClient",
    "alist_models",
    "list_models",
    "openai_body",
    "run_coroutine_sync",
]

# Statuses worth retrying besides 5xx: request timeout, conflict, rate limit.
_RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass(slots=True)
class ChatRequest:
    """One chat completion to request. ``key`` is the cache key, computed by the caller."""

    key: str
    messages: list[dict]
    params: dict
    meta: dict = field(default_factory=dict)


@dataclass(slots=True)
class ChatResult:
    """The outcome of one :class:`ChatRequest`; ``error`` is None on success.

    ``latency_s`` covers the whole request including retries. ``meta`` is the request's
    ``meta``, passed through untouched.
    """

    key: str
    text: str | None
    input_tokens: int
    output_tokens: int
    token_logprobs: list[float] | None
    finish_reason: str | None
    error: str | None
    latency_s: float
    cached: bool = False
    meta: dict = field(default_factory=dict)
    transient: bool = False  # the error was retryable and retries ran out (an outage, not a bad request)
    attempts: int = 1  # times the request was sent (1 + retries); 1 for cached answers
    # Per answer token, the teacher's top-k alternatives as [token, logprob] pairs (params top_logprobs=K);
    # token is "token_id:<id>" when the provider gives ids, else the token's text. None unless asked.
    top_logprobs: list[list[list]] | None = None


def _error_result(req: ChatRequest, message: str, elapsed: float) -> ChatResult:
    return ChatResult(req.key, None, 0, 0, None, None, message, elapsed, False, req.meta)


def _server_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the (truncated) body text."""
    try:
        data = _loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])
    except Exception:
        pass
    text = raw.decode("utf-8", "replace").strip()
    return text[:500] or "(empty body)"


def run_coroutine_sync(factory: Callable[[], object]):
    """Run ``factory()``'s coroutine to completion from synchronous code.

    Uses ``asyncio.run`` when no event loop runs in this thread; inside a running loop
    (Jupyter) it runs in a fresh worker thread with its own loop and re-raises its error.
    A Ctrl-C then lands in the caller's thread, not the loop's: the coroutine is cancelled, as
    ``asyncio.run`` does on Ctrl-C in the main thread, and waited for, so its cleanup runs (answers
    flushed to the cache, a Ray run's permit hub read back) before KeyboardInterrupt is raised.
    A second Ctrl-C stops waiting.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict = {}
    started, finished, abandoned = threading.Event(), threading.Event(), threading.Event()

    async def main():
        if abandoned.is_set():  # Ctrl-C came while the thread was starting: the run never begins
            return None
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await factory()

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            started.set()
            finished.set()

    thread = threading.Thread(target=target, name="distillflow-client", daemon=True)
    # The thread starts inside the try: a Ctrl-C that lands during or right after start() (the run
    # perhaps already going) must stop it too (it escaped here once).
    try:  # (an Event, not Thread.join: an interrupted join marks a live thread as stopped, bpo-45274)
        thread.start()
        finished.wait()
    except KeyboardInterrupt:
        abandoned.set()
        if thread.ident is None:  # not running yet: if it ever runs, it sees `abandoned` first
            raise
        started.wait()
        if "task" in box and not finished.is_set():
            try:
                box["loop"].call_soon_threadsafe(box["task"].cancel)
            except RuntimeError:  # its loop closed meanwhile
                pass
        finished.wait()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def openai_body(model: str, request: ChatRequest) -> dict:
    """The chat-completions body of a request: what the online client sends and a provider batch line carries."""
    body: dict = {"model": model, "messages": request.messages}
    for k, v in request.params.items():
        if v is None or k == "n":
            continue
        if k == "logprobs":
            if v:
                body["logprobs"] = True
            continue
        if k == "top_logprobs":
            body["logprobs"] = True  # OpenAI rejects top_logprobs without logprobs
        body[k] = v
    return body


class OpenAICompatibleClient:
    """Chat completions against any OpenAI-compatible ``base_url`` (ending in ``/v1``).

    ``concurrency`` requests stay in flight; ``rpm``/``tpm`` cap the rate; transient failures
    (429, 5xx, 408/409, connection errors, timeouts, truncated or non-OpenAI-shaped 2xx bodies)
    are retried up to ``max_retries`` times. ``api_key_env`` only names the variable in 401/403
    messages. A ``breaker`` (:class:`~distillflow.engine.scheduler.CircuitBreaker`) stops a run
    on a sustained outage; without one, every request is tried to its end. A list of base URLs is
    a set of replicas of one model (:mod:`distillflow.engine.replicas`): the limits hold for all together.
    """

    streams = True  # `arun` accepts an async iterable fed while it runs (one window per run)

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        concurrency: int = 64,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        extra_headers: dict | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        breaker: CircuitBreaker | None = None,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_url = urls[0].rstrip("/")  # the first replica is the teacher's identity
        self.breaker = breaker
        self.url = self.base_url + "/chat/completions"
        # One URL keeps the direct path; several route each attempt to a replica.
        self.replicas = ReplicaSet(urls) if len(urls) > 1 else None
        self.model = model
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.rpm, self.tpm = rpm, tpm
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_retries, backoff_base_s, backoff_max_s)
        # awaited before each retry (see run_window's ``recharge``): set by a Lane whose limits are
        # shared with other processes, so a retry takes a rate permit as a first attempt does
        self.retry_charge: Callable[[ChatRequest], Awaitable[bool]] | None = None
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.headers.update(extra_headers or {})

    def _payload(self, req: ChatRequest) -> bytes:
        return _dumps(openai_body(self.model, req))

    async def arun(
        self,
        requests: Iterable[ChatRequest],
        on_result: Callable[[ChatResult], None],
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Send every request; call ``on_result`` for each dispatched one, in completion order."""
        import aiohttp
        from yarl import URL  # aiohttp's own dependency

        connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        url, api_key_env, perf = self.url, self.api_key_env, time.perf_counter
        target = URL(url)  # parsed once: a str would be re-parsed on every request
        client_error = aiohttp.ClientError

        # No cookie jar: an API client needs none, and matching cookies costs CPU per request.
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.headers, raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            post = session.post

            async def attempt(req: ChatRequest, target=target, url=url) -> ChatResult:
                data = self._payload(req)
                t0 = perf()
                try:
                    async with post(target, data=data) as resp:
                        raw = await resp.read()
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After") if status >= 300 else None
                except asyncio.TimeoutError:
                    raise TransientError(f"timeout after {self.timeout_s:g}s from {url}") from None
                except (client_error, OSError) as exc:
                    raise TransientError(f"connection error to {url}: {exc!r}") from None
                if 200 <= status < 300:
                    return _parse_completion(req, raw, perf() - t0)
                # No URL in the text: callers match words like "429" in it, and a port may hold them.
                message = f"HTTP {status}: {_server_message(raw)}"
                if status in _RETRY_STATUSES or status >= 500:
                    raise TransientError(message, parse_retry_after(retry_after), status=status)
                if status in (401, 403):
                    raise PermanentError(
                        f"{message} — the endpoint rejected the API key; check ${api_key_env} "
                        "(or the teacher's api_key_env setting)"
                    )
                raise PermanentError(message)

            if self.replicas is not None:
                attempt = route(self.replicas, attempt, [
                    (URL(u + "/chat/completions"), u + "/chat/completions") for u in self.replicas.urls])
            await run_window(
                requests,
                attempt,
                on_result,
                _error_result,
                concurrency=self.concurrency,
                limiter=RateLimiter(self.rpm, self.tpm),
                retry=self.retry,
                should_stop=should_stop,
                usage_of=lambda r: r.input_tokens + r.output_tokens,
                breaker=self.breaker,
                recharge=self.retry_charge,
            )

    def replica_stats(self) -> list[dict] | None:
        """Per-replica counters (see :meth:`ReplicaSet.stats`), None for a single ``base_url``."""
        return None if self.replicas is None else self.replicas.stats()

    def run(
        self,
        requests: Iterable[ChatRequest],
        on_result: Callable[[ChatResult], None],
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Synchronous :meth:`arun`; works inside a running event loop too (worker thread,
        in which case ``on_result`` is called from that thread)."""
        run_coroutine_sync(lambda: self.arun(requests, on_result, should_stop))


def _parse_completion(req: ChatRequest, raw: bytes, elapsed: float) -> ChatResult:
    """Build a ChatResult from a 2xx body. A body that is not an OpenAI-shaped completion (a
    proxy's HTML page, no or empty ``choices``, cut-off JSON) is transient: it comes from
    something between us and the model, and asking again is what works."""
    try:
        data = _loads(raw)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content")
        finish = choice.get("finish_reason")
    except Exception:
        raise TransientError(f"invalid chat completion (not OpenAI-shaped JSON): {raw[:300]!r}") from None
    lps = None
    if req.params.get("logprobs"):
        content = (choice.get("logprobs") or {}).get("content")
        if content:
            lps = [float(t["logprob"]) for t in content if t.get("logprob") is not None]
    usage = data.get("usage") or {}
    # Fall back to a chars/4 estimate when a server sends no usage: budget caps need a number.
    inp = usage.get("prompt_tokens")
    if inp is None:
        inp = sum(len(str(m.get("content") or "")) for m in req.messages) // 4
    out = usage.get("completion_tokens")
    if out is None:
        out = len(text or "") // 4
    return ChatResult(req.key, text, int(inp), int(out), lps, finish, None, elapsed, False, req.meta,
                      top_logprobs=parse_top_logprobs(req, choice))


def parse_top_logprobs(req: ChatRequest, choice: dict) -> list[list[list]] | None:
    """The ``top_logprobs`` of every answer token as ``[[token, logprob], ...]`` (None when not asked).

    vLLM with ``return_tokens_as_token_ids`` sends ``token_id:<id>`` tokens, which are kept as they are;
    other servers send token text, mapped to ids through the student's tokenizer at export time.
    """
    if not req.params.get("top_logprobs"):
        return None
    content = (choice.get("logprobs") or {}).get("content") or []
    out = []
    for tok in content:
        alts = tok.get("top_logprobs") or []
        out.append([[str(a.get("token")), float(a["logprob"])] for a in alts if a.get("logprob") is not None])
    return out or None


async def alist_models(base_url: str, api_key: str | None = None, timeout_s: float = 10.0,
                       api_key_env: str = "OPENAI_API_KEY") -> list[str]:
    """Model ids served at ``base_url`` (``GET {base_url}/models``), for preflight checks.

    Raises :class:`~distillflow.errors.ConfigurationError` naming the URL and the fix when the
    endpoint is unreachable, rejects the key or does not answer like an OpenAI endpoint.
    """
    import aiohttp

    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(url, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise ConfigurationError(
            f"cannot reach the teacher endpoint {url}: {exc or type(exc).__name__}. "
            "Start the server, or fix base_url (it should end in /v1, e.g. http://127.0.0.1:8000/v1)."
        ) from None
    if status in (401, 403):
        raise ConfigurationError(
            f"{url} rejected the API key (HTTP {status}): {_server_message(raw)}. "
            f"Set ${api_key_env} to a valid key (or fix the teacher's api_key_env)."
        )
    if status != 200:
        raise ConfigurationError(
            f"{url} answered HTTP {status}: {_server_message(raw)}. "
            "Check that base_url points at an OpenAI-compatible API (ending in /v1)."
        )
    try:
        return [str(m["id"]) for m in _loads(raw)["data"]]
    except Exception:
        raise ConfigurationError(
            f"{url} did not answer like an OpenAI-compatible /models endpoint: {raw[:200]!r}"
        ) from None


def list_models(base_url: str, api_key: str | None = None, timeout_s: float = 10.0,
                api_key_env: str = "OPENAI_API_KEY") -> list[str]:
    """Synchronous :func:`alist_models`."""
    return run_coroutine_sync(lambda: alist_models(base_url, api_key, timeout_s, api_key_env))
