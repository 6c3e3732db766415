# Two entry points (see README): `make pipeline` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: pipeline test setup lint params

pipeline: setup  ## set everything up, run the pipeline on the default model, record its reports for CI's check
	dvc repro
	$(PY) -m engineforge.reproduce --record

test: setup  ## set everything up, then run the test suite
	pytest

lint: setup
	ruff check . && ruff format --check .

params: setup  ## recompose params.yaml from conf/ (what `dvc exp run` does) after editing conf/
	$(PY) -c 'import os; from dvc.utils.hydra import compose_and_dump as c; c("params.yaml", os.path.abspath("conf"), None, "config", "", [])'

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@
