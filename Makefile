# Two entry points (see README): `make pipeline` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: pipeline test setup lint

pipeline: setup  ## set everything up, then run the pipeline on the default model
	dvc repro

test: setup  ## set everything up, then run the test suite
	pytest

lint: setup
	ruff check . && ruff format --check .

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@
