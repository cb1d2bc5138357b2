# Two commands on a fresh machine: `make demo` and `make test`. Each runs `setup` first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: setup demo test test-slow test-all bench convergence triton-matrix gpu-check lint clean

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

# pytest exits 5 when it collects no test: that is a failure here, as any other non-zero status.
test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(VENV)/bin/deformable-detr bench op

# The convergence study of docs/results/convergence (README "DETR baseline"): DETR vs four Deformable DETR variants,
# 3 seeds each, on the easy synthetic set; about 2 hours on 2 cores (two runs at a time). Re-running continues it.
CONVERGENCE_OUT ?= runs/convergence
convergence: setup
	$(VENV)/bin/deformable-detr experiment convergence --out $(CONVERGENCE_OUT) --epochs 24 --eval-every 1 \
	  --models "detr=detr:train.epochs=250:train.eval_every=10,deformable-single-scale,deformable,deformable-refine,deformable-two-stage" \
	  --seeds 0,1,2 --jobs 2 --threads 1 --train-images 600 --val-images 150 --image-size 128 --train-size 128 \
	  --classes circle,square,triangle --objects-per-image 1 2 --object-size 30 70 --pretrain-steps 2000 --num-queries 10

# The Triton compile matrix (`bench op-triton --compile-matrix`, no GPU needed) under each Triton that a
# supported torch pins for CUDA (2.4 -> 3.0.0, 2.5 -> 3.1.0, 2.6 -> 3.2.0, 2.7.0/2.7.1 -> 3.3.0/3.3.1,
# 2.8 -> 3.4.0, 2.9.0/2.9.1 -> 3.5.0/3.5.1, 2.10 and 2.11 -> 3.6.0, 2.12.0 -> 3.7.0, 2.12.1 and 2.13 -> 3.7.1,
# 2.14 -> 3.8.0), each installed once into $(TRITON_DIR)/<version> and put first on PYTHONPATH. Writes
# benchmarks/results/triton_matrix_<version>.json. Slow (5-15 minutes per version on 2 cores), not in CI;
# exits non-zero if any version has a failing cell.
TRITON_VERSIONS ?= 3.0.0 3.1.0 3.2.0 3.3.0 3.3.1 3.4.0 3.5.0 3.5.1 3.6.0 3.7.0 3.7.1 3.8.0
TRITON_DIR      ?= .cache/triton

triton-matrix: setup
	@status=0; for version in $(TRITON_VERSIONS); do \
	  test -d $(TRITON_DIR)/$$version/triton || \
	    $(PY) -m pip install --quiet --no-deps --target $(TRITON_DIR)/$$version triton==$$version || exit 2; \
	  env -u TRITON_INTERPRET PYTHONPATH=$(TRITON_DIR)/$$version:src $(PY) -m deformable_detr.cli bench op-triton \
	    --compile-matrix --out benchmarks/results/triton_matrix_$$version.json || status=1; \
	done; exit $$status

# On a CUDA machine: the gpu tests, the fast suite and the GPU benchmarks under a time budget (README "GPU").
# Runs the source tree with $(GPU_PY), a python that has a CUDA torch and the dev extra; builds no venv.
# E.g. make gpu-check GPU_CHECK_ARGS="--budget 540" or "--steps predict train demo"; "--smoke" is a CPU dry run.
GPU_PY ?= python3
gpu-check:
	PYTHONPATH=src $(GPU_PY) -m deformable_detr.bench.gpu_check $(GPU_CHECK_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
