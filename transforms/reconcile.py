"""Decide what one document's winning event does to a store, and assemble the final write.

`plan_document` compares the event with what the store already holds: an event older than the stored
version is superseded (no resurrection by late events, even across restarts); chunks whose text and model
are already stored reuse their vectors (no re-embedding); stored chunks not in the new set are stale and
get deleted after the upsert. `assemble_write` joins the plan with the freshly computed vectors.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

from transforms.chunking import TokenChunker
from transforms.types import (
    ChangeEvent,
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
    if stored.version is not None and event.version < stored.version:
        return Superseded(event, f"older version {event.version} < stored {stored.version}")
    stored_ids = {c.point_id for c in stored.chunks}
    if event.op == "delete":
        in_sync = stored.deleted and stored.version == event.version and not stored.chunks
        return DocumentPlan(event, (), {}, tuple(sorted(stored_ids)), in_sync=in_sync)

    if event.text is None:
        raise ValueError(f"document {event.doc_id!r} has no text (fetch its uri first)")
    chunks = chunker.chunks(event.doc_id, event.text, event.namespace)
    vectors_by_hash = {c.content_hash: c.vector for c in stored.chunks
                       if c.model == model_id and c.vector is not None}
    reused = {c.chunk_index: vectors_by_hash[c.content_hash] for c in chunks if c.content_hash in vectors_by_hash}
    new_ids = {c.point_id for c in chunks}
    stale = tuple(sorted(stored_ids - new_ids))
    by_id = {c.point_id: c for c in stored.chunks}
    in_sync = (
        not stale
        and stored.version == event.version
        and not stored.deleted
        and len(stored.chunks) == len(chunks)
        and all(
            (s := by_id.get(c.point_id)) is not None
            and s.content_hash == c.content_hash
            and s.model == model_id
            and s.version == event.version
            and s.chunk_count == len(chunks)
            and s.metadata == event.metadata
            for c in chunks
        )
    )
    return DocumentPlan(event, chunks, reused, stale, in_sync=in_sync)


def assemble_write(plan: DocumentPlan, new_vectors: Mapping[int, Vector], model_id: str,
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
    return DocumentWrite(event, tuple(records), plan.stale_ids, reused_chunks=len(plan.reused_vectors))
