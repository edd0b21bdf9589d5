#!/usr/bin/env python
"""Build the offline demo's student base model: a 0.54M-parameter Llama that can *subtract*.

Real distillation starts from a pretrained student (a small LM that knows language, formats and
some skills, but not the teacher's skill). This is the demo's stand-in: the same character
tokenizer and chat format as the teacher, 2 layers, hidden 128 (half the teacher's size),
pretrained on 2-digit subtraction (``What is 47-35?`` -> ``12``). It therefore already reads
questions and digit positions, and answers **0%** of the addition problems it will be distilled
on. Fine-tuned from scratch instead, the same network learns addition only after a plateau whose
length varies from seed to seed by hundreds of steps (measured: 30% to 100% after 500 steps,
depending on the seed), which would turn the demo's ablation into a lottery.

Plain PyTorch on CPU, one thread: 1,500 steps of 128 random problems (~0.35 s a step, about
9 minutes). Subtraction operands are 10..99 with the larger one first; addition never appears.

    python examples/quickstart/train_student.py                # -> examples/quickstart/models/student
    python examples/quickstart/train_student.py --out /tmp/student --steps 600

Writes ``training_report.json`` next to the model (subtraction and addition accuracy on 400
problems each, measured through ``generate`` greedily).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from examples.quickstart import arithmetic as demo  # noqa: E402

DEFAULT_OUT = ROOT / "examples" / "quickstart" / "models" / "student"


def encode(vocab: dict, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of ``<|user|>QUESTION<|end|><|assistant|>ANSWER<|end|>`` and its labels (answer only)."""
    prompt = [vocab["<|user|>"]] + [vocab[c] for c in question] + [vocab["<|end|>"], vocab["<|assistant|>"]]
    target = [vocab[c] for c in answer] + [vocab["<|end|>"]]
    return prompt + target, [-100] * len(prompt) + target


def batch(vocab: dict, items: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = [encode(vocab, q, a) for q, a in items]
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), vocab["<|pad|>"], dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(seqs):  # right padding, causal attention: no mask needed
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
    return ids, labels


def subtraction(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    a, b = max(a, b), min(a, b)
    return f"What is {a}-{b}?", str(a - b)


@torch.no_grad()
def teacher_forced_exact(model, vocab, items) -> float:
    """Share of rows whose every answer token is the argmax (= greedy exact match)."""
    ids, labels = batch(vocab, items)
    logits = model(input_ids=ids).logits[:, :-1]
    target = labels[:, 1:]
    return ((logits.argmax(-1) == target) | (target == -100)).all(dim=1).float().mean().item()


@torch.no_grad()
def greedy_accuracy(model, tok, items) -> float:
    """Exact match through ``generate`` + the chat template, as a user of the model sees it."""
    chats = [[{"role": "user", "content": q}] for q, _ in items]
    enc = tok.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt", padding=True,
                                  return_dict=True)
    out = model.generate(**enc, do_sample=False, max_new_tokens=8)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(t.strip() == a for (_, a), t in zip(items, texts)) / len(items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = demo.build_char_tokenizer()
    vocab = tok.get_vocab()
    rng = random.Random(args.seed)
    model = LlamaForCausalLM(LlamaConfig(**demo.llama_config_kwargs(tok, layers=2, hidden=128)))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"student: {n_params / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    val_rng = random.Random(999)
    val_sub = [subtraction(val_rng) for _ in range(400)]
    val_add = [(demo.format_question(a, b), str(a + b)) for a, b in demo.sample_problems(400, seed=1000, heldout=True)]

    history, start = [], time.perf_counter()
    for step in range(args.steps):
        # linear warmup (50 steps), then cosine decay to 10% of the peak
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels = batch(vocab, [subtraction(rng) for _ in range(args.batch)])
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            model.eval()
            sub, add = teacher_forced_exact(model, vocab, val_sub), teacher_forced_exact(model, vocab, val_add)
            model.train()
            elapsed = time.perf_counter() - start
            history.append({"step": step + 1, "seconds": round(elapsed, 1), "loss": round(loss.item(), 4),
                            "subtraction_exact": sub, "addition_exact": add})
            print(f"step {step + 1:5d}  {elapsed:6.1f}s  loss {loss.item():.4f}  subtraction {sub:.3f}  addition {add:.3f}",
                  flush=True)
    train_seconds = time.perf_counter() - start

    model.eval()
    model.config.use_cache = True
    report = {
        "task": "pretrained on 2-digit subtraction 'What is A-B?' -> 'A-B' (A >= B); never saw an addition",
        "parameters": n_params, "layers": 2, "hidden": 128, "steps": args.steps, "batch": args.batch,
        "lr": args.lr, "seed": args.seed, "threads": args.threads, "train_seconds": round(train_seconds, 1),
        "greedy_subtraction_exact_match": greedy_accuracy(model, tok, val_sub),
        "greedy_addition_exact_match": greedy_accuracy(model, tok, val_add),
        "history": history,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2), flush=True)
    demo.save_model_dir(model, tok, args.out, max_new_tokens=16)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
