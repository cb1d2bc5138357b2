# Two commands on a fresh machine: `make demo` and `make test`. Each runs `setup` first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: setup demo test test-slow test-all bench lint clean

setup: $(STAMP)

# Installs torch==2.13.0 first (a local CPU wheel; an unpinned torch would pull a multi-GB CUDA build),
# then the package in editable mode with its dev extra. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-build-isolation -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/deformable-detr demo

test: setup
	$(PY) -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

test-slow: setup
	$(PY) -m pytest -q -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

bench: setup
	$(VENV)/bin/deformable-detr bench op

lint: setup
	$(PY) -m compileall -q src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
