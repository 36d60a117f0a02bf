# make run: set up .venv if needed and run the default study. make test: set up and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and CI read data from WORKBENCH_DATA; default to the shared mirror beside the checkout when it exists.
export WORKBENCH_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: run test test-fast setup bench clean-venv mutation mutation-fast

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, by itself: pip takes the build this machine offers (local wheels here, PyPI elsewhere)
	$(PY) -m pip install -q "torch>=2.1" "torchvision>=0.16"
	$(PY) -m pip install -q -e ".[dev,sweeps]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/workbench $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# make mutation: mutation testing of the numerical core with mutmut ([tool.mutmut] in pyproject.toml), then
# results/mutation/summary.md (score per module, every survivor's diff). Slow (hours on 2 cores); not part of CI.
# MUTANTS narrows the run to mutant-name globs, e.g. make mutation MUTANTS='workbench.alignment.ceiling*'.
MUTANTS ?=
MUTATION_CHILDREN ?= 2
mutation: $(STAMP)
	$(PY) -m pip install -q -e ".[mutation]"
	MPLBACKEND=Agg $(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(PY) tests/mutation/mutation_summary.py results/mutation/summary.md

# make mutation-fast: the same mutants run from one pytest session (tests/mutation/mutation_inprocess.py): torch,
# numba and the fixtures are imported once, then each mutant's test run is a child forked from that process and
# killed after MUTATION_TIMEOUT_S seconds of wall clock (a mutant looping inside numba/torch code is a timeout,
# counted as detected, as mutmut does). Minutes instead of hours; make mutation is the reference.
# MUTATION_TARGETS: comma-separated mutant-name globs; MUTATION_TESTS: the test files (the narrowest set covering the
# targets is fastest); MUTATION_SAMPLE: at most this many mutants per module (a fixed random sample, the rest
# "not checked"). Mutants killed in an earlier run are not run again: after adding tests a rerun checks the survivors
# only (a module whose source changed gets fresh mutants); rm -rf mutants for a fresh run. E.g.
#   make mutation-fast MUTATION_TARGETS='workbench.alignment.ceiling.*' MUTATION_TESTS=tests/test_cka_ceiling.py
MUTATION_TARGETS ?= workbench.*
MUTATION_TESTS ?= tests/test_pinned_statistics_core.py tests/test_pinned_statistics.py tests/test_pinned_statistics_more.py \
	tests/test_properties.py tests/test_rsa.py tests/test_regression.py tests/test_cka_ceiling.py tests/test_intervention.py tests/test_training.py \
	tests/test_losses_reference.py tests/test_topography.py tests/test_attribution.py
MUTATION_TIMEOUT_S ?= 30
MUTATION_SAMPLE ?=
mutation-fast: $(STAMP)
	$(PY) -m pip install -q -e ".[mutation]"
	$(PY) tests/mutation/mutation_inprocess.py
	cd mutants && MPLBACKEND=Agg OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=../tests/mutation \
		MUTATION_TARGETS='$(MUTATION_TARGETS)' MUTATION_TIMEOUT_S=$(MUTATION_TIMEOUT_S) MUTATION_SAMPLE=$(MUTATION_SAMPLE) \
		../$(PY) -m pytest -p mutation_inprocess -q -m "not slow" -p no:cacheprovider $(MUTATION_TESTS) || true
	$(PY) tests/mutation/mutation_summary.py results/mutation/summary.md

clean-venv:
	rm -rf $(VENV)
