"""MongoDB sink in the Atlas Vector Search layout: one document per chunk `{_id, doc_id, namespace,
chunk_index, chunk_count, version, text, content_hash, model, metadata, embedding}` (`_id` is the chunk's
UUIDv5) in `<collection>`, and one per document in `<collection>__sync_state` (`{_id, doc_id, namespace,
version, op}`; a delete leaves a tombstone).

Writes per batch: `bulk_write` of `ReplaceOne({_id, version <= v}, ..., upsert=True)` (unordered), so a
write never replaces a newer version (the server refuses the upsert with a duplicate-key error, which is
taken as "newer version stored"); then `delete_many` removes every chunk of the document older than `v`
(stale and deleted chunks) and the stale IDs of a same-version replay; then the sync state, under the same
rule. On start the collection and a `(namespace, doc_id)` index are created (unless `create_collection` is
off), and the `vectorSearch` index definition (`embedding`, numDimensions, cosine, filter fields `doc_id`
and `namespace`) is created where the server supports search indexes (Atlas, or a local Atlas deployment);
elsewhere a warning says it was not.

Layouts (`payload_layout`): `native` as above (LangChain's `MongoDBAtlasVectorSearch` reads it as it is: `text`,
`embedding`, every other field its metadata); `langchain` adds each event metadata key at the top level too
(where LangChain's own `add_texts` puts metadata, so its `pre_filter` and `Document.metadata` have them),
except keys a record field uses; `llamaindex` makes `metadata` what LlamaIndex's `MongoDBAtlasVectorSearch`
writes (`node_to_metadata_dict(remove_text=True)`: the event metadata flat, `_node_content`, `_node_type`,
`ref_doc_id` ... LlamaIndex deletes by `metadata.ref_doc_id`), the text staying in `text`. The event metadata
reads back exactly in each (from `metadata`, or from `_node_content`).
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, ClassVar, Literal, Mapping, Optional, Sequence

from pydantic import Field

from connectors.base import SearchHit, StoreConfig, StoreConfigError, VectorStore
from connectors.secrets import SecretRef
from transforms.ids import ID_SCHEME, SCHEME_MARKER_ID, document_point_id, scheme_mismatch
from transforms.layouts import (LLAMAINDEX_NODE_CONTENT, LLAMAINDEX_RESERVED, OTHER_LAYOUT, llamaindex_metadata,
                                node_metadata)
from transforms.types import DocKey, DocumentWrite, StoredChunk, StoredDocument

log = logging.getLogger(__name__)

STATE_SUFFIX = "__sync_state"
DUPLICATE_KEY = 11000
NO_VECTOR_SEARCH = ("$vectorSearch", "search index not found", "Unsupported aggregation stage")
"""Words of the error a server without Atlas Search (or without the index) gives a `$vectorSearch` stage."""
RECORD_FIELDS = frozenset({"_id", "doc_id", "namespace", "chunk_index", "chunk_count", "version", "text",
                           "content_hash", "model", "metadata", "embedding"})
"""Top-level fields of a chunk document that an event metadata key cannot take in the langchain layout."""
# Server error codes worth retrying: network, elections, shutdowns, write conflicts, time limits, throttling.
TRANSIENT_CODES = frozenset({6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 16500})


def load_client_factory(dotted: str) -> Callable[..., Any]:
    """`"module:attribute"` → the callable that makes a client from a URI (`pymongo:MongoClient` by default;
    `mongomock:MongoClient` runs without a server)."""
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute or "MongoClient")


class MongoConfig(StoreConfig):
    """`uri` (a `mongodb://` or `mongodb+srv://` URI; never logged), `database`, `collection`."""

    layouts: ClassVar[tuple[str, ...]] = ("native", "langchain", "llamaindex")

    type: Literal["mongodb"] = "mongodb"
    uri: SecretRef
    """A reference (see connectors/secrets.py), resolved where the client is made."""
    database: str = "vector_sync"
    collection: str = "documents"
    create_collection: bool = True
    search_index: str = "vector_index"
    client_factory: str = "pymongo:MongoClient"
    timeout_ms: int = Field(default=10_000, ge=100)
    """Bounds finding a server and opening a connection (serverSelectionTimeoutMS, connectTimeoutMS)."""
    socket_timeout_ms: int = Field(default=60_000, ge=100)
    """Bounds waiting for one answer (socketTimeoutMS): a stopped server costs this long, then the call fails
    with a transient error and is retried (pymongo reconnects on its own)."""

    @property
    def sink_type(self) -> str:
        return "mongodb"

    def create_store(self) -> "MongoStore":
        return MongoStore(self)

    def display(self) -> dict[str, Any]:
        return {"sink": self.sink_name, "database": self.database, "collection": self.collection}


class MongoStore(VectorStore):
    def __init__(self, config: MongoConfig) -> None:
        self._config = config
        factory = load_client_factory(config.client_factory)
        self._client = factory(config.uri.get_secret_value(), serverSelectionTimeoutMS=config.timeout_ms,
                               connectTimeoutMS=config.timeout_ms, socketTimeoutMS=config.socket_timeout_ms,
                               uuidRepresentation="standard")
        database = self._client[config.database]
        self._chunks = database[config.collection]
        self._states = database[config.collection + STATE_SUFFIX]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure_ready(self, dimension: int) -> None:
        from pymongo.errors import ConnectionFailure

        try:
            self._ensure_ready(dimension)
        except ConnectionFailure as exc:
            raise StoreConfigError(f"cannot reach MongoDB within {self._config.timeout_ms} ms: "
                                   f"{_short(exc)}") from exc

    def _ensure_ready(self, dimension: int) -> None:
        database = self._client[self._config.database]
        exists = self._config.collection in database.list_collection_names()
        if not exists and not self._config.create_collection:
            raise StoreConfigError(f"MongoDB collection {self._config.database}.{self._config.collection} does not "
                                   "exist and auto-create is off")
        if not exists:
            database.create_collection(self._config.collection)
        sample = self._chunks.find_one({}, {"embedding": 1})
        if sample is not None and len(sample.get("embedding") or []) != dimension:
            raise StoreConfigError(
                f"dimension mismatch: MongoDB collection {self._config.collection!r} holds "
                f"{len(sample.get('embedding') or [])}-d vectors but the model produces {dimension}-d vectors")
        self._chunks.create_index([("namespace", 1), ("doc_id", 1)], name="namespace_doc_id")
        self._states.create_index([("namespace", 1), ("doc_id", 1)], name="namespace_doc_id")
        self._ensure_id_scheme()
        self._ensure_search_index(dimension)

    def _ensure_id_scheme(self) -> None:
        """The ID scheme is recorded as a reserved document `{_id: SCHEME_MARKER_ID, id_scheme}` in the
        sync-state collection (never a chunk): written into a store without data, checked otherwise."""
        marker = self._states.find_one({"_id": SCHEME_MARKER_ID})
        if marker is not None:
            found: Optional[int] = int(marker.get("id_scheme", 1))
        elif (self._chunks.find_one({}, {"_id": 1}) is not None
              or self._states.find_one({"_id": {"$ne": SCHEME_MARKER_ID}}, {"_id": 1}) is not None):
            found = None
        else:
            self._states.replace_one({"_id": SCHEME_MARKER_ID}, {"_id": SCHEME_MARKER_ID, "id_scheme": ID_SCHEME},
                                     upsert=True)
            return
        problem = scheme_mismatch(f"MongoDB collection {self._config.database}.{self._config.collection}", found,
                                  "another --mongo_collection (or --mongo_db)")
        if problem:
            raise StoreConfigError(problem)

    def search_index_definition(self, dimension: int) -> dict[str, Any]:
        return {"name": self._config.search_index, "type": "vectorSearch", "definition": {"fields": [
            {"type": "vector", "path": "embedding", "numDimensions": dimension, "similarity": "cosine"},
            {"type": "filter", "path": "doc_id"},
            {"type": "filter", "path": "namespace"}]}}

    def _ensure_search_index(self, dimension: int) -> None:
        from pymongo.errors import OperationFailure

        try:
            existing = {ix.get("name"): ix for ix in self._chunks.list_search_indexes()}
            found = existing.get(self._config.search_index)
            if found is None:
                self._chunks.create_search_index(self.search_index_definition(dimension))
                return
            fields = (found.get("latestDefinition") or found.get("definition") or {}).get("fields", [])
            dims = [f.get("numDimensions") for f in fields if f.get("type") == "vector"]
            if dims and dims[0] != dimension:
                raise StoreConfigError(f"dimension mismatch: search index {self._config.search_index!r} is "
                                       f"defined for {dims[0]}-d vectors, the model produces {dimension}-d")
        except (OperationFailure, NotImplementedError, AttributeError) as exc:
            log.warning("MongoDB server does not support search indexes (%s); vectors are written, but create "
                        "the vectorSearch index %r yourself on Atlas to query them", _short(exc),
                        self._config.search_index)

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        if not keys:
            return {}
        wanted = set(keys)
        doc_ids = sorted({doc_id for _, doc_id in keys})
        states = {}
        for s in self._states.find({"_id": {"$in": [document_point_id(d, ns or None) for ns, d in keys]}}):
            states[(s.get("namespace") or "", s["doc_id"])] = s
        chunks: dict[DocKey, list[StoredChunk]] = {}
        for c in self._chunks.find({"doc_id": {"$in": doc_ids}}):
            key = (c.get("namespace") or "", c["doc_id"])
            if key in wanted:
                chunks.setdefault(key, []).append(StoredChunk(
                    point_id=str(c["_id"]), chunk_index=int(c["chunk_index"]), version=int(c["version"]),
                    content_hash=c.get("content_hash", ""), model=c.get("model", ""),
                    vector=[float(x) for x in c.get("embedding") or []] or None,
                    chunk_count=int(c.get("chunk_count", 0)), metadata=self._event_metadata(c)))
        return {key: StoredDocument.assemble(chunks.get(key, ()), *(
            (states[key]["version"], states[key].get("op")) if key in states else ()))
            for key in set(states) | set(chunks)}

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        from pymongo import ReplaceOne

        chunk_ops = [ReplaceOne({"_id": r.point_id, "version": {"$lte": r.version}}, self._document(r), upsert=True)
                     for w in writes for r in w.records]
        self._bulk_write(self._chunks, chunk_ops)
        older = [{"doc_id": w.event.doc_id, "namespace": w.event.namespace, "version": {"$lt": w.event.version}}
                 for w in writes]
        older += [{"_id": pid, "version": {"$lte": w.event.version}} for w in writes for pid in w.stale_ids]
        self._chunks.delete_many({"$or": older})
        state_ops = []
        for w in writes:
            event = w.event
            state_id = document_point_id(event.doc_id, event.namespace)
            state_ops.append(ReplaceOne({"_id": state_id, "version": {"$lte": event.version}},
                                        {"_id": state_id, "doc_id": event.doc_id, "namespace": event.namespace,
                                         "version": event.version, "op": event.op}, upsert=True))
        self._bulk_write(self._states, state_ops)

    def _document(self, record: Any) -> dict[str, Any]:
        """The chunk's document in the sink's layout."""
        document = {"_id": record.point_id, **record.payload(), "embedding": [float(x) for x in record.vector]}
        layout = self._config.payload_layout
        if layout == "langchain":
            return {**_flat(record.metadata), **document}
        if layout == "llamaindex":
            document["metadata"] = llamaindex_metadata(record, with_text=False)
        return document

    def _event_metadata(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The event metadata of a stored chunk; `{OTHER_LAYOUT: ...}` when it is stored in another layout than
        the sink's, so the next write of its document rewrites it."""
        nested = document.get("metadata") or {}
        layout = self._config.payload_layout
        if LLAMAINDEX_NODE_CONTENT in nested:
            return node_metadata(nested[LLAMAINDEX_NODE_CONTENT]) if layout == "llamaindex" else {
                OTHER_LAYOUT: "llamaindex"}
        flat = _flat(nested)
        in_layout = (layout == "langchain" and all(document.get(k, OTHER_LAYOUT) == v for k, v in flat.items())) or (
            layout == "native" and not any(k in document for k in flat))
        return dict(nested) if in_layout else {OTHER_LAYOUT: "native or langchain"}

    @staticmethod
    def _bulk_write(collection: Any, operations: list[Any]) -> None:
        """Unordered bulk write; a duplicate `_id` on a conditional upsert means a newer version is stored
        (any other error, a duplicate on another unique index included, is raised)."""
        from pymongo.errors import BulkWriteError

        if not operations:
            return
        try:
            collection.bulk_write(operations, ordered=False)
        except BulkWriteError as exc:
            errors = [e for e in exc.details.get("writeErrors", []) if not _newer_version_stored(e)]
            if errors or exc.details.get("writeConcernErrors"):
                raise

    def is_transient(self, error: BaseException) -> bool:
        from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

        if isinstance(error, ConnectionFailure):  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
            return True
        if isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"):
            return True
        if isinstance(error, BulkWriteError):
            codes = {e.get("code") for e in error.details.get("writeErrors", [])}
            codes |= {e.get("code") for e in error.details.get("writeConcernErrors", [])}
            return bool(codes) and codes <= TRANSIENT_CODES
        if isinstance(error, OperationFailure):
            return error.code in TRANSIENT_CODES
        return isinstance(error, (TimeoutError, ConnectionError))

    def count(self) -> int:
        return int(self._chunks.count_documents({}))

    def nearest(self, vector: Sequence[float], limit: int, metadata: Optional[Mapping[str, Any]] = None,
                namespace: Optional[str] = None) -> list[SearchHit]:
        """An Atlas `$vectorSearch` on the sink's search index with the filter as a pre-filter (Atlas needs each
        filtered path declared as a `filter` field of the index: `namespace` is; declare `metadata.<key>` for
        the keys you filter on). A server without vector search (self-hosted Community, a stand-in) gets an
        exact scan instead: every matching chunk's cosine computed here, with a warning."""
        from pymongo.errors import OperationFailure

        if self._config.payload_layout == "llamaindex" and set(metadata or {}) & LLAMAINDEX_RESERVED:
            raise StoreConfigError(f"metadata key(s) {', '.join(sorted(set(metadata or {}) & LLAMAINDEX_RESERVED))} "
                                   "are fields of the llamaindex layout itself: they cannot be filtered on")
        conditions: dict[str, Any] = {f"metadata.{key}": {"$eq": value} for key, value in (metadata or {}).items()}
        if namespace is not None:
            conditions["namespace"] = {"$eq": namespace or None}
        fields = {"_id": 0, "doc_id": 1, "namespace": 1, "chunk_index": 1, "version": 1, "text": 1, "metadata": 1}
        stage: dict[str, Any] = {"index": self._config.search_index, "path": "embedding",
                                 "queryVector": [float(x) for x in vector], "numCandidates": max(100, 10 * limit),
                                 "limit": int(limit)}
        if conditions:
            stage["filter"] = conditions
        try:
            found = list(self._chunks.aggregate([{"$vectorSearch": stage}, {"$project": {
                **fields, "score": {"$meta": "vectorSearchScore"}}}]))
            # Atlas reports cosine as (1 + cos) / 2; hits carry the cosine itself, as the other sinks'
            scored = [(2.0 * float(d["score"]) - 1.0, d) for d in found]
        except OperationFailure as exc:
            if not any(words in str(exc) for words in NO_VECTOR_SEARCH):
                raise
            log.warning("MongoDB has no vector search here (%s): scanning every matching chunk instead",
                        _short(exc))
            scored = self._exact_nearest(vector, limit, conditions, fields)
        return [SearchHit(score=score, doc_id=d["doc_id"], namespace=d.get("namespace"),
                          chunk_index=int(d["chunk_index"]), version=int(d["version"]), text=d.get("text", ""),
                          metadata=self._hit_metadata(d.get("metadata") or {})) for score, d in scored]

    @staticmethod
    def _hit_metadata(nested: Mapping[str, Any]) -> dict[str, Any]:
        if LLAMAINDEX_NODE_CONTENT in nested:
            return node_metadata(nested[LLAMAINDEX_NODE_CONTENT])
        return dict(nested)

    def _exact_nearest(self, vector: Sequence[float], limit: int, conditions: dict[str, Any],
                       fields: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
        import numpy as np

        query = np.asarray(vector, dtype=np.float64)
        query /= np.linalg.norm(query) or 1.0
        scored = []
        for d in self._chunks.find(conditions, {**fields, "embedding": 1}):
            stored = np.asarray(d.pop("embedding") or [], dtype=np.float64)
            if stored.shape == query.shape:
                scored.append((float(stored @ query / (np.linalg.norm(stored) or 1.0)), d))
        return sorted(scored, key=lambda pair: -pair[0])[:limit]


def _newer_version_stored(write_error: dict[str, Any]) -> bool:
    """The upsert's filter (`_id` and `version <= v`) matched nothing because a newer version holds the `_id`."""
    if write_error.get("code") != DUPLICATE_KEY:
        return False
    pattern = write_error.get("keyPattern")
    return pattern == {"_id": 1} if pattern is not None else " index: _id_ " in write_error.get("errmsg", "")


def _flat(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The event metadata entries the langchain layout also stores at the top level."""
    return {k: v for k, v in metadata.items() if k not in RECORD_FIELDS}


def _short(error: BaseException) -> str:
    """The first part of a pymongo message (without the full error document or topology description)."""
    text = str(error).split(", full error")[0].split(", Timeout: ")[0].split(" (configured timeouts")[0]
    return text.splitlines()[0][:200] if text.strip() else type(error).__name__
