"""Start-up checks keep their promise: a sink that cannot be used is one `error: ...` line and exit 2, which
never shows a password; pgvector table names are taken literally or refused at start."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from connectors.pgvector import MAX_TABLE_BYTES, PgVectorConfig
from pipeline.main import main
from tests.conftest import free_port, read_rows, write_changelog
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite


def start(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one run over a two-document change-log."""
    log = write_changelog(tmp_path / "log.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha document."},
        {"doc_id": "b", "op": "upsert", "version": 2, "text": "Bravo document."}])
    code = main(["--input", str(log), "--dead_letters", str(tmp_path / "dead.jsonl"), *args])
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_unreachable_mongodb_is_one_error_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "sync.json"
    config.write_text(json.dumps({"sinks": [{"type": "mongodb", "uri": f"mongodb://127.0.0.1:{free_port()}",
                                             "timeout_ms": 300}]}))
    code, err = start(tmp_path, capsys, "--config", str(config))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot reach MongoDB within 300 ms")


@pytest.mark.parametrize("dsn", ["postgresql://u:s3cr3tpw@host:notaport/db", "u:s3cr3tpw@",
                                 "postgresql://u:s3cr3tpw@127.0.0.1:1/db", "host=127.0.0.1 port=1 password=s3cr3tpw",
                                 "postgresql://u:s3cr 3tpw@/db"])
def test_a_malformed_or_unreachable_pg_dsn_never_shows_its_password(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str], dsn: str):
    code, err = start(tmp_path, capsys, "--sink", "pgvector", "--pg_dsn", dsn)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "s3cr" not in err[0]


@pytest.mark.parametrize("name", ["MixedCase", "with.dot", 'quo"te', "it's", "Ünïcode Täble"])
def test_table_names_with_capitals_dots_and_quotes_round_trip(pg_uri: str, name: str):
    table = f"{name}_{uuid.uuid4().hex[:6]}"
    event = ChangeEvent(doc_id="d", op="upsert", version=1, text="text")
    record = ChunkRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, "d#0")), "d", None, 0, 1, 1, "text", "h", "m", {},
                         [1.0, 0.0, 0.0])
    for _ in range(2):  # the second start checks the table the first one created
        store = PgVectorConfig(dsn=pg_uri, table=table).create_store()
        try:
            store.ensure_ready(3)
            store.write_documents([DocumentWrite(event, (record,), ())])
            assert store.read_documents([("", "d")])[("", "d")].version == 1 and store.count() == 1
        finally:
            store.close()
    assert [r[0] for r in read_rows(pg_uri, table).values()] == ["d"]


def test_a_pipeline_run_into_a_quoted_dotted_capitalised_table(tmp_path: Path, pg_uri: str,
                                                               capsys: pytest.CaptureFixture[str]):
    table = f'Team.Docs "v2" {uuid.uuid4().hex[:6]}'
    for _ in range(2):
        code, err = start(tmp_path, capsys, "--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", table)
        assert code == 0, err
    assert sorted(r[0] for r in read_rows(pg_uri, table).values()) == ["a", "b"]
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text().strip()


@pytest.mark.parametrize("size", [MAX_TABLE_BYTES + 1, 63, 64, 100])
def test_a_table_name_postgres_would_truncate_is_refused_at_start(tmp_path: Path, pg_uri: str, size: int,
                                                                 capsys: pytest.CaptureFixture[str]):
    code, err = start(tmp_path, capsys, "--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", "t" * size)
    assert code == 2 and len(err) == 1 and f"at most {MAX_TABLE_BYTES} are allowed" in err[0]


def test_the_longest_table_name_allowed_works(pg_uri: str):
    table = "L" + uuid.uuid4().hex[:8] + "x" * (MAX_TABLE_BYTES - 9)
    store = PgVectorConfig(dsn=pg_uri, table=table).create_store()
    try:
        store.ensure_ready(3)
        store.ensure_ready(3)
        assert store.count() == 0
    finally:
        store.close()
