"""Payload layouts: how a chunk record is shaped in a store so that a RAG framework's own vector store reads it
without glue, while the fields exact sync needs stay where the sink reads and filters them.

- `native`: the shared record schema (`ChunkRecord.payload()`: `text`, the sync fields, `metadata` nested).
- `langchain`: LangChain's `QdrantVectorStore` defaults, `page_content` and a nested `metadata` that LangChain
  returns as `Document.metadata`: the event's metadata with `doc_id`, `namespace`, `chunk_index`,
  `chunk_count` and `version` added (those win over an event key of the same name; the event's own value is
  kept under `shadowed_metadata`, so the event metadata reads back exactly).
- `llamaindex`: what LlamaIndex's Qdrant store writes (`node_to_metadata_dict(node, remove_text=False)`):
  `_node_content` (the `TextNode` as JSON: the chunk text, metadata exactly the event's, its SOURCE
  relationship the doc_id, so `node.ref_doc_id` is the doc_id), `_node_type`, `doc_id` / `document_id` /
  `ref_doc_id` (LlamaIndex deletes by `doc_id`) and the event's metadata keys flat beside them (LlamaIndex
  filters on those), except keys the layout itself uses, which stay inside `_node_content` only. The text
  is stored once, in `_node_content`, as LlamaIndex does.

A chunk stored in another layout than the sink's reads back with metadata no event can have (a key with a
NUL character), so the next write of its document rewrites it in the sink's layout (its vectors reused).

Every layout keeps the sync fields (`doc_id`, `namespace`, `chunk_index`, `chunk_count`, `version`,
`content_hash`, `model`) at the top level, where the sinks' conditional writes, filter deletes and look-ups
read them, so planning and exact sync work the same in each.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Mapping

from transforms.types import ChunkRecord

PayloadLayout = Literal["native", "langchain", "llamaindex"]
LAYOUTS: tuple[str, ...] = ("native", "langchain", "llamaindex")

SYNC_FIELDS = ("doc_id", "namespace", "chunk_index", "chunk_count", "version", "content_hash", "model")
LANGCHAIN_CONTENT_KEY = "page_content"
LANGCHAIN_METADATA_KEY = "metadata"
LANGCHAIN_ADDED = ("doc_id", "namespace", "chunk_index", "chunk_count", "version")
"""Sync fields also placed inside LangChain's metadata (LangChain returns only that nested dict)."""
SHADOWED = "shadowed_metadata"
LLAMAINDEX_NODE_CONTENT = "_node_content"
LLAMAINDEX_RESERVED = frozenset({*SYNC_FIELDS, LLAMAINDEX_NODE_CONTENT, "_node_type", "document_id", "ref_doc_id"})
"""Top-level keys of the LlamaIndex layout that an event metadata key may not take."""
OTHER_LAYOUT = "\x00stored in layout"
"""The metadata key of a chunk read back from another layout (NUL: never in an event's metadata)."""
SOURCE_RELATIONSHIP = "1"  # llama_index.core.schema.NodeRelationship.SOURCE
DOCUMENT_NODE_TYPE = "4"  # llama_index.core.schema.ObjectType.DOCUMENT


def chunk_payload(record: ChunkRecord, layout: str) -> dict[str, Any]:
    """The record's stored payload (everything but the vector) in `layout`."""
    if layout == "native":
        return record.payload()
    sync = {name: getattr(record, name) for name in SYNC_FIELDS}
    if layout == "langchain":
        added = {name: sync[name] for name in LANGCHAIN_ADDED}
        payload = {**sync, LANGCHAIN_CONTENT_KEY: record.text,
                   LANGCHAIN_METADATA_KEY: {**record.metadata, **added}}
        shadowed = {k: v for k, v in record.metadata.items() if k in added}
        if shadowed:
            payload[SHADOWED] = shadowed
        return payload
    if layout == "llamaindex":
        return {**llamaindex_metadata(record, with_text=True), **sync}
    raise ValueError(f"unknown payload layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def llamaindex_metadata(record: ChunkRecord, with_text: bool) -> dict[str, Any]:
    """What LlamaIndex's `node_to_metadata_dict(node, remove_text=not with_text)` makes of the chunk as a
    `TextNode`: the event metadata flat (keys LlamaIndex uses itself left out), `_node_content`,
    `_node_type` and the doc_id as `doc_id`, `document_id` and `ref_doc_id`."""
    flat = {k: v for k, v in record.metadata.items() if k not in LLAMAINDEX_RESERVED}
    node = _llamaindex_node(record)
    if not with_text:
        node["text"] = ""
    return {**flat, LLAMAINDEX_NODE_CONTENT: json.dumps(node, ensure_ascii=False), "_node_type": "TextNode",
            "doc_id": record.doc_id, "document_id": record.doc_id, "ref_doc_id": record.doc_id}


def node_metadata(node_content: str) -> dict[str, Any]:
    """The event metadata kept in a LlamaIndex `_node_content`."""
    return dict(json.loads(node_content).get("metadata") or {})


def _llamaindex_node(record: ChunkRecord) -> dict[str, Any]:
    """A `TextNode` as `node.model_dump(mode="json")` gives it (llama-index-core 0.14), embedding left out."""
    return {"id_": record.point_id, "embedding": None, "metadata": record.metadata,
            "excluded_embed_metadata_keys": [], "excluded_llm_metadata_keys": [],
            "relationships": {SOURCE_RELATIONSHIP: {"node_id": record.doc_id, "node_type": DOCUMENT_NODE_TYPE,
                                                    "metadata": {}, "hash": None, "class_name": "RelatedNodeInfo"}},
            "metadata_template": "{key}: {value}", "metadata_separator": "\n", "text": record.text,
            "mimetype": "text/plain", "start_char_idx": None, "end_char_idx": None,
            "text_template": "{metadata_str}\n\n{content}", "class_name": "TextNode"}


def payload_text(payload: Mapping[str, Any]) -> str:
    """The chunk text of a stored payload, in whichever layout it was written."""
    found = layout_of(payload)
    if found == "llamaindex":
        return str(json.loads(payload[LLAMAINDEX_NODE_CONTENT]).get("text") or "")
    return str(payload.get(LANGCHAIN_CONTENT_KEY if found == "langchain" else "text") or "")


def layout_of(payload: Mapping[str, Any]) -> str:
    """The layout a stored payload was written in."""
    if LLAMAINDEX_NODE_CONTENT in payload:
        return "llamaindex"
    return "langchain" if LANGCHAIN_CONTENT_KEY in payload else "native"


def event_metadata(payload: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """The event's metadata, exactly as it was written, from a stored payload in `layout`; from a payload in
    another layout, `{OTHER_LAYOUT: that layout}`."""
    found = layout_of(payload)
    if found != layout:
        return {OTHER_LAYOUT: found}
    if layout == "langchain":
        nested = dict(payload.get(LANGCHAIN_METADATA_KEY) or {})
        for name in LANGCHAIN_ADDED:
            nested.pop(name, None)
        return {**nested, **(payload.get(SHADOWED) or {})}
    if layout == "llamaindex":
        return node_metadata(payload[LLAMAINDEX_NODE_CONTENT])
    return dict(payload.get("metadata") or {})


def metadata_path(key: str, layout: str) -> str:
    """Where a filter on the event metadata key `key` looks in a stored payload (a dotted path); ValueError for
    a key the layout uses itself (kept only in the exact copy the sink reads back)."""
    if layout == "native":
        return f"metadata.{key}"
    if key in (LLAMAINDEX_RESERVED if layout == "llamaindex" else LANGCHAIN_ADDED):
        raise ValueError(f"metadata key {key!r} is a field of the {layout} layout itself: it cannot be filtered on")
    return key if layout == "llamaindex" else f"{LANGCHAIN_METADATA_KEY}.{key}"
