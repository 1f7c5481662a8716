# make run   : create .venv, install, run the default pipeline on the shipped sample into an embedded store
# make test  : install what the tests need (and start nothing by hand: tests start their own servers)
# make bench : embedding / end-to-end benchmarks (see bench/RESULTS.md)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test bench venv dev clean

$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: venv
	$(PY) -m pipeline --runner=DirectRunner
	$(PY) -m pipeline.search "How long does the Widget X battery last?" --top_k 3

test: dev
	$(PY) -m pytest -q tests

bench: dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .vector_store dead_letters.jsonl *.egg-info
