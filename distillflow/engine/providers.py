"""Teacher providers: spec -> a request client (fast path) or a distilabel LLM object.

OpenAI-compatible endpoints (OpenAI, vLLM server, TGI, Ollama, `transformers serve`) go through our
aiohttp sliding-window client; Anthropic and HF Inference Endpoints through distilabel's async LLM
classes; local transformers / vLLM through distilabel's local LLM classes.

    client = build_client(teacher)            # .run(requests, on_result, should_stop)
    llm = build_distilabel_llm(teacher)       # a distilabel LLM (for distilabel tasks)
"""

from __future__ import annotations

import os

from distillflow.errors import ConfigurationError, MissingDependencyError
from distillflow.spec.models import IN_PROCESS_PROVIDERS, OPENAI_COMPATIBLE
from distillflow.steps.base import effective_params  # noqa: F401 - part of this module's surface

DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}
_NEEDS_KEY = {"openai": True, "anthropic": True, "hf_endpoint": False}


LOCAL_MODEL_PROVIDERS = ("transformers", "vllm", "transformers_serve")


def resolve_local_models(spec, base_dir):
    """A copy of ``spec`` whose local model directories are absolute (relative to the YAML file, like
    every path in it); the given spec is not changed.

    `transformers serve` pins a served model to the absolute path it was started with, so the
    resolved path is also the model id sent to it. The train section's base model is resolved too,
    so the run directory's pipeline.yaml still finds the student when read from elsewhere.
    """
    from pathlib import Path

    if base_dir is None:
        return spec
    base = Path(base_dir)
    teachers = []
    for t in spec.teachers:
        if t.provider in LOCAL_MODEL_PROVIDERS and not Path(t.model).is_absolute():
            candidate = (base / t.model).resolve()
            if candidate.exists():
                t = t.model_copy(update={"model": str(candidate)})
        teachers.append(t)
    update = {"teachers": teachers}
    train = getattr(spec, "train", None)
    if train is not None and not Path(train.base_model).is_absolute():
        candidate = (base / train.base_model).resolve()
        if candidate.exists():
            update["train"] = train.model_copy(update={"base_model": str(candidate)})
    return spec.model_copy(update=update)


def make_request(teacher, messages, params, index, meta):
    """A ChatRequest keyed for the cache by teacher identity, params, messages and sample index."""
    from distillflow.engine.cache import request_key
    from distillflow.engine.client import ChatRequest

    key = request_key(teacher.provider, teacher.model, base_url(teacher) or "", params, messages, index)
    return ChatRequest(key=key, messages=messages, params=params, meta=meta)


def base_urls(teacher) -> list[str]:
    """Every endpoint of the teacher (several when ``base_url`` lists replicas), without a trailing slash."""
    value = teacher.base_url or DEFAULT_BASE_URLS.get(teacher.provider)
    urls = [value] if isinstance(value, str) else list(value or [])
    return [u.rstrip("/") for u in urls if u]


def base_url(teacher) -> str | None:
    """The teacher's identity URL: its only ``base_url``, or the first of its replicas.

    Cache keys use it, so which replica answered does not matter and adding a replica to the
    end of the list keeps every cached answer.
    """
    urls = base_urls(teacher)
    return urls[0] if urls else None


def teacher_identity(teacher, fields=("provider", "model", "base_url", "params")) -> dict:
    """The teacher's settings that shape its answers, for step hashes: ``model_dump`` of
    ``fields`` with a list of replicas replaced by its first URL, exactly as written: the same
    dict as for a teacher with that one ``base_url`` (replicas do not change answers)."""
    out = teacher.model_dump(mode="json", include=set(fields))
    if isinstance(out.get("base_url"), list):
        out["base_url"] = out["base_url"][0]
    return out


def api_key(teacher, required: bool = True) -> str | None:
    """Read the teacher's API key from the environment variable it names; never from YAML."""
    if not teacher.api_key_env:
        if required and (teacher.provider == "anthropic" or (teacher.provider == "openai" and not teacher.base_url)):
            raise ConfigurationError(
                f"teacher '{teacher.name}': provider '{teacher.provider}' needs an API key — add "
                f"`api_key_env: {'ANTHROPIC_API_KEY' if teacher.provider == 'anthropic' else 'OPENAI_API_KEY'}` "
                "to the teacher and export that variable"
            )
        return None
    value = os.environ.get(teacher.api_key_env)
    if not value and required:
        raise ConfigurationError(
            f"teacher '{teacher.name}': environment variable {teacher.api_key_env} is not set — "
            f"export {teacher.api_key_env}=... before running (keys are read from the environment only)"
        )
    return value


def missing_env(spec, teacher_names=None) -> list[str]:
    """Messages for every teacher whose API key env var is unset (for preflight/run)."""
    out = []
    for t in spec.teachers:
        if teacher_names is not None and t.name not in teacher_names:
            continue
        try:
            api_key(t)
        except ConfigurationError as e:
            out.append(str(e))
    return out


def build_breaker(teacher):
    """The teacher's circuit breaker, from its `outage:` settings."""
    from distillflow.engine.scheduler import CircuitBreaker

    o = teacher.outage
    return CircuitBreaker(teacher.name, o.failures_in_a_row, o.seconds_without_success)


def build_client(teacher):
    """A request client with `.run(requests, on_result, should_stop)` for this teacher."""
    if teacher.provider in OPENAI_COMPATIBLE:
        from distillflow.engine.client import OpenAICompatibleClient

        return OpenAICompatibleClient(
            base_url=base_urls(teacher),
            model=teacher.model,
            api_key=api_key(teacher),
            concurrency=teacher.concurrency,
            rpm=teacher.rpm,
            tpm=teacher.tpm,
            timeout_s=teacher.timeout_s,
            max_retries=teacher.max_retries,
            breaker=build_breaker(teacher),
        )
    llm = build_distilabel_llm(teacher)
    llm.load()
    if teacher.provider in ("anthropic", "hf_endpoint"):
        from distillflow.engine.distilabel_client import AsyncLLMClient

        return AsyncLLMClient(llm, concurrency=teacher.concurrency, rpm=teacher.rpm, tpm=teacher.tpm,
                              breaker=build_breaker(teacher))
    from distillflow.engine.distilabel_client import SyncLLMClient

    # (loaded above: load=True would load the model a second time on the first batch, a new
    # transformers pipeline or vLLM engine)
    return SyncLLMClient(llm, batch_size=local_batch_size(teacher), load=False)


def local_batch_size(teacher) -> int:
    """Prompts per ``generate`` call of a local-model teacher: its concurrency, at most 32."""
    return max(1, min(teacher.concurrency, 32))


def build_distilabel_llm(teacher, check_key: bool = True):
    """The distilabel LLM object for a teacher (constructed, not loaded)."""
    import importlib.util

    # distilabel imports these SDKs only in load(); fail now, with the fix, not mid-run
    needs = {"anthropic": "anthropic", "vllm": "vllm", "hf_endpoint": "huggingface_hub"}.get(teacher.provider)
    if needs and importlib.util.find_spec(needs) is None:
        raise MissingDependencyError(f"teacher '{teacher.name}' (provider {teacher.provider}) needs {needs}: pip install {needs}")
    key = api_key(teacher, required=check_key)
    try:
        if teacher.provider in OPENAI_COMPATIBLE:
            from distilabel.models import OpenAILLM

            return OpenAILLM(model=teacher.model, base_url=base_url(teacher), api_key=key or "EMPTY", timeout=int(teacher.timeout_s))
        if teacher.provider == "anthropic":
            from distilabel.models import AnthropicLLM

            return AnthropicLLM(model=teacher.model, api_key=key or "unset", timeout=teacher.timeout_s)
        if teacher.provider == "hf_endpoint":
            from distilabel.models import InferenceEndpointsLLM

            kwargs = {"base_url": teacher.base_url} if teacher.base_url else {"model_id": teacher.model}
            return InferenceEndpointsLLM(api_key=key, **kwargs)
        if teacher.provider == "transformers":
            from distilabel.models import TransformersLLM

            return TransformersLLM(model=teacher.model, device=teacher.device or "cpu")
        if teacher.provider == "vllm":
            from distilabel.models import vLLM

            return vLLM(model=teacher.model)
    except ImportError as e:
        extra = {"anthropic": "anthropic", "hf_endpoint": "huggingface_hub", "vllm": "vllm"}.get(teacher.provider, str(e.name))
        raise MissingDependencyError(f"teacher '{teacher.name}' needs {extra}: pip install {extra}") from None
    raise ConfigurationError(f"teacher '{teacher.name}': unknown provider '{teacher.provider}'")


def preflight_teacher(teacher) -> tuple[bool, str]:
    """Can this teacher run here? (env var set, endpoint reachable, model listed).

    A teacher with several replicas is checked on every one; the detail names those that are
    down, and the check fails if any is (a run would still use the others).
    """
    try:
        key = api_key(teacher)
    except ConfigurationError as e:
        return False, str(e)
    if teacher.provider in OPENAI_COMPATIBLE:
        urls = base_urls(teacher)
        if len(urls) == 1:
            return _preflight_endpoint(teacher, urls[0], key)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
            checks = list(pool.map(lambda u: _preflight_endpoint(teacher, u, key), urls))
        down = [(u, detail) for u, (ok, detail) in zip(urls, checks) if not ok]
        up = [u for u, (ok, _) in zip(urls, checks) if ok]
        if not down:
            return True, f"all {len(urls)} replicas reachable, model '{teacher.model}' served: {', '.join(urls)}"
        lines = "; ".join(f"DOWN {u}: {detail.rstrip('.')}" for u, detail in down)
        return False, (
            f"{len(down)} of {len(urls)} replicas down — {lines}. Up: {', '.join(up) or 'none'}. "
            "A run sends nothing to a down replica except a probe now and then, and uses it again once it "
            "answers; start it, or remove it from base_url."
        )
    if teacher.provider in IN_PROCESS_PROVIDERS:
        from pathlib import Path

        if Path(teacher.model).exists():
            return True, f"local model directory {teacher.model}"
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            return False, f"teacher '{teacher.name}': {teacher.model} is not a local directory and HF_HUB_OFFLINE=1"
        return True, f"{teacher.model} will be downloaded from the Hub"
    return True, "API key present (endpoint not probed)"


def _preflight_endpoint(teacher, url: str, key: str | None) -> tuple[bool, str]:
    """Preflight of one OpenAI-compatible endpoint of a teacher."""
    if teacher.provider == "transformers_serve":
        # `transformers serve` lists only Hub-cache models in /v1/models; /health tells readiness
        import urllib.request

        root = url.rsplit("/v1", 1)[0]
        try:
            with urllib.request.urlopen(root + "/health", timeout=10) as r:
                ok = r.status == 200
        except OSError as e:
            return False, f"teacher '{teacher.name}': {root} is not reachable ({e}) — start `transformers serve MODEL_DIR --port PORT`"
        return ok, f"{root}/health answered"
    from distillflow.engine.client import list_models

    try:
        models = list_models(url, key)
    except ConfigurationError as e:
        return False, str(e)
    if models and teacher.model not in models:
        from distillflow.errors import did_you_mean

        hint = did_you_mean(teacher.model, models) or f"served: {', '.join(models[:5])}"
        return False, f"teacher '{teacher.name}': model '{teacher.model}' is not served at {url} — {hint}"
    return True, f"{url} reachable, model '{teacher.model}' listed"
