# emim-bench: `make setup` builds .venv, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emim-bench-installed
SOLO_LEARN := solo-learn==1.0.2

.PHONY: setup test demo select select-records bench gpu-check mutation lint clean-venv

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make setup` is a no-op.
# solo-learn goes in last with --no-deps: its metadata pins torch==1.9.1 and
# pytorch-lightning==1.4.7, which cannot install on Python 3.11 (pip then warns
# about those stale pins; that warning is expected).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(SOLO_LEARN)
	$(PY) -c "import emim_bench; print('emim-bench', emim_bench.__version__, 'ready in $(VENV)')"
	touch $(STAMP)

# Tests run in a fresh random order each time (pytest-randomly); the seed printed in the
# header reproduces an order: make test SEED=<seed>.
test: setup
	$(PY) -m pytest $(if $(SEED),--randomly-seed=$(SEED))

# Mutation testing (mutmut, configured in pyproject.toml) of the evaluation, data, run-identity
# and report modules, 2 workers; not part of CI (hours on 2 cores). Prints the surviving
# mutants; `.venv/bin/mutmut show <name>` shows one. Results are cached in mutants/.
mutation: setup
	EMIM_BENCH_DATA=$(abspath ../shared/data) OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

# The demo: the five methods and the random floor on real CIFAR-10 at CPU budget, then
# reports/cpu_demo/ (report.md, report.html). Done runs are kept: a second `make demo` only
# rewrites the report. Extra overrides: make demo DEMO_ARGS="data.download=true".
demo: setup
	$(VENV)/bin/emim-bench sweep sweeps/cpu_demo.yaml $(DEMO_ARGS)

# Choosing the CPU budget's settings on a validation split (sweeps/select_cpu_budget.yaml,
# about 7 hours on 2 cores). Finished runs keep their records (results.json, config.yaml,
# curve.csv) in reports/select_cpu_budget/runs/, so the sweep can go on over several sittings
# or machines: `make select` copies them back into runs/, runs what is left, writes the report
# and saves the new records (the random floor trains nothing, so it has no curve.csv); after an
# interruption, `make select-records` saves what finished.
SELECT_RUNS := runs/select_cpu_budget
SELECT_RECORDS := reports/select_cpu_budget/runs
SAVE_SELECT_RECORDS := for results in $(SELECT_RUNS)/*/results.json; do \
	  run=$$(dirname $$results); mkdir -p $(SELECT_RECORDS)/$$(basename $$run); \
	  for file in results.json config.yaml curve.csv; do \
	    test ! -f $$run/$$file || cp $$run/$$file $(SELECT_RECORDS)/$$(basename $$run)/; done; \
	done
select: setup
	mkdir -p $(SELECT_RUNS)
	test ! -d $(SELECT_RECORDS) || cp -rn $(SELECT_RECORDS)/. $(SELECT_RUNS)/
	$(VENV)/bin/emim-bench sweep sweeps/select_cpu_budget.yaml; status=$$?; \
	  $(SAVE_SELECT_RECORDS); exit $$status

select-records:
	$(SAVE_SELECT_RECORDS)

# Loss and training-step speed benchmarks -> reports/benchmarks/<cpu|cuda>.{json,md}.
bench: setup
	$(PY) -m emim_bench.cli bench

# On a CUDA GPU (about 8 minutes): 2 epochs of the paper recipe per method (throughput, peak GPU
# memory, loader share), the speed benchmark in the trainer's settings, and with 2+ GPUs a DDP
# check of EMIM's loss -> reports/gpu_check/gpu_check.{md,json}, reports/benchmarks/cuda.{md,json}.
# Exits 2 without a GPU; make gpu-check GPU_CHECK_ARGS="--cpu --out /tmp/x" rehearses on the CPU.
gpu-check: setup
	$(PY) -m emim_bench.cli gpu-check $(GPU_CHECK_ARGS)

lint: setup
	$(VENV)/bin/ruff check emim_bench tests

clean-venv:
	rm -rf $(VENV)
