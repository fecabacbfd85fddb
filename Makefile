# Two commands that work on a fresh clone with nothing but Python installed:
#   make demo   set up .venv and run the offline demo (the shipped digits model; no network, no downloads)
#   make test   set up .venv with the test extras, check lint and formatting, run the default test set
# `make test-slow` runs the end-to-end set (exports, compiles, two-process runs, the browser test); `make ci` runs
# both, as .ci/run does; `make test-long` runs the minutes-long learning runs and the benchmark (not in CI).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test test-slow test-long lint format ci clean

# torch first: the CPU build where there is no NVIDIA GPU (an unpinned torch pulls a multi-GB CUDA build); where the
# CPU index cannot be reached, pip's own configuration decides (a local wheel, or PyPI's default build).
$(BIN)/.torch:
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	elif curl -fsS --max-time 10 -o /dev/null "$(TORCH_CPU_INDEX)/torch/" 2>/dev/null; then \
		$(BIN)/pip install -q "torch==$(TORCH_VERSION)" --index-url "$(TORCH_CPU_INDEX)"; \
	else \
		$(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	touch $@

$(BIN)/.installed: $(BIN)/.torch pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.torch pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pvt-hf demo

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q -n auto

test-slow: $(BIN)/.installed-test
	$(BIN)/python -m pytest -q -n auto -m slow

test-long: $(BIN)/.installed-test
	$(BIN)/python -m pytest -q -n auto -m long

ci: test test-slow

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
