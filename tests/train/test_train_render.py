"""Rendering the Axolotl YAML / DeepSpeed JSON from our templates (pure data, milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillflow.errors import ConfigurationError, SpecError
from distillflow.spec.train import DEEPSPEED_STAGES, TrainSpec
from distillflow.train.render import TEMPLATES, deep_merge, render, strip_comments, templates_dir, write_config, write_deepspeed

HUB = "Qwen/Qwen2.5-0.5B-Instruct"


def _render(tmp_path, **kw):
    rows = kw.pop("rows", None)
    train = TrainSpec(base_model=kw.pop("base_model", HUB), **kw)
    return render(train, dataset_path=tmp_path / "train" / "dataset.jsonl", train_dir=tmp_path / "train",
                  base_dir=tmp_path, rows=rows)


def test_templates_are_ours_and_parse():
    d = templates_dir()
    for name in TEMPLATES:
        text = (d / f"{name}.yaml").read_text()
        assert text.startswith("# distillflow template"), name
        assert "FILLED" in text
        assert isinstance(yaml.safe_load(text), dict)
    assert yaml.safe_load((d / "fsdp.yaml").read_text())["fsdp_version"] == 2
    for stage in DEEPSPEED_STAGES:
        data = json.loads((d / f"{stage}.json").read_text())
        assert "_comment" in data
        assert data["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.parametrize("adapter", TEMPLATES)
@pytest.mark.parametrize("stage", [None, *DEEPSPEED_STAGES])
def test_render_every_template_and_stage(tmp_path, adapter, stage):
    r = _render(tmp_path, adapter=adapter, deepspeed=stage, gpus_per_node=8, micro_batch_size=4,
                gradient_accumulation_steps=2, sequence_len=1024)
    c = r.config
    assert c["base_model"] == HUB
    assert c["micro_batch_size"] == 4 and c["gradient_accumulation_steps"] == 2 and c["sequence_len"] == 1024
    ds = c["datasets"][0]
    assert ds["type"] == "chat_template" and ds["roles_to_train"] == ["assistant"] and ds["field_messages"] == "messages"
    assert Path(ds["path"]).is_absolute() and c["output_dir"].endswith("train/output")
    assert c["bf16"] is True and c["fp16"] is False and c["tf32"] is True  # auto precision on GPUs
    if adapter == "full":
        assert "adapter" not in c and c["learning_rate"] == 2e-5
    else:
        assert c["adapter"] == adapter and c["lora_r"] == 16 and c["lora_target_linear"] is True
        assert c["learning_rate"] == 2e-4  # the template's LR: LoRA needs ~10x the full fine-tune's
    if adapter == "qlora":
        assert c["load_in_4bit"] is True and c["gradient_checkpointing"] is True
    if stage is None:
        assert "deepspeed" not in c and r.deepspeed is None
    else:
        assert c["deepspeed"].endswith(f"deepspeed_{stage}.json")
        assert "_comment" not in json.dumps(r.deepspeed)  # comments never reach DeepSpeed
        want = 3 if stage.startswith("zero3") else int(stage[-1])
        assert r.deepspeed["zero_optimization"]["stage"] == want
        assert ("offload_optimizer" in r.deepspeed["zero_optimization"]) == (stage == "zero3_offload")


def test_fsdp_overlay_and_checkpointing(tmp_path):
    r = _render(tmp_path, fsdp=True, gpus_per_node=8, gradient_checkpointing=True)
    assert r.config["fsdp_version"] == 2
    assert r.config["fsdp_config"]["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # FSDP2 checkpoints per wrapped layer; the HF flag is turned off so layers are not recomputed twice
    assert r.config["fsdp_config"]["activation_checkpointing"] is True
    assert r.config["gradient_checkpointing"] is False
    assert r.origin("fsdp_config") == "train.fsdp"


def test_cpu_render_uses_fp32_and_plain_adamw(tmp_path):
    r = _render(tmp_path, gpus_per_node=0, rows=50)
    assert r.config["bf16"] is False and r.config["fp16"] is False and r.config["tf32"] is False
    assert r.config["optimizer"] == "adamw_torch"  # the fused kernel is CUDA-only
    assert r.config["dataset_num_proc"] == 1


def test_overrides_deep_merge_last_and_are_traced(tmp_path):
    r = _render(tmp_path, fsdp=True, gpus_per_node=2,
                overrides={"fsdp_config": {"offload_params": True}, "warmup_ratio": 0.1, "lr_scheduler": "linear"})
    assert r.config["fsdp_config"]["offload_params"] is True
    assert r.config["fsdp_config"]["reshard_after_forward"] is True  # the rest of the overlay survives
    assert r.config["warmup_ratio"] == 0.1 and r.config["lr_scheduler"] == "linear"
    assert r.origin("warmup_ratio") == "train.overrides.warmup_ratio"
    assert r.origin("micro_batch_size") == "train.micro_batch_size"
    assert r.origin("weight_decay") == "full.yaml: weight_decay"


def test_overrides_of_owned_keys_are_refused(tmp_path):
    with pytest.raises(SpecError) as e:
        _render(tmp_path, overrides={"datasets": [], "output_dir": "/x"})
    msg = str(e.value)
    assert "train.overrides.datasets" in msg and "train.overrides.output_dir" in msg and "use train.output_dir" in msg


def test_local_base_model_resolved_from_yaml_dir(tmp_path):
    (tmp_path / "models" / "student").mkdir(parents=True)
    r = _render(tmp_path, base_model="models/student")
    assert r.config["base_model"] == str((tmp_path / "models" / "student").resolve())


def test_missing_local_base_model_names_the_path(tmp_path):
    with pytest.raises(ConfigurationError, match=r"train.base_model: directory \./nope not found"):
        _render(tmp_path, base_model="./nope")


def test_own_deepspeed_json_and_template(tmp_path):
    (tmp_path / "my_ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}, "_note": "x"}))
    (tmp_path / "mine.yaml").write_text("learning_rate: 0.001\nstrict: false\n")
    r = _render(tmp_path, deepspeed="my_ds.json", template="mine.yaml", gpus_per_node=2)
    assert r.deepspeed == {"zero_optimization": {"stage": 2}} and r.deepspeed_name == "deepspeed_my_ds.json"
    assert r.template.name == "mine.yaml" and r.config["learning_rate"] == 0.001
    out = write_deepspeed(r, tmp_path / "train")
    assert json.loads(out.read_text()) == {"zero_optimization": {"stage": 2}}
    cfg = write_config(r, tmp_path / "train", header="# hi\n")
    assert cfg.read_text().startswith("# hi\n") and yaml.safe_load(cfg.read_text())["deepspeed"] == str(out.resolve())


def test_missing_deepspeed_json_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="train.deepspeed: DeepSpeed config nope.json not found"):
        _render(tmp_path, deepspeed="nope.json", gpus_per_node=1)


def test_helpers():
    assert strip_comments({"_a": 1, "b": {"_c": 2, "d": [{"_e": 3, "f": 4}]}}) == {"b": {"d": [{"f": 4}]}}
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": 3}, "l": [2]}) == {"a": {"b": 3, "c": 2}, "l": [2]}


@pytest.mark.parametrize("kw, needle", [
    ({"deepspeed": "zero2", "fsdp": True}, "deepspeed and fsdp cannot be used together"),
    ({"deepspeed": "zero2", "gpus_per_node": 0}, "DeepSpeed and FSDP need GPUs"),
    ({"adapter": "qlora", "gpus_per_node": 0}, "QLoRA needs a CUDA GPU"),
    ({"nodes": 2, "main_process_ip": "10.0.0.1", "machine_rank": 2}, "machine_rank 2 must be below nodes (2)"),
    ({"deepspeed": "zero4"}, "did you mean 'zero3'?"),
])
def test_train_spec_rejects_incoherent_settings(kw, needle):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        TrainSpec(base_model=HUB, **kw)


def test_train_section_errors_carry_yaml_path(tmp_path, pipeline_dict):
    from distillflow.spec.loader import load_spec

    data = pipeline_dict({"base_model": HUB, "lerning_rate": 1})
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    msg = str(e.value)
    assert "train.lerning_rate (line" in msg and "did you mean 'learning_rate'" in msg


def test_max_steps_caps_training_and_is_traced(tmp_path):
    r = _render(tmp_path, gpus_per_node=0, rows=50, num_epochs=20, max_steps=300)
    assert r.config["max_steps"] == 300 and r.config["num_epochs"] == 20
    assert r.origin("max_steps") == "train.max_steps"
    assert "max_steps" not in _render(tmp_path, gpus_per_node=0, rows=50).config
    with pytest.raises(ValueError):
        TrainSpec(base_model=HUB, max_steps=0)
