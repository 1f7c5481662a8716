"""Decide what one document's winning event does to a store, and assemble the final write.

`plan_for_sinks` (and `plan_document`, for one store) compares the event with what the store already holds,
by the precedence rule of `transforms.latest`: an event older than the stored version, or an upsert at the
version of a stored delete, is superseded (no resurrection by late events, even across restarts); an upsert
whose text is empty (a document emptied) has zero chunks, so its vectors go and its version is recorded as an
upsert with no chunks (replaying it is "in sync", an older event stays superseded); chunks whose text and model
are already stored reuse their vectors (no re-embedding); stored chunks not in the new set are stale and
get deleted after the upsert. `assemble_write` joins the plan with the freshly computed vectors.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

from transforms.chunking import TokenChunker
from transforms.latest import stored_outranks
from transforms.types import (
    ChangeEvent,
    Chunk,
    FanOutPlan,
    ChunkRecord,
    DocumentPlan,
    DocumentWrite,
    StoredDocument,
    Superseded,
    Vector,
)


class MissingVectorError(RuntimeError):
    """A chunk of the document has no vector (its embedding failed)."""


def plan_document(event: ChangeEvent, stored: StoredDocument, chunker: TokenChunker,
                  model_id: str) -> Union[DocumentPlan, Superseded]:
    """The plan for `event` against `stored`, or `Superseded` when the store already has a newer version."""
    return _plan_against(event, _chunks_of(event, chunker), stored, model_id)


def plan_for_sinks(event: ChangeEvent, stored_by_sink: Mapping[str, StoredDocument], chunker: TokenChunker,
                   model_id: str) -> Union[FanOutPlan, Superseded]:
    """One plan for every sink: `Superseded` when every sink holds a newer version; otherwise the sinks
    that need a write (none when all are in sync or newer), with vectors pooled from all of them."""
    chunks = _chunks_of(event, chunker)
    plans = {sink: _plan_against(event, chunks, stored, model_id) for sink, stored in stored_by_sink.items()}
    current = {sink: plan for sink, plan in plans.items() if isinstance(plan, DocumentPlan)}
    if not current:
        return next(iter(plans.values()))  # type: ignore[return-value]  # every plan is Superseded
    reused: dict[int, Vector] = {}
    for plan in current.values():
        reused.update(plan.reused_vectors)
    stale = {sink: plan.stale_ids for sink, plan in current.items() if not plan.in_sync}
    return FanOutPlan(event, chunks, reused, stale)


def _chunks_of(event: ChangeEvent, chunker: TokenChunker) -> tuple[Chunk, ...]:
    if event.op == "delete":
        return ()
    if event.text is None:
        raise ValueError(f"document {event.doc_id!r} has no text (fetch its uri first)")
    if not event.text.strip():
        return ()  # an emptied document: no chunks, its old vectors go
    return tuple(chunker.chunks(event.doc_id, event.text, event.namespace))


def _plan_against(event: ChangeEvent, chunks: tuple[Chunk, ...], stored: StoredDocument,
                  model_id: str) -> Union[DocumentPlan, Superseded]:
    """Chunks are matched to stored ones by chunk index, so a store may use its own ID scheme: the stale
    IDs returned are the store's own."""
    reason = stored_outranks(event, stored)
    if reason is not None:
        return Superseded(event, reason)
    new_indexes = {c.chunk_index for c in chunks}
    stale = tuple(sorted(c.point_id for c in stored.chunks if c.chunk_index not in new_indexes))
    if event.op == "delete":
        in_sync = stored.deleted and stored.version == event.version and not stored.chunks
        return DocumentPlan(event, (), {}, stale, in_sync=in_sync)

    vectors_by_hash = {c.content_hash: c.vector for c in stored.chunks
                       if c.model == model_id and c.vector is not None}
    reused = {c.chunk_index: vectors_by_hash[c.content_hash] for c in chunks if c.content_hash in vectors_by_hash}
    by_index = {c.chunk_index: c for c in stored.chunks}
    in_sync = (
        not stale
        and stored.version == event.version
        and not stored.deleted
        and len(stored.chunks) == len(chunks)
        and all(
            (s := by_index.get(c.chunk_index)) is not None
            and s.content_hash == c.content_hash
            and s.model == model_id
            and s.version == event.version
            and s.chunk_count == len(chunks)
            and s.metadata == event.metadata
            for c in chunks
        )
    )
    return DocumentPlan(event, chunks, reused, stale, in_sync=in_sync)


def assemble_writes(plan: FanOutPlan, new_vectors: Mapping[int, Vector], model_id: str,
                    dimension: Optional[int] = None) -> dict[str, DocumentWrite]:
    """One `DocumentWrite` per sink that needs it (same records, that sink's stale IDs)."""
    shared = assemble_write(plan, new_vectors, model_id, dimension)
    return {sink: DocumentWrite(shared.event, shared.records, stale, reused_chunks=shared.reused_chunks,
                                sinks=len(plan.stale_ids))
            for sink, stale in plan.stale_ids.items()}


def assemble_write(plan: Union[DocumentPlan, FanOutPlan], new_vectors: Mapping[int, Vector], model_id: str,
                   dimension: Optional[int] = None) -> DocumentWrite:
    """The document's records with every vector filled in; raises `MissingVectorError` if any is missing."""
    event = plan.event
    records = []
    for chunk in plan.chunks:
        vector = plan.reused_vectors.get(chunk.chunk_index)
        if vector is None:
            vector = new_vectors.get(chunk.chunk_index)
        if vector is None:
            raise MissingVectorError(f"chunk {chunk.chunk_index} of {event.doc_id!r} has no vector")
        if dimension is not None and len(vector) != dimension:
            raise MissingVectorError(
                f"chunk {chunk.chunk_index} of {event.doc_id!r} has a {len(vector)}-d vector, expected {dimension}")
        records.append(ChunkRecord(
            point_id=chunk.point_id,
            doc_id=event.doc_id,
            namespace=event.namespace,
            chunk_index=chunk.chunk_index,
            chunk_count=len(plan.chunks),
            version=event.version,
            text=chunk.text,
            content_hash=chunk.content_hash,
            model=model_id,
            metadata=dict(event.metadata),
            vector=list(vector),
        ))
    stale = plan.stale_ids if isinstance(plan, DocumentPlan) else ()
    return DocumentWrite(event, tuple(records), stale, reused_chunks=len(plan.reused_vectors))
