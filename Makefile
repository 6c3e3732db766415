# Two entry points (see README): `make pipeline` and `make test-all` (what CI runs). Both create .venv on first use;
# `make test` is the fast layer to run between edits.
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: pipeline test test-all test-heavy setup setup-gpu lint params help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

pipeline: setup  ## set everything up, run the pipeline on the default model, record its reports for CI's check
	dvc repro
	$(PY) -m engineforge.reproduce --record

# pytest-xdist workers: much of a test is single-threaded Python (DVC, onnx serialisation, session setup), so two
# workers on 2 cores cut the suite from 28.5 to 20 min (Zen 4 EPYC, avx512_vnni). No test has a timing threshold.
WORKERS ?= 2
test: setup  ## the fast layer between edits (unit and stage tests, no real DVC pipelines): about 2 min
	pytest -n $(WORKERS) -m "not slow"

test-all: setup  ## set everything up, then run the whole suite but `heavy` (what .ci/run runs): about 25 min on 2 cores
	pytest -n $(WORKERS) --durations=25 -m "not heavy"

test-heavy: setup  ## the largest corpus models (AlexNet's 61M parameters at every precision): about 4 min
	pytest -n $(WORKERS) -m heavy

lint: setup  ## ruff check, format check and the type checker (what .ci/run runs before the tests)
	ruff check . && ruff format --check . && mypy

params: setup  ## recompose params.yaml from conf/ (what `dvc exp run` does) after editing conf/
	$(PY) -c 'import os; from dvc.utils.hydra import compose_and_dump as c; c("params.yaml", os.path.abspath("conf"), None, "config", "", [])'

# onnxruntime-gpu on PyPI: 1.26.0 is the last built for CUDA 12 (its `cuda` extra pins nvidia-cuda-runtime-cu12),
# 1.27+ are built for CUDA 13. Both providers link libnvinfer.so.10: pip picks TensorRT 11.1 (the extras' newest),
# which serves backend=tensorrt alone (gpu_check SKIPs ort-tensorrt, naming TRT=10); TRT=10 serves both. docs/gpu.md.
ORT_GPU_12 := 1.26.0
ORT_GPU_13 := 1.31.1
setup: $(VENV)/.installed $(VENV)/compat/onnxruntime-$(ORT_GPU_12) $(VENV)/app/.installed  ## create .venv with the pinned toolchain and the dev tools

CUDA ?=
TRT ?=
setup-gpu: setup  ## CUDA=12|13 (the CUDA Version nvidia-smi prints) [TRT=10]: TensorRT, onnxruntime-gpu, then gpu_check
	@test "$(CUDA)" = 12 || test "$(CUDA)" = 13 || { echo "make setup-gpu: set CUDA=12 or CUDA=13, the CUDA Version nvidia-smi prints" >&2; exit 2; }
	$(PY) -m pip install -q -e '.[dev,tensorrt-cu$(CUDA)]' $(if $(TRT),'tensorrt-cu$(CUDA)==$(TRT).*')
	$(PY) -m pip uninstall -q -y onnxruntime onnxruntime-gpu  # one module, two distributions: never both
	$(PY) -m pip install -q 'onnxruntime-gpu[cuda,cudnn]==$(ORT_GPU_$(CUDA))'
	$(PY) -m engineforge.gpu_check

# The CPU wheel of each onnxruntime a GPU setup installs that .venv's own is not, beside .venv's site-packages (no
# dependencies): tests/test_onnxruntime_versions.py runs the precision stage with it on PYTHONPATH.
$(VENV)/compat/onnxruntime-%: | $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --target $@ 'onnxruntime==$*'

# What an application installs to open an engine (docs/deploy.md): numpy, the runtimes, Polygraphy and this package
# without its dependencies (no torch, DVC, Hydra, onnx). tests/test_deploy.py opens deploy folders with it.
APP_PINS := $(shell sed -nE 's/^ *"((numpy|onnxruntime|openvino|polygraphy)[=<>][^"]*)".*/\1/p' pyproject.toml)
$(VENV)/app/.installed: pyproject.toml | $(VENV)/.installed
	python3 -m venv $(VENV)/app
	$(VENV)/app/bin/python -m pip install -q --disable-pip-version-check $(foreach p,$(APP_PINS),'$(p)')
	$(VENV)/app/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@
