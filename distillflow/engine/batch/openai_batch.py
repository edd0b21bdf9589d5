"""OpenAI Batch API (files + batches) through the ``openai`` SDK; any OpenAI-compatible server that
implements ``/v1/files`` and ``/v1/batches`` works through ``base_url``.

    backend = OpenAIBatchBackend(base_url="https://api.openai.com/v1", model="gpt-4o-mini", api_key=key)

Flow: upload a JSONL file (purpose ``batch``), create a batch on ``/v1/chat/completions`` with a
24 h window and our submission id in ``metadata``, retrieve it until it is terminal, then read
its output file (answers) and error file (failed, expired and cancelled lines).
"""

from __future__ import annotations

import json

from distillflow.engine.batch.base import (
    CANCELLED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    BatchStatus,
    LineResult,
    dumps_line,
    parse_chat_completion,
)
from distillflow.engine.client import ChatRequest, openai_body

# Documented limits of one batch input file: "up to 50,000 requests, and can be up to 200 MB in
# size" (OpenAI API reference, Create batch: platform.openai.com/docs/api-reference/batch/create).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024

_TERMINAL = {"completed", "failed", "expired", "cancelled"}
_RETRYABLE_STATUS = {408, 409, 429}
_METADATA_KEY = "distillflow_submission"


class OpenAIBatchBackend:
    provider = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 max_requests: int | None = None, max_bytes: int | None = None, timeout_s: float = 120.0,
                 max_retries: int = 6):
        from openai import AsyncOpenAI

        self.model = model
        self.max_requests = min(max_requests or MAX_REQUESTS, MAX_REQUESTS)
        self.max_bytes = min(max_bytes or MAX_BYTES, MAX_BYTES)
        # a local server needs no key, but the SDK insists on one
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s,
                                   max_retries=max_retries)

    def encode(self, request: ChatRequest) -> bytes:
        return dumps_line({"custom_id": request.key, "method": "POST", "url": "/v1/chat/completions",
                           "body": openai_body(self.model, request)})

    async def submit(self, lines: list[bytes], submission: str) -> str:
        data = b"\n".join(lines) + b"\n"
        f = await self._client.files.create(file=(f"{submission}.jsonl", data, "application/jsonl"), purpose="batch")
        batch = await self._client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={_METADATA_KEY: submission},
        )
        return batch.id

    async def find(self, submission: str, n_lines: int, since: float, exclude: frozenset = frozenset()) -> str | None:
        async for b in self._client.batches.list(limit=100):
            if (b.metadata or {}).get(_METADATA_KEY) == submission:
                return b.id
            if b.created_at and b.created_at < since - 3600:  # listed newest first: far enough back
                break
        return None

    async def status(self, batch_id: str) -> BatchStatus:
        b = await self._client.batches.retrieve(batch_id)
        rc = b.request_counts
        completed, failed = (rc.completed, rc.failed) if rc else (0, 0)
        return BatchStatus(b.status, b.status in _TERMINAL, rc.total if rc else 0, completed, failed,
                           {"output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
                            "errors": _batch_errors(b)})

    async def _lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        resp = await self._client.files.content(file_id)
        return [json.loads(line) for line in resp.content.splitlines() if line.strip()]

    async def results(self, batch_id: str, keys: dict[str, str]) -> list[LineResult]:
        st = await self.status(batch_id)
        seen: dict[str, LineResult] = {}
        for line in await self._lines(st.raw.get("output_file_id")) + await self._lines(st.raw.get("error_file_id")):
            key = keys.get(line.get("custom_id"))
            if key is None:
                continue
            seen[key] = _line_result(key, line)
        out = list(seen.values())
        batch_error = st.raw.get("errors")
        for cid, key in keys.items():  # lines the provider never reported (a failed or cancelled batch)
            if key not in seen:
                outcome = {"expired": EXPIRED, "cancelled": CANCELLED}.get(st.status, ERRORED)
                out.append(LineResult(key, outcome, None, batch_error or f"batch {st.status}",
                                      retryable=outcome != CANCELLED and not batch_error))
        return out

    async def cancel(self, batch_id: str) -> None:
        await self._client.batches.cancel(batch_id)

    async def aclose(self) -> None:
        await self._client.close()


def _batch_errors(b) -> str | None:
    errs = getattr(b, "errors", None)
    data = getattr(errs, "data", None) if errs else None
    if not data:
        return None
    return "; ".join(f"{e.code}: {e.message}" for e in data[:3])


def _line_result(key: str, line: dict) -> LineResult:
    resp = line.get("response") or {}
    err = line.get("error")
    status = resp.get("status_code")
    if not err and status == 200:
        try:
            return LineResult(key, SUCCEEDED, parse_chat_completion(key, resp.get("body") or {}))
        except (KeyError, IndexError, TypeError, ValueError):
            return LineResult(key, ERRORED, None, f"malformed answer: {str(resp.get('body'))[:200]}", False)
    if err:
        code = str(err.get("code") or "")
        message = f"{code}: {err.get('message') or ''}".strip(": ")
        if code == "batch_expired":
            return LineResult(key, EXPIRED, None, message, True)
        if code == "batch_cancelled":
            return LineResult(key, CANCELLED, None, message, False)
        return LineResult(key, ERRORED, None, message, code in ("server_error", "rate_limit_exceeded", "timeout"))
    body = resp.get("body") or {}
    detail = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else str(body)[:200]
    retryable = status is not None and (status >= 500 or status in _RETRYABLE_STATUS)
    return LineResult(key, ERRORED, None, f"HTTP {status}: {detail}", retryable)
