# Two commands on a fresh machine: `make demo` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
# torch and torchvision are pinned to the releases this project is tested with (CPU or CUDA).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench bench-stage2 ablations clean-demo

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m stage1_decode run --config $(CONFIG) && \
	$(PY) -m stage2_generate run --config $(CONFIG) && \
	end=$$(date +%s) && echo "demo stages took $$((end - start)) s; summary: results/demo/summary.md"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_ridge.py

bench-stage2: $(STAMP)
	$(PY) bench/bench_stage2.py --json results/demo/bench_stage2.json

# after `make demo`: each loss removed in turn and each kind of training input (about 9 min each)
ablations: $(STAMP)
	$(PY) bench/stage2_ablations.py --config $(CONFIG)

clean-demo:
	rm -rf data/demo work/demo results/demo/runs
