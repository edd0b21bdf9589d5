"""What every provider batch backend offers, and the records they exchange with the dispatcher.

    backend = backend_for(teacher)                  # OpenAIBatchBackend | AnthropicBatchBackend
    batch_id = await backend.submit(lines, submission="sub-…")
    status = await backend.status(batch_id)         # BatchStatus(status="in_progress", ...)
    lines = await backend.results(batch_id, keys)   # [LineResult(key, result|None, outcome, ...)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from distillflow.engine.client import ChatRequest, ChatResult

# A line's outcome once its batch has ended.
SUCCEEDED, ERRORED, EXPIRED, CANCELLED, MISSING = "succeeded", "errored", "expired", "cancelled", "missing"


@dataclass(slots=True)
class BatchStatus:
    """A provider batch as last seen. ``terminal``: no more lines will be processed."""

    status: str  # the provider's own word (validating, in_progress, ended, expired, cancelled, ...)
    terminal: bool
    total: int
    completed: int  # lines answered successfully so far (as far as the provider says)
    failed: int  # lines errored, expired or cancelled so far
    raw: dict = field(default_factory=dict)


@dataclass(slots=True)
class LineResult:
    """One line of a finished batch mapped back to its request key (``custom_id``)."""

    key: str
    outcome: str  # SUCCEEDED | ERRORED | EXPIRED | CANCELLED | MISSING
    result: ChatResult | None = None  # set when SUCCEEDED
    error: str | None = None
    retryable: bool = False  # errored for a reason that may pass on resubmission (5xx, rate limit, expiry)


class BatchBackend(Protocol):
    """One provider's batch API. Implementations: OpenAI files+batches, Anthropic Message Batches."""

    provider: str
    max_requests: int
    max_bytes: int

    def encode(self, request: ChatRequest) -> bytes:
        """The request as the provider's JSON line (without the newline); its size counts."""

    async def submit(self, lines: list[bytes], submission: str) -> str:
        """Create one batch of these lines; returns the provider's batch id."""

    async def find(self, submission: str, n_lines: int, since: float, exclude: frozenset = frozenset()) -> str | None:
        """The id of a batch created by an interrupted :meth:`submit` call, if the provider has it."""

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str, keys: dict[str, str]) -> list[LineResult]:
        """Every line of an ended batch; ``keys`` maps custom_id -> request key."""

    async def cancel(self, batch_id: str) -> None: ...

    async def aclose(self) -> None: ...


def parse_chat_completion(key: str, data: dict, messages: list[dict] | None = None) -> ChatResult:
    """A ChatResult from an OpenAI chat-completion body (a batch output line's ``response.body``)."""
    choice = data["choices"][0]
    text = (choice.get("message") or {}).get("content")
    lps = None
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if content:
        lps = [float(t["logprob"]) for t in content if t.get("logprob") is not None]
    usage = data.get("usage") or {}
    inp = usage.get("prompt_tokens")
    if inp is None:  # budget figures need a number: chars/4, as the online client does
        inp = sum(len(str(m.get("content") or "")) for m in messages or []) // 4
    out = usage.get("completion_tokens")
    if out is None:
        out = len(text or "") // 4
    return ChatResult(key, text, int(inp), int(out), lps, choice.get("finish_reason"), None, 0.0)


def dumps_line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
