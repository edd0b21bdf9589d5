"""Write a run's outputs: JSONL + Parquet splits, the distilabel Distiset, manifest.json, the card.

    write_outputs(spec, out_dir, curated, rejected, heldout, manifest, graph)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from distillflow.engine.outputs import _flat, write_jsonl, write_parquet
from distillflow.errors import ConfigurationError


def _distiset(out: Path, curated: list[dict], rejected: list[dict]) -> None:
    import datasets
    from datasets import Dataset
    from distilabel.distiset import Distiset

    datasets.disable_progress_bars()

    ds = Distiset()
    ds["curated"] = Dataset.from_list(_flat(curated)) if curated else Dataset.from_dict({"id": []})
    ds["rejected"] = Dataset.from_list(_flat(rejected)) if rejected else Dataset.from_dict({"id": []})
    ds.save_to_disk(str(out / "distiset"), save_card=False, save_pipeline_config=False, save_pipeline_log=False)


def write_outputs(spec, out: Path, curated, rejected, heldout, manifest, graph) -> None:
    from distillflow.engine.card import render_dataset_card

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "curated.jsonl", curated)
    write_jsonl(data / "rejected.jsonl", rejected)
    write_jsonl(data / "heldout.jsonl", heldout)
    write_parquet(data / "curated.parquet", curated)
    write_parquet(data / "rejected.parquet", rejected)
    _distiset(out, curated, rejected)
    (out / "pipeline.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    (out / "graph.mmd").write_text(graph.mermaid() + "\n", encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_dataset_card(spec, manifest, curated), encoding="utf-8")
    if spec.output.push_to_hub:
        push_to_hub(spec, out, curated)


def push_to_hub(spec, out: Path, curated: list[dict]) -> None:
    """Push the curated split and the card to the Hub (token from the env var named in the YAML)."""
    cfg = spec.output.push_to_hub
    token = os.environ.get(cfg.token_env)
    if not token:
        raise ConfigurationError(
            f"output.push_to_hub: environment variable {cfg.token_env} is not set — export it, or remove push_to_hub. "
            f"The run's outputs are saved in {out}."
        )
    from datasets import Dataset
    from huggingface_hub import HfApi

    try:
        Dataset.from_list(_flat(curated)).push_to_hub(cfg.repo_id, private=cfg.private, token=token)
        HfApi(token=token).upload_file(
            path_or_fileobj=str(out / "README.md"), path_in_repo="README.md", repo_id=cfg.repo_id, repo_type="dataset"
        )
    except Exception as e:
        raise ConfigurationError(f"push to the Hub failed ({type(e).__name__}: {e}); outputs are saved in {out}") from None
