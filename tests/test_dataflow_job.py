"""The Dataflow job as the launcher builds it (`--dry_run`: no GCP needed): the batch and the streaming graphs,
the worker image, and what the job asks of Dataflow; the launcher of a streaming job exits once submitted."""
from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient",
                    reason="needs the gcp extra: pip install 'apache-beam[gcp]==2.77.0'")
pytest.importorskip("google.cloud.storage", reason="needs the gcp extra: pip install 'apache-beam[gcp]==2.77.0'")

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, PipelineOptions  # noqa: E402
from apache_beam.portability.api import beam_runner_api_pb2  # noqa: E402

from pipeline.graph import build_graph  # noqa: E402
from pipeline.main import main, resolve  # noqa: E402
from pipeline.options import parse_args  # noqa: E402

IMAGE = "us-docker.pkg.dev/my-project-123/beam/beam-vector-sync-worker:0.1.0"
DATAFLOW = ["--runner=DataflowRunner", "--dry_run=True", "--project=my-project-123", "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp", f"--sdk_container_image={IMAGE}", "--sink", "pgvector",
            "--pg_dsn", "env:PG_DSN", "--dead_letters", "gs://my-bucket/dead_letters.jsonl"]


def build_job(argv: list[str]) -> Any:
    config, beam_args = parse_args(argv)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    build_graph(pipeline, config, resolve(config.model), prepare_on_workers=True)
    return pipeline.run().job


def worker_images(job: Any) -> set[str]:
    images = set()
    for env in job.proto_pipeline.components.environments.values():
        assert env.urn == "beam:env:docker:v1"
        images.add(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image)
    return images


def test_the_batch_job_runs_on_the_worker_image() -> None:
    job = build_job(DATAFLOW)
    assert job.proto.type == 1  # JOB_TYPE_BATCH
    assert worker_images(job) == {IMAGE}
    assert job.proto.name.startswith("beamapp-")
    cloud = job.options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == ("my-project-123", "us-central1")
    assert cloud.temp_location.startswith("gs://my-bucket/tmp/")


def test_the_streaming_job_uses_runner_v2_and_streaming_engine(kafka_bootstrap: str) -> None:
    job = build_job([*DATAFLOW, "--streaming", "--source", "kafka", "--kafka_bootstrap", kafka_bootstrap,
                     "--kafka_topic", "docs", "--kafka_group", "sync"])
    assert job.proto.type == 2  # JOB_TYPE_STREAMING
    assert worker_images(job) == {IMAGE}
    experiments = set(job.options.view_as(DebugOptions).experiments or ())
    assert {"use_runner_v2", "enable_streaming_engine"} <= experiments, experiments


def test_the_launcher_submits_a_streaming_job_and_exits(kafka_bootstrap: str, capsys: pytest.CaptureFixture) -> None:
    from tests.conftest import create_topic

    code = main([*DATAFLOW, "--streaming", "--source", "kafka", "--kafka_bootstrap", kafka_bootstrap,
                 "--kafka_topic", create_topic(kafka_bootstrap), "--kafka_group", "sync"])
    assert code == 0
    assert "submitted streaming job" in capsys.readouterr().out
