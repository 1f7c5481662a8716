# make run   : create .venv, install, run the default pipeline on the shipped sample into an embedded store
# make test  : install what the tests need (and start nothing by hand: tests start their own servers)
# make bench : embedding / end-to-end benchmarks (see bench/RESULTS.md)
# make plot  : throughput by path and batch size as bench/throughput.png
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test bench plot venv dev clean services

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

# MongoDB stand-in for the tests: mongoeco's wire-protocol server needs Python >= 3.13 (pyenv has 3.13.0 on
# this image). Without one, the MongoDB tests fall back to mongomock and say so.
PY313 := $(shell for p in $(HOME)/.pyenv/versions/3.1[3-9]*/bin/python python3.13 python3.14; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 13)' >/dev/null 2>&1 && { echo $$p; break; }; done)
MONGOECO_VENV := .venv-mongoeco

$(MONGOECO_VENV)/.installed:
	@if [ -n "$(PY313)" ]; then \
		$(PY313) -m venv $(MONGOECO_VENV) && \
		$(MONGOECO_VENV)/bin/pip install -q mongoeco==4.11.0 pymongo==4.20.0 && touch $@; \
	else echo "warning: no Python 3.13 found: MongoDB tests will use mongomock instead of mongoeco"; fi

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: venv
	$(PY) -m pipeline --runner=DirectRunner
	$(PY) -m pipeline.search "How long does the Widget X battery last?" --top_k 3

# Servers the tests start themselves (on 127.0.0.1, stopped afterwards): redis-server from Debian.
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
# Azurite (Azure Blob + Queue emulator) from npm into .tools/; Node.js and npm come from Debian when missing.
services: .tools/node_modules/.bin/azurite
	@command -v redis-server >/dev/null || { $(APT_GET) update -q && $(APT_GET) install -y -q redis-server; }

.tools/node_modules/.bin/azurite:
	@command -v npm >/dev/null || { $(APT_GET) update -q && $(APT_GET) install -y -q nodejs npm; }
	mkdir -p .tools && npm install --prefix .tools --silent --no-audit --no-fund azurite@3.35.0

test: dev $(MONGOECO_VENV)/.installed services
	$(PY) -m pytest -q tests

bench: dev
	$(PY) -m bench

plot: dev
	$(PY) -m bench.plot --out bench/throughput.png

clean:
	rm -rf $(VENV) $(MONGOECO_VENV) .tools .vector_store dead_letters.jsonl *.egg-info
