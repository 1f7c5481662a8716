"""Deterministic identifiers: the same document and chunk index always map to the same point ID."""
from __future__ import annotations

import hashlib
import uuid
from typing import Optional

CHUNK_ID_NAMESPACE = uuid.UUID("5b0c2a8e-3f57-4f0e-9a41-6d2f1f8c7b10")
"""Fixed UUIDv5 namespace for chunk and document IDs (documented in the README; never change it)."""


def chunk_key(doc_id: str, chunk_index: int, namespace: Optional[str] = None) -> str:
    """`"{doc_id}#{chunk_index}"`, prefixed with `"{namespace}::"` when the event has a namespace."""
    base = f"{doc_id}#{chunk_index}"
    return f"{namespace}::{base}" if namespace else base


def chunk_point_id(doc_id: str, chunk_index: int, namespace: Optional[str] = None) -> str:
    """UUIDv5 of `chunk_key(...)`: the point ID for stores that demand UUIDs."""
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, chunk_key(doc_id, chunk_index, namespace)))


def document_point_id(doc_id: str, namespace: Optional[str] = None) -> str:
    """UUIDv5 of the document key: the ID of the document's entry in a store's sync-state table."""
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, f"{namespace}::{doc_id}" if namespace else doc_id))


def content_hash(text: str) -> str:
    """sha256 of the chunk text (hex): unchanged text with the same model is never embedded again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
