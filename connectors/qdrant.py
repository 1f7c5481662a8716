"""Qdrant sink: one point per chunk (UUIDv5 ID, cosine vector, the shared payload schema) plus one
payload-only point per document in `<collection>__sync_state` holding its last applied version and op.

The sync-state point makes look-ups cheap (by ID, no scan) and a delete leaves a tombstone there, so a late
older upsert is superseded even after a restart. Writes per batch: widen the chunk-index bound, upsert all
chunk points, delete the stale chunk IDs read from the store (on a server also every chunk of the document
with an older version, by filter), then record each document's version.

Embedded mode (`path`) shares one client per folder within a process, because Qdrant's local storage allows a
single client per folder; it is for a single worker process. Its SQLite files run in WAL mode with
`synchronous=NORMAL` (`local_durability: fast`, the default): every write survives a crash of the pipeline,
but the last ones before a power loss or OS crash may be lost. Re-running a change-log or folder repairs
that; a streaming source may already have acknowledged those records, so use `local_durability: full`
(qdrant-client's own fsync per point, about 5x slower writes) where an acknowledgement must mean on disk.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence

from pydantic import model_validator

from connectors.base import StoreConfig, StoreConfigError, VectorStore
from connectors.secrets import SecretRef
from transforms.ids import ID_SCHEME, SCHEME_MARKER_UUID, chunk_point_id, document_point_id, scheme_mismatch
from transforms.retry import is_transient_status
from transforms.types import DocKey, DocumentWrite, StoredChunk, StoredDocument

DEFAULT_PATH = "./.vector_store"
STATE_SUFFIX = "__sync_state"
_PENDING = {"version": -1, "op": "pending"}  # the state of a document whose first write has not finished

_local_lock = threading.Lock()
_local_clients: dict[str, list[Any]] = {}  # resolved path -> [client, users]
_keep_open = 0  # > 0 while a `local_clients_kept_open()` block runs
log = logging.getLogger(__name__)


def _use_fast_local_commits(client: Any) -> None:
    """WAL journal and `synchronous=NORMAL` on each local collection's SQLite file. qdrant-client's local
    mode commits once per point, and with its default journal each commit waits for an fsync."""
    collections = getattr(getattr(client, "_client", None), "collections", None)
    if not isinstance(collections, dict):
        log.warning("qdrant-client's local storage layout changed; embedded writes keep one fsync per point")
        return
    for collection in collections.values():
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if connection is not None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")


def _open_local(path: str, fast_commits: bool) -> Any:
    from qdrant_client import QdrantClient

    key = str(Path(path).resolve())
    with _local_lock:
        entry = _local_clients.get(key)
        if entry is None:
            Path(key).mkdir(parents=True, exist_ok=True)
            entry = _local_clients[key] = [QdrantClient(path=key), 0]
            if fast_commits:
                _use_fast_local_commits(entry[0])
        entry[1] += 1
        return entry[0]


def _release_local(path: str) -> None:
    key = str(Path(path).resolve())
    with _local_lock:
        entry = _local_clients.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0 and not _keep_open:
            del _local_clients[key]
            entry[0].close()


@contextlib.contextmanager
def local_clients_kept_open() -> Iterator[None]:
    """Within the block, an embedded store stays open between users (opening one reads every point from
    disk); on leaving it, unused ones are closed so other processes can open the folder."""
    global _keep_open
    with _local_lock:
        _keep_open += 1
    try:
        yield
    finally:
        with _local_lock:
            _keep_open -= 1
            if not _keep_open:
                for key, entry in list(_local_clients.items()):
                    if entry[1] <= 0:
                        del _local_clients[key]
                        entry[0].close()


class QdrantConfig(StoreConfig):
    """`path` (embedded store on disk) or `url` (a Qdrant server); `collection` is created on start with
    the model's dimension and cosine distance unless `create_collection` is off."""

    type: Literal["qdrant"] = "qdrant"
    path: Optional[str] = None
    url: Optional[str] = None
    api_key: Optional[SecretRef] = None
    """A reference (see connectors/secrets.py), resolved where the client is made."""
    collection: str = "documents"
    create_collection: bool = True
    local_durability: Literal["fast", "full"] = "fast"
    """Embedded store only: `fast` = SQLite WAL + synchronous=NORMAL (safe when the pipeline crashes; the
    last writes may be lost on power loss), `full` = one fsync per point (see the module docstring)."""

    @model_validator(mode="after")
    def _one_location(self) -> "QdrantConfig":
        if self.path and self.url:
            raise ValueError("give either --qdrant_path or --qdrant_url, not both")
        if not self.path and not self.url:
            object.__setattr__(self, "path", DEFAULT_PATH)
        return self

    @property
    def sink_type(self) -> str:
        return "qdrant"

    def create_store(self) -> "QdrantStore":
        return QdrantStore(self)

    def run_scope(self) -> contextlib.AbstractContextManager[None]:
        """The embedded store stays open for the whole run (opening one reads every point from disk)."""
        return local_clients_kept_open() if self.path else contextlib.nullcontext()

    def display(self) -> dict[str, Any]:
        return {"sink": self.sink_name, "location": self.path or self.url, "collection": self.collection}


class QdrantStore(VectorStore):
    def __init__(self, config: QdrantConfig) -> None:
        self._config = config
        self._collection = config.collection
        self._state = config.collection + STATE_SUFFIX
        if config.path:
            self._client = _open_local(config.path, config.local_durability == "fast")
        else:
            from qdrant_client import QdrantClient

            key = config.api_key.get_secret_value() if config.api_key else None
            self._client = QdrantClient(url=config.url, api_key=key, timeout=30)

    @property
    def client(self) -> Any:
        return self._client

    def close(self) -> None:
        if self._client is None:
            return
        if self._config.path:
            _release_local(self._config.path)
        else:
            self._client.close()
        self._client = None

    def ensure_ready(self, dimension: int) -> None:
        from qdrant_client import models

        where = self._config.path or self._config.url
        if not self._client.collection_exists(self._collection):
            if not self._config.create_collection:
                raise StoreConfigError(
                    f"Qdrant collection {self._collection!r} does not exist at {where} and auto-create is off")
            self._client.create_collection(
                self._collection, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE))
            if not self._config.path:  # payload indexes are a server feature (no-ops, with a warning, locally)
                for field, schema in (("doc_id", models.PayloadSchemaType.KEYWORD),
                                      ("version", models.PayloadSchemaType.INTEGER)):
                    self._client.create_payload_index(self._collection, field, field_schema=schema)
        else:
            params = self._client.get_collection(self._collection).config.params.vectors
            if not isinstance(params, models.VectorParams):
                raise StoreConfigError(
                    f"Qdrant collection {self._collection!r} uses named vectors; expected one unnamed vector")
            if params.size != dimension:
                raise StoreConfigError(
                    f"dimension mismatch: Qdrant collection {self._collection!r} at {where} holds "
                    f"{params.size}-d vectors but the model produces {dimension}-d vectors; use another "
                    "--collection or the model that filled it")
            if params.distance != models.Distance.COSINE:
                raise StoreConfigError(
                    f"Qdrant collection {self._collection!r} uses {params.distance} distance; expected Cosine")
        if not self._client.collection_exists(self._state):
            self._client.create_collection(self._state, vectors_config={})
        if self._config.path and self._config.local_durability == "fast":
            _use_fast_local_commits(self._client)  # collections created just now
        self._ensure_id_scheme(where)

    def _ensure_id_scheme(self, where: Optional[str]) -> None:
        """The ID scheme is recorded as a reserved payload-only point in the sync-state collection (never a
        chunk, never a search hit): written into a store without data, checked otherwise (see transforms.ids)."""
        from qdrant_client import models

        marker = self._client.retrieve(self._state, ids=[SCHEME_MARKER_UUID], with_payload=True)
        if marker:
            found: Optional[int] = int((marker[0].payload or {}).get("id_scheme", 1))
        elif self.count() or self._client.count(self._state, exact=True).count:
            found = None
        else:
            self._client.upsert(self._state, wait=True, points=[models.PointStruct(
                id=SCHEME_MARKER_UUID, vector={}, payload={"id_scheme": ID_SCHEME})])
            return
        problem = scheme_mismatch(f"Qdrant collection {self._collection!r} at {where}", found,
                                  "another --collection")
        if problem:
            raise StoreConfigError(problem)

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        """Look-ups by ID only (no collection scan): each document's sync-state point gives its version and
        an upper bound of its chunk indexes, then its chunk points are fetched by their deterministic IDs."""
        if not keys:
            return {}
        ledger = self._read_states(keys)
        chunk_ids = [chunk_point_id(doc_id, i, namespace or None)
                     for (namespace, doc_id), state in ledger.items() for i in range(int(state["chunk_bound"]))]
        chunks: dict[DocKey, list[StoredChunk]] = {}
        for record in (self._client.retrieve(self._collection, ids=chunk_ids, with_payload=True, with_vectors=True)
                       if chunk_ids else ()):
            p = record.payload or {}
            chunks.setdefault((p.get("namespace") or "", p.get("doc_id")), []).append(StoredChunk(
                point_id=str(record.id), chunk_index=int(p.get("chunk_index", -1)),
                version=int(p.get("version", -1)), content_hash=p.get("content_hash", ""),
                model=p.get("model", ""), vector=list(record.vector) if record.vector is not None else None,
                chunk_count=int(p.get("chunk_count", 0)), metadata=p.get("metadata") or {}))
        result = {}
        for key, state in ledger.items():
            doc_chunks = tuple(sorted(chunks.get(key, ()), key=lambda c: c.chunk_index))
            versions = [c.version for c in doc_chunks]
            if state.get("op") != _PENDING["op"]:
                versions.append(int(state["version"]))
            result[key] = StoredDocument(version=max(versions, default=None), deleted=state.get("op") == "delete",
                                         chunks=doc_chunks)
        return result

    def _read_states(self, keys: Sequence[DocKey]) -> dict[DocKey, dict[str, Any]]:
        """The sync-state payloads (`version`, `op`, `chunk_bound`) of the documents that have one."""
        states = {}
        ids = [document_point_id(doc_id, namespace or None) for namespace, doc_id in keys]
        for record in self._client.retrieve(self._state, ids=ids, with_payload=True):
            p = record.payload or {}
            states[(p.get("namespace") or "", p["doc_id"])] = p
        return states

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """Crash-safe order: (1) widen each document's chunk-index bound in its sync state (its old version,
        or `pending` for a new document, kept),
        (2) upsert the new chunks, (3) delete the stale ones, (4) record the new version and bound. Whatever
        step a crash interrupts, the next look-up still finds every chunk the document may have."""
        from qdrant_client import models

        current = self._read_states([w.key for w in writes])
        widened = []
        for w in writes:
            before = current.get(w.key)
            bound = max(len(w.records), int(before["chunk_bound"]) if before else 0)
            if before is None or bound > int(before["chunk_bound"]):
                widened.append(self._state_point(w, bound, before or _PENDING))
        if widened:
            self._client.upsert(self._state, points=widened, wait=True)
        points = [models.PointStruct(id=r.point_id, vector=r.vector, payload=r.payload())
                  for w in writes for r in w.records]
        if points:
            self._client.upsert(self._collection, points=points, wait=True)
        stale = [point_id for w in writes for point_id in w.stale_ids]
        if stale:
            self._client.delete(self._collection, points_selector=models.PointIdsList(points=stale), wait=True)
        if self._config.url:  # indexed on a server: also sweep any chunk older than the new version
            for w in writes:
                self._client.delete(self._collection, wait=True, points_selector=models.FilterSelector(
                    filter=self._older_chunks_filter(w)))
        self._client.upsert(self._state, wait=True,
                            points=[self._state_point(w, len(w.records), None) for w in writes])

    @staticmethod
    def _state_point(write: DocumentWrite, bound: int, keep: Optional[dict[str, Any]]) -> Any:
        from qdrant_client import models

        event = write.event
        payload = {"doc_id": event.doc_id, "namespace": event.namespace, "chunk_bound": bound,
                   "version": keep["version"] if keep else event.version, "op": keep["op"] if keep else event.op}
        return models.PointStruct(id=document_point_id(event.doc_id, event.namespace), vector={}, payload=payload)

    @staticmethod
    def _older_chunks_filter(write: DocumentWrite) -> Any:
        from qdrant_client import models

        event = write.event
        must = [models.FieldCondition(key="doc_id", match=models.MatchValue(value=event.doc_id)),
                models.FieldCondition(key="version", range=models.Range(lt=event.version))]
        if event.namespace:
            must.append(models.FieldCondition(key="namespace", match=models.MatchValue(value=event.namespace)))
        else:
            must.append(models.IsNullCondition(is_null=models.PayloadField(key="namespace")))
        return models.Filter(must=must)

    def is_transient(self, error: BaseException) -> bool:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(error, UnexpectedResponse):
            return is_transient_status(error.status_code)
        return isinstance(error, (ResponseHandlingException, TimeoutError, ConnectionError))

    def count(self) -> int:
        return self._client.count(self._collection, exact=True).count
