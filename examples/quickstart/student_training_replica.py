#!/usr/bin/env python
"""A plain-PyTorch replica of the demo's student training, for fast what-ifs on CPU (one thread).

Trains the demo student on a JSONL of ``{"prompt", "response"}`` rows (e.g. a run's
``data/curated.jsonl``) the way ``distillflow train`` does through Axolotl for the quickstart
(answer tokens only, AdamW, batch 128, linear warmup then cosine, gradient clipping 1.0), and
prints greedy exact match on 400 held-out additions every ``--eval-every`` steps, then greedy and
T=1.0 sampled exact match on 200. The notes in docs/demo.md on how the student's starting point changes
learning come from this script; the demo's own numbers come from the real Axolotl run.

    python examples/quickstart/student_training_replica.py --data runs/quickstart/data/curated.jsonl \
        --init examples/quickstart/models/student --steps 400
"""
import argparse, json, math, random, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from examples.quickstart import arithmetic as demo
from examples.quickstart.train_teacher import make_batch, teacher_forced_exact, generate_accuracy

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)  # jsonl with prompt,response
p.add_argument("--steps", type=int, default=1500)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--warmup", type=int, default=50)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--beta2", type=float, default=0.999)
p.add_argument("--init", default=None)
p.add_argument("--eval-every", type=int, default=100)
a = p.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed)
tok = demo.build_char_tokenizer(); vocab = tok.get_vocab()
rows = [json.loads(l) for l in open(a.data)]
probs, answers = [], []
for r in rows:
    ab = demo.parse_question(r["prompt"]); probs.append(ab); answers.append(r["response"].strip())
wrong = sum(not demo.check_answer(r["prompt"], r["response"]) for r in rows)
print(f"{a.data}: {len(rows)} rows, wrong {wrong/len(rows):.1%}", flush=True)
model = LlamaForCausalLM.from_pretrained(a.init) if a.init else LlamaForCausalLM(LlamaConfig(**demo.llama_config_kwargs(tok, layers=a.layers, hidden=a.hidden)))
model.train()
print("params", sum(p.numel() for p in model.parameters()))
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd, betas=(0.9, a.beta2))
val = demo.sample_problems(400, seed=1000, heldout=True)
vb = make_batch(tok, vocab, val)
rng = random.Random(a.seed); order = []
t0 = time.perf_counter()
for step in range(a.steps):
    lr = a.lr * min(1.0, (step + 1) / a.warmup) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
    for g in opt.param_groups: g["lr"] = lr
    if len(order) < a.batch:
        idx = list(range(len(rows))); rng.shuffle(idx); order += idx
    bi, order = order[:a.batch], order[a.batch:]
    ids, labels, _ = make_batch(tok, vocab, [probs[i] for i in bi], [answers[i] for i in bi])
    loss = model(input_ids=ids, labels=labels).loss
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if (step + 1) % a.eval_every == 0:
        model.eval(); acc = teacher_forced_exact(model, vb); model.train()
        print(f"step {step+1} {time.perf_counter()-t0:.0f}s loss {loss.item():.3f} val {acc:.3f}", flush=True)
model.eval()
print("final greedy", generate_accuracy(model, tok, val[:200], temperature=None),
      "T1", generate_accuracy(model, tok, val[:200], temperature=1.0), flush=True)
