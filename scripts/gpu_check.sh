#!/usr/bin/env bash
# GPU check for `distillflow train` (one NVIDIA GPU, no internet, under 8 minutes).
#
# Builds a ~113M-parameter random-init Llama student (our tiny-model tokenizer, a LlamaConfig of
# GPT-2-small size), writes a curated run directory of synthetic distillation conversations, then
# trains it through `distillflow train` twice with the same Axolotl config:
#   1. DeepSpeed ZeRO-2 (train.deepspeed: zero2)
#   2. no DeepSpeed (plain single-GPU training)
# and prints tokens/s per GPU, peak GPU memory and the loss for each.
#
# Usage:  scripts/gpu_check.sh [--dry-run] [WORK_DIR]
#   --dry-run   build everything and run `distillflow train --dry-run` (renders + validates, no GPU
#               needed): checks this script's plumbing on a CPU machine.
# Env:    PYTHON (default: python3) must have distillflow and axolotl[deepspeed] installed.
#         STEPS (default 60) optimizer steps per run.
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-${OUT:-/tmp}/distillflow-gpu-check}"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-60}"

# Telemetry off (else every axolotl command hangs ~10 min retrying an upload); no hub access here.
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ $DRY == 0 ]]; then
  command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found — this script needs an NVIDIA GPU (or --dry-run)" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import axolotl, deepspeed, distillflow" 2>/dev/null || {
  echo "gpu_check: $PY lacks distillflow or axolotl[deepspeed] — pip install -e '$ROOT[train]' (or set PYTHON)" >&2; exit 2; }

rm -rf "$WORK" && mkdir -p "$WORK"
echo "== building the student and the curated run in $WORK"
"$PY" - "$WORK" "$STEPS" <<'EOF'
import json, random, sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distillflow.spec.loader import validate_data
from tests.support.tiny import build_tiny_chat_model

work, steps = Path(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
words = ("the model answers each question with a short explanation and the final number "
         "distillation keeps what the teacher knows while the student stays small and fast").split()
rows = []
for i in range(4000):
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    prompt = f"What is {a}+{b}? Explain briefly."
    answer = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120))) + f". So {a}+{b} = {a + b}."
    rows.append({"id": f"r{i}", "prompt": prompt, "response": answer, "teacher": "teacher",
                 "messages": [{"role": "system", "content": "You are a careful tutor."},
                              {"role": "user", "content": prompt}],
                 "provenance": {"teacher": {"name": "teacher"}, "filters_passed": []}})

# Tokenizer from our tiny-model builder (BPE + ChatML), trained on this data; weights of GPT-2-small size.
tok_dir = build_tiny_chat_model(work / "tokenizer-src", vocab_texts=[r["prompt"] + " " + r["response"] for r in rows[:500]],
                                vocab_size=2048)
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(tok_dir)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                  tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
print(f"student: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocab {len(tok)}")
student = work / "student"
model.save_pretrained(student, safe_serialization=True)
tok.save_pretrained(student)

def pipeline(deepspeed):
    train = {"base_model": str(student), "gpus_per_node": 1, "sequence_len": 512, "micro_batch_size": 8,
             "gradient_accumulation_steps": 1, "num_epochs": 1, "learning_rate": 3e-4, "precision": "bf16",
             "overrides": {"max_steps": steps, "save_strategy": "no", "warmup_ratio": 0.05,
                           "dataloader_num_workers": 2}}
    if deepspeed:
        train["deepspeed"] = deepspeed
    return {"name": "gpu-check", "source": {"kind": "inline", "rows": [{"q": "x"}], "columns": {"prompt": "q"}},
            "teachers": [{"name": "teacher", "provider": "openai", "model": "synthetic",
                          "terms": {"allows_training": True, "source": "synthetic data written by gpu_check.sh"}}],
            "steps": [{"kind": "generate"}], "train": train}

for name, ds in (("zero2", "zero2"), ("nods", None)):
    spec = validate_data(pipeline(ds))
    run = work / f"run-{name}"
    (run / "data").mkdir(parents=True)
    (run / "pipeline.yaml").write_text(spec.to_yaml())
    (run / "manifest.json").write_text(json.dumps({"spec_hash": spec.spec_hash(), "status": "complete",
                                                   "curated": len(rows), "counts": {}}))
    (run / "data" / "curated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
EOF

status=0
for name in zero2 nods; do
  echo "== distillflow train ($name)"
  start=$(date +%s)
  if [[ $DRY == 1 ]]; then
    "$PY" -c "from distillflow.cli import main; main()" train "$WORK/run-$name" --dry-run --no-progress || status=1
  else
    timeout 330 "$PY" -c "from distillflow.cli import main; main()" train "$WORK/run-$name" --no-progress > "$WORK/$name.out" 2>&1 || {
      status=1; echo "-- $name failed; last lines:"; tail -n 40 "$WORK/$name.out"; }
  fi
  echo "$(( $(date +%s) - start ))" > "$WORK/$name.seconds"
done
[[ $DRY == 1 ]] && { echo "dry run ok: rendered and validated both configs (no training)"; exit $status; }

echo "== results ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
"$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
print(f"{'config':<14}{'tokens/s/GPU':>14}{'peak alloc GiB':>16}{'reserved GiB':>14}{'loss first -> last':>22}{'steps':>7}{'wall s':>8}")
for name, label in (("zero2", "ZeRO-2"), ("nods", "no DeepSpeed")):
    path = work / f"run-{name}" / "train" / "metrics.jsonl"
    wall = (work / f"{name}.seconds").read_text().strip() if (work / f"{name}.seconds").exists() else "?"
    if not path.exists():
        print(f"{label:<14}{'failed':>14}   (see {work / (name + '.out')})")
        continue
    ms = [json.loads(l) for l in path.read_text().splitlines()]
    steps = [m for m in ms if "loss" in m]
    later = steps[len(steps) // 3:] or steps  # skip warm-up (compilation, allocator growth)
    tps = [m["tokens/train_per_sec_per_gpu"] for m in later if isinstance(m.get("tokens/train_per_sec_per_gpu"), float)]
    alloc = max((m.get("memory/max_allocated (GiB)") or 0.0) for m in ms)
    reserved = max((m.get("memory/device_reserved (GiB)") or 0.0) for m in ms)
    rate = sum(tps) / len(tps) if tps else float("nan")
    loss = f"{steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}" if steps else "n/a"
    print(f"{label:<14}{rate:>14.0f}{alloc:>16.2f}{reserved:>14.2f}{loss:>22}{len(steps):>7}{wall:>8}")
EOF
exit $status
