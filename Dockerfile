# Worker / launcher image for Flink and a Dataflow flex template.
# Build: docker build -t beam-vector-sync .   (not buildable on the development machine: it has no Docker engine)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /opt/beam-vector-sync
# CPU torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY requirements.txt setup.py ./
RUN pip install -r requirements.txt
COPY pipeline ./pipeline
COPY transforms ./transforms
COPY connectors ./connectors
RUN pip install --no-deps .

# Dataflow flex template launcher support: the template metadata points here.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beam-vector-sync/pipeline/__main__.py \
    FLEX_TEMPLATE_PYTHON_SETUP_FILE=/opt/beam-vector-sync/setup.py

ENTRYPOINT ["python", "-m", "pipeline"]
