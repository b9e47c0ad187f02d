# Two commands on a fresh clone: `make test` and `make demo`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medkit-installed
# Every first-party plugin under plugins/ and every example plugin installs beside the core.
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml))
DEMO ?= ct-seg --arch attn_unetpp_v2

.PHONY: install test demo lint bench bench-cache clean gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml $(addsuffix /pyproject.toml,$(PLUGIN_DIRS))
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet --no-build-isolation -e ".[test,bench]" $(foreach dir,$(PLUGIN_DIRS),-e "./$(dir)[test]")
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/medkit run $(DEMO)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/cli_startup.py --repeat 11
	$(PY) benchmarks/cache_codecs.py

# about 10 minutes on 2 cores: generates 40 CT volumes, builds their cache, times five loaders
bench-cache: install
	$(PY) benchmarks/slice_cache.py

clean:
	rm -rf $(VENV) build dist *.egg-info runs

# one H100, under 8 minutes: CUDA/AMP kill-and-resume, paper-size steps, FAISS GPU, torchrun NCCL, throughput;
# without CUDA every check is skipped in seconds. Writes benchmarks/results/gpu_check.json
gpu-check: install
	$(PY) benchmarks/gpu_check.py
