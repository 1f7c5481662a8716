"""The checklist every sink must pass, run end to end against each one: Qdrant (embedded), pgvector (a real
PostgreSQL), Pinecone (the real SDK against tests/pinecone_fake.py) and MongoDB (mongoeco's wire server, or
`$MONGODB_URI`). Faults are real ones: HTTP 429/503 answers, PostgreSQL errors raised by a trigger, MongoDB
connections cut by a TCP proxy, a unique index that refuses a document."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.main import StartupError, run
from tests.conftest import read_dead_letters, write_changelog
from tests.flaky_proxy import FlakyProxy
from tests.sink_targets import MongoTarget, PgVectorTarget, PineconeTarget, target  # noqa: F401 - `target`: one test per sink
from tests.pinecone_fake import FakePineconeIndex
from transforms.stages import DEAD_LETTERS, AssembleDocumentWrites, sink_tag
from transforms.types import ChangeEvent, Chunk, FanOutPlan

SMALL = ["--chunk_size", "16", "--chunk_overlap", "4"]
LONG = " ".join(f"Rule {i} says pallets in aisle {i} are stacked three high near dock {i}." for i in range(8))




def sync(target: Any, tmp_path: Path, name: str, events: list[Any], *extra: str):
    return run(["--input", str(write_changelog(tmp_path / f"{name}.jsonl", events)), *target.args,
                "--dead_letters", str(tmp_path / f"{name}.dead.jsonl"), *SMALL, *extra])


def docs(state: dict) -> dict[str, tuple[set[int], int]]:
    """doc_id → (versions held, number of chunks)."""
    out: dict[str, tuple[set[int], int]] = {}
    for (doc_id, _, _), (version, _) in state.items():
        versions, count = out.get(doc_id, (set(), 0))
        out[doc_id] = (versions | {version}, count + 1)
    return out


def test_upsert_update_shrink_delete_duplicates_and_late_events(target: Any, tmp_path: Path):
    first = sync(target, tmp_path, "one", [
        {"doc_id": "long", "op": "upsert", "version": 1, "text": LONG},        # more chunks than a write batch
        {"doc_id": "twice", "op": "upsert", "version": 1, "text": "First draft."},
        {"doc_id": "twice", "op": "upsert", "version": 2, "text": "Second draft, same run."},  # update in one batch
        {"doc_id": "gone", "op": "upsert", "version": 1, "text": "Soon deleted."},
    ], "--write_batch_size", "2")
    held = docs(target.state())
    assert held["long"][0] == {1} and held["long"][1] > 2
    assert held["twice"] == ({2}, 1) and first.accounted and first.events_superseded == 1

    second = sync(target, tmp_path, "two", [
        {"doc_id": "long", "op": "upsert", "version": 2, "text": "Now one short chunk."},   # shrinks
        {"doc_id": "gone", "op": "delete", "version": 2},
        {"doc_id": "twice", "op": "upsert", "version": 2, "text": "Second draft, same run."},  # duplicate
        {"doc_id": "twice", "op": "upsert", "version": 1, "text": "Late and old."},
    ], "--write_batch_size", "2")
    late = sync(target, tmp_path, "three", [{"doc_id": "gone", "op": "upsert", "version": 1, "text": "Back?"}])
    state = target.state()
    assert docs(state) == {"long": ({2}, 1), "twice": ({2}, 1)}
    assert state[("long", None, 0)] == (2, "Now one short chunk.")
    assert second.accounted and second.events_superseded == 1 and second.events_in_sync == 1
    assert late.events_superseded == 1 and late.vectors_upserted == 0


def test_missing_collection_with_auto_create_off_fails_at_start(target: Any, tmp_path: Path):
    if target.name == "pinecone":  # indexes are made in Pinecone's control plane: a host with no index fails
        target.index.close()
    with pytest.raises(StartupError, match="does not exist|cannot be used"):
        sync(target, tmp_path, "one", [{"doc_id": "a", "op": "upsert", "version": 1, "text": "x"}],
             "--no_create_collection")


def make_store_of_dimension(target: Any, dimension: int) -> None:
    if target.name == "qdrant":
        from connectors.qdrant import QdrantConfig

        store = QdrantConfig(path=str(target.path)).create_store()
        store.backend.create("documents", dimension)
        store.close()
    elif target.name == "pgvector":
        import psycopg

        with psycopg.connect(target.uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, embedding vector({}))").format(
                psycopg.sql.Identifier(target.table), psycopg.sql.Literal(dimension)))
    elif target.name == "pinecone":
        target.index.close()
        target.index = FakePineconeIndex(dimension, api_key=target.index.api_key)
        target.args = ["--sink", "pinecone", "--pinecone_index_host", target.index.url]
    else:
        target.collection().insert_one({"_id": "x", "doc_id": "x", "embedding": [0.5] * dimension})


def test_dimension_mismatch_fails_at_start(target: Any, tmp_path: Path):
    make_store_of_dimension(target, 5)
    with pytest.raises(StartupError, match="dimension mismatch"):
        sync(target, tmp_path, "one", [{"doc_id": "a", "op": "upsert", "version": 1, "text": "x"}])


# --- document identity (ID scheme 2) ----------------------------------------------------------------------

def test_namespace_x_doc_y_and_doc_x_y_without_namespace_are_two_documents(target: Any, tmp_path: Path):
    if target.name == "pinecone":  # per-event Pinecone namespaces keep them apart anyway; one namespace must too
        target.use_one_namespace("shared")
    tenant, plain = "Tenant x owns document y.", "The global document named x::y."
    first = sync(target, tmp_path, "one", [
        {"doc_id": "y", "namespace": "x", "op": "upsert", "version": 1, "text": tenant},
        {"doc_id": "x::y", "op": "upsert", "version": 1, "text": plain}])
    assert target.state() == {("y", "x", 0): (1, tenant), ("x::y", None, 0): (1, plain)}
    assert first.events_applied == 2 and first.vectors_in_store == 2  # the scheme marker is no vector

    second = sync(target, tmp_path, "two", [{"doc_id": "y", "namespace": "x", "op": "delete", "version": 2}])
    assert target.state() == {("x::y", None, 0): (1, plain)} and second.vectors_in_store == 1
    third = sync(target, tmp_path, "three", [{"doc_id": "x::y", "op": "upsert", "version": 1, "text": plain}])
    assert third.events_in_sync == 1  # started: the delete left the scheme marker in place


def test_store_written_with_the_old_id_scheme_is_refused_at_start(target: Any, tmp_path: Path):
    sync(target, tmp_path, "one", [{"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha."}])
    target.forget_id_scheme()  # as a store written before scheme 2 looks
    with pytest.raises(StartupError, match=r"holds data written with ID scheme 1, but this pipeline writes ID "
                                           r"scheme 2.*re-sync all documents into a new store with another"):
        sync(target, tmp_path, "two", [{"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo."}])
    assert docs(target.state()) == {"a": ({1}, 1)}


def test_pinecone_literal_hash_doc_id_and_the_long_doc_id_it_names_are_two_documents(tmp_path: Path):
    long_id = "é" * 200  # percent-encoded past 400 characters: its prefix is a hash
    old_hashed = "sha256-" + hashlib.sha256(long_id.encode("utf-8")).hexdigest()  # scheme 1's hashed form
    new_hashed = "sha256:" + hashlib.sha256(json.dumps(["", long_id], separators=(",", ":")).encode()).hexdigest()
    target = PineconeTarget()
    try:
        events = [{"doc_id": doc_id, "op": "upsert", "version": 1, "text": f"Document number {i}."}
                  for i, doc_id in enumerate([long_id, old_hashed, new_hashed])]
        summary = sync(target, tmp_path, "one", events)
        assert target.state() == {(e["doc_id"], None, 0): (1, e["text"]) for e in events}
        assert summary.events_applied == 3 and summary.vectors_in_store == 3
    finally:
        target.close()


# --- transient and permanent store errors ------------------------------------------------------------------

FAST_RETRY_NOTE = "the sink's own retries (4 attempts) come on top of any retries inside the client library"


def test_pinecone_rate_limits_and_5xx_are_retried_until_the_write_lands(tmp_path: Path):
    target = PineconeTarget()
    try:
        target.prepare()
        target.index.fail_next("/vectors/upsert", 503, times=5)  # outlasts the SDK's own 3 retries
        target.index.fail_next("/vectors/list", 429, times=2)
        summary = sync(target, tmp_path, "one", [{"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha."}])
        assert docs(target.state()) == {"a": ({1}, 1)}
        assert summary.sink_retries >= 1 and summary.events_applied == 1 and summary.dead_letters == 0
        statuses = [status for _, path, status in target.index.requests if path == "/vectors/upsert"]
        assert statuses.count(503) == 5 and statuses[-1] == 200
    finally:
        target.close()


def test_pinecone_permanent_errors_and_oversize_metadata_are_handled(tmp_path: Path):
    target = PineconeTarget()
    try:
        big = {"notes": "n" * 40_500}  # leaves room for a few hundred characters of chunk text
        huge = {"notes": "n" * 41_000}  # cannot fit at all
        text = " ".join(f"word{i}" for i in range(180))
        summary = sync(target, tmp_path, "one", [
            {"doc_id": "fits", "op": "upsert", "version": 1, "text": text, "metadata": big},
            {"doc_id": "huge", "op": "upsert", "version": 1, "text": "Another text.", "metadata": huge},
            {"doc_id": "fine", "op": "upsert", "version": 1, "text": "Plain."}], "--chunk_size", "250")
        assert set(docs(target.state())) == {"fits", "fine"}
        (letter,) = read_dead_letters(tmp_path / "one.dead.jsonl")
        assert (letter["doc_id"], letter["stage"], letter["error_type"]) == ("huge", "sink:pinecone",
                                                                            "RecordTooLargeError")
        fits = [m for _, m in target.index.vectors("").values() if m["doc_id"] == "fits"]
        assert summary.sinks["pinecone"].text_truncated == len(fits) == 2 and summary.accounted
        for chunk in fits:
            assert chunk["text_truncated"] is True and len(json.dumps(chunk, separators=(",", ":"))) <= 40 * 1024
            assert chunk["text"] and chunk["text"] in text  # a cut prefix of the chunk text
        assert "texts truncated 2" in summary.render()

        target.index.fail_next("/vectors/upsert", 400, times=1)  # e.g. a request the server finds malformed
        bad = sync(target, tmp_path, "two", [{"doc_id": "solo", "op": "upsert", "version": 1, "text": "Solo."}])
        (letter,) = read_dead_letters(tmp_path / "two.dead.jsonl")
        assert letter["stage"] == "sink:pinecone" and letter["attempts"] == 1 and bad.events_dead_lettered == 1
    finally:
        target.close()


def test_pgvector_serialization_failures_are_retried_and_a_rejected_row_is_dead_lettered(
        tmp_path: Path, pg_uri: str):
    import psycopg

    target = PgVectorTarget(pg_uri)
    sync(target, tmp_path, "zero", [{"doc_id": "seed", "op": "upsert", "version": 1, "text": "Seed."}])
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("""
            CREATE SEQUENCE {flaky};  -- nextval() survives the rollback of the failed transaction
            CREATE FUNCTION {fn}() RETURNS trigger AS $$
            BEGIN
              IF NEW.doc_id = 'poison' THEN RAISE EXCEPTION 'row rejected by policy'; END IF;
              IF nextval({flaky_name}) <= 2 THEN
                RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER guard BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {fn}();
        """).format(flaky=psycopg.sql.Identifier(target.table + "_flaky"),
                    flaky_name=psycopg.sql.Literal(target.table + "_flaky"),
                    fn=psycopg.sql.Identifier(target.table + "_guard"),
                    table=psycopg.sql.Identifier(target.table)))
    summary = sync(target, tmp_path, "one", [
        {"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha."},
        {"doc_id": "poison", "op": "upsert", "version": 1, "text": "Bad."},
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo."}])
    assert set(docs(target.state())) == {"seed", "a", "b"}
    (letter,) = read_dead_letters(tmp_path / "one.dead.jsonl")
    assert (letter["doc_id"], letter["stage"], letter["error_type"]) == ("poison", "sink:pgvector", "RaiseException")
    assert summary.sink_retries >= 1 and summary.accounted and summary.events_dead_lettered == 1


def test_mongodb_cut_connections_are_retried_and_a_refused_document_is_dead_lettered(
        tmp_path: Path, mongo_server: tuple):
    uri, factory, kind = mongo_server
    if kind == "mongomock":
        pytest.skip("no MongoDB wire server here (mongoeco needs Python 3.13): nothing to cut or refuse")
    host, port = uri.removeprefix("mongodb://").split("/")[0].split(":")
    proxy = FlakyProxy(host, int(port))
    target = MongoTarget((f"mongodb://127.0.0.1:{proxy.port}/?retryWrites=false&retryReads=false", factory, kind))
    try:
        sync(target, tmp_path, "zero", [{"doc_id": "seed", "op": "upsert", "version": 1, "text": "Seed."}])
        target.collection().create_index("metadata.sku", unique=True, sparse=True)
        target.collection().insert_one({"_id": "taken", "doc_id": "other", "chunk_index": 0, "version": 1,
                                        "text": "", "metadata": {"sku": "X-1"}, "embedding": [0.1] * 384})
        proxy.cut_next(2)
        summary = sync(target, tmp_path, "one", [
            {"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha."},
            {"doc_id": "dup", "op": "upsert", "version": 1, "text": "Same SKU.", "metadata": {"sku": "X-1"}}])
        assert proxy.cut_count == 2
        assert {d for d, _, _ in target.state()} >= {"seed", "a"} and "dup" not in {d for d, _, _ in target.state()}
        (letter,) = read_dead_letters(tmp_path / "one.dead.jsonl")
        assert (letter["doc_id"], letter["stage"], letter["error_type"]) == ("dup", "sink:mongodb", "BulkWriteError")
        assert summary.accounted and summary.events_dead_lettered == 1
    finally:
        proxy.close()


def test_a_non_finite_vector_is_dead_lettered_and_written_to_no_sink():
    """Checked once for all sinks: it happens before any of them (stage `embed`)."""
    event = ChangeEvent(doc_id="nan", op="upsert", version=1, text="t", raw=b"{}")
    plan = FanOutPlan(event, (Chunk("p", 0, "t", "h", 1),), {}, {"qdrant": (), "pinecone": ()})
    with beam.Pipeline() as p:
        assembled = ({"plans": p | "Plans" >> beam.Create([(event.key, plan)]),
                      "vectors": p | "Vectors" >> beam.Create([(event.key, (0, [float("nan"), 1.0]))]),
                      "failures": p | "Failures" >> beam.Create([]).with_output_types(tuple)}
                     | AssembleDocumentWrites("m", 2, ["qdrant", "pinecone"]))
        assert_that(assembled[DEAD_LETTERS] | beam.Map(lambda d: (d.doc_id, d.stage, d.error_type)),
                    equal_to([("nan", "embed", "NonFiniteVector")]), label="dead letter")
        assert_that(assembled[sink_tag("qdrant")], equal_to([]), label="nothing for qdrant")
        assert_that(assembled[sink_tag("pinecone")], equal_to([]), label="nothing for pinecone")
