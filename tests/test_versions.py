"""Versions order the same way everywhere: one precedence rule (version, then a delete over an upsert, then
the raw payload) inside a run and against the store across runs, and an emptied document (an upsert with
empty text) has zero chunks, so its vectors go and its version stays recorded. End to end on every sink."""
from __future__ import annotations

from itertools import permutations
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_dead_letters
from tests.test_sink_contract import LONG, docs, sync, target  # noqa: F401 - `target`: one store per sink
from transforms.chunking import TokenChunker
from transforms.latest import select_latest
from transforms.reconcile import plan_document
from transforms.types import ChangeEvent, DocumentPlan, StoredChunk, StoredDocument, Superseded

MODEL = "minilm@test"


def event(op: str, version: int, text: str = "") -> ChangeEvent:
    return ChangeEvent(doc_id="d", op=op, version=version, text=text if op == "upsert" else None,
                       raw=f"{op}{version}{text}".encode())


def stored_after(chunker: TokenChunker, applied: ChangeEvent) -> StoredDocument:
    """What a store holds once `applied` was written: its chunks, version and op."""
    chunks = chunker.chunks(applied.doc_id, applied.text) if applied.op == "upsert" and applied.text.strip() else ()
    return StoredDocument(version=applied.version, deleted=applied.op == "delete", chunks=tuple(
        StoredChunk(c.point_id, c.chunk_index, applied.version, c.content_hash, MODEL, [0.0] * 3,
                    chunk_count=len(chunks)) for c in chunks))


def across_runs(chunker: TokenChunker, first: ChangeEvent, later: ChangeEvent) -> ChangeEvent:
    """The event the store ends with when `first` is applied in one run and `later` planned in the next."""
    plan = plan_document(later, stored_after(chunker, first), chunker, MODEL)
    return first if isinstance(plan, Superseded) else later


def test_an_upsert_at_the_version_of_a_stored_delete_is_superseded(small_chunker: TokenChunker):
    plan = plan_document(event("upsert", 4, "Back again?"), StoredDocument(version=4, deleted=True),
                         small_chunker, MODEL)
    assert isinstance(plan, Superseded) and "stored delete" in plan.reason


@pytest.mark.parametrize("pair", list(permutations([
    event("upsert", 3, "three"), event("delete", 3), event("upsert", 2, "two"), event("delete", 4)], 2)))
def test_the_store_picks_the_same_winner_as_a_run(small_chunker: TokenChunker, pair: tuple[ChangeEvent, ...]):
    assert across_runs(small_chunker, *pair) == select_latest(pair)[0]


def test_a_delete_counts_only_when_no_chunk_is_as_new(small_chunker: TokenChunker):
    """A crash after an upsert's chunks landed but before its state replaced a delete tombstone: the upsert's
    replay is applied (its chunks are the document), not superseded by the tombstone."""
    upsert = event("upsert", 5, "Written, state not yet.")
    crashed = StoredDocument(version=5, deleted=True, chunks=stored_after(small_chunker, upsert).chunks)
    assert isinstance(plan_document(upsert, crashed, small_chunker, MODEL), DocumentPlan)


def test_an_emptied_document_has_no_chunks_and_its_old_ones_go_stale(small_chunker: TokenChunker):
    stored = stored_after(small_chunker, event("upsert", 1, LONG))
    for text in ("", "  \n\t"):
        plan = plan_document(event("upsert", 2, text), stored, small_chunker, MODEL)
        assert isinstance(plan, DocumentPlan) and plan.chunks == () and not plan.in_sync
        assert set(plan.stale_ids) == {c.point_id for c in stored.chunks}
    emptied = stored_after(small_chunker, event("upsert", 2, ""))
    replay = plan_document(event("upsert", 2, ""), emptied, small_chunker, MODEL)
    assert isinstance(replay, DocumentPlan) and replay.in_sync
    assert isinstance(plan_document(event("upsert", 1, "old"), emptied, small_chunker, MODEL), Superseded)


def test_ties_and_emptied_documents_end_the_same_in_every_store(target: Any, tmp_path: Path):
    back = {"doc_id": "d", "op": "upsert", "version": 2, "text": "Back again?"}
    first = sync(target, tmp_path, "one", [
        {"doc_id": "d", "namespace": "cross", "op": "delete", "version": 2},
        {**back, "namespace": "inrun"}, {"doc_id": "d", "namespace": "inrun", "op": "delete", "version": 2},
        {"doc_id": "e", "op": "upsert", "version": 1, "text": LONG},
    ])
    assert set(docs(target.state())) == {"e"} and docs(target.state())["e"][1] > 2 and first.accounted

    second = sync(target, tmp_path, "two", [{**back, "namespace": "cross"},  # the tie across runs
                                            {"doc_id": "e", "op": "upsert", "version": 2, "text": ""}])
    assert target.state() == {}, "the delete wins the tie in both namespaces; the emptied document has no vectors"
    assert read_dead_letters(tmp_path / "two.dead.jsonl") == []
    assert (second.events_superseded, second.events_applied) == (1, 1) and second.accounted

    third = sync(target, tmp_path, "three", [{"doc_id": "e", "op": "upsert", "version": 1, "text": "Late, old."},
                                             {"doc_id": "e", "op": "upsert", "version": 2, "text": ""},
                                             {**back, "namespace": "cross"}])
    assert target.state() == {} and third.accounted
    assert (third.events_superseded, third.events_in_sync) == (2, 1)
