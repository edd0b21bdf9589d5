"""Tokens, cost and budget per teacher.

    ledger = Ledger(max_cost_usd=5.0)
    ledger.add("gpt", input_tokens, output_tokens, cost_of(teacher, input_tokens, output_tokens), cached=False)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class TeacherStats:
    requests: int = 0  # answers used in this run (cached + new)
    cached: int = 0  # answers taken from the cache (not paid again)
    new: int = 0  # answers received in this invocation
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Ledger:
    max_cost_usd: float | None = None
    teachers: dict[str, TeacherStats] = field(default_factory=dict)
    budget_hit: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spent(self) -> float:
        return sum(t.cost_usd for t in self.teachers.values())

    def add(self, name: str, input_tokens: int, output_tokens: int, cost: float, cached: bool) -> None:
        with self._lock:
            s = self.teachers.setdefault(name, TeacherStats())
            s.requests += 1
            s.cached += int(cached)
            s.new += int(not cached)
            s.input_tokens += input_tokens
            s.output_tokens += output_tokens
            s.cost_usd += cost

    def fail(self, name: str) -> None:
        with self._lock:
            self.teachers.setdefault(name, TeacherStats()).failed += 1

    def snapshot(self) -> dict:
        return {n: dict(s.__dict__) for n, s in self.teachers.items()}

    def since(self, snap: dict) -> dict:
        """Per-teacher usage added since `snap` (stored with a step's cached output)."""
        out = {}
        for n, s in self.teachers.items():
            before = snap.get(n, {})
            d = {k: v - before.get(k, 0) for k, v in s.__dict__.items()}
            if any(d.values()):
                out[n] = d
        return out

    def replay(self, usage: dict) -> None:
        """Count a cached step's usage again (as cached answers: nothing is paid twice)."""
        with self._lock:
            for n, d in usage.items():
                s = self.teachers.setdefault(n, TeacherStats())
                s.requests += d.get("requests", 0)
                s.cached += d.get("requests", 0)
                s.input_tokens += d.get("input_tokens", 0)
                s.output_tokens += d.get("output_tokens", 0)
                s.cost_usd += d.get("cost_usd", 0.0)

    def to_dict(self) -> dict:
        return {
            n: {**s.__dict__, "cost_usd": round(s.cost_usd, 6)} for n, s in sorted(self.teachers.items())
        }


def cost_of(teacher, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
    """USD of one answer; ``batch=True`` uses the teacher's batch-API prices."""
    inp, out = teacher.price.rates(batch)
    return (input_tokens * inp + output_tokens * out) / 1e6


def estimate_cost(teacher, messages: list[dict], max_tokens: int | None, batch: bool = False) -> float:
    """Upper-bound cost of one request before sending it (chars/4 prompt tokens + max_tokens)."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return cost_of(teacher, chars // 4 + 8, max_tokens or 512, batch)


def is_outage(result) -> bool:
    """Retryable failures that outlived their retries stop the run; permanent ones reject one record."""
    return bool(getattr(result, "transient", False))
