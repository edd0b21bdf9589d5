"""Every template x ZeRO stage passes Axolotl's and DeepSpeed's own validators; bad configs name the key.

The first test pays the axolotl + deepspeed import (tens of seconds on 2 busy cores); the rest reuse it.
"""

from __future__ import annotations

import json

import pytest

from distillflow.errors import SpecError
from distillflow.spec.train import DEEPSPEED_STAGES, TrainSpec
from distillflow.train.render import TEMPLATES, render
from distillflow.train.validate import fill_deepspeed_auto, target_capabilities, validate
from tests.support import need_module



@pytest.fixture(autouse=True)
def _validators_installed():
    need_module("axolotl", "pip install -e '.[train,dev]'")
    need_module("deepspeed", "pip install -e '.[train,dev]'")


HUB = "Qwen/Qwen2.5-0.5B-Instruct"


def _rendered(tmp_path, **kw):
    train = TrainSpec(base_model=HUB, **kw)
    r = render(train, dataset_path=tmp_path / "train" / "dataset.jsonl", train_dir=tmp_path / "train", base_dir=tmp_path)
    if r.deepspeed is not None:  # some Axolotl validators open the JSON
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / "train" / r.deepspeed_name).write_text(json.dumps(r.deepspeed))
    return train, r


@pytest.mark.parametrize("adapter", TEMPLATES)
@pytest.mark.parametrize("stage", [None, *DEEPSPEED_STAGES, "fsdp"])
def test_every_template_and_stage_validates(tmp_path, adapter, stage):
    kw = {"fsdp": True} if stage == "fsdp" else {"deepspeed": stage}
    train, r = _rendered(tmp_path, adapter=adapter, gpus_per_node=8, nodes=2, main_process_ip="10.0.0.1",
                         micro_batch_size=2, gradient_accumulation_steps=4, **kw)
    warnings = validate(r, train, hidden_size=896)
    assert isinstance(warnings, list)


def test_cpu_config_validates(tmp_path):
    train, r = _rendered(tmp_path, gpus_per_node=0, adapter="lora")
    validate(r, train, hidden_size=64)
    assert target_capabilities(train) == {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "n_node": 1,
                                          "compute_capability": None}


def test_unknown_override_is_an_error_with_did_you_mean(tmp_path):
    train, r = _rendered(tmp_path, overrides={"lerning_rate": 1e-4, "warmup_ratio": 0.1})
    with pytest.raises(SpecError) as e:
        validate(r, train, lines={("train", "overrides", "lerning_rate"): 42})
    msg = str(e.value)
    assert "train.overrides.lerning_rate (line 42): unknown Axolotl key — did you mean 'learning_rate'?" in msg
    assert e.value.exit_code == 2


def test_axolotl_semantic_error_is_reported(tmp_path):
    # Axolotl's own cross-field rule, triggered through an override
    train, r = _rendered(tmp_path, gpus_per_node=1, overrides={"activation_offloading": True})
    with pytest.raises(SpecError, match="activation_offloading requires gradient_checkpointing"):
        validate(r, train)


def test_fsdp_config_sneaked_next_to_deepspeed_is_refused(tmp_path):
    # Axolotl 0.19 only refuses the legacy `fsdp:` list next to DeepSpeed, not `fsdp_config:`; we refuse both
    train, r = _rendered(tmp_path, deepspeed="zero2", gpus_per_node=2,
                         overrides={"fsdp_version": 2, "fsdp_config": {"reshard_after_forward": True}})
    with pytest.raises(SpecError) as e:
        validate(r, train)
    assert "train.overrides.fsdp_config: FSDP cannot be combined with DeepSpeed" in str(e.value)


def test_axolotl_type_error_names_the_field(tmp_path):
    train, r = _rendered(tmp_path, overrides={"weight_decay": "lots"})
    with pytest.raises(SpecError) as e:
        validate(r, train)
    assert "train.overrides.weight_decay: Input should be a valid number" in str(e.value)


def test_deepspeed_own_parser_names_the_key(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"zero_optimization": {"stage": 2, "overlap_com": True},
                                                   "train_micro_batch_size_per_gpu": "auto"}))
    train, r = _rendered(tmp_path, deepspeed="bad.json", gpus_per_node=2)
    with pytest.raises(SpecError) as e:
        validate(r, train)
    msg = str(e.value)
    assert "zero_optimization.overlap_com" in msg and "Extra inputs are not permitted" in msg
    assert "bad.json" in msg


def test_deepspeed_values_that_disagree_with_axolotl(tmp_path):
    (tmp_path / "fixed.json").write_text(json.dumps({"zero_optimization": {"stage": 1},
                                                     "train_micro_batch_size_per_gpu": 8, "train_batch_size": 64}))
    train, r = _rendered(tmp_path, deepspeed="fixed.json", gpus_per_node=4, micro_batch_size=2)
    with pytest.raises(SpecError) as e:
        validate(r, train)
    msg = str(e.value)
    assert "train_micro_batch_size_per_gpu: is 8 but the Axolotl config gives 2 (micro_batch_size)" in msg
    assert "train_batch_size: is 64 but the Axolotl config gives 8" in msg
    assert 'set it to "auto"' in msg


def test_fill_deepspeed_auto_mirrors_the_hf_trainer():
    ds = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
          "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
          "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                "stage3_param_persistence_threshold": "auto"}}
    cfg = {"micro_batch_size": 2, "gradient_accumulation_steps": 4, "bf16": True, "fp16": False, "max_grad_norm": 0.5}
    out, problems = fill_deepspeed_auto(ds, cfg, world=16, hidden_size=100)
    assert problems == []
    assert out["train_micro_batch_size_per_gpu"] == 2 and out["gradient_accumulation_steps"] == 4
    assert out["train_batch_size"] == 8  # per-process for DeepSpeed's single-process parse (2 x 4 x 16 checked above)
    assert out["gradient_clipping"] == 0.5 and out["bf16"]["enabled"] is True and out["fp16"]["enabled"] is False
    z = out["zero_optimization"]
    assert (z["reduce_bucket_size"], z["stage3_prefetch_bucket_size"], z["stage3_param_persistence_threshold"]) == (10000, 9000, 1000)
    assert ds["train_batch_size"] == "auto"  # the input is not modified
