"""Pinecone sink (serverless or pod index, data plane only): one vector per chunk with the ID
`"{prefix}#{chunk_index}"` (`transforms.ids.pinecone_vector_id`), so a document's vectors can be listed by
prefix (serverless indexes cannot delete by metadata filter); one vector per document in the namespace
`<namespace>__sync_state` holding its last applied version and op (a delete leaves a tombstone), and there
too the reserved vector `SCHEME_MARKER_ID` recording the ID scheme.

The prefix is the doc_id percent-encoded to printable ASCII without `%`, `#` and `:` (with
`--pinecone_namespace`, `namespace::doc_id`, each part encoded), or `sha256:<hex>` past 400 characters:
distinct documents never share a prefix, and no literal doc_id equals a hashed one. Metadata holds the
shared record fields, with the event's metadata as a JSON
string in `metadata_json` (Pinecone metadata cannot nest; it is what the sink reads back). With
`payload_layout: langchain` or `llamaindex` each event metadata key whose value Pinecone can hold (a string,
number, boolean or list of strings) and that no record field uses is also a metadata field of its own:
LangChain's `PineconeVectorStore` (`text_key="text"`) returns it in `Document.metadata`, LlamaIndex's in
`node.metadata`, and filters on it work. `llamaindex` stores the text inside `_node_content` (the chunk as a
`TextNode` whose SOURCE is the doc_id, as LlamaIndex's own `add` writes it) instead of `text`, with
`_node_type`, `document_id` and `ref_doc_id`. A chunk text that would push a record past
Pinecone's 40 KB metadata limit is cut to fit, flagged `text_truncated`, and counted.

Writes per batch: upsert the chunk vectors (requests of at most `vectors_per_request` vectors and
`request_bytes` bytes), delete stale IDs (up to 1,000 per request), then record each document's version.
A crash between steps leaves extra chunks that the next look-up lists by prefix and removes. Pinecone has no
conditional writes: the plan step never sends an older version, but two pipelines writing the same index at
once are not guarded against each other.
"""
from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping, Optional, Sequence

from pydantic import Field

from connectors.base import SearchHit, StoreConfig, StoreConfigError, VectorStore
from connectors.secrets import SecretRef
from transforms import counters
from transforms.ids import (ID_SCHEME, SCHEME_MARKER_ID, pinecone_document_prefix, pinecone_vector_id,
                            scheme_mismatch)
from transforms.layouts import LLAMAINDEX_NODE_CONTENT, OTHER_LAYOUT, llamaindex_metadata, payload_text
from transforms.retry import is_transient_status
from transforms.types import ChunkRecord, DocKey, DocumentWrite, StoredChunk, StoredDocument

STATE_SUFFIX = "__sync_state"
METADATA_LIMIT_BYTES = 40 * 1024
IDS_PER_REQUEST = 1000
FETCH_IDS_PER_REQUEST = 100  # ids travel in the query string
LIST_PAGE = 100
LLAMAINDEX_FIELDS = (LLAMAINDEX_NODE_CONTENT, "_node_type", "document_id", "ref_doc_id")
RECORD_FIELDS = frozenset({"doc_id", "namespace", "chunk_index", "chunk_count", "version", "content_hash", "model",
                           "metadata_json", "text", "text_truncated", *LLAMAINDEX_FIELDS})
"""Metadata fields of a chunk vector that an event metadata key cannot take as a field of its own."""


def flat_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The event metadata entries the langchain layout stores as fields of their own."""
    def storable(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        return isinstance(value, (str, bool, int)) or (isinstance(value, list) and all(
            isinstance(v, str) for v in value))

    return {k: v for k, v in metadata.items() if k not in RECORD_FIELDS and storable(v)}


class RecordTooLargeError(ValueError):
    """A record cannot fit Pinecone's limits even with its text cut (its other metadata is too large)."""


class PineconeConfig(StoreConfig):
    """`index_host` (from the console, or `http://127.0.0.1:PORT` for Pinecone Local); `api_key` is a
    reference (see connectors/secrets.py; default `env:<api_key_env>`, i.e. `$PINECONE_API_KEY`), resolved
    where the client is made and never logged. `namespace`:
    one Pinecone namespace for everything; default: each event's own namespace (none → the default one)."""

    type: Literal["pinecone"] = "pinecone"
    index_host: str
    api_key_env: str = "PINECONE_API_KEY"
    api_key: Optional[SecretRef] = None
    namespace: Optional[str] = None
    batch_size: int = Field(default=100, ge=1)
    vectors_per_request: int = Field(default=100, ge=1, le=1000)
    request_bytes: int = Field(default=2_000_000, ge=10_000, le=2 * 1024 * 1024)
    lookup_threads: int = Field(default=8, ge=1, le=64)
    timeout_s: float = 30.0

    layouts: ClassVar[tuple[str, ...]] = ("native", "langchain", "llamaindex")

    @property
    def sink_type(self) -> str:
        return "pinecone"

    def resolved_api_key(self) -> str:
        key = (self.api_key or SecretRef.env(self.api_key_env)).resolve_or_none()
        if not key:
            raise StoreConfigError(f"the Pinecone sink needs an API key in ${self.api_key_env}")
        return key

    def create_store(self) -> "PineconeStore":
        return PineconeStore(self)

    def display(self) -> dict[str, Any]:
        return {"sink": self.sink_name, "index_host": self.index_host, "namespace": self.namespace or "(per event)"}


class PineconeStore(VectorStore):
    def __init__(self, config: PineconeConfig) -> None:
        from pinecone import Index

        self._config = config
        self._index = Index(host=config.index_host, api_key=config.resolved_api_key(), timeout=config.timeout_s)
        self._dimension: Optional[int] = None
        self._truncated = counters.sink_counter(config.sink_name, counters.TEXT_TRUNCATED)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    # --- naming -------------------------------------------------------------------------------------------

    def _namespace(self, event_namespace: Optional[str]) -> str:
        return self._config.namespace if self._config.namespace is not None else (event_namespace or "")

    def _id_namespace(self, namespace: Optional[str]) -> Optional[str]:
        """The event namespace IDs must carry: only when one Pinecone namespace holds every event's."""
        return namespace if self._config.namespace is not None else None

    def _prefix(self, namespace: Optional[str], doc_id: str) -> str:
        """The document's ID prefix (and sync-state vector ID)."""
        return pinecone_document_prefix(doc_id, self._id_namespace(namespace))

    def vector_id(self, namespace: Optional[str], doc_id: str, chunk_index: int) -> str:
        return pinecone_vector_id(doc_id, chunk_index, self._id_namespace(namespace))

    # --- start-up -----------------------------------------------------------------------------------------

    def ensure_ready(self, dimension: int) -> None:
        """The index must exist (Pinecone indexes are created in the control plane, not here) and hold
        `dimension`-d vectors."""
        try:
            stats = self._index.describe_index_stats()
        except Exception as exc:  # noqa: BLE001 - any failure here means the index cannot be used
            raise StoreConfigError(f"Pinecone index at {self._config.index_host} cannot be used: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if stats.dimension is not None and stats.dimension != dimension:
            raise StoreConfigError(
                f"dimension mismatch: Pinecone index at {self._config.index_host} holds {stats.dimension}-d "
                f"vectors but the model produces {dimension}-d vectors")
        if stats.metric not in (None, "cosine"):
            raise StoreConfigError(f"Pinecone index at {self._config.index_host} uses {stats.metric}; "
                                   "expected cosine")
        self._dimension = dimension
        self._ensure_id_scheme(stats)

    def _ensure_id_scheme(self, stats: Any) -> None:
        """The ID scheme is recorded as the reserved vector `SCHEME_MARKER_ID` in the sync-state namespace of
        `--pinecone_namespace` (or of the default namespace): written when the pipeline's namespaces hold no
        vector, checked otherwise. `count()` skips sync-state namespaces, and no chunk ID lacks a `#`."""
        state_ns = self._namespace(None) + STATE_SUFFIX
        marker = self._index.fetch(ids=[SCHEME_MARKER_ID], namespace=state_ns).vectors.get(SCHEME_MARKER_ID)
        if marker is not None:
            found: Optional[int] = int((marker.metadata or {}).get("id_scheme", 1))
        elif self._holds_vectors(stats):
            found = None
        else:
            self._index.upsert(vectors=[{"id": SCHEME_MARKER_ID, "values": self._state_vector(),
                                         "metadata": {"id_scheme": ID_SCHEME}}], namespace=state_ns)
            return
        where = f"Pinecone index at {self._config.index_host}" + (
            f" (namespace {self._config.namespace!r})" if self._config.namespace is not None else "")
        problem = scheme_mismatch(where, found, "another --pinecone_namespace or index")
        if problem:
            raise StoreConfigError(problem)

    def _holds_vectors(self, stats: Any) -> bool:
        """Whether the namespaces this pipeline writes hold any vector (all of them without a fixed one)."""
        namespaces = stats.namespaces or {}
        if self._config.namespace is None:
            return any(summary.vector_count for summary in namespaces.values())
        names = {self._config.namespace, self._config.namespace + STATE_SUFFIX}
        if not self._config.namespace:
            names.add("__default__")
        return any(summary.vector_count for name, summary in namespaces.items() if name in names)

    def _state_vector(self) -> list[float]:
        if self._dimension is None:
            self._dimension = int(self._index.describe_index_stats().dimension or 0)
        return [1.0] + [0.0] * (self._dimension - 1)  # Pinecone rejects all-zero dense vectors

    # --- reads --------------------------------------------------------------------------------------------

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        """Lists each document's chunk IDs by prefix (in parallel), fetches them, and fetches the documents'
        sync-state vectors."""
        if not keys:
            return {}
        with ThreadPoolExecutor(max_workers=min(self._config.lookup_threads, len(keys))) as pool:
            chunk_lists = list(pool.map(self._read_chunks, keys))
        states = self._read_states(keys)
        return {key: StoredDocument.assemble(chunks, *(
            (states[key]["version"], states[key].get("op")) if key in states else ()))
            for key, chunks in zip(keys, chunk_lists) if chunks or key in states}

    def _read_chunks(self, key: DocKey) -> list[StoredChunk]:
        namespace, doc_id = key
        pinecone_ns = self._namespace(namespace or None)
        prefix = self._prefix(namespace or None, doc_id) + "#"
        ids: list[str] = []
        token = None
        while True:
            page = self._index.list_paginated(prefix=prefix, limit=LIST_PAGE, pagination_token=token,
                                              namespace=pinecone_ns)
            ids.extend(item.id for item in page.vectors if item.id)
            token = page.pagination.next if page.pagination else None
            if not token:
                break
        chunks = []
        for group in _groups(ids, FETCH_IDS_PER_REQUEST):
            for vector_id, vector in self._index.fetch(ids=group, namespace=pinecone_ns).vectors.items():
                m = vector.metadata or {}
                chunks.append(StoredChunk(
                    point_id=vector_id, chunk_index=int(m.get("chunk_index", -1)), version=int(m.get("version", -1)),
                    content_hash=str(m.get("content_hash", "")), model=str(m.get("model", "")),
                    vector=list(vector.values), chunk_count=int(m.get("chunk_count", 0)),
                    metadata=self._event_metadata(m)))
        return chunks

    def _read_states(self, keys: Sequence[DocKey]) -> dict[DocKey, dict[str, Any]]:
        states: dict[DocKey, dict[str, Any]] = {}
        by_namespace: dict[str, dict[str, DocKey]] = {}
        for namespace, doc_id in keys:
            state_ns = self._namespace(namespace or None) + STATE_SUFFIX
            by_namespace.setdefault(state_ns, {})[self._prefix(namespace or None, doc_id)] = (namespace, doc_id)
        for state_ns, wanted in by_namespace.items():
            for group in _groups(list(wanted), FETCH_IDS_PER_REQUEST):
                for vector_id, vector in self._index.fetch(ids=group, namespace=state_ns).vectors.items():
                    states[wanted[vector_id]] = dict(vector.metadata or {})
        return states

    # --- writes -------------------------------------------------------------------------------------------

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        by_namespace: dict[str, list[DocumentWrite]] = {}
        for w in writes:
            by_namespace.setdefault(self._namespace(w.event.namespace), []).append(w)
        built = {ns: [self._vector(r) for w in group for r in w.records] for ns, group in by_namespace.items()}
        for pinecone_ns, group in by_namespace.items():
            vectors = built[pinecone_ns]
            for request in self._upsert_requests(vectors):
                self._index.upsert(vectors=request, namespace=pinecone_ns)
            stale = [pid for w in group for pid in w.stale_ids]
            for ids in _groups(stale, IDS_PER_REQUEST):
                self._index.delete(ids=ids, namespace=pinecone_ns)
            states = [self._state(w) for w in group]
            for request in self._upsert_requests(states):
                self._index.upsert(vectors=request, namespace=pinecone_ns + STATE_SUFFIX)
        self._truncated.inc(sum(1 for vectors in built.values() for v in vectors
                                if v["metadata"].get("text_truncated")))  # counted once the batch has landed

    def _event_metadata(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The event metadata (from `metadata_json`); `{OTHER_LAYOUT: ...}` when the vector was written in
        another layout, so the next write of its document rewrites it."""
        metadata = json.loads(stored.get("metadata_json") or "{}")
        flat = flat_metadata(metadata)
        layout = self._config.payload_layout
        if layout == "native":
            in_layout = LLAMAINDEX_NODE_CONTENT not in stored and not any(k in stored for k in flat)
        else:
            in_layout = ((LLAMAINDEX_NODE_CONTENT in stored) == (layout == "llamaindex")
                         and all(stored.get(k, OTHER_LAYOUT) == v for k, v in flat.items()))
        return metadata if in_layout else {OTHER_LAYOUT: "another layout"}

    def _vector(self, record: ChunkRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "doc_id": record.doc_id, "chunk_index": record.chunk_index, "chunk_count": record.chunk_count,
            "version": record.version, "content_hash": record.content_hash, "model": record.model,
            "metadata_json": json.dumps(record.metadata, sort_keys=True, separators=(",", ":"))}
        if record.namespace:
            fields["namespace"] = record.namespace
        layout = self._config.payload_layout
        flat = flat_metadata(record.metadata) if layout != "native" else {}

        def build(text: str) -> dict[str, Any]:
            if layout != "llamaindex":
                return {**flat, **fields, "text": text}
            node = llamaindex_metadata(dataclasses.replace(record, text=text), with_text=True)
            return {**flat, **fields, **{k: node[k] for k in LLAMAINDEX_FIELDS}}

        return {"id": self.vector_id(record.namespace, record.doc_id, record.chunk_index),
                "values": [float(x) for x in record.vector], "metadata": self._fit_metadata(build, record)}

    def _fit_metadata(self, build: Callable[[str], dict[str, Any]], record: ChunkRecord) -> dict[str, Any]:
        """`build(text)`, with the text cut (on a character boundary) to the longest prefix that keeps the
        metadata within Pinecone's 40 KB limit, flagged `text_truncated`."""
        metadata = build(record.text)
        if _json_size(metadata) <= METADATA_LIMIT_BYTES:
            return metadata
        flag = len(',"text_truncated":true')
        empty = _json_size(build("")) + flag
        if empty > METADATA_LIMIT_BYTES:
            raise RecordTooLargeError(f"metadata of {record.doc_id!r} is {empty - flag} bytes even without its "
                                      f"text; Pinecone allows {METADATA_LIMIT_BYTES}")
        text = record.text
        low, high = 0, len(text)
        while low < high:  # the longest prefix whose metadata fits
            middle = (low + high + 1) // 2
            if _json_size(build(text[:middle])) + flag <= METADATA_LIMIT_BYTES:
                low = middle
            else:
                high = middle - 1
        return {**build(text[:low]), "text_truncated": True}

    def _state(self, write: DocumentWrite) -> dict[str, Any]:
        event = write.event
        metadata: dict[str, Any] = {"doc_id": event.doc_id, "version": event.version, "op": event.op}
        if event.namespace:
            metadata["namespace"] = event.namespace
        return {"id": self._prefix(event.namespace, event.doc_id), "values": self._state_vector(),
                "metadata": metadata}

    def _upsert_requests(self, vectors: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Requests of at most `vectors_per_request` vectors and `request_bytes` encoded bytes."""
        request: list[dict[str, Any]] = []
        size = 64
        for vector in vectors:
            vector_size = _json_size(vector) + 1
            if request and (len(request) >= self._config.vectors_per_request
                            or size + vector_size > self._config.request_bytes):
                yield request
                request, size = [], 64
            request.append(vector)
            size += vector_size
        if request:
            yield request

    def is_transient(self, error: BaseException) -> bool:
        from pinecone.errors.exceptions import ApiError, PineconeConnectionError, PineconeTimeoutError

        if isinstance(error, ApiError):
            return is_transient_status(error.status_code)
        return isinstance(error, (PineconeConnectionError, PineconeTimeoutError, TimeoutError, ConnectionError))

    def nearest(self, vector: Sequence[float], limit: int, metadata: Optional[Mapping[str, Any]] = None,
                namespace: Optional[str] = None) -> list[SearchHit]:
        """A query on one Pinecone namespace: `--pinecone_namespace` (then `namespace` is a metadata filter),
        else the event namespace's own (the default one without `namespace`). A metadata filter needs the
        langchain layout (the native one keeps the event metadata as one JSON string, which Pinecone cannot
        filter on), and a key stored as a field of its own."""
        if metadata and self._config.payload_layout == "native":
            raise StoreConfigError("Pinecone's native layout stores the event metadata as one JSON string "
                                   "(metadata_json), which Pinecone cannot filter on: filter on --namespace, or "
                                   "write the index with --payload_layout langchain")
        unfilterable = sorted(k for k, v in (metadata or {}).items() if k in RECORD_FIELDS or not flat_metadata({k: v}))
        if unfilterable:
            raise StoreConfigError(f"metadata key(s) {', '.join(unfilterable)} are not fields of their own in "
                                   "Pinecone (a record field's name, or a value Pinecone cannot hold)")
        conditions: dict[str, Any] = {k: {"$eq": v} for k, v in (metadata or {}).items()}
        if self._config.namespace is not None and namespace is not None:
            conditions["namespace"] = {"$eq": namespace} if namespace else {"$exists": False}
        result = self._index.query(vector=[float(x) for x in vector], top_k=int(limit), include_metadata=True,
                                   namespace=self._namespace(namespace), filter=conditions or None)
        hits = []
        for match in result.matches:
            m = match.metadata or {}
            hits.append(SearchHit(score=float(match.score), doc_id=str(m.get("doc_id")), namespace=m.get("namespace"),
                                  chunk_index=int(m.get("chunk_index", -1)), version=int(m.get("version", -1)),
                                  text=payload_text(m), metadata=json.loads(m.get("metadata_json") or "{}")))
        return hits

    def count(self) -> int:
        stats = self._index.describe_index_stats()
        return sum(summary.vector_count for name, summary in (stats.namespaces or {}).items()
                   if not name.endswith(STATE_SUFFIX))


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _groups(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
