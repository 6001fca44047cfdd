# The README's set-up: `make demo` and `make test`. Both install first, into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
# PyTorch comes from pip (its local cache on the reference machine); pin the tested pair.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# PASSIVE: idle OpenMP threads sleep instead of spinning (spinning collapses speed on a shared machine);
# THP_MEM_ALLOC_ENABLE: PyTorch's CPU allocator asks for huge pages (fewer page faults on large tensors).
RUN_ENV := OMP_WAIT_POLICY=PASSIVE THP_MEM_ALLOC_ENABLE=1

.PHONY: install test test-fast lint demo bench gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: install lint
	$(RUN_ENV) $(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	$(RUN_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: install
	$(BIN)/python benchmarks/bench_data.py

# Wheels for the GPU machine, which has torch and triton but no network: scripts/gpu_check installs from
# here (--no-deps) what it lacks. Pure-Python and abi3 wheels, and PyYAML's for each Python it may run.
GPU_WHEELS := timm==1.0.31 safetensors==0.8.0 spikingjelly==2.0.0 loguru==0.7.3 tqdm==4.70.1 PyYAML==6.0.4 \
	pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4

gpu-wheels: install
	for v in 3.11 3.12 3.13; do \
		$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
			--platform manylinux2014_x86_64 --python-version $$v --dest gpu-wheels $(GPU_WHEELS) || exit 1; \
	done

clean:
	rm -rf $(VENV) build dist src/*.egg-info
