"""DeepSpeed ZeRO-2/3 through the Hugging Face Trainer, with the DeepSpeed JSON distillflow renders.

Driven by scripts/gpu_deepspeed_check.sh (see there). Three subcommands:

    build  WORK [--tiny]                 student (~116M random Llama, or 2x64 with --tiny), tokenised
                                         synthetic chat data, and per config the JSON + hyperparameters
                                         that distillflow's render()/write_deepspeed() produce
    train  WORK NAME [--steps N] [--cpu] one run (NAME: nods | zero2 | zero3); start it under
                                         `python -m torch.distributed.run --standalone --nproc_per_node 1`
    report WORK [LOG_DIR [NAME...]]      the comparison table from WORK/result-*.json

Only torch/transformers/accelerate/deepspeed and the light distillflow modules are imported
(distillflow.train.render pulls in pydantic + yaml; no distilabel, argilla or datasets).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

CONFIGS = ("nods", "zero2", "zero3")
SEQ_LEN, MICRO_BATCH, LR = 512, 8, 3e-4


def _rows(n: int) -> list[dict]:
    rng = random.Random(0)
    words = ("the model answers each question with a short explanation and the final number "
             "distillation keeps what the teacher knows while the student stays small and fast").split()
    rows = []
    for _ in range(n):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        prompt = f"What is {a}+{b}? Explain briefly."
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120))) + f". So {a}+{b} = {a + b}."
        rows.append([{"role": "system", "content": "You are a careful tutor."},
                     {"role": "user", "content": prompt},
                     {"role": "assistant", "content": answer}])
    return rows


def build(work: Path, tiny: bool) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distillflow.spec.train import TrainSpec
    from tests.support.tiny import build_tiny_chat_model
    from distillflow.train.render import render, write_deepspeed

    work.mkdir(parents=True, exist_ok=True)
    convs = _rows(200 if tiny else 1200)
    tok_dir = build_tiny_chat_model(work / "tokenizer-src", vocab_size=2048,
                                    vocab_texts=[c[1]["content"] + " " + c[2]["content"] for c in convs[:500]])
    tok = AutoTokenizer.from_pretrained(tok_dir)
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4) \
        if tiny else dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          num_key_value_heads=12)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    student = work / "student"
    model.save_pretrained(student, safe_serialization=True)
    tok.save_pretrained(student)

    # Tokenise with the chat template; learn the assistant turn only (as Axolotl's roles_to_train: [assistant]).
    examples = []
    for conv in convs:
        enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"])[:SEQ_LEN], list(enc["assistant_masks"])[:SEQ_LEN]
        labels = [t if m else -100 for t, m in zip(ids, mask)]
        assert any(m for m in mask), "chat template marked no assistant tokens"
        examples.append({"input_ids": ids, "labels": labels})
    (work / "data.json").write_text(json.dumps(examples))
    lens = sorted(len(e["input_ids"]) for e in examples)
    print(f"student: {n_params / 1e6:.1f}M parameters, vocab {len(tok)}; {len(examples)} conversations, "
          f"tokens/conversation median {lens[len(lens) // 2]} max {lens[-1]}")

    # distillflow's own path for `train.deepspeed: zero2|zero3`: render() the Axolotl config from the
    # templates, then write_deepspeed() the DeepSpeed JSON (comments stripped) that `axolotl train` gets.
    for name in CONFIGS:
        ds = None if name == "nods" else name
        spec = TrainSpec(base_model=str(student), gpus_per_node=0 if tiny and ds is None else 1, deepspeed=ds,
                         sequence_len=SEQ_LEN, micro_batch_size=MICRO_BATCH, learning_rate=LR,
                         precision="fp32" if tiny else "bf16",
                         overrides={"save_strategy": "no", "warmup_ratio": 0.05})
        train_dir = work / f"train-{name}"
        r = render(spec, dataset_path=work / "dataset.jsonl", train_dir=train_dir, base_dir=None)
        train_dir.mkdir(parents=True, exist_ok=True)
        ds_path = write_deepspeed(r, train_dir)
        (train_dir / "hparams.json").write_text(json.dumps({
            "deepspeed": str(ds_path) if ds_path else None, "deepspeed_source": str(r.deepspeed_source or ""),
            **{k: r.config.get(k) for k in ("micro_batch_size", "gradient_accumulation_steps", "learning_rate",
                                            "lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm",
                                            "optimizer", "bf16", "fp16", "tf32", "seed", "gradient_checkpointing")},
        }, indent=2))
        print(f"{name}: {ds_path or 'no DeepSpeed'}"
              + (f" (from {r.deepspeed_source}; zero_optimization.stage={r.deepspeed['zero_optimization']['stage']})"
                 if ds_path else ""))


class _Collator:
    """Right-pads a batch; counts the real (non-pad) tokens it hands out."""

    def __init__(self, pad_id: int):
        self.pad_id, self.tokens = pad_id, 0

    def __call__(self, batch):
        import torch

        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k], labels[i, :k], att[i, :k] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        self.tokens += int(att.sum())
        return {"input_ids": ids, "labels": labels, "attention_mask": att}


def train(work: Path, name: str, steps: int, cpu: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    hp = json.loads((work / f"train-{name}" / "hparams.json").read_text())
    rank = int(os.environ.get("RANK", "0"))
    examples = json.loads((work / "data.json").read_text())
    tok = AutoTokenizer.from_pretrained(work / "student")
    collator = _Collator(tok.pad_token_id)
    marks: list[tuple[float, int]] = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), collator.tokens))

    warmup = hp.get("warmup_ratio") or 0.0
    if cpu:  # plumbing check only: what render() does for gpus_per_node: 0 (no fused optimizer, fp32)
        hp.update(optimizer="adamw_torch", bf16=False, fp16=False, tf32=None)
    # TrainingArguments before the model: with ZeRO-3 from_pretrained then builds it under zero.Init (partitioned).
    args = TrainingArguments(
        output_dir=str(work / f"out-{name}"), per_device_train_batch_size=hp["micro_batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"], learning_rate=hp["learning_rate"],
        lr_scheduler_type=hp["lr_scheduler"], warmup_steps=float(warmup), weight_decay=hp["weight_decay"],
        max_grad_norm=hp["max_grad_norm"], optim=hp["optimizer"], bf16=bool(hp["bf16"]), fp16=bool(hp["fp16"]),
        tf32=hp["tf32"], max_steps=steps, logging_steps=1, save_strategy="no",
        report_to="none", seed=hp["seed"], deepspeed=hp["deepspeed"], dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True, use_cpu=cpu, ddp_find_unused_parameters=False,
    )
    dtype = torch.bfloat16 if hp["bf16"] else torch.float32  # Axolotl loads the student in the training dtype
    model = AutoModelForCausalLM.from_pretrained(work / "student", dtype=dtype)
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator, callbacks=[Marks()])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t0

    engine = trainer.model_wrapped
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
    partitioned = any(hasattr(p, "ds_id") for p in trainer.model.parameters())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    k = len(marks) // 3  # skip warm-up steps (CUDA context, allocator growth, first kernels)
    (t_a, n_a), (t_b, n_b) = marks[k], marks[-1]
    result = {
        "config": name, "steps": trainer.state.global_step, "losses": losses,
        "tokens_per_s": (n_b - n_a) / (t_b - t_a) if t_b > t_a else float("nan"),
        "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None,
        "train_s": train_s, "train_runtime": out.metrics.get("train_runtime"),
        "deepspeed_engine": type(engine).__name__, "zero_stage": stage, "zero3_partitioned_params": partitioned,
        "deepspeed_json": hp["deepspeed"], "optimizer": type(trainer.optimizer).__name__,
        "params_dtype": str(next(trainer.model.parameters()).dtype),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if rank == 0:
        (work / f"result-{name}.json").write_text(json.dumps(result, indent=2))
        print("RESULT " + json.dumps({k: v for k, v in result.items() if k != "losses"}))
    expect = {"zero2": 2, "zero3": 3}.get(name)
    if expect is not None and stage != expect:
        raise SystemExit(f"{name}: expected a DeepSpeed engine at ZeRO stage {expect}, got {type(engine).__name__} stage {stage}")


def report(work: Path, names: list[str], logs: Path) -> int:
    print(f"{'config':<13}{'steps':>6}{'loss first -> last':>21}{'tokens/s':>11}{'peak alloc GiB':>16}"
          f"{'reserved GiB':>14}{'train s':>9}{'wall s':>8}  engine")
    bad = 0
    for name in names:
        path, wall_f = work / f"result-{name}.json", work / f"{name}.seconds"
        wall = wall_f.read_text().strip() if wall_f.exists() else "?"
        if not path.exists():
            print(f"{name:<13}{'failed':>6}   (log: {logs / (name + '.log')})")
            bad += 1
            continue
        r = json.loads(path.read_text())
        ls = r["losses"]
        loss = f"{ls[0]:.3f} -> {ls[-1]:.3f}" if ls else "n/a"
        gib = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"
        eng = r["deepspeed_engine"] + (f" ZeRO-{r['zero_stage']}" if r["zero_stage"] is not None else "") \
            + (" (params partitioned)" if r["zero3_partitioned_params"] else "")
        print(f"{name:<13}{r['steps']:>6}{loss:>21}{r['tokens_per_s']:>11.0f}{gib(r['peak_alloc_gib']):>16}"
              f"{gib(r['peak_reserved_gib']):>14}{r['train_s']:>9.1f}{wall:>8}  {eng}")
        if ls and not ls[-1] < ls[0]:
            print(f"  !! {name}: loss did not fall")
            bad += 1
    return bad


def main(argv: list[str]) -> int:
    cmd, work = argv[0], Path(argv[1])
    if cmd == "build":
        build(work, tiny="--tiny" in argv)
    elif cmd == "train":
        steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 60
        train(work, argv[2], steps, cpu="--cpu" in argv)
    elif cmd == "report":  # report WORK [LOG_DIR [NAME...]]
        logs = Path(argv[2]) if len(argv) > 2 else work
        return 1 if report(work, argv[3:] or list(CONFIGS), logs) else 0
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
