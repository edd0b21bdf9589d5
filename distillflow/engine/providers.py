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
from distillflow.spec.models import OPENAI_COMPATIBLE

DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}
_NEEDS_KEY = {"openai": True, "anthropic": True, "hf_endpoint": False}


LOCAL_MODEL_PROVIDERS = ("transformers", "vllm", "transformers_serve")


def resolve_local_models(spec, base_dir) -> None:
    """Relative model directories are relative to the YAML file, like every path in it.

    `transformers serve` pins a served model to the absolute path it was started with, so the
    resolved path is also the model id sent to it.
    """
    from pathlib import Path

    if base_dir is None:
        return
    for t in spec.teachers:
        if t.provider in LOCAL_MODEL_PROVIDERS and not Path(t.model).is_absolute():
            candidate = (Path(base_dir) / t.model).resolve()
            if candidate.exists():
                t.model = str(candidate)
    # the run directory's pipeline.yaml must still find the student when read from elsewhere
    train = getattr(spec, "train", None)
    if train is not None and not Path(train.base_model).is_absolute():
        candidate = (Path(base_dir) / train.base_model).resolve()
        if candidate.exists():
            train.base_model = str(candidate)


def base_url(teacher) -> str | None:
    return (teacher.base_url or DEFAULT_BASE_URLS.get(teacher.provider) or "").rstrip("/") or None


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


def effective_params(teacher, override=None) -> dict:
    params = teacher.params.model_dump(exclude_none=True)
    if override is not None:
        params.update(override.model_dump(exclude_none=True, exclude_unset=True))
    if not params.get("logprobs"):
        params.pop("logprobs", None)
    return params


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
            base_url=base_url(teacher),
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

    return SyncLLMClient(llm, batch_size=max(1, min(teacher.concurrency, 32)))


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
    """Can this teacher run here? (env var set, endpoint reachable, model listed)."""
    try:
        key = api_key(teacher)
    except ConfigurationError as e:
        return False, str(e)
    if teacher.provider == "transformers_serve":
        # `transformers serve` lists only Hub-cache models in /v1/models; /health tells readiness
        import urllib.request

        root = base_url(teacher).rsplit("/v1", 1)[0]
        try:
            with urllib.request.urlopen(root + "/health", timeout=10) as r:
                ok = r.status == 200
        except OSError as e:
            return False, f"teacher '{teacher.name}': {root} is not reachable ({e}) — start `transformers serve MODEL_DIR --port PORT`"
        return ok, f"{root}/health answered"
    if teacher.provider in OPENAI_COMPATIBLE:
        from distillflow.engine.client import list_models

        try:
            models = list_models(base_url(teacher), key)
        except ConfigurationError as e:
            return False, str(e)
        if models and teacher.model not in models:
            from distillflow.errors import did_you_mean

            hint = did_you_mean(teacher.model, models) or f"served: {', '.join(models[:5])}"
            return False, f"teacher '{teacher.name}': model '{teacher.model}' is not served at {base_url(teacher)} — {hint}"
        return True, f"{base_url(teacher)} reachable, model '{teacher.model}' listed"
    if teacher.provider in ("transformers", "vllm"):
        from pathlib import Path

        if Path(teacher.model).exists():
            return True, f"local model directory {teacher.model}"
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            return False, f"teacher '{teacher.name}': {teacher.model} is not a local directory and HF_HUB_OFFLINE=1"
        return True, f"{teacher.model} will be downloaded from the Hub"
    return True, "API key present (endpoint not probed)"
