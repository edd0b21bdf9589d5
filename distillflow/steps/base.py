"""What a step kind is: its spec model, the columns it reads and adds, its scope and its run function.

    from distillflow.steps.base import StepBase, StepKind, register

    class ShoutStep(StepBase):
        kind: Literal["shout"]
        column: str = "response"

    def run(ctx, step, rows, state):
        return [{**r, step.column: r[step.column].upper()} for r in rows], []

    register(StepKind("shout", ShoutStep, scope="row", run=run,
                      columns=lambda step: ({step.column}, set())))

A kind never imports the engine: what it needs from a run (teachers through the cache, window and
budget; the held-out prompts; progress) comes through ``ctx`` (:class:`StepContext`), a protocol
the engine implements. Built-in kinds are the modules of this package; a user's own kind is
registered from Python (:func:`register`) or through the ``distillflow.steps`` entry point group.
See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Scope = Literal["row", "prompt", "global"]
Rows = list[dict]


class Spec(BaseModel):
    """Base of every spec model: unknown keys are errors (we never forgive typos)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, populate_by_name=True)


class StepBase(Spec):
    """Fields every step has. A kind's model adds ``kind: Literal["name"]`` and its own fields."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="Step id (default: the kind, numbered if repeated).")
    after: list[str] | None = Field(
        None, description="Ids of the steps this one reads from (default: the previous step)."
    )


class GenerationParams(Spec):
    """Sampling parameters sent to the teacher (a teacher's defaults, or a generate step's overrides)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(512, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: bool = Field(False, description="Ask for token log-probabilities (OpenAI-compatible endpoints).")
    top_logprobs: int | None = Field(
        None, ge=1, le=20, description="Keep the teacher's top-K log-probabilities per answer token (column "
        "teacher_top_logprobs) for logprob distillation (train.mode: kd): OpenAI-compatible `top_logprobs`; "
        "local transformers computes them.",
    )


def effective_params(teacher, override: GenerationParams | None = None) -> dict:
    """The params a request to ``teacher`` carries: its defaults, then a step's explicit overrides."""
    params = teacher.params.model_dump(exclude_none=True)
    if override is not None:
        params.update(override.model_dump(exclude_none=True, exclude_unset=True))
    if not params.get("logprobs"):
        params.pop("logprobs", None)
    return params


def prompt_id(messages: list[dict]) -> str:
    """Stable id of a conversation (the prompt a record answers)."""
    import hashlib
    import json

    return hashlib.sha1(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


class StepContext(Protocol):
    """What a step may ask of the run executing it (implemented by the engine's executors)."""

    spec: Any  # the validated PipelineSpec (read-only)
    base_dir: Path  # relative paths in the spec are relative to this
    out_dir: Path  # the run directory
    objects: dict  # Python objects attached by the Python front door, by step id

    def teacher(self, name: str) -> Any:
        """The TeacherSpec called ``name``."""

    def request(self, teacher: Any, messages: list[dict], params: dict, index: int = 0, meta: dict | None = None) -> Any:
        """A cache-keyed chat request for ``teacher``."""

    async def ask(self, step_id: str, teacher: Any, requests: list) -> tuple[dict, dict]:
        """Answer ``requests``: (results by key, failures by key). Cached answers are not paid again.

        A request missing from both was not dispatched (budget reached or run stopping)."""

    def ask_blocking(self, step_id: str, teacher: Any, requests: list) -> tuple[dict, dict]:
        """:meth:`ask` from a worker thread (synchronous steps such as distilabel tasks)."""

    def cost(self, teacher: Any, input_tokens: int, output_tokens: int) -> float:
        """USD for one answer at the teacher's price."""

    def heldout(self) -> Iterator[dict]:
        """The run's held-out prompts (never sent to a teacher for training)."""

    def advance(self, step_id: str, n: int) -> None:
        """Report ``n`` rows done for the progress display."""


@dataclass(frozen=True)
class StepKind:
    """One step kind. ``run(ctx, step, rows, state) -> (kept, rejected)`` may be ``async def``.

    - ``scope``: ``row`` (each row on its own: streams shard by shard), ``prompt`` (needs every
      answer of a prompt together: still per shard, because shards split prompts, not answers),
      ``global`` (sees every row: shards go through it in order, one at a time, sharing ``state``).
    - ``columns(step)`` -> (columns read, columns added), checked when the graph is compiled.
    - ``prepare(ctx, step)`` -> state, once per run before the first shard (e.g. an index).
    - ``restore(state, step, kept_rows)``: a global kind's state after the shards committed
      by an earlier, interrupted run (called with each committed shard's kept rows, in order).
    - ``builder``: name of the Python front-door class (``distillflow.Screen``), or None.
    - ``teachers(step, spec)`` -> teacher names the step calls (for env checks and cache hashing).
    - ``generates``: the kind writes answers (a pipeline needs at least one such step).
    - ``field``: the spec field a column error points at (``where`` for filter).
    - ``manifest(step)`` -> (section, entry): recorded as ``manifest[section][step.id]`` (e.g. which
      eval sets a decontaminate step covered, read by `distillflow eval` and the report).
    - ``doc``: one line for generated references (default: the spec model's docstring).
    - ``check(step, obj)`` -> [(field path under the step, message), ...]: static checks of the
      step's own settings beyond the schema (a judge's rubric against its scale, a verifier's name
      and parameters), run when the plan is compiled, so `distillflow validate` reports them with
      their YAML path and line. ``obj`` is the Python object the front door attached to the step
      (or None). Static: it imports no user code and does no I/O.
    - ``preflight(step, obj)`` -> a short note or None: whether the step can run here (e.g. import
      a verifier named ``module:function``), called by `distillflow preflight` and at the start of
      a run, before any request. Raises ConfigurationError (cannot run here) or UsageError (the
      step's settings do not fit what it loaded).
    A kind whose ``columns`` returns None has columns only known at compile time (``describe``).
    """

    name: str
    spec: type[StepBase]
    run: Callable[..., Any]
    columns: Callable[[Any], tuple[set[str], set[str]] | None]
    scope: Scope | Callable[[Any], Scope] = "row"
    prepare: Callable[[Any, Any], Any] | None = None
    restore: Callable[[Any, Any, Rows], None] | None = None
    builder: str | None = None
    teachers: Callable[[Any, Any], list[str]] | None = None
    generates: bool = False
    field: str | None = None
    manifest: Callable[[Any], tuple[str, dict]] | None = None
    doc: str | None = None
    check: Callable[[Any, Any], list[tuple[tuple, str]]] | None = None
    preflight: Callable[[Any, Any], str | None] | None = None

    def scope_of(self, step) -> Scope:
        return self.scope(step) if callable(self.scope) else self.scope

    def __post_init__(self):
        if not callable(self.scope) and self.scope not in ("row", "prompt", "global"):
            raise ValueError(f"step kind '{self.name}': scope must be row, prompt or global, not {self.scope!r}")
        fields = getattr(self.spec, "model_fields", {})
        if "kind" not in fields:
            raise ValueError(f"step kind '{self.name}': its spec model needs a field `kind: Literal['{self.name}']`")
