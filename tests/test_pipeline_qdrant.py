"""End to end on DirectRunner into an embedded Qdrant store, with the real bundled model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connectors.qdrant import QdrantConfig
from pipeline.main import StartupError, main, run
from tests.conftest import REPO, read_dead_letters, read_points, write_changelog
from transforms.chunking import TokenChunker
from transforms.ids import chunk_point_id, document_point_id

SAMPLE = REPO / "pipeline" / "sample_data" / "changelog.jsonl"
LONG = " ".join(f"Paragraph {i} explains how pallets are stacked in aisle {i} of the warehouse." for i in range(12))


def sync(tmp_path: Path, log: Path, *extra: str):
    return run(["--input", str(log), "--qdrant_path", str(tmp_path / "store"),
                "--dead_letters", str(tmp_path / "dead.jsonl"), *extra])


def docs_in(points: dict) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for p in points.values():
        out.setdefault(p["doc_id"], set()).add(p["version"])
    return out


def test_sample_changelog_ends_with_each_documents_latest_version(tmp_path: Path):
    summary = sync(tmp_path, SAMPLE)
    points = read_points(tmp_path / "store")
    assert docs_in(points) == {"handbook/onboarding.md": {2}, "kb/vpn-setup.md": {2}, "products/widget-x.md": {3},
                               "faq/returns.md": {1}, "fleet/maintenance.md": {1}}
    assert (summary.records_read, summary.events_applied, summary.events_superseded, summary.dead_letters) == (
        13, 6, 6, 1)
    assert summary.accounted and summary.vectors_in_store == len(points)
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["stage"] == "parse" and letter["source"]["position"]["line"] == 9
    for point_id, p in points.items():
        assert point_id == chunk_point_id(p["doc_id"], p["chunk_index"])
        assert len(p["vector"]) == 384 and p["model"].startswith("model@")


def test_small_lookup_batches_give_the_same_store(tmp_path: Path):
    summary = sync(tmp_path, SAMPLE, "--lookup_batch_size", "2")
    assert summary.events_applied == 6 and summary.accounted
    assert summary.chunks_embedded == summary.vectors_upserted == summary.vectors_in_store == 5


def test_running_the_same_changelog_again_changes_nothing_and_embeds_nothing(tmp_path: Path):
    first = sync(tmp_path, SAMPLE)
    before = read_points(tmp_path / "store")
    second = sync(tmp_path, SAMPLE)
    assert read_points(tmp_path / "store") == before
    assert first.chunks_embedded > 0
    assert (second.chunks_embedded, second.vectors_upserted, second.vectors_deleted) == (0, 0, 0)
    assert second.events_in_sync == second.events_applied == 6 and second.accounted


def test_a_second_changelog_in_a_new_process_removes_stale_chunks_and_never_resurrects(tmp_path: Path,
                                                                                     small_chunker: TokenChunker):
    first = write_changelog(tmp_path / "one.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 1, "text": LONG},
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo document about forklifts."}])
    sync(tmp_path, first, "--chunk_size", "16", "--chunk_overlap", "4")
    assert len([p for p in read_points(tmp_path / "store").values() if p["doc_id"] == "a"]) > 5

    second = write_changelog(tmp_path / "two.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 2, "text": "Aisles are numbered from the loading dock."},
        {"doc_id": "b", "op": "delete", "version": 2}])
    third = write_changelog(tmp_path / "three.jsonl", [
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo, late and old."},
        {"doc_id": "a", "op": "upsert", "version": 1, "text": LONG}])
    for log in (second, third):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "--input", str(log), "--qdrant_path", str(tmp_path / "store"),
             "--dead_letters", str(tmp_path / "dead.jsonl"), "--chunk_size", "16", "--chunk_overlap", "4"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    points = read_points(tmp_path / "store")
    expected = small_chunker.chunks("a", "Aisles are numbered from the loading dock.")
    assert {pid: (p["doc_id"], p["version"], p["text"]) for pid, p in points.items()} == {
        c.point_id: ("a", 2, c.text) for c in expected}
    assert "superseded        2" in done.stdout


def test_unchanged_chunks_are_not_embedded_again_when_a_document_grows(tmp_path: Path, model_path: str):
    base = " ".join(f"Sentence number {i} about shipping containers." for i in range(6))
    grown = base + " An appended closing sentence about customs paperwork and invoices."
    sync(tmp_path, write_changelog(tmp_path / "1.jsonl", [{"doc_id": "g", "op": "upsert", "version": 1,
                                                           "text": base}]), "--chunk_size", "16", "--chunk_overlap", "0")
    summary = sync(tmp_path, write_changelog(tmp_path / "2.jsonl", [{"doc_id": "g", "op": "upsert", "version": 2,
                                                                     "text": grown}]),
                   "--chunk_size", "16", "--chunk_overlap", "0")
    chunker = TokenChunker.from_model_path(model_path, chunk_size=16, chunk_overlap=0)
    old = {c.content_hash for c in chunker.chunks("g", base)}
    new = chunker.chunks("g", grown)
    unchanged = sum(1 for c in new if c.content_hash in old)
    assert unchanged >= 2
    assert (summary.chunks_skipped, summary.chunks_embedded) == (unchanged, len(new) - unchanged)
    assert {p["version"] for p in read_points(tmp_path / "store").values()} == {2}


def test_folder_input_upserts_each_file_and_dead_letters_undecodable_ones(tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "one.md").write_text("Forklift safety rules for the night shift.")
    (docs / "sub" / "two.txt").write_text("Cold storage must stay below four degrees.")
    (docs / "bad.txt").write_bytes(b"\xff\xfe broken")
    (docs / ".hidden").write_text("ignored")
    summary = sync(tmp_path, docs)
    assert set(docs_in(read_points(tmp_path / "store"))) == {"one.md", "sub/two.txt"}
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["stage"] == "extract" and letter["source"]["position"]["doc_id"] == "bad.txt"
    assert (summary.records_read, summary.events_applied, summary.dead_letters) == (3, 2, 1)


def test_dimension_mismatch_fails_at_start_with_one_clear_message(tmp_path: Path, capsys):
    store = QdrantConfig(path=str(tmp_path / "store")).create_store()
    store.backend.create("documents", 5)
    store.close()
    code = main(["--input", str(SAMPLE), "--qdrant_path", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and "dimension mismatch" in err and "5-d" in err and "384-d" in err


def test_missing_collection_with_auto_create_off_fails_at_start(tmp_path: Path):
    with pytest.raises(StartupError, match="does not exist"):
        sync(tmp_path, SAMPLE, "--no_create_collection")


def test_an_input_that_matches_nothing_fails_at_start(tmp_path: Path):
    with pytest.raises(StartupError, match="no file matches"):
        sync(tmp_path, tmp_path / "missing-*.jsonl")


def test_the_embedded_store_refuses_several_worker_processes(tmp_path: Path):
    with pytest.raises(StartupError, match="allows one process"):
        sync(tmp_path, SAMPLE, "--direct_running_mode=multi_processing", "--direct_num_workers=2")


def test_help_lists_the_options_with_defaults():
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    for option in ("--input", "--sink", "--qdrant_path", "--qdrant_url", "--collection", "--model", "--chunk_size",
                   "--chunk_overlap", "--batch_size", "--dead_letters", "--summary_json"):
        assert option in done.stdout
    assert "default: documents" in done.stdout and "default: 64" in done.stdout


def test_a_write_interrupted_after_widening_claims_no_version(tmp_path: Path):
    """The first step of a Qdrant write records only the chunk-index bound: if the write stops there (here
    the chunk upsert itself fails: a vector of the wrong dimension), the document still counts as never
    applied, so no event is superseded by a version that never landed."""
    from connectors.qdrant import STATE_SUFFIX
    from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

    store = QdrantConfig(path=str(tmp_path / "store")).create_store()
    try:
        store.ensure_ready(3)
        event = ChangeEvent(doc_id="d", op="upsert", version=7, text="t")
        bad = ChunkRecord(point_id=chunk_point_id("d", 0), doc_id="d", namespace=None, chunk_index=0, chunk_count=1,
                          version=7, text="t", content_hash="h", model="m", metadata={}, vector=[1.0, 2.0])
        with pytest.raises(Exception):
            store.write_documents([DocumentWrite(event, (bad,), ())])
        assert store.backend.retrieve("documents" + STATE_SUFFIX, [document_point_id("d")])  # the widened bound
        stored = store.read_documents([("", "d")])[("", "d")]
        assert stored.version is None and not stored.deleted and stored.chunks == ()
        assert store.count() == 0
    finally:
        store.close()


def test_a_folder_file_that_vanished_after_the_listing_is_dead_lettered_not_a_crash(tmp_path: Path):
    from apache_beam.io.filesystem import FileMetadata

    from connectors.changelog import _ReadDocumentFiles

    listed = ("gone.md", FileMetadata(str(tmp_path / "gone.md"), 10, 0.0))
    (out,) = list(_ReadDocumentFiles().process(listed))
    letter = out.value
    assert out.tag == "dead_letters" and letter.stage == "read" and letter.error_type == "FileNotFoundError"
    assert letter.source.position == {"file": str(tmp_path / "gone.md"), "doc_id": "gone.md"}


KILLED_WRITER = """
import os, signal, sys
from connectors.qdrant import QdrantConfig
from qdrant_client import models
store = QdrantConfig(path=sys.argv[1], embedded=sys.argv[2], local_durability=sys.argv[3]).create_store()
store.ensure_ready(3)
for i in range(40):
    store.backend.upsert("documents", [models.PointStruct(id=i, vector=[1.0, i, 2.0], payload={"i": i})])
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush, no checkpoint
"""


@pytest.mark.parametrize("embedded, durability", [("edge", "fast"), ("edge", "full"), ("client", "fast"),
                                                  ("client", "full")])
def test_embedded_writes_survive_a_killed_process_in_either_durability_mode(tmp_path: Path, embedded: str,
                                                                           durability: str):
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "store"), embedded, durability],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    if embedded == "client":
        import sqlite3

        database = tmp_path / "store" / "collection" / "documents" / "storage.sqlite"
        with sqlite3.connect(database) as connection:  # opening replays the WAL, as Qdrant's own open does
            journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        assert journal == ("wal" if durability == "fast" else "delete")
    points = read_points(tmp_path / "store", embedded=embedded)
    assert sorted(p["i"] for p in points.values()) == list(range(40))


def test_durability_and_call_cost_flags_reach_the_config():
    from pipeline.options import parse_args

    config, _ = parse_args(["--qdrant_local_durability", "full", "--call_cost_tokens", "0"])
    assert (config.stores[0].local_durability, config.call_cost_tokens) == ("full", 0)
    default, _ = parse_args([])
    assert (default.stores[0].local_durability, default.call_cost_tokens) == ("fast", 512)


def test_one_max_records_flag_bounds_whichever_source_has_the_setting():
    from pipeline.options import parse_args

    pubsub, _ = parse_args(["--source", "pubsub", "--pubsub_subscription", "projects/p/subscriptions/s",
                            "--max_records", "3"])
    queue, _ = parse_args(["--source", "azure_queue", "--azure_queue", "q", "--max_records", "4"])
    redis_source, _ = parse_args(["--source", "redis", "--redis_url", "redis://h", "--redis_stream", "s",
                                  "--redis_group", "g", "--max_records", "5"])
    assert (pubsub.source.max_records, queue.source.max_records, redis_source.source.max_records) == (3, 4, 5)
    with pytest.raises(ValueError, match="--max_records does not apply to --source kafka"):
        parse_args(["--source", "kafka", "--kafka_bootstrap", "h:1", "--kafka_topic", "t", "--kafka_group", "g",
                    "--max_records", "5"])

