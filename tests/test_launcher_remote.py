"""The launcher with out-of-process workers: what it refuses at start, and the sinks made ready on the
workers instead of by the launcher."""
from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.base import SinkNotReadyError, prepare_on_worker
from connectors.pgvector import PgVectorConfig
from connectors.secrets import SecretRef
from pipeline.main import StartupError, check_runner, runs_remotely
from pipeline.options import parse_args

REMOTE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
          "--environment_config=127.0.0.1:50000"]


def _check(argv: list[str]) -> None:
    config, beam_args = parse_args(argv)
    check_runner(config, PipelineOptions(beam_args))


def test_the_embedded_store_is_refused_for_remote_workers_with_the_alternatives_named(tmp_path) -> None:
    with pytest.raises(StartupError, match=r"--qdrant_path.*--qdrant_url \(a Qdrant server\), --sink pgvector"):
        _check([*REMOTE, "--sink", "qdrant", "--qdrant_path", str(tmp_path / "q"),
                "--dead_letters", "gs://bucket/dlq.jsonl"])


def test_the_default_dead_letter_file_is_refused_for_remote_workers_but_a_named_one_is_not() -> None:
    pg = ["--sink", "pgvector", "--pg_dsn", "env:PG_DSN"]
    with pytest.raises(StartupError, match="name one with --dead_letters"):
        _check([*REMOTE, *pg])
    _check([*REMOTE, *pg, "--dead_letters", "gs://bucket/dlq.jsonl"])
    _check([*REMOTE, *pg, "--dead_letters", "./dead_letters.jsonl"])  # given explicitly: the user's assertion
    _check(["--runner=DirectRunner", *pg])  # local runners keep the default


def test_only_out_of_process_workers_count_as_remote() -> None:
    assert runs_remotely(PipelineOptions(REMOTE))
    assert runs_remotely(PipelineOptions(["--runner=DataflowRunner"]))
    assert not runs_remotely(PipelineOptions(["--runner=PortableRunner", "--environment_type=LOOPBACK"]))
    assert not runs_remotely(PipelineOptions(["--runner=DirectRunner"]))


def test_a_sink_unreachable_from_a_worker_fails_there_with_one_message(tmp_path) -> None:
    config = PgVectorConfig(dsn=SecretRef.model_validate(f"file:{tmp_path / 'dsn'}"), table="t")
    (tmp_path / "dsn").write_text(f"postgresql://u@/db?host={tmp_path}&port=1&connect_timeout=2")
    with pytest.raises(SinkNotReadyError, match="sink pgvector is not reachable or not ready from this worker"):
        prepare_on_worker(config, 384, attempts=1)


def test_a_worker_creates_the_table_it_writes_to(pg_uri: str, table: str, monkeypatch) -> None:
    monkeypatch.setenv("PG_DSN_TEST", pg_uri)
    store = prepare_on_worker(PgVectorConfig(dsn=SecretRef.model_validate("env:PG_DSN_TEST"), table=table), 384)
    try:
        assert store.count() == 0
    finally:
        store.close()
