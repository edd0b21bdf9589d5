#!/usr/bin/env bash
# GPU check: DeepSpeed ZeRO-2/3 for real on one NVIDIA GPU, with the DeepSpeed JSON that distillflow ships.
#
# PART A (the check): a ~116M-parameter random-init Llama (our tiny-model tokenizer, GPT-2-small
#   shape, bf16) trained on synthetic chat conversations (chat template, assistant tokens only)
#   through transformers.Trainer, one process under `torch.distributed.run --standalone`:
#     nods   no DeepSpeed (baseline)
#     zero2  deepspeed=<distillflow's rendered zero2 JSON>   (render() + write_deepspeed(), the
#     zero3  deepspeed=<distillflow's rendered zero3 JSON>    `train.deepspeed: zero2|zero3` path)
#   and prints steps, loss first -> last, tokens/s, peak GPU memory and wall seconds per config.
# PART B (best effort, after A, own time limit): the real `distillflow train` -> `axolotl train`
#   path via scripts/gpu_check.sh (ZeRO-2 and no DeepSpeed), with axolotl's wheels from .whl/partb/
#   and import-only stand-ins for bitsandbytes and wandb (their wheels do not fit the carry budget;
#   a plain full fine-tune never calls them).
#
# Usage:  bash scripts/gpu_deepspeed_check.sh [--dry-run]
#   --dry-run  CPU plumbing check: tiny model, 2 steps without DeepSpeed (DRY_DS=1 adds 2-step
#              ZeRO-2/3 runs on DeepSpeed's CPU accelerator; its first run JIT-builds a comm op, ~2 min).
# Env:  OUT (default /tmp/gpu-out) gets logs + results; WORK (default /tmp/gpu-deepspeed-check) the
#       models and data; PYTHON (default python3); STEPS (60) per PART A run; PARTB_STEPS (30);
#       BUDGET_S (345): PART B gets what is left of it; SKIP_PARTB=1 skips PART B.
# Wheels: .whl/*.whl (deepspeed built with DS_BUILD_OPS=0, hjson, pydantic 2 + its deps) for A;
#         .whl/partb/*.whl for B. Each set is installed into its own --target directory.
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/gpu-out}"
WORK="${WORK:-/tmp/gpu-deepspeed-check}"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-60}"
PARTB_STEPS="${PARTB_STEPS:-30}"
BUDGET_S="${BUDGET_S:-345}"
T0=$SECONDS
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_deepspeed_check.log") 2>&1

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
  TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 \
  WANDB_DISABLED=true WANDB_MODE=disabled

echo "== 0. environment ($(date -u +%FT%TZ))"
if [[ $DRY == 0 ]]; then
  compgen -G ".whl/*.whl" >/dev/null || { echo "no .whl/*.whl here: run with carry ['.whl']"; exit 2; }
  rm -rf /tmp/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install (.whl/*.whl) failed"; exit 2; }
  export PYTHONPATH="/tmp/site:$ROOT"
  nvidia-smi || { echo "nvidia-smi failed: this check needs an NVIDIA GPU (or --dry-run)"; exit 2; }
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' || { echo "imports failed"; exit 2; }
import sys, torch, transformers, accelerate, deepspeed, pydantic
print(f"python {sys.version.split()[0]}  torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()})  "
      f"transformers {transformers.__version__}  accelerate {accelerate.__version__}  deepspeed {deepspeed.__version__} "
      f"({deepspeed.__file__})  pydantic {pydantic.__version__}")
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB",
          "bf16" if torch.cuda.is_bf16_supported() else "no bf16")
EOF

# ---------------------------------------------------------------- PART A
A_ARGS=(--steps "$STEPS"); CONFIGS=(nods zero2 zero3); TINY=()
if [[ $DRY == 1 ]]; then
  A_ARGS=(--steps 2 --cpu); TINY=(--tiny); CONFIGS=(nods)
  [[ "${DRY_DS:-0}" == 1 ]] && { CONFIGS=(nods zero2 zero3); export DS_ACCELERATOR=cpu; }
fi
echo "== A. HF Trainer + DeepSpeed (distillflow's rendered zero2/zero3 JSON): ${CONFIGS[*]}, ${A_ARGS[*]}"
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT/partA"
"$PY" scripts/gpu_deepspeed_check.py build "$WORK" "${TINY[@]}" > "$OUT/partA/build.log" 2>&1 \
  || { tail -n 40 "$OUT/partA/build.log"; echo "PART A: build failed"; exit 1; }
grep -E "^(student|nods|zero2|zero3):" "$OUT/partA/build.log"
cp "$WORK"/train-*/deepspeed_*.json "$OUT/partA/" 2>/dev/null
status=0
for name in "${CONFIGS[@]}"; do
  start=$SECONDS
  timeout -k 10 150 "$PY" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node 1 \
      scripts/gpu_deepspeed_check.py train "$WORK" "$name" "${A_ARGS[@]}" > "$OUT/partA/$name.log" 2>&1
  rc=$?
  if (( rc != 0 )); then
    status=1; echo "-- $name failed (rc $rc); last lines of $OUT/partA/$name.log:"; tail -n 40 "$OUT/partA/$name.log"
  fi
  echo $(( SECONDS - start )) > "$WORK/$name.seconds"
  echo "   $name: $(( SECONDS - start )) s"
  cp "$WORK/result-$name.json" "$OUT/partA/" 2>/dev/null
done
echo "== A. results ($("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'))"
"$PY" scripts/gpu_deepspeed_check.py report "$WORK" "$OUT/partA" "${CONFIGS[@]}" | tee "$OUT/partA/table.txt"
(( PIPESTATUS[0] == 0 )) || status=1
echo "   (tokens/s: real tokens over the last 2/3 of the steps; one GPU, so ZeRO shards nothing: DeepSpeed's bf16"
echo "    path keeps fp32 master weights + fp32 Adam states, ~16 B/param vs ~8 B/param for the bf16 baseline)"
echo "PART A: $([[ $status == 0 ]] && echo PASS || echo FAIL)  ($(( SECONDS - T0 )) s so far)"

# ---------------------------------------------------------------- PART B
if [[ $DRY == 1 || "${SKIP_PARTB:-0}" == 1 ]]; then
  echo "== B. skipped (dry run or SKIP_PARTB=1)"; exit $status
fi
if ! compgen -G ".whl/partb/*.whl" >/dev/null; then
  echo "== B. skipped: no .whl/partb/*.whl"; exit $status
fi
left=$(( BUDGET_S - (SECONDS - T0) ))
if (( left < 100 )); then echo "== B. skipped: only ${left} s left of BUDGET_S=$BUDGET_S"; exit $status; fi
echo "== B. distillflow train -> axolotl train (scripts/gpu_check.sh, ZeRO-2 and no DeepSpeed, $PARTB_STEPS steps), limit ${left} s"
rm -rf /tmp/site-b /tmp/site-stubs
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-b .whl/partb/*.whl \
  || { echo "PART B: wheel install failed"; exit $status; }
# Import-only stand-ins, made only for packages this python cannot import.
for mod in bitsandbytes wandb; do
  PYTHONPATH="/tmp/site-b:/tmp/site" "$PY" -c "import $mod" 2>/dev/null && continue
  mkdir -p "/tmp/site-stubs/$mod"
  cat > "/tmp/site-stubs/$mod/__init__.py" <<'EOF'
"""Import-only stand-in (gpu_deepspeed_check PART B) for a package whose wheel does not fit the carry
budget (bitsandbytes 43 MB, wandb 20 MB + deps): axolotl imports both at module top, a plain full
fine-tune without a logger never calls them. Any attribute is a placeholder class; using one raises."""
import importlib.abc, importlib.machinery, sys, types

__version__ = "0.0.0+stub"


class _Stub(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[:1].islower() and name.isidentifier():  # submodule-like (bnb.nn, wandb.sdk)
            mod = _Stub(f"{self.__name__}.{name}")
            setattr(self, name, mod)
            sys.modules[mod.__name__] = mod
            return mod

        def _fail(*a, **k):
            raise RuntimeError(f"{self.__name__}.{name}: {self.__name__.split('.')[0]} is a stub in this GPU check")

        cls = type(name, (), {"__init__": _fail, "__module__": self.__name__})
        setattr(self, name, cls)
        return cls


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.append(_Finder())
sys.modules[__name__].__class__ = _Stub
EOF
  echo "   $mod: import-only stand-in"
done
BWORK=/tmp/gpu-check-work
rm -rf "$BWORK"; mkdir -p "$OUT/partB"
PYTHONPATH="/tmp/site-b:/tmp/site:/tmp/site-stubs" PYTHON="$PY" STEPS="$PARTB_STEPS" \
  bash scripts/gpu_check.sh "$BWORK" > "$OUT/partB/gpu_check.log" 2>&1 &
bpid=$!
deadline=$(( SECONDS + left ))
while kill -0 "$bpid" 2>/dev/null && (( SECONDS < deadline )); do sleep 2; done
if kill -0 "$bpid" 2>/dev/null; then
  # gpu_check.sh's own `timeout` and distillflow's launcher start new process groups/sessions:
  # stop the whole tree by pid (parents listed first, all signalled at once).
  tree() { echo "$1"; local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$c"; done; }
  pids=$(tree "$bpid" | tr '\n' ' ')
  kill -TERM $pids 2>/dev/null; sleep 8; kill -KILL $pids 2>/dev/null
  wait "$bpid" 2>/dev/null
  brc=124
else
  wait "$bpid"; brc=$?
fi
tail -n 25 "$OUT/partB/gpu_check.log"
for name in zero2 nods; do
  run="$BWORK/run-$name/train"
  mkdir -p "$OUT/partB/$name"
  cp "$BWORK/$name.out" "$run/metrics.jsonl" "$run/axolotl.yaml" "$run"/deepspeed_*.json "$run/plan.json" \
     "$run/logs/preprocess.log" "$run/logs/train.log" "$OUT/partB/$name/" 2>/dev/null
done
"$PY" - "$BWORK" <<'EOF'
import json, sys
from pathlib import Path
for name in ("zero2", "nods"):
    p = Path(sys.argv[1]) / f"run-{name}" / "train" / "metrics.jsonl"
    ms = [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
    st = [m for m in ms if "loss" in m]
    tps = [m["tokens/train_per_sec_per_gpu"] for m in st[len(st) // 3:] if isinstance(m.get("tokens/train_per_sec_per_gpu"), float)]
    alloc = max([m.get("memory/max_allocated (GiB)") or 0.0 for m in ms] or [0.0])
    print(f"   axolotl {name:<6} steps {len(st):>3}  loss " + (f"{st[0]['loss']:.3f} -> {st[-1]['loss']:.3f}" if st else "n/a")
          + (f"  tokens/s/GPU {sum(tps) / len(tps):.0f}" if tps else "") + f"  peak alloc {alloc:.2f} GiB")
EOF
case $brc in
  0) echo "PART B: PASS" ;;
  124|137) echo "PART B: TIMEOUT after ${left} s (rc $brc) — partial results above; logs in $OUT/partB" ;;
  *) echo "PART B: FAIL (rc $brc) — logs in $OUT/partB" ;;
esac
echo "total $(( SECONDS - T0 )) s"
exit $status
