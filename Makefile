# Two commands for a fresh machine:
#   make demo   set up .venv and run the offline quickstart pipeline end to end
#   make test   set up .venv and run the test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export AXOLOTL_DO_NOT_TRACK := 1
export DO_NOT_TRACK := 1

.PHONY: setup demo test test-fast browser bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch that lies on this disk; other specs may pull multi-GB CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --ablation

test: $(STAMP) browser
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Debian's chromium for the browser tests (Argilla UI, HTML report); skipped with a reason if absent.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "chromium is not installed (needs root + apt): the browser tests will be skipped"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/teacher_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
