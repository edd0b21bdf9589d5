"""Per-GPU memory estimate per ZeRO stage (ZeRO paper: 2 + 2 + 12 bytes per parameter) and the preflight."""

from __future__ import annotations

import json

import pytest

from distillflow.spec.train import TrainSpec
from distillflow.train.memory import GIB, ModelShape, estimate, hidden_size_of, model_shape, sharding_stage
from distillflow.train.plan import preflight

PSI = 7_000_000_000
SHAPE = ModelShape(params=PSI, hidden=4096, layers=32, vocab=32000, lora_params_per_rank=2_000_000)


@pytest.mark.parametrize("stage, weights, grads, optim", [
    ("none", 2 * PSI, 2 * PSI, 12 * PSI),
    ("zero1", 2 * PSI, 2 * PSI, 12 * PSI / 8),
    ("zero2", 2 * PSI, 2 * PSI / 8, 12 * PSI / 8),
    ("zero3", 2 * PSI / 8, 2 * PSI / 8, 12 * PSI / 8),
    ("fsdp", 2 * PSI / 8, 2 * PSI / 8, 12 * PSI / 8),
    ("zero3_offload", 2 * PSI / 8, 2 * PSI / 8, 0),
])
def test_zero_paper_bytes_per_stage(stage, weights, grads, optim):
    e = estimate(SHAPE, stage=stage, world=8, gpus_per_node=8)
    assert (e.weights, e.grads, e.optimizer) == pytest.approx((weights, grads, optim))
    if stage == "zero3_offload":
        assert e.cpu_per_node == pytest.approx(12 * PSI)  # 8 shards of 12Ψ/8 on this node's CPU
    assert e.total == pytest.approx(weights + grads + optim + e.activations + e.overhead)


def test_sharding_needs_more_than_one_gpu_to_help():
    one = estimate(SHAPE, stage="zero2", world=1)
    assert one.optimizer == 12 * PSI and any("saves nothing" in n for n in one.notes)


def test_lora_and_qlora_train_only_the_adapters():
    lora = estimate(SHAPE, stage="none", world=1, adapter="lora", lora_r=16)
    t = 16 * 2_000_000
    assert lora.trainable == t
    assert lora.weights == pytest.approx(2 * PSI + 2 * t) and lora.optimizer == pytest.approx(12 * t)
    qlora = estimate(SHAPE, stage="none", world=1, adapter="qlora", lora_r=16)
    assert qlora.weights == pytest.approx(0.5 * PSI + 2 * t)  # NF4 base: half a byte per weight


def test_fp32_and_activations():
    e = estimate(SHAPE, stage="none", world=1, precision="fp32", micro=1, seq=1024)
    assert (e.weights, e.grads, e.optimizer) == (4 * PSI, 4 * PSI, 8 * PSI)
    full = estimate(SHAPE, stage="none", world=1, micro=2, seq=1024)
    ckpt = estimate(SHAPE, stage="none", world=1, micro=2, seq=1024, gradient_checkpointing=True)
    assert ckpt.activations < full.activations / 5
    assert full.activations > estimate(SHAPE, stage="none", world=1, micro=1, seq=1024).activations


def test_sharding_stage_from_the_rendered_json():
    t = TrainSpec(base_model="m", gpus_per_node=2)
    assert sharding_stage(t, None) == "none"
    assert sharding_stage(TrainSpec(base_model="m", gpus_per_node=2, fsdp=True), None) == "fsdp"
    assert sharding_stage(t, {"zero_optimization": {"stage": 2}}) == "zero2"
    assert sharding_stage(t, {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}) == "zero2_offload"
    assert sharding_stage(t, {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}}}) == "zero3"


def _llama_dir(tmp_path, hidden=4096, layers=32):
    d = tmp_path / "llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": 11008, "num_hidden_layers": layers, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}))
    return d


def test_model_shape_counts_parameters_on_the_meta_device(tmp_path):
    d = _llama_dir(tmp_path)
    s = model_shape(str(d))
    assert s is not None and 6.6e9 < s.params < 6.8e9  # Llama-2-7B: 6.74B
    assert (s.hidden, s.layers, s.vocab) == (4096, 32, 32000)
    assert hidden_size_of(str(d)) == 4096
    assert model_shape(str(tmp_path / "nope")) is None


def test_preflight_warns_when_it_will_not_fit(tmp_path, monkeypatch):
    import distillflow.train.plan as plan

    monkeypatch.setattr(plan, "gpus_found", lambda: 3)  # injected: the same text on a GPU host and on CPU
    d = _llama_dir(tmp_path)
    cfg = {"micro_batch_size": 2, "gradient_accumulation_steps": 4, "sequence_len": 2048, "num_epochs": 2}
    train = TrainSpec(base_model=str(d), gpus_per_node=8, gpu_memory_gb=80)
    pf = preflight(train, cfg, rows=1000, base_model=str(d))
    assert pf.global_batch == 2 * 4 * 8 and pf.steps_per_epoch == 16 and pf.total_steps == 32
    assert pf.memory.stage == "none" and pf.memory.total_gib > 100
    assert any("exceeds the 80.0 GiB available — use deepspeed: zero2 or zero3" in w for w in pf.warnings)
    assert any("8 GPU(s) per node requested but 3 found here" in w for w in pf.warnings)
    z3 = preflight(TrainSpec(base_model=str(d), gpus_per_node=8, gpu_memory_gb=80, deepspeed="zero3"), cfg,
                   rows=1000, base_model=str(d), deepspeed={"zero_optimization": {"stage": 3}})
    assert z3.memory.stage == "zero3" and z3.memory.total_gib < 80
    assert not any("exceeds" in w for w in z3.warnings)
    text = "\n".join(z3.lines())
    assert "global batch 64" in text and "memory per GPU (zero3" in text and "of 80.0 GiB" in text


def test_preflight_on_cpu_skips_the_gpu_estimate():
    pf = preflight(TrainSpec(base_model="m", gpus_per_node=0), {"micro_batch_size": 4}, rows=10, base_model="m")
    assert pf.memory is None and pf.world == 1 and pf.steps_per_epoch == 3
    assert "CPU training" in "\n".join(pf.lines()) and GIB
