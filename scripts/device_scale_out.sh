#!/usr/bin/env bash
# The Ray scaling run of issue #10 on the GPU machine (16 cores, Python 3.12, no network, no Ray):
# benchmarks/scale_out.py with 1, 4 and 8 workers against an endpoint served by six processes.
#
# Its image lacks Ray and a few of distillflow's needs, and Ray's wheel (~76 MiB) is over the 64 MiB a
# call may carry, so the wheels travel in two parts, in two calls made while the machine is warm:
#
#   here:     scripts/device_scale_out.sh fetch          # .whl/a and .whl/b: cp312 wheels, Ray's split
#   call 1:   scripts/device_scale_out.sh stage a        # carry [".whl/a"]: copies its part to /tmp/dfwhl
#   call 2:   scripts/device_scale_out.sh stage b && scripts/device_scale_out.sh run   # carry [".whl/b"]
#
# `run` installs the wheels into /tmp/site (--no-deps: the image has the rest), checks the imports,
# then runs the benchmark (inside `unshare -n` where it can, as here; else on the machine's loopback).
# Env: PROMPTS (default 40000: three runs of each backend took 365 s there with inline prompts), WORKERS (1,4,8), ENDPOINTS (6), CONCURRENCY (512), REPEAT (3), PYTHON.
# Locally, `scripts/device_scale_out.sh selftest` runs fetch, both stages and a small run in a fresh
# Python 3.12 virtual environment holding only what the device image holds of distillflow's needs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
STAGE=/tmp/dfwhl
# what distillflow's run path and Ray need that the device image lacks (versions: this project's lock)
WHEELS="ray==2.60.0 orjson==3.13.0 pydantic==2.12.5 pydantic_core==2.41.5 annotated-types==0.8.0
typing-inspection==0.4.5 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
rpds-py==2026.9.1"
# what the image holds of distillflow's needs (KINDS.md), for the self-test's stand-in of it
IMAGE="aiohttp pyarrow pandas numpy pyyaml psutil cloudpickle msgpack grpcio protobuf click filelock
requests packaging attrs typing_extensions typer rich jinja2 fsspec tqdm"

fetch() {
  rm -rf "$ROOT/.whl" && mkdir -p "$ROOT/.whl/a" "$ROOT/.whl/b" "$ROOT/.whl/all"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$ROOT/.whl/all" $WHEELS
  local ray; ray=$(ls "$ROOT"/.whl/all/ray-*.whl)
  split -b 40m -d "$ray" "$ROOT/.whl/ray.part"
  mv "$ROOT/.whl/ray.part00" "$ROOT/.whl/a/"
  mv "$ROOT"/.whl/ray.part0[1-9] "$ROOT/.whl/b/"
  basename "$ray" > "$ROOT/.whl/b/ray.name"
  (cd "$ROOT/.whl/all" && sha256sum "$(basename "$ray")") > "$ROOT/.whl/b/ray.sha256"
  find "$ROOT/.whl/all" -name '*.whl' ! -name 'ray-*' -exec mv {} "$ROOT/.whl/a/" \;
  rm -rf "$ROOT/.whl/all"
  du -sh "$ROOT/.whl/a" "$ROOT/.whl/b"
  grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo /.whl/ >> "$ROOT/.git/info/exclude"
}

stage() {  # copy what this call carried to where the next call finds it
  mkdir -p "$STAGE"
  cp -r "$ROOT/.whl/$1/." "$STAGE/"
  ls "$STAGE"
}

install() {
  local name; name=$(cat "$STAGE/ray.name")
  cat "$STAGE"/ray.part* > "$STAGE/$name"
  (cd "$STAGE" && sha256sum -c ray.sha256)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STAGE"/*.whl
}

run() {
  install
  export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
  export PATH="/tmp/site/bin:$PATH"
  "$PY" -c "import ray, distillflow, psutil, aiohttp, orjson; print('ray', ray.__version__, 'cores', __import__('os').cpu_count())"
  local args=(--prompts "${PROMPTS:-40000}" --repeat "${REPEAT:-3}" --workers "${WORKERS:-1,4,8}"
              --endpoints "${ENDPOINTS:-6}" --concurrency "${CONCURRENCY:-512}")
  cd "$ROOT"
  local t0=$SECONDS
  # the benchmark's own check: a namespace whose loopback `ip` can bring up
  if unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
    "$PY" -m benchmarks.scale_out "${args[@]}" && return
    # a failure within two minutes is the namespace's (Ray cannot start in it), not the run's
    (( SECONDS - t0 < 120 )) || return 1
    echo "device_scale_out: the run in unshare -n failed early; again on the machine's own loopback" >&2
  else  # no private network namespace: the cluster binds loopback addresses on the machine itself
    echo "device_scale_out: unshare -n with ip is not available; running on the machine's own loopback" >&2
  fi
  DISTILLFLOW_NETNS=1 "$PY" -m benchmarks.scale_out "${args[@]}"
}

selftest() {  # fetch, both stages and a small run in a Python 3.12 venv standing in for the image
  local py312="${PYTHON312:-python3.12}"
  "$py312" -c "import sys; assert sys.version_info[:2] == (3, 12)" || { echo "selftest needs Python 3.12 (set PYTHON312)" >&2; exit 2; }
  local venv=/tmp/dfdev-venv
  rm -rf "$venv" "$STAGE" /tmp/site
  "$py312" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $IMAGE
  fetch
  stage a
  stage b
  PY="$venv/bin/python" PROMPTS=1000 REPEAT=1 WORKERS=1,3 ENDPOINTS=2 CONCURRENCY=128 run
}

case "${1:-}" in
  fetch) fetch ;;
  stage) stage "${2:?stage a or b}" ;;
  run) run ;;
  selftest) selftest ;;
  *) echo "usage: $0 fetch | stage a|b | run | selftest" >&2; exit 2 ;;
esac
