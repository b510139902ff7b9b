# Two commands on a fresh machine: `make demo` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
# torch and torchvision are pinned to the releases this project is tested with (CPU or CUDA).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test soak docs bench bench-stage2 bench-plan bench-simulator bench-layer bench-jobs per-unit ablations small-data settings seeds lowlevel blend reference reference-seeds clean-demo

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@s0=$$(date +%s); \
	$(PY) -m stage1_decode run --config $(CONFIG) && s1=$$(date +%s) && \
	$(PY) -m stage2_generate run --config $(CONFIG) && s2=$$(date +%s) && \
	printf 'demo stages took %d s (stage 1 %d s, stage 2 %d s)\n' $$((s2 - s0)) $$((s1 - s0)) $$((s2 - s1)) \
	  | tee results/demo/timing.txt && echo "summary: results/demo/summary.md"

# two workers (every test is single-threaded), each test module on one worker (module fixtures run once)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the randomized soak test of the lock protocol (tools/soak.py; its short version runs in `make test`): 50 rounds
# of stage-1 shards, stage-2 runs and (in a fifth of the rounds) compare processes of a tiny experiment started in
# a random order, some SIGKILLed, reruns finishing the work, each round checked against one serial run; a failing
# round prints its replay command (about 20 minutes on 2 cores)
soak: $(STAMP)
	mkdir -p results/reference/bench
	$(PY) -m tools.soak --rounds 50 --seed 0 --compare 0.2 --out results/reference/bench/soak.txt

# the result numbers and tables of README.md and docs/*.md, rewritten from results/reference/, and docs/config.md's
# keys from shared/config/schema.py (tools/make_docs.py; tests/test_doc_numbers.py fails while they differ); after `make reference` or a benchmark, run it and commit
docs: $(STAMP)
	$(PY) -m tools.make_docs

# the benchmarks write their committed outputs under results/reference/bench/ (the guides quote them)
bench: $(STAMP)
	$(PY) -m pip install -q 'himalaya>=0.4'
	mkdir -p results/reference/bench
	$(PY) bench/bench_ridge.py --json results/reference/bench/ridge.json > results/reference/bench/ridge.txt && \
	  cat results/reference/bench/ridge.txt

bench-simulator: $(STAMP)
	mkdir -p results/reference/bench
	$(PY) bench/bench_simulator.py > results/reference/bench/simulator.txt && cat results/reference/bench/simulator.txt

# a whole VGG19 conv1_2 layer at 224 px through stage 1 (about 35 GB of disk under work/bench_layer, deleted after)
bench-layer: $(STAMP)
	mkdir -p results/reference/bench
	$(PY) bench/bench_whole_layer.py > results/reference/bench/whole_layer.txt; rc=$$?; rm -rf work/bench_layer; \
	  cat results/reference/bench/whole_layer.txt; [ $$rc -eq 0 ] && \
	  cp results/bench/bench_layer/decoding.md results/reference/bench/whole_layer_decoding.md

# a shipped comparison from scratch, compare --jobs 1 against --jobs 2 (about an hour on 2 cores)
bench-jobs: $(STAMP)
	mkdir -p results/reference/bench
	$(PY) bench/bench_compare_jobs.py > results/reference/bench/compare_jobs.txt; rc=$$?; rm -rf work/bench_jobs; \
	  cat results/reference/bench/compare_jobs.txt; exit $$rc

bench-stage2: $(STAMP)
	$(PY) bench/bench_stage2.py --json results/reference/demo/bench_stage2.json

# a new lab's odd-layout .mat file through plan and both stages, unchanged (issue 27): run it alone
bench-plan: $(STAMP)
	$(PY) bench/bench_plan.py | tee results/reference/bench/plan.txt

# the six shipped ablations (configs/ablations/, less settings.yaml: `make settings`) through `compare`: several minutes per variant on
# 2 cores, cached, so a rerun recomputes nothing
ABLATIONS := layers rois decoders losses inputs methods
ablations: $(STAMP)
	for name in $(ABLATIONS); do $(PY) -m stage2_generate compare --config configs/ablations/$$name.yaml --jobs 2 && \
	  $(PY) -m tools.keep_compare $$name || exit 1; done

# the demo's VC decoded with a penalty per unit, beside the default per layer (the README's reading)
per-unit: $(STAMP)
	$(PY) -m stage1_decode run --config configs/demo.yaml --set experiment=demo_unit --set decoder.alpha_per=unit \
	  --set data.rois=[VC] && mkdir -p $(REFERENCE)/demo_unit && \
	  cp results/demo_unit/decoding.md results/demo_unit/decoding.csv $(REFERENCE)/demo_unit/

# the stress presets that look like small public sets (docs/small_datasets.md): a few minutes each
PRESETS := small_strokes binary_shapes
small-data: $(STAMP)
	for name in $(PRESETS); do $(PY) -m stage1_decode run --config configs/$$name.yaml && \
	  $(PY) -m stage2_generate run --config configs/$$name.yaml || exit 1; done

# the shipped generator settings compared on validation over the demo and both presets
settings: $(STAMP)
	for name in demo $(PRESETS); do $(PY) -m stage2_generate compare --config configs/ablations/settings.yaml \
	  --base configs/$$name.yaml --jobs 2 && $(PY) -m tools.keep_compare settings_$$name || exit 1; done

# the low-level pathway (pixels layers, the generator started from the decoded image) over both presets and the
# demo (VC, its headline ROI: all three would triple its time), 3 seeds each, two runs at once (about 2.5 hours on
# 2 cores, cached); tables copied to results/reference/
lowlevel: $(STAMP)
	for name in $(PRESETS); do $(PY) -m stage2_generate compare --config configs/ablations/lowlevel.yaml \
	  --base configs/$$name.yaml --jobs 2 && $(PY) -m tools.keep_compare lowlevel_$$name || exit 1; done
	$(PY) -m stage2_generate compare --config configs/ablations/lowlevel.yaml --base configs/demo.yaml \
	  --set 'data.rois=[VC]' --jobs 2 && $(PY) -m tools.keep_compare lowlevel_demo

# the two pathways blended (wgan_gp_blend: the generator's image and pixel ridge's, the weight chosen on the
# hold-out) against its parts and nearest_train, 3 seeds, on the demo then both presets (the shipped configs'
# generators, reused from make seeds' cache; about 1.5 hours on 2 cores from a cold cache); tables copied to
# results/reference/
blend: $(STAMP)
	for name in demo $(PRESETS); do $(PY) -m stage2_generate compare --config configs/ablations/blend.yaml \
	  --base configs/$$name.yaml --jobs 2 && $(PY) -m tools.keep_compare blend_$$name || exit 1; done

# the demo's headline comparison with three generator seeds (about 40 minutes on 2 cores, cached): the README's
# reading of wgan_gp against the baselines beyond seed noise
seeds: $(STAMP)
	$(PY) -m stage2_generate compare --config configs/ablations/headline.yaml --jobs 2 && \
	  $(PY) -m tools.keep_compare headline

# the committed figures and tables the README shows, copied from finished runs (`make demo`, `make small-data`;
# comparisons through tools/keep_compare, with their provenance.json); `make demo` and `compare` write only under
# results/demo and results/compare
# DEMO: the demo run to copy (results/demo, from make demo; `make reference-seeds` takes seed 0 of make seeds);
# DECODING: the run whose stage 1 it read (itself, unless a compare variant ran the stage 1 its seeds share)
REFERENCE := results/reference
DEMO := results/demo
DECODING = $(DEMO)
reference:
	@test -f $(DEMO)/summary.md || { echo "$(DEMO) is missing: run make demo first"; exit 2; }
	rm -rf $(REFERENCE)/demo/*.md $(REFERENCE)/demo/*.csv $(REFERENCE)/demo/*.png $(REFERENCE)/demo/metrics.json
	mkdir -p $(REFERENCE)/demo
	cp $(DEMO)/summary.md $(DEMO)/metrics.json $(DECODING)/decoding.* $(DEMO)/reconstruction.* \
	   $(DEMO)/validation.* $(DEMO)/training.png $(DEMO)/grid*.png $(REFERENCE)/demo/
	if [ -f $(DEMO)/timing.txt ]; then cp $(DEMO)/timing.txt $(REFERENCE)/demo/; fi
	if [ "$(DECODING)" != "$(DEMO)" ]; then $(PY) -m tools.seed_run merge $(DECODING) $(REFERENCE)/demo/metrics.json; fi
	echo "results/reference/demo/ holds $(DEMO) (make demo)" > $(REFERENCE)/demo/source.txt
	(for d in .venv data/demo work/demo work/demo/features; do du -sh $$d 2>/dev/null; done; true) \
	  > $(REFERENCE)/demo/disk_usage.txt
	for name in $(PRESETS); do if [ -f results/$$name/summary.md ]; then rm -rf $(REFERENCE)/$$name.new && \
	  mkdir -p $(REFERENCE)/$$name.new && cp results/$$name/summary.md results/$$name/metrics.json results/$$name/decoding.* \
	  results/$$name/reconstruction.* results/$$name/validation.* results/$$name/training.png results/$$name/grid*.png \
	  $(REFERENCE)/$$name.new/ && echo "results/reference/$$name/ holds results/$$name (make small-data)" \
	  > $(REFERENCE)/$$name.new/source.txt && rm -rf $(REFERENCE)/$$name && mv $(REFERENCE)/$$name.new $(REFERENCE)/$$name \
	  || { rm -rf $(REFERENCE)/$$name.new; echo "results/$$name is incomplete (is make small-data still running?)"; exit 2; }; fi; done
	$(PY) -m stage2_generate export --config $(CONFIG) --set results_dir=$(dir $(DEMO)) --figure shen \
	  --out $(DEMO)/export
	mkdir -p $(REFERENCE)/demo/export && cp $(DEMO)/export/shen_natural_p01.* $(REFERENCE)/demo/export/
	for name in $(ABLATIONS) $(addprefix settings_,demo $(PRESETS)); do \
	  if [ -f results/compare/$$name/table.md ]; then $(PY) -m tools.keep_compare $$name || exit 1; fi; done

# the same from seed 0 of `make seeds` (the demo config exactly, run by compare with one CPU thread)
reference-seeds:
	$(MAKE) reference DEMO=$$($(PY) -m tools.seed_run results) DECODING=$$($(PY) -m tools.seed_run decoding)
	if [ -f results/demo/timing.txt ]; then cp results/demo/timing.txt $(REFERENCE)/demo/; fi
	echo "results/reference/demo/ holds seed 0 of make seeds (configs/demo.yaml, run by compare on one CPU thread);" \
	  "timing.txt is make demo's" > $(REFERENCE)/demo/source.txt

clean-demo:
	rm -rf data/demo work/demo results/demo
