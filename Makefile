# Two commands on a fresh machine: `make demo` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
# torch and torchvision are pinned to the releases this project is tested with (CPU or CUDA).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench bench-stage2 ablations small-data settings reference clean-demo

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

# two workers (every test is single-threaded), each test module on one worker (module fixtures run once)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) bench/bench_ridge.py

bench-stage2: $(STAMP)
	$(PY) bench/bench_stage2.py --json results/reference/demo/bench_stage2.json

# the six shipped ablations (configs/ablations/, less settings.yaml: `make settings`) through `compare`: about 5 min per variant on
# 2 cores, cached, so a rerun recomputes nothing
ABLATIONS := layers rois decoders losses inputs methods
ablations: $(STAMP)
	for name in $(ABLATIONS); do $(PY) -m stage2_generate compare --config configs/ablations/$$name.yaml || exit 1; done

# the stress presets that look like small public sets (docs/small_datasets.md): a few minutes each
PRESETS := small_strokes binary_shapes
small-data: $(STAMP)
	for name in $(PRESETS); do $(PY) -m stage1_decode run --config configs/$$name.yaml && \
	  $(PY) -m stage2_generate run --config configs/$$name.yaml || exit 1; done

# the shipped generator settings compared on validation over the demo and both presets
settings: $(STAMP)
	for name in demo $(PRESETS); do $(PY) -m stage2_generate compare --config configs/ablations/settings.yaml \
	  --base configs/$$name.yaml || exit 1; done

# the committed figures and tables the README shows, copied from finished runs (`make demo`,
# `make ablations`); `make demo` and `compare` write only under results/demo and results/compare
REFERENCE := results/reference
reference:
	@test -f results/demo/summary.md || { echo "results/demo is missing: run make demo first"; exit 2; }
	rm -rf $(REFERENCE)/demo/*.md $(REFERENCE)/demo/*.csv $(REFERENCE)/demo/*.png $(REFERENCE)/demo/metrics.json
	mkdir -p $(REFERENCE)/demo
	cp results/demo/summary.md results/demo/metrics.json results/demo/decoding.* results/demo/reconstruction.* \
	   results/demo/validation.* results/demo/training.png results/demo/grid*.png $(REFERENCE)/demo/
	for name in $(PRESETS); do if [ -f results/$$name/summary.md ]; then rm -rf $(REFERENCE)/$$name && \
	  mkdir -p $(REFERENCE)/$$name && cp results/$$name/summary.md results/$$name/metrics.json results/$$name/decoding.* \
	  results/$$name/reconstruction.* results/$$name/validation.* results/$$name/training.png results/$$name/grid*.png \
	  $(REFERENCE)/$$name/ || exit 1; fi; done
	$(PY) -m stage2_generate export --config $(CONFIG) --figure shen --out results/demo/export
	mkdir -p $(REFERENCE)/demo/export && cp results/demo/export/shen_natural_p01.* $(REFERENCE)/demo/export/
	for name in $(ABLATIONS) $(addprefix settings_,demo $(PRESETS)); do \
	  if [ -f results/compare/$$name/table.md ]; then mkdir -p $(REFERENCE)/compare/$$name && \
	    cp results/compare/$$name/table.md results/compare/$$name/table.csv results/compare/$$name/stats.md \
	       results/compare/$$name/bars.png results/compare/$$name/grid.png $(REFERENCE)/compare/$$name/ || exit 1; fi; \
	done

clean-demo:
	rm -rf data/demo work/demo results/demo
