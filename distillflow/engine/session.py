"""Asking teachers outside a pipeline run, with the same request cache, ledger and clients as a run.

    with TeacherSession(run_dir / "eval" / "cache") as session:
        results, failures = session.ask(teacher, requests, "eval", label="gpt (eval judge)")
    session.ledger.to_dict()                                   # tokens and cost per label

``distillflow eval`` asks the teacher and its judges through a :class:`TeacherSession`; a pipeline run
asks through ``RunContext.ask`` (lanes, shards). Both keep one client per teacher in
:class:`TeacherClients`, so there is one way to build and reuse a teacher's client.
"""

from __future__ import annotations

import threading
from pathlib import Path

from distillflow.engine.ledger import Ledger, cost_of, estimate_cost

__all__ = ["TeacherClients", "TeacherSession"]


class TeacherClients:
    """One client per teacher (by name), built on first use and reused for every later ask."""

    def __init__(self) -> None:
        self._clients: dict = {}

    def client(self, teacher):
        if teacher.name not in self._clients:
            from distillflow.engine.providers import build_client

            self._clients[teacher.name] = build_client(teacher)
        return self._clients[teacher.name]


class TeacherSession(TeacherClients):
    """A request cache at ``cache_dir/requests.sqlite``, a ledger and clients; synchronous asks."""

    def __init__(self, cache_dir: str | Path, max_cost_usd: float | None = None):
        from distillflow.engine.cache import RequestCache
        from distillflow.engine.progress import NullReporter

        super().__init__()
        self.cache_path = Path(cache_dir) / "requests.sqlite"
        self.cache = RequestCache(self.cache_path)
        self.ledger = Ledger(max_cost_usd)
        self.reporter = NullReporter()
        self.stop_event = threading.Event()

    def ask(self, teacher, requests: list, step_id: str, label: str | None = None):
        """Answer `requests` for `teacher`: cached answers first, the rest from the endpoint.

        Returns (results: dict[key, ChatResult], failures: dict[key, ChatResult]). New answers are
        written to the cache as they arrive, so an interrupted evaluation never pays for them again.
        Stops dispatching when the budget would be exceeded (``ledger.budget_hit = True``).
        """
        ledger = self.ledger
        name = label or teacher.name
        hits = self.cache.get_many([r.key for r in requests]) if requests else {}
        results = dict(hits)
        for res in hits.values():
            ledger.add(name, res.input_tokens, res.output_tokens, cost_of(teacher, res.input_tokens, res.output_tokens), True)
        self.reporter.advance(step_id, len(hits), ledger.spent)
        misses = [r for r in requests if r.key not in hits]
        failures: dict = {}
        if not misses:
            return results, failures
        est = max(estimate_cost(teacher, r.messages, r.params.get("max_tokens")) for r in misses[:100])
        state = {"dispatched": 0, "completed": 0}

        def stream():
            for r in misses:
                state["dispatched"] += 1
                yield r

        def should_stop() -> bool:
            if self.stop_event.is_set():
                return True
            if ledger.max_cost_usd is None or est == 0:
                return False
            inflight = state["dispatched"] - state["completed"]
            if ledger.spent + (inflight + 1) * est > ledger.max_cost_usd:
                ledger.budget_hit = True
                return True
            return False

        def on_result(res) -> None:
            state["completed"] += 1
            if res.error:
                failures[res.key] = res
                ledger.fail(name)
            else:
                self.cache.put(res)
                results[res.key] = res
                ledger.add(name, res.input_tokens, res.output_tokens, cost_of(teacher, res.input_tokens, res.output_tokens), False)
            self.reporter.advance(step_id, 1, ledger.spent)

        try:
            self.client(teacher).run(stream(), on_result, should_stop)
        finally:
            self.cache.flush()
        return results, failures

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> "TeacherSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
