"""Pydantic models of a distillflow pipeline: the single source of truth for YAML and Python.

    spec = PipelineSpec.model_validate(yaml.safe_load(text))
    spec.teachers[0].name        # -> "teacher"
    spec.to_yaml()               # round-trips
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from distillflow.spec.review import ReviewSpec
from distillflow.spec.train import EvalSpec, TrainSpec

_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Spec(BaseModel):
    """Base: unknown keys are errors (we never forgive typos)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, populate_by_name=True)


# --------------------------------------------------------------------------- source


class HeldoutSpec(Spec):
    """Prompts reserved for evaluation before generation; never sent to a teacher for training."""

    size: int | None = Field(None, ge=1, description="Number of prompts to hold out.")
    fraction: float | None = Field(None, gt=0, lt=1, description="Fraction of prompts to hold out.")
    seed: int = Field(0, description="Seed of the held-out draw.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.size is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'size' or 'fraction'")
        return self


class SourceSpec(Spec):
    """Where prompts come from.

    kinds: jsonl | csv | parquet | disk (a `datasets` save_to_disk directory) | hub (a Hub dataset id)
    | inline (rows written in the YAML).
    """

    kind: Literal["jsonl", "csv", "parquet", "disk", "hub", "inline"] = Field(
        description="Format of the prompt source."
    )
    path: str | None = Field(None, description="File or directory (jsonl/csv/parquet/disk), relative to the YAML file.")
    dataset: str | None = Field(None, description="Hub dataset id (kind: hub), e.g. 'tatsu-lab/alpaca'.")
    config: str | None = Field(None, description="Hub dataset config name.")
    split: str = Field("train", description="Dataset split to read (hub/disk).")
    rows: list[dict[str, Any]] | None = Field(None, description="Inline rows (kind: inline).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping {our_name: source_column}; 'prompt' (text) or 'messages' (chat) is required.",
    )
    system_prompt: str | None = Field(None, description="System prompt added to every conversation.")
    limit: int | None = Field(None, ge=1, description="Read at most this many prompts (after shuffling).")
    shuffle: bool = Field(False, description="Shuffle prompts with `seed` before `limit`.")
    seed: int = Field(0, description="Shuffle seed.")
    heldout: HeldoutSpec | None = Field(None, description="Reserve prompts for evaluation.")

    @model_validator(mode="after")
    def _needs(self):
        need = {"jsonl": "path", "csv": "path", "parquet": "path", "disk": "path", "hub": "dataset", "inline": "rows"}
        key = need[self.kind]
        if getattr(self, key) in (None, []):
            raise ValueError(f"source kind '{self.kind}' needs '{key}'")
        return self


# --------------------------------------------------------------------------- teachers

PROVIDERS = (
    "openai",  # any OpenAI-compatible endpoint
    "vllm_server",
    "tgi",
    "ollama",
    "transformers_serve",
    "anthropic",
    "hf_endpoint",
    "transformers",  # local transformers (distilabel TransformersLLM)
    "vllm",  # local vLLM (distilabel vLLM)
)
OPENAI_COMPATIBLE = ("openai", "vllm_server", "tgi", "ollama", "transformers_serve")


class GenerationParams(Spec):
    """Sampling parameters sent to the teacher."""

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


class PriceSpec(Spec):
    """USD per one million tokens, used for cost estimates and `budget.max_cost_usd`."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)


class TermsSpec(Spec):
    """The teacher's declared terms of use, disclosed in dataset and model cards."""

    allows_training: bool = Field(True, description="Whether the provider's terms allow training models on outputs.")
    source: str | None = Field(None, description="Where the terms are stated (URL or document).")
    notes: str | None = None


class TeacherSpec(Spec):
    """One teacher LLM. API keys are only read from the environment variable named in `api_key_env`."""

    name: str = Field(pattern=_ID, description="Name used by steps to refer to this teacher.")
    provider: Literal[PROVIDERS] = Field(description="One of: " + ", ".join(PROVIDERS))  # type: ignore[valid-type]
    model: str = Field(description="Model id, or a local directory for transformers/vllm.")
    base_url: str | None = Field(None, description="Endpoint, e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible).")
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key (never the key).")
    params: GenerationParams = Field(default_factory=GenerationParams)
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute limit.")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    price: PriceSpec = Field(default_factory=PriceSpec)
    terms: TermsSpec = Field(default_factory=TermsSpec)
    device: str | None = Field(None, description="Device for local providers ('cpu', 'cuda').")

    @field_validator("api_key_env")
    @classmethod
    def _not_a_key(cls, v):
        if v and (v.startswith("sk-") or len(v) > 64 or not v.replace("_", "").isalnum()):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v

    @model_validator(mode="after")
    def _endpoint(self):
        if self.provider in OPENAI_COMPATIBLE and self.provider != "openai" and not self.base_url:
            raise ValueError(f"provider '{self.provider}' needs 'base_url'")
        return self


# --------------------------------------------------------------------------- steps


class StepBase(Spec):
    id: str | None = Field(None, pattern=_ID, description="Step id (default: the kind, numbered if repeated).")
    after: list[str] | None = Field(
        None, description="Ids of the steps this one reads from (default: the previous step)."
    )


class GenerateStep(StepBase):
    """Ask teachers to answer every prompt."""

    kind: Literal["generate"]
    teachers: list[str] | None = Field(None, description="Teacher names (default: all teachers).")
    num_generations: int = Field(1, ge=1, le=64, description="Answers per prompt per teacher.")
    params: GenerationParams | None = Field(None, description="Overrides of the teachers' params.")


class JudgeStep(StepBase):
    """LLM-as-judge: a numeric score and a rationale per answer."""

    kind: Literal["judge"]
    teacher: str = Field(description="Name of the teacher acting as judge.")
    rubric: str = Field("helpfulness", description="helpfulness | correctness | harmlessness | free rubric text.")
    backend: Literal["rubric", "ultrafeedback", "prometheus"] = Field(
        "rubric", description="Prompt format: our rubric, or distilabel's UltraFeedback / PrometheusEval."
    )
    aspect: str = Field("helpfulness", description="UltraFeedback aspect.")
    scale: tuple[int, int] = Field((1, 5), description="Score range.")
    reference: str | None = Field(None, description="Column with a reference answer, shown to the judge.")


class VerifyStep(StepBase):
    """Programmatic verifier: adds `<id>_pass` and `<id>_detail`."""

    kind: Literal["verify"]
    check: str = Field(description="exact_match | contains | json_valid | regex | python_parses | module:function")
    reference: str | None = Field(None, description="Column holding the expected answer.")
    params: dict[str, Any] = Field(default_factory=dict)


class RewardStep(StepBase):
    """Score answers with a local sequence-classification reward model."""

    kind: Literal["reward"]
    model: str = Field(description="Local directory or id of a sequence-classification reward model.")
    device: str | None = None


class FilterStep(StepBase):
    """Keep rows where the expression is true; the rest go to `rejected` with the reason."""

    kind: Literal["filter"]
    where: str = Field(description="Expression over columns, e.g. \"judge_score >= 4 and len(response) < 2000\".")


class LengthFilterStep(StepBase):
    kind: Literal["length_filter"]
    column: str = "response"
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=1)


class RefusalFilterStep(StepBase):
    kind: Literal["refusal_filter"]
    column: str = "response"
    patterns: list[str] = Field(default_factory=list, description="Extra refusal regexes.")


class DedupStep(StepBase):
    kind: Literal["dedup"]
    method: Literal["exact", "near"] = "exact"
    columns: list[str] = Field(default_factory=lambda: ["prompt", "response"], description="Columns compared (exact).")
    column: str = Field("response", description="Column compared (near).")
    threshold: float = Field(0.85, gt=0, le=1, description="Jaccard threshold (near).")


class BestOfStep(StepBase):
    """Keep the best answer per prompt by a score or verifier column."""

    kind: Literal["best_of"]
    by: str = Field(description="Column to rank by, e.g. judge_score or verify_pass.")
    group_by: str = "prompt_id"
    higher_is_better: bool = True


class DistilabelStep(StepBase):
    """Any public distilabel step or task by class name, e.g. EvolInstruct."""

    kind: Literal["distilabel"]
    step: str = Field(description="distilabel class name, e.g. 'EvolInstruct', 'UltraFeedback'.")
    teacher: str | None = Field(None, description="Teacher that serves as the task's LLM (tasks only).")
    params: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments, validated by the class.")
    input_mappings: dict[str, str] = Field(default_factory=dict, description="{task_input: our_column}")
    output_mappings: dict[str, str] = Field(default_factory=dict, description="{task_output: our_column}")


StepSpec = Annotated[
    Union[
        GenerateStep,
        JudgeStep,
        VerifyStep,
        RewardStep,
        FilterStep,
        LengthFilterStep,
        RefusalFilterStep,
        DedupStep,
        BestOfStep,
        DistilabelStep,
    ],
    Field(discriminator="kind"),
]
STEP_KINDS = (
    "generate",
    "judge",
    "verify",
    "reward",
    "filter",
    "length_filter",
    "refusal_filter",
    "dedup",
    "best_of",
    "distilabel",
)


# --------------------------------------------------------------------------- run settings


class HubPushSpec(Spec):
    repo_id: str
    private: bool = True
    token_env: str = Field("HF_TOKEN", description="Env var holding the Hub token.")


class OutputSpec(Spec):
    dir: str | None = Field(None, description="Run directory (default: runs/<name>), relative to the YAML file.")
    push_to_hub: HubPushSpec | None = None


class BudgetSpec(Spec):
    max_cost_usd: float | None = Field(None, gt=0, description="Stop generation before this estimated cost.")


class PipelineSpec(Spec):
    """A whole distillation pipeline."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Pipeline name (used for the default run dir).")
    description: str | None = None
    source: SourceSpec
    teachers: list[TeacherSpec] = Field(min_length=1)
    steps: list[StepSpec] = Field(min_length=1)
    output: OutputSpec = Field(default_factory=OutputSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    review: ReviewSpec | None = None
    train: TrainSpec | None = None
    eval: EvalSpec | None = None

    # Where the YAML came from: line numbers for errors, and the base for relative paths.
    _lines: dict = PrivateAttr(default_factory=dict)
    _base_dir: Any = PrivateAttr(default=None)
    # Python objects (distilabel steps, verifier functions) attached by the Python front door.
    _objects: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _assign_ids(self):
        # Default ids: the kind, numbered when repeated ("judge", "judge_2"); explicit ids win.
        taken = {s.id for s in self.steps if s.id}
        counts: dict[str, int] = {}
        for s in self.steps:
            if s.id:
                continue
            counts[s.kind] = counts.get(s.kind, 0) + 1
            n = counts[s.kind]
            cand = s.kind if n == 1 else f"{s.kind}_{n}"
            while cand in taken:
                n += 1
                cand = f"{s.kind}_{n}"
            s.id = cand
            taken.add(cand)
        return self

    @model_validator(mode="after")
    def _kd_teacher(self):
        from distillflow.spec.train import kd_problems

        problems = kd_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def teacher(self, name: str) -> TeacherSpec:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_defaults=True)

    def to_yaml(self) -> str:
        from distillflow.spec.loader import dump_yaml

        return dump_yaml(self.to_dict())

    def spec_hash(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
