"""Pydantic models of a distillflow pipeline: the single source of truth for YAML and Python.

    spec = PipelineSpec.model_validate(yaml.safe_load(text))
    spec.teachers[0].name        # -> "teacher"
    spec.to_yaml()               # round-trips
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from distillflow.spec.review import ReviewSpec
from distillflow.spec.train import EvalSpec, TrainSpec
from distillflow.steps import registry
from distillflow.steps.base import ID_PATTERN as _ID
from distillflow.steps.base import GenerationParams, Spec, StepBase

# GenerationParams, Spec and StepBase live with the step kinds and are part of this schema too.


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


class PriceSpec(Spec):
    """USD per one million tokens, used for cost estimates and `budget.max_cost_usd`."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)
    batch_input_per_1m: float | None = Field(
        None, ge=0, description="Batch-API price per 1M input tokens (default: half of input_per_1m)."
    )
    batch_output_per_1m: float | None = Field(
        None, ge=0, description="Batch-API price per 1M output tokens (default: half of output_per_1m)."
    )

    def rates(self, batch: bool = False) -> tuple[float, float]:
        """(input, output) USD per 1M tokens; batch prices default to half the online ones."""
        if not batch:
            return self.input_per_1m, self.output_per_1m
        inp = self.input_per_1m / 2 if self.batch_input_per_1m is None else self.batch_input_per_1m
        out = self.output_per_1m / 2 if self.batch_output_per_1m is None else self.batch_output_per_1m
        return inp, out


# "openai" also covers any OpenAI-compatible server implementing /v1/files + /v1/batches (base_url).
BATCH_PROVIDERS = ("openai", "anthropic")
IN_PROCESS_PROVIDERS = ("transformers", "vllm")  # the model runs in the client's own process (copies: on Ray)


class BatchSpec(Spec):
    """How a `mode: batch` teacher submits and polls provider batches."""

    poll_initial_s: float = Field(5.0, gt=0, description="First wait between status polls; doubles up to poll_max_s.")
    poll_max_s: float = Field(300.0, gt=0, description="Longest wait between status polls.")
    max_requests: int | None = Field(
        None, ge=1, description="Requests per batch (default and ceiling: the provider's documented limit)."
    )
    max_bytes: int | None = Field(
        None, ge=1024, description="Bytes per batch file (default and ceiling: the provider's documented limit)."
    )
    max_resubmits: int = Field(2, ge=0, description="Times an errored or expired line is resubmitted in one run.")


class OutageSpec(Spec):
    """When a teacher counts as down (its circuit breaker opens and the run stops with exit 1).

    A request that still fails after its retries is quarantined (a `teacher_error` row in
    `rejected`) and the run goes on; only a sustained outage stops it.
    """

    failures_in_a_row: int = Field(
        20, ge=1, description="Open after this many requests in a row failed after their retries.")
    seconds_without_success: float | None = Field(
        600.0, gt=0, description="Open when no request succeeded for this long while requests keep failing "
        "(at least 3 in a row); null turns this rule off.")


class TermsSpec(Spec):
    """The teacher's declared terms of use, disclosed in dataset and model cards."""

    allows_training: bool = Field(True, description="Whether the provider's terms allow training models on outputs.")
    source: str | None = Field(None, description="Where the terms are stated (URL or document).")
    notes: str | None = None


def _check_url(u: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(u)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"base_url {u!r} is not an http(s) URL — write it like http://127.0.0.1:8000/v1")


class TeacherSpec(Spec):
    """One teacher LLM. API keys are only read from the environment variable named in `api_key_env`."""

    name: str = Field(pattern=_ID, description="Name used by steps to refer to this teacher.")
    provider: Literal[PROVIDERS] = Field(description="One of: " + ", ".join(PROVIDERS))  # type: ignore[valid-type]
    model: str = Field(description="Model id, or a local directory for transformers/vllm.")
    base_url: str | list[str] | None = Field(
        None,
        description="Endpoint, e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible); a list of several is replicas "
        "of one model (least-loaded routing, failed ones rested; the first URL is the teacher's identity).",
    )
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key (never the key).")
    params: GenerationParams = Field(default_factory=GenerationParams)
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute limit.")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    outage: OutageSpec = Field(default_factory=OutageSpec, description="When the teacher counts as down.")
    price: PriceSpec = Field(default_factory=PriceSpec)
    mode: Literal["online", "batch"] = Field(
        "online", description="online: one request per answer; batch: the provider's batch API (about half price, up to 24 h)."
    )
    batch: BatchSpec = Field(default_factory=BatchSpec, description="Batch submission settings (mode: batch).")
    terms: TermsSpec = Field(default_factory=TermsSpec)
    device: str | None = Field(None, description="Device for local providers ('cpu', 'cuda').")
    copies: int | None = Field(
        None, ge=1, le=1024,
        description="Ray backend, local models (transformers, vllm): load the model this many times, each copy a "
        "Ray actor that every shard task sends its batches to (default: each task's worker process loads its own).",
    )
    gpus_per_copy: float | None = Field(
        None, ge=0, le=64,
        description="GPUs each copy reserves (a fraction such as 0.5 shares one, or whole GPUs). Default: 1 where "
        "the cluster has GPUs and the model runs on one (vllm; transformers with device cuda), else 0.",
    )

    @field_validator("api_key_env")
    @classmethod
    def _not_a_key(cls, v):
        if v and (v.startswith("sk-") or len(v) > 64 or not v.replace("_", "").isalnum()):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v

    @field_validator("base_url", mode="before")
    @classmethod
    def _url_or_list(cls, v):
        ok = v is None or isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(u, str) for u in v))
        if not ok:  # one message instead of pydantic's one per union member
            raise ValueError(f"base_url must be a URL or a list of URLs, got {v!r}")
        return list(v) if isinstance(v, tuple) else v

    @field_validator("base_url")
    @classmethod
    def _urls(cls, v):
        if v is None:
            return v
        urls = [v] if isinstance(v, str) else v
        if not urls:
            raise ValueError("base_url is an empty list — give one URL, or a list of replica URLs")
        seen = set()
        for u in urls:
            _check_url(u)
            key = u.rstrip("/")
            if key in seen:
                raise ValueError(f"base_url lists {u} twice — each replica must be a different endpoint")
            seen.add(key)
        # A one-element list is the same teacher as the plain string (same step hash).
        return urls[0] if len(urls) == 1 else list(urls)

    @model_validator(mode="after")
    def _endpoint(self):
        if self.provider in OPENAI_COMPATIBLE and self.provider != "openai" and not self.base_url:
            raise ValueError(f"provider '{self.provider}' needs 'base_url'")
        if isinstance(self.base_url, list) and self.provider not in OPENAI_COMPATIBLE:
            raise ValueError(
                f"provider '{self.provider}' takes one base_url, not a list: replicas are supported for "
                f"OpenAI-compatible providers ({', '.join(OPENAI_COMPATIBLE)})"
            )
        if self.mode == "batch" and self.provider not in BATCH_PROVIDERS:
            raise ValueError(
                f"mode: batch needs a provider with a batch API ({', '.join(BATCH_PROVIDERS)}); "
                f"'{self.provider}' has none — use mode: online"
            )
        if (self.copies is not None or self.gpus_per_copy is not None) and self.provider not in IN_PROCESS_PROVIDERS:
            raise ValueError(
                f"copies and gpus_per_copy are for local models (provider transformers or vllm), not '{self.provider}': "
                "an endpoint scales with several base_url replicas and its concurrency"
            )
        if self.gpus_per_copy is not None and self.gpus_per_copy > 1 and self.gpus_per_copy != int(self.gpus_per_copy):
            raise ValueError(f"gpus_per_copy {self.gpus_per_copy:g}: Ray places a fraction of one GPU or whole GPUs "
                             "(e.g. 0.5, 1, 2), not a fraction above one")
        if self.gpus_per_copy is not None and self.copies is None:
            raise ValueError("gpus_per_copy needs copies (how many copies of the model to load), e.g. copies: 2")
        if self.mode == "batch" and isinstance(self.base_url, list):
            raise ValueError(
                "mode: batch takes one base_url, not a list: a provider batch is submitted to one endpoint"
            )
        return self


# --------------------------------------------------------------------------- steps
# Step kinds live in distillflow/steps/ (one module each) and reach the schema through the registry.


def step_kinds() -> tuple[str, ...]:
    """Names of every registered step kind (built-ins, plugins, Python registrations)."""
    return tuple(registry.kinds())


def step_models() -> list[type[StepBase]]:
    return [k.spec for k in registry.kinds().values()]


# --------------------------------------------------------------------------- run settings


class HubPushSpec(Spec):
    repo_id: str
    private: bool = True
    token_env: str = Field("HF_TOKEN", description="Env var holding the Hub token.")


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")  # a scheme of 2+ characters (one letter: a Windows drive)


def url_scheme(path: str) -> str | None:
    """The scheme of ``path`` when it is a URL (``s3://bucket/run``; also ``s3:/bucket/run``, what
    ``pathlib.Path`` makes of one), else None."""
    m = _URL.match(str(path))
    return m.group(1) if m else None


def not_a_url_message(what: str, path: str) -> str:
    m = _URL.match(str(path))  # quoted as typed: s3://, where Path made it s3:/
    rest = str(path)[m.end():] if m else ""
    typed = f"{m.group(1)}://{rest}" if m and not rest.startswith("/") else str(path)
    return (f"{what} {typed!r} is a URL: a run directory is a path on a filesystem ({url_scheme(path)}:// "
            "and other URLs are not supported). Give a path on this machine's disk or, for a Ray cluster, on a "
            "shared filesystem (NFS...), and copy the results to the bucket afterwards")


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray ``HOST:PORT`` address (an IPv6 host in brackets: ``[::1]:6379``), else None."""
    host, _, port = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # (an IPv6 host without its brackets: Ray refuses it too)
        return None
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def address_problem(address: str) -> str | None:
    """What is wrong with a Ray address (None: nothing): auto, local, HOST:PORT, ray://HOST:PORT (or
    another ``module://`` address, which Ray hands to that module)."""
    a = address.strip()
    if not a:
        return ("the Ray address is empty: give auto, HOST:PORT or ray://HOST:10001, or leave it out "
                "(backend ray then joins RAY_ADDRESS or the cluster started on this machine, or starts one)")
    if a in ("auto", "local") or "://" in a:  # (Ray's "local": a new instance here, as no address)
        return None
    if split_address(a) is None:
        return (f"the Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or [fd00::5]:6379), auto or "
                "ray://HOST:10001")
    return None


class OutputSpec(Spec):
    dir: str | None = Field(None, description="Run directory (default: runs/<name>), relative to the YAML file.")
    push_to_hub: HubPushSpec | None = None

    @field_validator("dir")
    @classmethod
    def _a_path(cls, v):
        if v is not None and url_scheme(v):
            raise ValueError(not_a_url_message("output.dir", v))
        return v


class ExecutionSpec(Spec):
    """How a run executes: shards of prompts stream through the steps, a few at a time."""

    backend: Literal["local", "ray"] = Field(
        "local", description="Executor: local (one process) or ray (shards as Ray tasks on a cluster; `pip install 'distillflow[ray]'`)."
    )
    address: str | None = Field(
        None, description="Ray cluster to join (backend ray): `auto`, `HOST:PORT` or `ray://HOST:10001`; unset: `RAY_ADDRESS`, else the cluster last started on this machine with `ray start`, else a new Ray instance here (`local`: always a new one)."
    )
    shard_size: int = Field(1000, ge=1, le=1_000_000, description="Prompts per shard (the unit of streaming, commit and resume).")
    shards_in_flight: int = Field(4, ge=1, le=256, description="Shards being processed at once (memory ~ shard_size x this).")

    @field_validator("address", mode="before")
    @classmethod
    def _stripped(cls, v):
        return v.strip() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _address_needs_ray(self):
        problem = address_problem(self.address) if self.address is not None else None
        if problem:
            raise ValueError(problem)
        if self.address is not None and self.backend != "ray":
            raise ValueError("address is only used by backend: ray — add `backend: ray`, or remove address")
        return self


class BudgetSpec(Spec):
    max_cost_usd: float | None = Field(None, gt=0, description="Stop generation before this estimated cost.")


class PipelineSpec(Spec):
    """A whole distillation pipeline."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Pipeline name (used for the default run dir).")
    description: str | None = None
    source: SourceSpec
    teachers: list[TeacherSpec] = Field(min_length=1)
    steps: list[StepBase] = Field(min_length=1, description="Steps; each has a `kind` from the step registry.")
    output: OutputSpec = Field(default_factory=OutputSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    review: ReviewSpec | None = None
    train: TrainSpec | None = None
    eval: EvalSpec | None = None

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        """Validate with every registered step kind (the schema follows the registry)."""
        if cls is PipelineSpec:
            return pipeline_spec_class().model_validate(obj, *args, **kwargs)
        return super().model_validate(obj, *args, **kwargs)

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
        if problems:  # one per line, each starting with its path: the loader locates them
            raise ValueError("\n".join(problems))
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


def pipeline_spec_class() -> type[PipelineSpec]:
    """The run-time class of a pipeline spec: ``PipelineSpec`` whose ``steps`` are the step kinds
    registered now (one class per set of kinds, cached). What ``PipelineSpec.model_validate``
    validates with; also for rebuilding a spec from its pickled state in another process."""
    return _pipeline_model(_kinds_key())


def _kinds_key() -> tuple:
    return tuple((name, kind.spec) for name, kind in registry.kinds().items())


@functools.lru_cache(maxsize=8)
def _pipeline_model(key: tuple) -> type[PipelineSpec]:
    """PipelineSpec whose `steps` is the discriminated union of the registered kinds' models."""
    models = tuple(spec for _, spec in key)
    union = Annotated[Union[models], Field(discriminator="kind")] if len(models) > 1 else models[0]  # type: ignore[valid-type]
    return create_model(
        "PipelineSpec", __base__=PipelineSpec, __module__=__name__,
        steps=(list[union], Field(min_length=1, description="Steps; each has a `kind` from the step registry.")),
    )
