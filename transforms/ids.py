"""Deterministic identifiers, scheme 2: `(namespace, doc_id, chunk_index)` maps to IDs that no other triple
can produce, in every sink (README "Stored record" documents it; never change it without a new scheme).

- Canonical keys: the JSON array `[namespace, doc_id, chunk_index]` (chunk) or `[namespace, doc_id]`
  (document), written by `json.dumps(..., ensure_ascii=True, separators=(",", ":"))`; no namespace is `""`
  (None and `""` are the same document, as in `ChangeEvent.key`). JSON strings are quoted and escaped, so
  distinct triples always give distinct keys.
- UUID IDs (Qdrant points, MongoDB `_id`s, pgvector `id`s, sync-state entries): UUIDv5 of the canonical key in
  the namespace `CHUNK_ID_NAMESPACE`.
- Pinecone IDs (printable ASCII, listed by a per-document prefix): see `pinecone_document_prefix`.
- Each store records `ID_SCHEME` when it is created or first written (a marker that is never a chunk); a
  store holding data without the marker was written by scheme 1 and is refused at start.
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Optional
from urllib.parse import quote

ID_SCHEME = 2
"""The version of this encoding; stores record it and refuse to mix schemes."""

CHUNK_ID_NAMESPACE = uuid.UUID("5b0c2a8e-3f57-4f0e-9a41-6d2f1f8c7b10")
"""Fixed UUIDv5 namespace for chunk and document IDs (documented in the README; never change it)."""

SCHEME_MARKER_ID = "beam-vector-sync:id_scheme"
"""ID of the reserved entry recording a store's scheme (MongoDB `_id`, Pinecone vector ID): no document's
UUID or Pinecone prefix can equal it."""

SCHEME_MARKER_UUID = str(uuid.uuid5(CHUNK_ID_NAMESPACE, SCHEME_MARKER_ID))
"""The marker's ID where a store demands UUIDs (Qdrant); canonical keys are JSON arrays, never this name."""

PINECONE_MAX_PREFIX = 400
"""An encoded Pinecone document prefix longer than this is replaced by its hash (IDs may have 512 bytes)."""
PINECONE_HASH_PREFIX = "sha256:"
_PINECONE_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in "%#:")
_SCHEME_COMMENT = re.compile(r"\bid_scheme=(\d+)\b")


def document_key(doc_id: str, namespace: Optional[str] = None) -> str:
    """`["<namespace>","<doc_id>"]` as canonical JSON: the document's key, distinct for distinct pairs."""
    return json.dumps([namespace or "", doc_id], ensure_ascii=True, separators=(",", ":"))


def chunk_key(doc_id: str, chunk_index: int, namespace: Optional[str] = None) -> str:
    """`["<namespace>","<doc_id>",<chunk_index>]` as canonical JSON: distinct for distinct triples."""
    return json.dumps([namespace or "", doc_id, int(chunk_index)], ensure_ascii=True, separators=(",", ":"))


def chunk_point_id(doc_id: str, chunk_index: int, namespace: Optional[str] = None) -> str:
    """UUIDv5 of `chunk_key(...)`: the point ID for stores that demand UUIDs."""
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, chunk_key(doc_id, chunk_index, namespace)))


def document_point_id(doc_id: str, namespace: Optional[str] = None) -> str:
    """UUIDv5 of `document_key(...)`: the ID of the document's entry in a store's sync-state table."""
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, document_key(doc_id, namespace)))


def _pinecone_escape(value: str) -> str:
    """Percent-encoding (UTF-8) of everything but printable ASCII other than `%`, `#` and `:`."""
    return quote(value, safe=_PINECONE_SAFE)


def pinecone_document_prefix(doc_id: str, namespace: Optional[str] = None) -> str:
    """The document's Pinecone ID prefix (also its sync-state vector ID): `esc(doc_id)`, or
    `esc(namespace)::esc(doc_id)` when the ID must carry the namespace (pass None when the Pinecone namespace
    already separates documents). `esc` percent-encodes `%`, `#`, `:` and all but printable ASCII, so `#`
    only ever separates the chunk index and `::` only the namespace. An encoding over 400 characters becomes
    `sha256:<hex of document_key>`: its single `:` can never come out of `esc`, so no literal doc_id equals it.
    """
    encoded = _pinecone_escape(doc_id)
    if namespace:
        encoded = f"{_pinecone_escape(namespace)}::{encoded}"
    if len(encoded) > PINECONE_MAX_PREFIX:
        return PINECONE_HASH_PREFIX + hashlib.sha256(document_key(doc_id, namespace).encode("ascii")).hexdigest()
    return encoded


def pinecone_vector_id(doc_id: str, chunk_index: int, namespace: Optional[str] = None) -> str:
    """`"{pinecone_document_prefix}#{chunk_index}"`: a document's vectors are listed by the prefix + `#`."""
    return f"{pinecone_document_prefix(doc_id, namespace)}#{int(chunk_index)}"


def scheme_comment() -> str:
    """The text a store records its scheme with where it keeps it as free text (a pgvector table comment)."""
    return f"beam-vector-sync id_scheme={ID_SCHEME}"


def scheme_in_comment(comment: Optional[str]) -> Optional[int]:
    """The scheme recorded in a `scheme_comment()`-style text, or None."""
    found = _SCHEME_COMMENT.search(comment or "")
    return int(found.group(1)) if found else None


def scheme_mismatch(where: str, found: Optional[int], move_on: str) -> Optional[str]:
    """None when a store's recorded scheme is this one; else the one start-up message: what was found and how
    to move on (`move_on`: e.g. "--collection NEW"). `found=None` means data without a marker (scheme 1)."""
    if found == ID_SCHEME:
        return None
    if found is not None and found > ID_SCHEME:
        return (f"{where} was written with ID scheme {found}, newer than this pipeline's scheme {ID_SCHEME}; "
                "run the pipeline version that wrote it, or re-sync into a new store with " + move_on)
    return (f"{where} holds data written with ID scheme {found or 1}, but this pipeline writes ID scheme "
            f"{ID_SCHEME} (namespaced and unnamespaced documents could collide under the old scheme); re-sync "
            f"all documents into a new store with {move_on}, then drop the old one (README: Stored record)")


def content_hash(text: str) -> str:
    """sha256 of the chunk text (hex): unchanged text with the same model is never embedded again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
