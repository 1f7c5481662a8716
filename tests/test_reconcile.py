from __future__ import annotations

import pytest

from transforms.chunking import TokenChunker
from transforms.latest import select_latest
from transforms.reconcile import MissingVectorError, assemble_write, plan_document
from transforms.types import ChangeEvent, DocumentPlan, StoredChunk, StoredDocument, Superseded

MODEL = "minilm@test"


def upsert(version: int, text: str, doc_id: str = "d", **kw) -> ChangeEvent:
    return ChangeEvent(doc_id=doc_id, op="upsert", version=version, text=text, raw=f"{version}{text}".encode(), **kw)


def delete(version: int, doc_id: str = "d") -> ChangeEvent:
    return ChangeEvent(doc_id=doc_id, op="delete", version=version, raw=f"del{version}".encode())


def stored_from(chunker: TokenChunker, event: ChangeEvent, model: str = MODEL) -> StoredDocument:
    chunks = chunker.chunks(event.doc_id, event.text or "", event.namespace)
    return StoredDocument(version=event.version, chunks=tuple(
        StoredChunk(c.point_id, c.chunk_index, event.version, c.content_hash, model, [float(c.chunk_index)] * 3,
                    chunk_count=len(chunks), metadata=dict(event.metadata)) for c in chunks))


def test_highest_version_wins_whatever_the_order():
    events = [upsert(2, "b"), upsert(5, "e"), delete(3), upsert(5, "e")]
    for order in (events, events[::-1], events[1:] + events[:1]):
        winner, losers = select_latest(order)
        assert (winner.version, winner.text) == (5, "e")
        assert sorted(s.reason for s in losers) == ["duplicate", "older version 2 < 5", "older version 3 < 5"]


def test_same_version_tie_is_broken_the_same_way_in_any_order():
    a, b = upsert(4, "alpha"), delete(4)
    assert select_latest([a, b])[0] == select_latest([b, a])[0] == b


def test_event_older_than_the_store_is_superseded(small_chunker: TokenChunker):
    stored = stored_from(small_chunker, upsert(7, "seven"))
    result = plan_document(upsert(6, "six"), stored, small_chunker, MODEL)
    assert isinstance(result, Superseded) and "older version 6 < stored 7" in result.reason


def test_tombstone_supersedes_a_late_older_upsert(small_chunker: TokenChunker):
    tombstone = StoredDocument(version=9, deleted=True)
    assert isinstance(plan_document(upsert(8, "late"), tombstone, small_chunker, MODEL), Superseded)


def test_unchanged_chunks_reuse_vectors_and_shrinking_marks_the_rest_stale(small_chunker: TokenChunker):
    long_text = " ".join(f"word{i}" for i in range(60))
    old = upsert(1, long_text)
    stored = stored_from(small_chunker, old)
    assert len(stored.chunks) > 2
    first_chunk_text = small_chunker.split(long_text)[0][0]
    plan = plan_document(upsert(2, first_chunk_text), stored, small_chunker, MODEL)
    assert isinstance(plan, DocumentPlan) and not plan.in_sync
    assert plan.indexes_to_embed == [] and plan.reused_vectors == {0: [0.0, 0.0, 0.0]}
    assert set(plan.stale_ids) == {c.point_id for c in stored.chunks[1:]}


def test_another_model_never_reuses_vectors(small_chunker: TokenChunker):
    event = upsert(1, "some text to embed")
    plan = plan_document(upsert(2, "some text to embed"), stored_from(small_chunker, event, "other@x"),
                         small_chunker, MODEL)
    assert plan.reused_vectors == {} and plan.indexes_to_embed == [0]


def test_replaying_the_stored_version_is_in_sync(small_chunker: TokenChunker):
    event = upsert(3, "already stored text", metadata={"a": 1})
    plan = plan_document(event, stored_from(small_chunker, event), small_chunker, MODEL)
    assert plan.in_sync
    changed_metadata = upsert(3, "already stored text", metadata={"a": 2})
    assert not plan_document(changed_metadata, stored_from(small_chunker, event), small_chunker, MODEL).in_sync


def test_delete_removes_every_stored_chunk(small_chunker: TokenChunker):
    stored = stored_from(small_chunker, upsert(1, " ".join(["text"] * 40)))
    plan = plan_document(delete(2), stored, small_chunker, MODEL)
    assert plan.chunks == () and set(plan.stale_ids) == {c.point_id for c in stored.chunks}
    assert plan_document(delete(2), StoredDocument(version=2, deleted=True), small_chunker, MODEL).in_sync


def test_assembled_write_has_the_stored_record_schema(small_chunker: TokenChunker):
    event = upsert(4, " ".join(["alpha beta gamma"] * 10), metadata={"team": "x"}, namespace="ns")
    plan = plan_document(event, StoredDocument(), small_chunker, MODEL)
    vectors = {i: [0.5, 0.5, 0.0] for i in plan.indexes_to_embed}
    write = assemble_write(plan, vectors, MODEL, dimension=3)
    record = write.records[-1]
    assert record.payload() == {
        "doc_id": "d", "namespace": "ns", "chunk_index": len(plan.chunks) - 1, "chunk_count": len(plan.chunks),
        "version": 4, "text": plan.chunks[-1].text, "content_hash": plan.chunks[-1].content_hash,
        "model": MODEL, "metadata": {"team": "x"}}


def test_a_missing_or_wrong_sized_vector_refuses_to_assemble(small_chunker: TokenChunker):
    plan = plan_document(upsert(1, "one two three four five six seven eight nine ten eleven twelve thirteen "
                                   "fourteen fifteen sixteen seventeen"), StoredDocument(), small_chunker, MODEL)
    with pytest.raises(MissingVectorError):
        assemble_write(plan, {0: [1.0, 0.0, 0.0]}, MODEL, dimension=3)
    with pytest.raises(MissingVectorError):
        assemble_write(plan, {i: [1.0] for i in plan.indexes_to_embed}, MODEL, dimension=3)
