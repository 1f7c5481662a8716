# make run   : create .venv, install, run the default pipeline on the shipped sample into an embedded store
# make test  : install what the tests need (and start nothing by hand: tests start their own servers)
# make bench : embedding / end-to-end benchmarks (see bench/RESULTS.md)
# make plot  : throughput by path and batch size as bench/throughput.png
# make images: print (DOCKER=1: run) the worker image, launcher image and flex-template build commands
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test bench plot venv dev clean services images readers-venv

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

# The RAG frameworks' readers whose pins clash with ours (requirements-readers.txt) get their own venv; the
# reader tests run them in a subprocess from it (tests/reader_search.py).
READERS_VENV := .venv-readers

$(READERS_VENV)/.installed: requirements-readers.txt
	$(PYTHON) -m venv $(READERS_VENV)
	$(READERS_VENV)/bin/pip install -q -r requirements-readers.txt
	touch $@

readers-venv: $(READERS_VENV)/.installed

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

test: dev $(MONGOECO_VENV)/.installed $(READERS_VENV)/.installed services
	$(PY) -m pytest -q tests

bench: dev
	$(PY) -m bench

plot: dev
	$(PY) -m bench.plot --out bench/throughput.png

# Images for Dataflow / Flink (no Docker engine on the development machine: printed unless DOCKER=1).
REGISTRY ?= us-docker.pkg.dev/my-project/beam
TAG ?= 0.1.0
WORKER_IMAGE ?= $(REGISTRY)/beam-vector-sync-worker:$(TAG)
LAUNCHER_IMAGE ?= $(REGISTRY)/beam-vector-sync-launcher:$(TAG)
TEMPLATE ?= gs://my-bucket/templates/beam-vector-sync.json
IMAGE_COMMANDS = \
	$(PYTHON) setup.py -q sdist -d dist && $(PYTHON) -m pip wheel -q --no-deps -w dist dist/beam_vector_sync-0.1.0.tar.gz; \
	docker build -t $(WORKER_IMAGE) -f Dockerfile . && docker push $(WORKER_IMAGE); \
	docker build -t $(LAUNCHER_IMAGE) -f Dockerfile.launcher . && docker push $(LAUNCHER_IMAGE); \
	gcloud dataflow flex-template build $(TEMPLATE) --image $(LAUNCHER_IMAGE) --sdk-language PYTHON \
	  --metadata-file metadata.json --additional-experiments use_runner_v2 \
	  --additional-user-labels app=beam-vector-sync; \
	echo "run: gcloud dataflow flex-template run sync-\$$(date +%s) --template-file-gcs-location $(TEMPLATE) \
	  --region us-central1 --parameters sdk_container_image=$(WORKER_IMAGE),sink=pgvector,pg_dsn=gcp-secret:projects/P/secrets/dsn/versions/1,input=gs://my-bucket/changes/*.jsonl,dead_letters=gs://my-bucket/dead_letters.jsonl"

images:
ifeq ($(DOCKER),1)
	$(IMAGE_COMMANDS)
else
	@echo '$(subst ','"'"',$(IMAGE_COMMANDS))' | sed 's/; */\n/g'
endif

clean:
	rm -rf $(VENV) $(MONGOECO_VENV) $(READERS_VENV) .tools .vector_store dead_letters.jsonl *.egg-info
