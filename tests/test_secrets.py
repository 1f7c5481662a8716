"""Secrets by reference: no password or key given to the pipeline, by any route (flag, config file,
environment default), can be read back from the job a runner receives."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from pipeline.graph import ResolvedModel, build_graph
from pipeline.options import parse_args


def _secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


def _pickled_objects(proto: Any) -> list[Any]:
    """Every pickled function the job carries (DoFns with their arguments, CombineFns), unpickled."""
    objects = []
    for transform in proto.components.transforms.values():
        spec = transform.spec
        if spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(spec.payload)
            if payload.do_fn.payload:
                objects.append(pickler.loads(payload.do_fn.payload))
        elif spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
            payload = beam_runner_api_pb2.CombinePayload.FromString(spec.payload)
            if payload.combine_fn.payload:
                objects.append(pickler.loads(payload.combine_fn.payload))
    return objects


def _leaks(pipeline: beam.Pipeline, secrets: dict[str, str]) -> dict[str, str]:
    """The secrets found in the job: in its serialized proto, or in any unpickled function (pickled again
    without compression, and in the repr of everything it holds)."""
    proto = pipeline.to_runner_api()
    raw = proto.SerializeToString()
    objects = _pickled_objects(proto)
    assert objects, "no DoFn found in the job"
    dumped = [cloudpickle.dumps(o) for o in objects]
    texts = [repr(vars(o[0]) if isinstance(o, tuple) and hasattr(o[0], "__dict__") else o) for o in objects]
    found = {}
    for name, value in secrets.items():
        if value.encode() in raw:
            found[name] = "serialized proto"
        elif any(value.encode() in d for d in dumped):
            found[name] = "pickled DoFn"
        elif any(value in t for t in texts):
            found[name] = "DoFn repr"
    return found


def _build(argv: list[str]) -> beam.Pipeline:
    config, _ = parse_args(argv)
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions([]))
    build_graph(pipeline, config, ResolvedModel(path="/nonexistent/model", model_id="m", dimension=8))
    return pipeline


def _sinks(s: dict[str, str]) -> list[str]:
    return ["--sink", "pgvector", "--pg_dsn", f"postgresql://sync:{s['pg']}@127.0.0.1:1/db",
            "--sink", "mongodb", "--mongo_uri", f"mongodb://sync:{s['mongo']}@127.0.0.1:1/?authSource=admin",
            "--sink", "qdrant", "--qdrant_url", "http://127.0.0.1:1",
            "--sink", "pinecone", "--pinecone_index_host", "http://127.0.0.1:1"]


def _azure(key: str) -> str:
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={key};QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    s = {name: _secret(name) for name in ("pg", "mongo", "kafka", "azure", "redis", "qdrant", "pinecone")}
    monkeypatch.setenv("QDRANT_API_KEY", s["qdrant"])
    monkeypatch.setenv("PINECONE_API_KEY", s["pinecone"])
    for name in ("PG_DSN", "MONGODB_URI", "REDIS_URL", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    return s


def test_no_secret_given_as_a_flag_travels_in_the_job_graph(secrets: dict[str, str]):
    kafka = _build(["--source", "kafka", "--kafka_bootstrap", "127.0.0.1:1", "--kafka_topic", "t",
                    "--kafka_group", "g", "--kafka_stop_at_end", "--kafka_config", "security.protocol=SASL_PLAINTEXT",
                    "--kafka_config", f"sasl.password={secrets['kafka']}", "--dead_letter_topic", "dlq",
                    "--notifications", "eventgrid", "--azure_connection_string", _azure(secrets["azure"]),
                    *_sinks(secrets)])
    assert _leaks(kafka, secrets) == {}
    redis = _build(["--source", "redis", "--redis_url", f"redis://:{secrets['redis']}@127.0.0.1:1/0",
                    "--redis_stream", "s", "--redis_group", "g", *_sinks(secrets)])
    assert _leaks(redis, secrets) == {}
    azure = _build(["--source", "azure_queue", "--azure_queue", "q", "--azure_connection_string",
                    _azure(secrets["azure"]), *_sinks(secrets)])
    assert _leaks(azure, secrets) == {}


def test_no_secret_from_the_environment_defaults_travels_in_the_job_graph(
        secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PG_DSN", f"postgresql://sync:{secrets['pg']}@127.0.0.1:1/db")
    monkeypatch.setenv("MONGODB_URI", f"mongodb://sync:{secrets['mongo']}@127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", f"redis://:{secrets['redis']}@127.0.0.1:1/0")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", _azure(secrets["azure"]))
    redis = _build(["--source", "redis", "--redis_stream", "s", "--redis_group", "g", "--notifications", "eventgrid",
                    "--sink", "pgvector", "--sink", "mongodb", "--sink", "qdrant", "--qdrant_url", "http://127.0.0.1:1",
                    "--sink", "pinecone", "--pinecone_index_host", "http://127.0.0.1:1"])
    assert _leaks(redis, secrets) == {}
    azure = _build(["--source", "azure_queue", "--azure_queue", "q", "--sink", "pgvector"])
    assert _leaks(azure, secrets) == {}


def test_no_secret_written_in_the_config_file_travels_in_the_job_graph(secrets: dict[str, str], tmp_path: Path):
    import yaml

    config = tmp_path / "sync.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"type": "kafka", "bootstrap": "127.0.0.1:1", "topics": ["t"], "group": "g", "stop_at_end": True,
                   "client_config": {"sasl.password": secrets["kafka"]}},
        "fetch": {"azure_connection_string": _azure(secrets["azure"])},
        "sinks": [{"type": "pgvector", "dsn": f"postgresql://sync:{secrets['pg']}@127.0.0.1:1/db"},
                  {"type": "mongodb", "uri": f"mongodb://sync:{secrets['mongo']}@127.0.0.1:1"},
                  {"type": "qdrant", "url": "http://127.0.0.1:1", "api_key": secrets["qdrant"]},
                  {"type": "pinecone", "index_host": "http://127.0.0.1:1", "api_key": secrets["pinecone"]}]}))
    os.environ.pop("QDRANT_API_KEY"), os.environ.pop("PINECONE_API_KEY")
    assert _leaks(_build(["--config", str(config), "--notifications", "eventgrid"]), secrets) == {}
