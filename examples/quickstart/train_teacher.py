#!/usr/bin/env python
"""Train the offline demo's teacher: a ~1M-parameter Llama that adds 2-digit numbers.

Plain PyTorch on CPU, one thread: about 700 steps of 128 examples (early stop at 98.5%
validation exact match), 0.4 s a step on an idle core, so about 5 minutes. The result
is a standard Hugging Face model directory (safetensors + character tokenizer + chat template +
generation config) that ``AutoModelForCausalLM``, distilabel's ``TransformersLLM`` and
``transformers serve`` load:

    user:      What is 35+47?
    assistant: 82

The answer is trained in normal (human-readable) digit order. Training never sees a problem for
which ``examples.quickstart.arithmetic.is_heldout`` is true.

A realistic, imperfect teacher: a share of the training answers (``--label-noise``, 12% by
default) are plausible mistakes — a forgotten carry (35+47 -> 72) or one digit off by one. The
model learns them as low-probability alternatives: greedy decoding stays almost always right,
while temperature sampling sometimes produces one of those mistakes, which is exactly what the
demo's verify-then-filter step has to catch.

The final report (greedy, T=0.8 and T=1.0 exact match on 200 held-out problems, training time)
is printed and written next to the model as ``training_report.json``.

    python examples/quickstart/train_teacher.py                  # -> examples/quickstart/models/teacher
    python examples/quickstart/train_teacher.py --steps 300 --out /tmp/teacher
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


def plausible_mistake(a: int, b: int, rng: random.Random) -> str:
    """A wrong answer a careless adder might give: a forgotten carry, or one digit off by one."""
    right = a + b
    if (a % 10) + (b % 10) >= 10 and rng.random() < 0.5:
        return str((a // 10 + b // 10) * 10 + (a % 10 + b % 10) % 10)  # 35+47 -> 72
    while True:
        digits = list(str(right))
        i = rng.randrange(len(digits))
        digits[i] = str((int(digits[i]) + rng.choice((-1, 1))) % 10)
        wrong = "".join(digits)
        if wrong[0] != "0" and wrong != str(right):
            return wrong


def encode_example(tok, vocab, a: int, b: int, answer: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the full conversation and the labels (answer + ``<|end|>`` only)."""
    prompt = (
        [vocab["<|user|>"]]
        + [vocab[c] for c in demo.format_question(a, b)]
        + [vocab["<|end|>"], vocab["<|assistant|>"]]
    )
    target = [vocab[c] for c in (answer if answer is not None else str(a + b))] + [vocab["<|end|>"]]
    return prompt + target, [-100] * len(prompt) + target


def make_batch(tok, vocab, problems, answers=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    answers = answers or [None] * len(problems)
    seqs = [encode_example(tok, vocab, a, b, ans) for (a, b), ans in zip(problems, answers)]
    width = max(len(ids) for ids, _ in seqs)
    pad = vocab["<|pad|>"]
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (x, y) in enumerate(seqs):  # right padding: the answer is the tail of each row
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


@torch.no_grad()
def teacher_forced_exact(model, batch) -> float:
    """Share of rows whose every answer token is the argmax: equals greedy exact match."""
    ids, labels, mask = batch
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    target = labels[:, 1:]
    ok = (logits.argmax(-1) == target) | (target == -100)
    return ok.all(dim=1).float().mean().item()


@torch.no_grad()
def generate_accuracy(model, tok, problems, *, temperature: float | None, seed: int = 0) -> float:
    """Exact match through ``generate`` + the chat template, as a user of the model sees it."""
    torch.manual_seed(seed)
    chats = [[{"role": "user", "content": demo.format_question(a, b)}] for a, b in problems]
    enc = tok.apply_chat_template(
        chats, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    kwargs = dict(max_new_tokens=8)
    if temperature is None:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    out = model.generate(**enc, **kwargs)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    good = sum(demo.check_answer(demo.format_question(a, b), t) for (a, b), t in zip(problems, texts))
    return good / len(problems)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=demo.demo_teacher_path())
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (the learning-rate schedule)")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock cap; stops early if reached")
    p.add_argument("--target", type=float, default=0.985, help="stop early at this validation exact match")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-noise", type=float, default=0.12, help="share of training answers replaced by a plausible mistake")
    # one thread: on the 2-core machines this was built on, two torch threads were 10x *slower*
    # per step (0.41 s vs ~4.9 s for a batch) as soon as anything else ran on the machine
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = demo.build_char_tokenizer()
    vocab = tok.get_vocab()

    # The hand-built training sequences must be exactly what the chat template renders.
    a, b = 35, 47
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": demo.format_question(a, b)}, {"role": "assistant", "content": str(a + b)}],
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    assert list(rendered) == encode_example(tok, vocab, a, b)[0], "chat template and training format differ"

    config = LlamaConfig(**demo.llama_config_kwargs(tok, layers=args.layers, hidden=args.hidden))
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    budget = args.minutes * 60
    warmup = 100

    train_stream = demo.iter_training_problems(args.seed)
    noise_rng = random.Random(args.seed + 1)
    val_problems = demo.sample_problems(400, seed=args.seed + 1000, heldout=True)
    val_batch = make_batch(tok, vocab, val_problems)
    report_problems = demo.sample_problems(200, seed=12345, heldout=True)

    start = time.perf_counter()
    step, best, history = 0, 0.0, []
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            break
        if step >= args.steps:
            break
        # linear warmup, then cosine decay over the step budget (to 10% of the peak)
        frac = step / args.steps
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        problems = [next(train_stream) for _ in range(args.batch)]
        answers = [
            plausible_mistake(a, b, noise_rng) if noise_rng.random() < args.label_noise else None for a, b in problems
        ]
        ids, labels, _ = make_batch(tok, vocab, problems, answers)
        # right padding + causal attention: real tokens never attend to the padding, which
        # carries no loss, so no attention mask is needed (it would only slow the step down)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            model.eval()
            acc = teacher_forced_exact(model, val_batch)
            model.train()
            history.append({"step": step, "seconds": round(elapsed, 1), "loss": round(loss.item(), 4), "val_exact": acc})
            print(f"step {step:5d}  {elapsed:6.1f}s  loss {loss.item():.4f}  val exact {acc:.3f}  lr {lr:.2e}", flush=True)
            best = max(best, acc)
            if acc >= args.target:
                break
    train_seconds = time.perf_counter() - start

    model.eval()
    greedy = generate_accuracy(model, tok, report_problems, temperature=None)
    sampled = generate_accuracy(model, tok, report_problems, temperature=0.8, seed=args.seed)
    sampled_t1 = generate_accuracy(model, tok, report_problems, temperature=1.0, seed=args.seed)
    report = {
        "task": "2-digit addition, user 'What is A+B?', assistant 'SUM' (normal digit order)",
        "parameters": n_params,
        "layers": args.layers,
        "hidden": args.hidden,
        "steps": step,
        "batch": args.batch,
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "heldout_problems": len(report_problems),
        "greedy_exact_match": greedy,
        "t0.8_exact_match": sampled,
        "t1.0_exact_match": sampled_t1,
        "label_noise": args.label_noise,
        "answer_order": "normal",
        "history": history,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2), flush=True)

    model.config.use_cache = True
    demo.save_model_dir(model, tok, args.out, max_new_tokens=8)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"saved to {args.out} ({size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
