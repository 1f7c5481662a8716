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

from pipeline.graph import build_graph
from transforms.model import ModelRef
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
    build_graph(pipeline, config, ModelRef(reference="/nonexistent/model", fingerprint="m", dimension=8))
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


# --- references ----------------------------------------------------------------------------------------------

def test_references_resolve_from_the_environment_and_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from connectors.secrets import SecretRef

    monkeypatch.setenv("SYNC_TEST_DSN", "postgresql://u:p@h/db")
    (tmp_path / "dsn").write_text("postgresql://u:q@h/db\n")
    assert SecretRef.model_validate("env:SYNC_TEST_DSN").resolve() == "postgresql://u:p@h/db"
    assert SecretRef.model_validate(f"file:{tmp_path / 'dsn'}").resolve() == "postgresql://u:q@h/db"


def test_a_literal_is_moved_into_the_environment_and_only_its_reference_is_kept():
    import pickle

    from connectors.pgvector import PgVectorConfig

    secret = _secret("literal")
    config = PgVectorConfig(dsn=f"postgresql://u:{secret}@h/db")
    assert config.dsn.ref.startswith("env:BVS_SECRET_") and config.dsn.from_literal
    assert secret.split("-")[1] not in config.dsn.ref  # the name says nothing about the value
    assert config.dsn.resolve() == f"postgresql://u:{secret}@h/db"
    assert secret.encode() not in pickle.dumps(config) and secret not in repr(config)


def test_an_unresolvable_reference_names_the_reference_only(tmp_path: Path):
    from connectors.secrets import SecretError, SecretRef

    with pytest.raises(SecretError, match="SYNC_TEST_UNSET is not set"):
        SecretRef.model_validate("env:SYNC_TEST_UNSET").resolve()
    with pytest.raises(SecretError, match="cannot read the file"):
        SecretRef.model_validate(f"file:{tmp_path / 'missing'}").resolve()
    try:
        import google.cloud.secretmanager  # noqa: F401
    except ImportError:
        with pytest.raises(SecretError, match="pip install google-cloud-secret-manager"):
            SecretRef.model_validate("gcp-secret:projects/p/secrets/s/versions/1").resolve()


def test_kafka_secret_settings_become_references_and_others_stay_as_given(monkeypatch: pytest.MonkeyPatch):
    from connectors.kafka import KafkaConfig
    from connectors.secrets import SecretRef

    secret = _secret("kafka")
    config = KafkaConfig(bootstrap="b:9092", topics=("t",), group="g", client_config={
        "security.protocol": "SASL_SSL", "sasl.password": secret, "ssl.key.location": "/keys/client.key",
        "ssl.key.password": "env:SYNC_TEST_KEY_PASSWORD"})
    assert config.client_config["security.protocol"] == "SASL_SSL"
    assert config.client_config["ssl.key.location"] == "/keys/client.key"
    assert isinstance(config.client_config["sasl.password"], SecretRef)
    assert config.client_config["ssl.key.password"] == SecretRef.model_validate("env:SYNC_TEST_KEY_PASSWORD")
    monkeypatch.setenv("SYNC_TEST_KEY_PASSWORD", "key-password")
    settings = config.client_settings()
    assert settings["sasl.password"] == secret and settings["ssl.key.password"] == "key-password"
    assert secret not in str(config.display())


# --- runners -------------------------------------------------------------------------------------------------

def _runner_check(argv: list[str], *beam: str) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.main import check_runner

    config, beam_args = parse_args([*argv, *beam])
    check_runner(config, PipelineOptions(beam_args))


@pytest.mark.parametrize("runner", ["--runner=FlinkRunner", "--runner=DataflowRunner", "--runner=PortableRunner"])
def test_a_literal_secret_is_refused_for_remote_workers(runner: str, monkeypatch: pytest.MonkeyPatch):
    from pipeline.main import StartupError

    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    with pytest.raises(StartupError, match=r"literal \(sinks\[pgvector\]\.dsn\).*env:NAME.*file:PATH") as raised:
        _runner_check(["--sink", "pgvector", "--pg_dsn", "postgresql://u:pw-literal@h/db"], runner)
    assert "pw-literal" not in str(raised.value)


def test_references_pass_for_remote_workers_and_literals_for_local_ones(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PG_DSN", "postgresql://u:pw@h/db")
    _runner_check(["--sink", "pgvector", "--dead_letters", "gs://b/dlq.jsonl"], "--runner=FlinkRunner")
    _runner_check(["--sink", "pgvector", "--pg_dsn", "file:/run/secrets/dsn",
                   "--source", "kafka", "--kafka_bootstrap", "b:9092", "--kafka_topic", "t", "--kafka_group", "g",
                   "--kafka_config", "sasl.password=env:KAFKA_PASSWORD", "--dead_letters", "gs://b/dlq.jsonl"],
                  "--runner=DataflowRunner")
    _runner_check(["--sink", "pgvector", "--pg_dsn", "postgresql://u:pw@h/db"], "--runner=DirectRunner")
    _runner_check(["--sink", "pgvector", "--pg_dsn", "postgresql://u:pw@h/db"], "--runner=PortableRunner",
                  "--environment_type=LOOPBACK")


@pytest.mark.slow  # two worker processes each load the model (about a minute here)
def test_a_literal_dsn_reaches_the_direct_runners_worker_processes(tmp_path: Path, pg_uri: str, table: str):
    """multi_processing workers inherit the environment that holds the literal, and resolve it in setup."""
    from pipeline.main import run
    from tests.conftest import REPO, read_rows

    summary = run(["--input", str(REPO / "pipeline" / "sample_data" / "changelog.jsonl"), "--sink", "pgvector",
                   "--pg_dsn", pg_uri, "--pg_table", table, "--dead_letters", str(tmp_path / "dead.jsonl"),
                   "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert summary.events_applied == 6 and summary.sinks["pgvector"].dead_letters == 0 and read_rows(pg_uri, table)
