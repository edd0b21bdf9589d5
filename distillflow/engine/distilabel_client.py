"""Teacher clients over distilabel LLM objects, with the same interface as the HTTP client.

``AsyncLLMClient`` drives a distilabel ``AsyncLLM`` (``AnthropicLLM``,
``InferenceEndpointsLLM``, ...) through the shared sliding window, rate limits and retries of
:mod:`distillflow.engine.scheduler`, one ``agenerate`` call per request — instead of
distilabel's batches, which wait for their slowest request. ``SyncLLMClient`` drives a local
model (``TransformersLLM``, ``vLLM``) whose ``generate`` takes a batch.

Our request params use OpenAI names (``max_tokens``, ``stop``, ``logprobs``); each is mapped to
the name the LLM's method accepts (``max_new_tokens``, ``stop_sequences``) and params the
method does not accept are dropped, since distilabel validates its calls strictly.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distillflow.engine.client import ChatRequest, ChatResult, run_coroutine_sync
from distillflow.engine.scheduler import (
    PermanentError,
    RateLimiter,
    RetryPolicy,
    TransientError,
    parse_retry_after,
    run_window,
)

__all__ = ["AsyncLLMClient", "SyncLLMClient", "batch_seed", "classify_exception", "local_batches", "local_top_logprobs",
           "map_params"]

# Our name -> alternatives distilabel LLMs use for the same thing, in order of preference.
_ALIASES = {
    "max_tokens": ("max_tokens", "max_new_tokens"),
    "stop": ("stop", "stop_sequences"),
    "seed": ("seed", "random_seed"),
}
_TRANSIENT_NAMES = ("Timeout", "Connection", "RateLimit", "Overloaded", "ServiceUnavailable", "InternalServer")


def _accepted(fn: Callable) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    return {name: p for name, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}


def map_params(params: dict, accepted: dict[str, inspect.Parameter]) -> dict:
    """Translate OpenAI-style params to the keyword names a distilabel method accepts."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key == "n":
            continue
        if key == "logprobs":
            p = accepted.get("logprobs")
            if value and p is not None:
                # OpenAI-style flags take a bool; vLLM takes the number of top logprobs.
                out["logprobs"] = True if p.default is False else 1
            continue
        for name in _ALIASES.get(key, (key,)):
            if name in accepted:
                out[name] = value
                break
    return out


def classify_exception(exc: BaseException, api_key_env: str | None = None) -> Exception:
    """Map a provider SDK exception to :class:`TransientError` or :class:`PermanentError`.

    Reads ``status_code`` (anthropic, openai SDKs) or ``response.status_code`` (httpx /
    huggingface_hub errors) and ``Retry-After`` from the response headers when present.
    """
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if not isinstance(status, int):
        status = getattr(exc, "status", None) if isinstance(getattr(exc, "status", None), int) else None
    text = f"{type(exc).__name__}: {exc}"
    if status is not None:
        if status in (408, 409, 429) or status >= 500:
            headers = getattr(response, "headers", None) or {}
            try:
                retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
            except Exception:  # exotic header containers: fall back to our own backoff
                retry_after = None
            return TransientError(f"HTTP {status}: {text}", retry_after)
        if status in (401, 403):
            hint = f"${api_key_env}" if api_key_env else "the provider's API key environment variable"
            return PermanentError(f"HTTP {status}: {text} — the provider rejected the API key; check {hint}")
        return PermanentError(f"HTTP {status}: {text}")
    if isinstance(exc, (asyncio.TimeoutError, ConnectionError)) or any(
        s in type(exc).__name__ for s in _TRANSIENT_NAMES
    ):
        return TransientError(text)
    return PermanentError(text)


def _result_from_output(req: ChatRequest, output: dict, elapsed: float) -> ChatResult:
    """Convert distilabel's ``GenerateOutput`` (one generation) to a ChatResult."""
    generations = output.get("generations") or [None]
    stats = output.get("statistics") or {}
    inp = (stats.get("input_tokens") or [0])[0]
    outp = (stats.get("output_tokens") or [0])[0]
    lps = None
    if req.params.get("logprobs") and output.get("logprobs"):
        # distilabel keeps top-k distributions per position, not the sampled token's logprob;
        # the first (most likely) entry per position is the closest it offers.
        lps = [float(pos[0]["logprob"]) for pos in output["logprobs"][0] if pos] or None
    return ChatResult(req.key, generations[0], int(inp or 0), int(outp or 0), lps, None, None,
                      elapsed, False, req.meta)


def _error_result(req: ChatRequest, message: str, elapsed: float) -> ChatResult:
    return ChatResult(req.key, None, 0, 0, None, None, message, elapsed, False, req.meta)


class AsyncLLMClient:
    """Run requests through a distilabel ``AsyncLLM``'s ``agenerate``, ``concurrency`` at once.

    The LLM is ``load()``-ed at the start of every run, inside that run's event loop, because
    provider SDK clients bind their connection pools to the loop that first uses them.
    """

    streams = True  # `arun` accepts an async iterable fed while it runs (one window per run)

    def __init__(self, llm: Any, concurrency: int = 16, rpm: float | None = None, tpm: float | None = None,
                 timeout_s: float | None = 300.0, max_retries: int = 6, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 60.0, api_key_env: str | None = None, breaker=None):
        self.llm = llm
        self.breaker = breaker
        self.concurrency = max(1, int(concurrency))
        self.rpm, self.tpm = rpm, tpm
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_retries, backoff_base_s, backoff_max_s)
        self.retry_charge = None  # see OpenAICompatibleClient.retry_charge
        self.api_key_env = api_key_env
        self._accepted = _accepted(llm.agenerate)

    async def arun(self, requests: Iterable[ChatRequest], on_result: Callable[[ChatResult], None],
                   should_stop: Callable[[], bool] | None = None) -> None:
        """Send every request; call ``on_result`` for each dispatched one, in completion order."""
        self.llm.load()
        agenerate, accepted, perf = self.llm.agenerate, self._accepted, time.perf_counter
        extra = {"num_generations": 1} if "num_generations" in accepted else {}

        async def attempt(req: ChatRequest) -> ChatResult:
            # A copy: some LLMs (Anthropic) pop the system message off the list they get.
            messages = [dict(m) for m in req.messages]
            kwargs = {**map_params(req.params, accepted), **extra}
            t0 = perf()
            try:
                call = agenerate(input=messages, **kwargs)
                output = await (asyncio.wait_for(call, self.timeout_s) if self.timeout_s else call)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                raise TransientError(f"timeout after {self.timeout_s:g}s") from None
            except Exception as exc:  # provider SDKs raise their own families
                raise classify_exception(exc, self.api_key_env) from None
            return _result_from_output(req, output, perf() - t0)

        await run_window(
            requests, attempt, on_result, _error_result,
            concurrency=self.concurrency, limiter=RateLimiter(self.rpm, self.tpm), retry=self.retry,
            should_stop=should_stop, usage_of=lambda r: r.input_tokens + r.output_tokens,
            breaker=self.breaker, recharge=self.retry_charge,
        )

    def run(self, requests: Iterable[ChatRequest], on_result: Callable[[ChatResult], None],
            should_stop: Callable[[], bool] | None = None) -> None:
        """Synchronous :meth:`arun` (a worker thread when an event loop already runs)."""
        run_coroutine_sync(lambda: self.arun(requests, on_result, should_stop))


class SyncLLMClient:
    """Run requests through a local distilabel LLM's batched ``generate``.

    Consecutive requests with equal params form batches of up to ``batch_size`` (``generate``
    takes one set of params per call). A failing batch gives every request in it an error;
    local failures (out of memory, bad params) are not transient, so nothing is retried.
    """

    def __init__(self, llm: Any, batch_size: int = 8, load: bool = True):
        self.llm = llm
        self.batch_size = max(1, int(batch_size))
        self._needs_load = load
        self._accepted = _accepted(llm.generate)

    def _flush(self, batch: list[ChatRequest], on_result: Callable[[ChatResult], None]) -> None:
        params = map_params(batch[0].params, self._accepted)
        if "num_generations" in self._accepted:
            params["num_generations"] = 1
        if params.get("temperature") == 0 and "do_sample" in self._accepted:
            # greedy (evaluation asks temperature 0): transformers rejects temperature 0 when sampling
            params.pop("temperature")
            params["do_sample"] = False
        t0 = time.perf_counter()
        try:
            seed = batch_seed(batch)
            if seed is not None:
                # distilabel's local LLMs take no seed: seed torch's generator for this batch instead
                import torch

                torch.manual_seed(seed)
            outputs = self.llm.generate(inputs=[[dict(m) for m in r.messages] for r in batch], **params)
            k = batch[0].params.get("top_logprobs")
            tops = (local_top_logprobs(self.llm, [r.messages for r in batch],
                                       [(o.get("generations") or [None])[0] for o in outputs], int(k))
                    if k else [None] * len(batch))
        except Exception as exc:
            elapsed = time.perf_counter() - t0
            for req in batch:
                on_result(_error_result(req, f"{type(exc).__name__}: {exc}", elapsed))
            return
        elapsed = (time.perf_counter() - t0) / len(batch)
        for req, output, top in zip(batch, outputs, tops):
            result = _result_from_output(req, output, elapsed)
            result.top_logprobs = top
            on_result(result)

    def run(self, requests: Iterable[ChatRequest], on_result: Callable[[ChatResult], None],
            should_stop: Callable[[], bool] | None = None) -> None:
        """Generate every request in batches; ``should_stop`` is checked before each request
        joins a batch, and a stop drops the partial batch (undispatched: no results)."""
        if self._needs_load:
            self.llm.load()
            self._needs_load = False
        # distilabel's TransformersLLM hands the whole batch to a transformers pipeline without a
        # batch_size, which then generates one prompt at a time (~15x slower on CPU for tiny models)
        pipe = getattr(self.llm, "_pipeline", None)
        if pipe is not None and hasattr(pipe, "_batch_size") and not pipe._batch_size:
            pipe._batch_size = self.batch_size
        for batch in local_batches(_stoppable(requests, should_stop), self.batch_size):
            if should_stop is not None and should_stop():
                return
            self._flush(batch, on_result)

    async def arun(self, requests: Iterable[ChatRequest], on_result: Callable[[ChatResult], None],
                   should_stop: Callable[[], bool] | None = None) -> None:
        """:meth:`run` in a worker thread, so an event loop stays responsive meanwhile."""
        await asyncio.to_thread(self.run, requests, on_result, should_stop)


def local_batches(requests: Iterable[ChatRequest], size: int) -> Iterator[list[ChatRequest]]:
    """The batches of a local model's ``generate``: consecutive requests with the same params (the
    seed aside), at most ``size`` each; each yielded once the next request does not join it (lazily:
    a stop while pulling requests leaves the last batch yielded as it is)."""
    batch: list[ChatRequest] = []
    for req in requests:
        if batch and (len(batch) >= size or _batch_params(req) != _batch_params(batch[0])):
            yield batch
            batch = []
        batch.append(req)
    if batch:
        yield batch


def _batch_params(req: ChatRequest) -> dict:
    # Requests differing only by seed (one per sample index) share a batch, seeded by batch_seed.
    return {k: v for k, v in req.params.items() if k != "seed"}


# Params that choose what is reported about an answer, not how it is drawn: asking for them must not
# change the sampled answers (a KD run's teacher samples are the SFT run's).
_REPORTING_PARAMS = frozenset({"seed", "top_logprobs", "logprobs"})


def batch_seed(batch: list[ChatRequest]) -> int | None:
    """The torch seed of one local generate() batch, or None when no request carries a seed.

    Derived from the sampling params, and every request's seed and messages (the generate step
    offsets the seed by the sample index), so the same requests in the same batches sample the same
    answers in every fresh run. Not from the cache key: that holds the model's resolved path, so a
    checkout in another directory would draw other samples; nor from ``top_logprobs``/``logprobs``,
    which change what is reported, not what is drawn. A resumed run whose cache already holds part
    of a batch forms other batches: its new answers are reproducible for that cache state, not
    equal to a fresh run's.
    """
    if all(r.params.get("seed") is None for r in batch):
        return None
    # one batch shares its params but the seed (SyncLLMClient.run groups requests by _batch_params)
    shared = {k: v for k, v in batch[0].params.items() if k not in _REPORTING_PARAMS and v is not None}
    parts = [json.dumps(shared, sort_keys=True, default=str)]
    parts += [f"{r.params.get('seed')}:{json.dumps(r.messages, sort_keys=True, ensure_ascii=False)}" for r in batch]
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:15], 16)


def local_top_logprobs(llm: Any, conversations: list[list[dict]], answers: list[str | None],
                       k: int) -> list[list[list] | None]:
    """The teacher's top-``k`` log-probabilities at every answer token, by one forward pass.

    For local transformers teachers (distilabel keeps no scores): the prompt is formatted with the
    tokenizer's chat template (as distilabel does before generating), the answer re-tokenized and
    the end-of-turn token appended, so the positions are those a trainer sees. Raw model
    log-probabilities (temperature 1), tokens as ``token_id:<id>``.
    """
    import torch

    pipe = getattr(llm, "_pipeline", None)
    if pipe is None:
        raise RuntimeError(f"{type(llm).__name__} exposes no local model: top_logprobs needs local transformers "
                           "or an OpenAI-compatible endpoint")
    model, tok = pipe.model, pipe.tokenizer
    seqs, starts = [], []
    for messages, answer in zip(conversations, answers):
        if answer is None:
            seqs.append(None)
            starts.append(0)
            continue
        prompt = tok.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(prompt_ids + answer_ids)
        starts.append(len(prompt_ids))
    live = [s for s in seqs if s is not None]
    if not live:
        return [None] * len(seqs)
    width = max(len(s) for s in live)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in live])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in live])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
                                 .logits.float(), dim=-1).cpu()
    out: list[list[list] | None] = []
    row = 0
    for seq, start in zip(seqs, starts):
        if seq is None:
            out.append(None)
            continue
        # the logits at position p score the token at p + 1
        vals, idx = logp[row, start - 1 : len(seq) - 1].topk(k, dim=-1)
        out.append([[[f"token_id:{int(i)}", float(v)] for i, v in zip(ii, vv)] for ii, vv in zip(idx, vals)])
        row += 1
    return out


def _stoppable(requests: Iterable[ChatRequest], should_stop: Callable[[], bool] | None):
    for req in requests:
        if should_stop is not None and should_stop():
            return
        yield req
