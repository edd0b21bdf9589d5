"""Anthropic Message Batches through the real ``anthropic`` SDK (``base_url`` reaches any server
that implements ``/v1/messages/batches``).

    backend = AnthropicBatchBackend(model="claude-sonnet-4-5", api_key=key)

The batch carries the requests itself (no file upload); results stream as JSONL from the batch's
``results_url`` once ``processing_status`` is ``ended``. Each result is ``succeeded``,
``errored``, ``canceled`` or ``expired``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re

from distillflow.engine.batch.base import (
    CANCELLED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    BatchStatus,
    LineResult,
    dumps_line,
)
from distillflow.engine.client import ChatRequest, ChatResult
from distillflow.errors import MissingDependencyError

# Documented limit: "Batches may contain up to 100,000 requests and be up to 256 MB in total size"
# (Anthropic API reference, Create a Message Batch: docs.claude.com/en/api/creating-message-batches).
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # the API's pattern for custom_id
_RETRYABLE = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


def custom_id(key: str) -> str:
    """The key itself when the API accepts it (our sha256 keys do), else a stable digest of it."""
    return key if _CUSTOM_ID.match(key) else "k" + hashlib.sha256(key.encode()).hexdigest()[:63]


class AnthropicBatchBackend:
    provider = "anthropic"

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None,
                 max_requests: int | None = None, max_bytes: int | None = None, timeout_s: float = 120.0,
                 max_retries: int = 6):
        try:
            from anthropic import AsyncAnthropic
        except ImportError:
            raise MissingDependencyError(
                "mode: batch with provider anthropic needs the anthropic SDK: pip install 'distillflow[anthropic]'"
            ) from None
        self.model = model
        self.max_requests = min(max_requests or MAX_REQUESTS, MAX_REQUESTS)
        self.max_bytes = min(max_bytes or MAX_BYTES, MAX_BYTES)
        kwargs = {"base_url": base_url} if base_url else {}
        self._client = AsyncAnthropic(api_key=api_key or "unset", timeout=timeout_s, max_retries=max_retries, **kwargs)

    def encode(self, request: ChatRequest) -> bytes:
        system = [str(m.get("content") or "") for m in request.messages if m.get("role") == "system"]
        params: dict = {
            "model": self.model,
            "max_tokens": int(request.params.get("max_tokens") or 1024),  # required by the API
            "messages": [{"role": m["role"], "content": m.get("content") or ""}
                         for m in request.messages if m.get("role") != "system"],
        }
        if system:
            params["system"] = "\n\n".join(system)
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("stop", "stop_sequences")):
            if request.params.get(ours) is not None:
                params[theirs] = request.params[ours]
        return dumps_line({"custom_id": custom_id(request.key), "params": params})

    async def submit(self, lines: list[bytes], submission: str) -> str:
        batch = await self._client.messages.batches.create(requests=[json.loads(x) for x in lines])
        return batch.id

    async def find(self, submission: str, n_lines: int, since: float, exclude: frozenset = frozenset()) -> str | None:
        # Message batches carry no metadata: adopt the one batch of that size created right after
        # the interrupted submission (within 10 minutes), if exactly one matches.
        found = []
        async for b in self._client.messages.batches.list(limit=100):
            created = _ts(b.created_at)
            if created < since - 5:
                break
            rc = b.request_counts
            total = rc.processing + rc.succeeded + rc.errored + rc.canceled + rc.expired
            if b.id not in exclude and total == n_lines and created <= since + 600:
                found.append(b.id)
        return found[0] if len(found) == 1 else None

    async def status(self, batch_id: str) -> BatchStatus:
        b = await self._client.messages.batches.retrieve(batch_id)
        rc = b.request_counts
        total = rc.processing + rc.succeeded + rc.errored + rc.canceled + rc.expired
        return BatchStatus(b.processing_status, b.processing_status == "ended", total, rc.succeeded,
                           rc.errored + rc.canceled + rc.expired, {})

    async def results(self, batch_id: str, keys: dict[str, str]) -> list[LineResult]:
        out: dict[str, LineResult] = {}
        async for r in await self._client.messages.batches.results(batch_id):
            key = keys.get(r.custom_id)
            if key is None:
                continue
            res = r.result
            if res.type == "succeeded":
                m = res.message
                text = "".join(getattr(b, "text", "") for b in m.content if getattr(b, "type", "") == "text")
                u = m.usage
                out[key] = LineResult(key, SUCCEEDED, ChatResult(
                    key, text, int(u.input_tokens or 0), int(u.output_tokens or 0), None, m.stop_reason, None, 0.0))
            elif res.type == "errored":
                err = getattr(res.error, "error", None)
                etype = getattr(err, "type", "error")
                out[key] = LineResult(key, ERRORED, None, f"{etype}: {getattr(err, 'message', '')}", etype in _RETRYABLE)
            elif res.type == "expired":
                out[key] = LineResult(key, EXPIRED, None, "expired: not processed within 24 hours", True)
            else:
                out[key] = LineResult(key, CANCELLED, None, "canceled before processing", False)
        for key in keys.values():
            if key not in out:
                out[key] = LineResult(key, ERRORED, None, "missing from the batch results", True)
        return list(out.values())

    async def cancel(self, batch_id: str) -> None:
        await self._client.messages.batches.cancel(batch_id)

    async def aclose(self) -> None:
        await self._client.close()


def _ts(value) -> float:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value or 0)
