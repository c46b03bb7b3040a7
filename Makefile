# emim-bench: `make setup` builds .venv, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emim-bench-installed
SOLO_LEARN := solo-learn==1.0.2

.PHONY: setup test demo bench lint clean-venv

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

test: setup
	$(PY) -m pytest

# The demo: the five methods and the random floor on real CIFAR-10 at CPU budget, then
# reports/cpu_demo/ (report.md, report.html). Done runs are kept: a second `make demo` only
# rewrites the report. Extra overrides: make demo DEMO_ARGS="data.download=true".
demo: setup
	$(VENV)/bin/emim-bench sweep sweeps/cpu_demo.yaml $(DEMO_ARGS)

# Loss and training-step speed benchmarks -> reports/benchmarks/<cpu|cuda>.{json,md}.
bench: setup
	$(PY) -m emim_bench.cli bench

lint: setup
	$(VENV)/bin/ruff check emim_bench tests

clean-venv:
	rm -rf $(VENV)
