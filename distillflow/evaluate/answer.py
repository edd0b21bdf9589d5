"""Get answers to held-out prompts from local students and from the teacher.

Students answer greedily (or sampled at a temperature, seeded), either with local transformers
(``backend="local"``: one process, left-padded batches through ``generate``; on 2 CPU cores the
fastest and most robust choice for small models, no server start-up) or through the real
``transformers serve`` (``backend="serve"``: an OpenAI-compatible server, the same path a GPU
deployment takes).
The teacher is asked through the engine (its provider's client, with a request cache under
``RUN_DIR/eval/cache``), so evaluating again never pays twice.

    answers = generate_local("runs/x/train/output", [[{"role": "user", "content": "2+2?"}]], 16)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from distillflow.errors import ConfigurationError, MissingDependencyError, TeacherError

__all__ = ["generate_local", "generate_served", "ask_teacher", "materialize_model", "resolve_model_path"]


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def resolve_model_path(name: str, bases: list[Path], what: str) -> str:
    """A local directory for ``name`` (tried absolute, then under each of ``bases``), or the Hub id
    itself when no such directory exists and the Hub may be used."""
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [b / p for b in bases] + [Path.cwd() / p]
    for c in candidates:
        if c.is_dir():
            return str(c.resolve())
    looks_like_hub_id = not p.is_absolute() and name.count("/") == 1 and not name.startswith(".")
    if looks_like_hub_id and os.environ.get("HF_HUB_OFFLINE") != "1":
        return name
    tried = ", ".join(str(c) for c in candidates)
    offline = " (HF_HUB_OFFLINE=1, so it is not downloaded)" if looks_like_hub_id else ""
    raise ConfigurationError(f"{what} '{name}' is not a local directory{offline}; looked in: {tried}. "
                             f"Fix the path, or pass it explicitly.")


def materialize_model(path: Path, base_model: str | None, work_dir: Path) -> Path:
    """A directory ``AutoModelForCausalLM`` can load: ``path`` itself, or ``path`` (a LoRA adapter)
    merged into its base model with peft, saved once under ``work_dir/merged-student``."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    adapter = path / "adapter_config.json"
    if not adapter.is_file():
        checkpoints = sorted(path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
        hint = (f" It only holds checkpoints (training did not finish?): pass --student {checkpoints[-1]}"
                if checkpoints else " Run `distillflow train RUN_DIR` to produce one, or pass --student DIR.")
        raise ConfigurationError(f"{path} is not a model directory (no config.json or adapter_config.json).{hint}")
    try:
        import peft  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"the trained student at {path} is a LoRA adapter; merging it into its base model needs peft: "
            "pip install peft (or train with `adapter: full`)"
        ) from None
    cfg = json.loads(adapter.read_text())
    base = base_model or cfg.get("base_model_name_or_path")
    if not base:
        raise ConfigurationError(f"{adapter} names no base model; pass --base DIR (the model the adapter was trained on)")
    digest = hashlib.sha256()
    for f in sorted(path.glob("adapter_*")):
        digest.update(f.name.encode() + f.read_bytes())
    digest.update(str(base).encode())
    key = digest.hexdigest()[:16]
    out = work_dir / "merged-student"
    marker = out / "distillflow_merged.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return out

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    base_tok = AutoTokenizer.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").is_file() else base_tok
    if not tok.chat_template:  # adapters are often saved with a bare tokenizer: keep the base's template
        tok.chat_template = base_tok.chat_template
    tok.save_pretrained(out)
    marker.write_text(json.dumps({"key": key, "adapter": str(path), "base": str(base)}) + "\n")
    return out


def _generation_config(model, max_new_tokens: int, tokenizer, temperature: float | None = None):
    """Greedy decoding, or plain sampling at ``temperature`` (no top-k/top-p truncation)."""
    import copy

    gc = copy.deepcopy(model.generation_config)
    gc.do_sample = temperature is not None
    gc.temperature = gc.top_p = gc.top_k = None
    gc.repetition_penalty = None
    if temperature is not None:
        gc.temperature, gc.top_k, gc.top_p = temperature, 0, 1.0
    gc.num_beams = 1
    gc.max_new_tokens = max_new_tokens
    gc.max_length = None
    gc.pad_token_id = tokenizer.pad_token_id
    if gc.eos_token_id is None:
        gc.eos_token_id = tokenizer.eos_token_id
    return gc


def generate_local(model_dir: str | Path, conversations: list[list[dict]], max_new_tokens: int,
                   batch_size: int = 16, temperature: float | None = None, seed: int = 0) -> list[str]:
    """Answers of a local chat model, one per conversation (chat template applied): greedy, or
    sampled at ``temperature`` from a generator seeded with ``seed`` (repeatable on one machine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ConfigurationError(f"cannot load the model at {model_dir}: {err}") from None
    if not tok.chat_template:
        raise ConfigurationError(f"the tokenizer at {model_dir} has no chat template; add one (tokenizer_config.json) "
                                 "so prompts are formatted the way the student was trained")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    gc = _generation_config(model, max_new_tokens, tok, temperature)
    answers: list[str] = []
    if temperature is not None:
        torch.manual_seed(seed)
    for batch in _chunks(conversations, batch_size):
        enc = tok.apply_chat_template(batch, add_generation_prompt=True, padding=True, return_tensors="pt",
                                      return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gc)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def _run_requests(client, requests) -> dict:
    results: dict = {}
    client.run(requests, lambda r: results.__setitem__(r.key, r))
    return results


def generate_served(model_dir: str | Path, conversations: list[list[dict]], max_new_tokens: int,
                    startup_timeout: float = 300.0, temperature: float | None = None, seed: int = 0) -> list[str]:
    """Answers from the real ``transformers serve`` started over ``model_dir``: greedy, or sampled
    at ``temperature`` (each request carries ``seed`` + its index)."""
    from distillflow.engine.client import ChatRequest, OpenAICompatibleClient
    from distillflow.evaluate.serve import TransformersServe

    with TransformersServe(model_dir, startup_timeout=startup_timeout) as srv:
        # the server generates one request at a time; a small window keeps it busy without timeouts.
        # Sampling sends one request at a time: the server seeds the *global* torch generator per
        # request, so two requests in flight can draw from each other's stream (CI saw the same seed
        # give shifted samples in a second run with a window of 4).
        client = OpenAICompatibleClient(srv.base_url, srv.model, concurrency=4 if temperature is None else 1,
                                        timeout_s=600, max_retries=2)
        def params(i: int) -> dict:
            if temperature is None:
                return {"temperature": 0.0, "max_tokens": max_new_tokens}
            return {"temperature": temperature, "top_p": 1.0, "seed": seed + i, "max_tokens": max_new_tokens}

        reqs = [ChatRequest(str(i), msgs, params(i)) for i, msgs in enumerate(conversations)]
        results = _run_requests(client, reqs)
    failed = [r for r in results.values() if r.error]
    if failed:
        raise ConfigurationError(f"`transformers serve` failed {len(failed)} of {len(reqs)} requests for {model_dir} "
                                 f"(first error: {failed[0].error})")
    return [(results[str(i)].text or "").strip() for i in range(len(reqs))]


def ask_teacher(session, teacher, conversations: list[list[dict]], params: dict, label: str,
                seed_by_index: bool = False) -> list[str | None]:
    """One answer per conversation from ``teacher`` through ``session`` (an
    ``engine.session.TeacherSession``: cached); None where a request failed for good. With
    ``seed_by_index`` and a ``seed`` in ``params``, conversation i is asked with ``seed + i`` (as
    sampled students are); otherwise every request carries ``params`` as they are."""
    from distillflow.engine.ledger import is_outage
    from distillflow.engine.providers import make_request

    def own(i: int) -> dict:
        p = dict(params)
        if seed_by_index and p.get("seed") is not None:
            p["seed"] = int(p["seed"]) + i
        return p

    reqs = [make_request(teacher, msgs, own(i), 0, {"i": i}) for i, msgs in enumerate(conversations)]
    results, failures = session.ask(teacher, reqs, "eval", label=label)
    outages = [f for f in failures.values() if is_outage(f)]
    if outages:
        raise TeacherError(
            f"teacher '{teacher.name}' failed {len(outages)} evaluation request(s) after retries "
            f"(last error: {outages[-1].error}). Answers received so far are cached in {session.cache_path}; "
            "fix the endpoint and run `distillflow eval` again."
        )
    return [None if results.get(r.key) is None else (results[r.key].text or "") for r in reqs]
