"""Qdrant sink: one point per chunk (UUIDv5 ID, cosine vector, the shared payload schema) plus one
payload-only point per document in `<collection>__sync_state` holding its last applied version and op.

The sync-state point makes look-ups cheap (by ID, no scan) and a delete leaves a tombstone there, so a late
older upsert is superseded even after a restart. Writes per batch: widen the chunk-index bound, upsert all
chunk points, delete the stale chunk IDs read from the store (where filters are indexed, a server or Qdrant
Edge, also every chunk of the document with an older version), then record each document's version; then
any document whose recorded version turned out newer than the one written (another writer got there first)
has its chunks older than that version swept.

Every write is version-conditional at the store (`update_filter` on a server and in qdrant-client's local
mode, `condition` on Edge): a chunk or sync-state point is replaced, and a stale chunk deleted, only if its
stored `version` is not newer than the one written, so a late older write never replaces a newer one, even
from a second pipeline writing at the same time (a new ID is always inserted; the sweep removes those).

Where it is stored (`connectors/qdrant/backends.py`, `connectors/qdrant/edge.py`): a server (`url`), or a
folder (`path`): Qdrant Edge by default (`embedded: edge`), or qdrant-client's local mode (`embedded:
client`, for LangChain or LlamaIndex opening the same folder in-process). An embedded store is opened once
per folder within a process and shared by every user there; a folder allows one process (one writer).
`local_durability: full` flushes Edge's segments (or, in local mode, fsyncs SQLite per point) after each
batch; `fast` (the default) survives a killed pipeline, and the last writes before a power loss may be lost.
"""
from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Mapping, Optional, Sequence

from pydantic import model_validator

from connectors.base import SearchHit, StoreConfig, StoreConfigError, VectorStore
from connectors.qdrant.backends import ClientBackend, QdrantBackend
from connectors.secrets import SecretRef
from transforms.defaults import DEFAULT_QDRANT_PATH
from transforms.ids import ID_SCHEME, SCHEME_MARKER_UUID, chunk_point_id, document_point_id, scheme_mismatch
from transforms.layouts import chunk_payload, event_metadata, metadata_path, payload_text
from transforms.retry import is_transient_status
from transforms.types import DocKey, DocumentWrite, StoredChunk, StoredDocument

DEFAULT_PATH = DEFAULT_QDRANT_PATH
STATE_SUFFIX = "__sync_state"
_PENDING = {"version": -1, "op": "pending"}  # the state of a document whose first write has not finished

_local_lock = threading.Lock()
_local_backends: dict[str, list[Any]] = {}  # resolved path -> [backend, users, embedded kind]
_keep_open = 0  # > 0 while a `local_clients_kept_open()` block runs


def _open_local(config: "QdrantConfig") -> QdrantBackend:
    key = str(Path(config.path or DEFAULT_PATH).resolve())
    with _local_lock:
        entry = _local_backends.get(key)
        if entry is not None and entry[2] != config.embedded:
            raise StoreConfigError(f"{key} is already open in this process as --qdrant_embedded {entry[2]}")
        if entry is None:
            full = config.local_durability == "full"
            if config.embedded == "edge":
                from connectors.qdrant.edge import EdgeBackend

                backend: QdrantBackend = EdgeBackend(key, flush_each_batch=full)
            else:
                backend = ClientBackend(path=key, fast_commits=not full)
            entry = _local_backends[key] = [backend, 0, config.embedded]
        entry[1] += 1
        return entry[0]


def _release_local(path: str) -> None:
    key = str(Path(path).resolve())
    with _local_lock:
        entry = _local_backends.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0 and not _keep_open:
            del _local_backends[key]
            entry[0].close()


@contextlib.contextmanager
def local_clients_kept_open() -> Iterator[None]:
    """Within the block, an embedded store stays open between users (opening one reads its files); on leaving
    it, unused ones are closed so other processes can open the folder."""
    global _keep_open
    with _local_lock:
        _keep_open += 1
    try:
        yield
    finally:
        with _local_lock:
            _keep_open -= 1
            if not _keep_open:
                for key, entry in list(_local_backends.items()):
                    if entry[1] <= 0:
                        del _local_backends[key]
                        entry[0].close()


class QdrantConfig(StoreConfig):
    """`path` (embedded store on disk) or `url` (a Qdrant server); `collection` is created on start with
    the model's dimension and cosine distance unless `create_collection` is off."""

    layouts: ClassVar[tuple[str, ...]] = ("native", "langchain", "llamaindex")

    type: Literal["qdrant"] = "qdrant"
    path: Optional[str] = None
    url: Optional[str] = None
    api_key: Optional[SecretRef] = None
    """A reference (see connectors/secrets.py), resolved where the client is made."""
    collection: str = "documents"
    create_collection: bool = True
    embedded: Literal["edge", "client"] = "edge"
    """Embedded store only: `edge` = Qdrant Edge (the Qdrant engine in-process), `client` = qdrant-client's
    local mode (pure Python; for LangChain or LlamaIndex opening the folder in-process)."""
    local_durability: Literal["fast", "full"] = "fast"
    """Embedded store only: `fast` survives a killed pipeline (Edge's WAL; local mode: SQLite WAL with
    synchronous=NORMAL), the last writes may be lost on power loss; `full` flushes to disk after each batch
    (local mode: an fsync per point)."""

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
        """The embedded store stays open for the whole run (one open per folder per process)."""
        return local_clients_kept_open() if self.path else contextlib.nullcontext()

    def display(self) -> dict[str, Any]:
        shown = {"sink": self.sink_name, "location": self.path or self.url, "collection": self.collection}
        return {**shown, "embedded": self.embedded} if self.path else shown


class QdrantStore(VectorStore):
    def __init__(self, config: QdrantConfig) -> None:
        self._config = config
        self._collection = config.collection
        self._state = config.collection + STATE_SUFFIX
        if config.path:
            self._backend: Optional[QdrantBackend] = _open_local(config)
        else:
            key = config.api_key.get_secret_value() if config.api_key else None
            self._backend = ClientBackend(url=config.url, api_key=key)

    @property
    def backend(self) -> QdrantBackend:
        assert self._backend is not None, "store closed"
        return self._backend

    def close(self) -> None:
        if self._backend is None:
            return
        if self._config.path:
            _release_local(self._config.path)
        else:
            self._backend.close()
        self._backend = None

    def ensure_ready(self, dimension: int) -> None:
        where = self.backend.location
        if not self.backend.exists(self._collection):
            if not self._config.create_collection:
                raise StoreConfigError(
                    f"Qdrant collection {self._collection!r} does not exist at {where} and auto-create is off")
            self.backend.create(self._collection, dimension)
        else:
            size, distance = self.backend.vector_params(self._collection)
            if size != dimension:
                raise StoreConfigError(
                    f"dimension mismatch: Qdrant collection {self._collection!r} at {where} holds "
                    f"{size}-d vectors but the model produces {dimension}-d vectors; use another "
                    "--collection or the model that filled it")
            if distance != "Cosine":
                raise StoreConfigError(
                    f"Qdrant collection {self._collection!r} uses {distance} distance; expected Cosine")
        if not self.backend.exists(self._state):
            self.backend.create(self._state, None)
        self._ensure_id_scheme(where)

    def _ensure_id_scheme(self, where: Optional[str]) -> None:
        """The ID scheme is recorded as a reserved payload-only point in the sync-state collection (never a
        chunk, never a search hit): written into a store without data, checked otherwise (see transforms.ids)."""
        marker = self.backend.retrieve(self._state, [SCHEME_MARKER_UUID])
        if marker:
            found: Optional[int] = int((marker[0].payload or {}).get("id_scheme", 1))
        elif self.count() or self.backend.count(self._state):
            found = None
        else:
            from qdrant_client import models  # imports in seconds: only for a store without data

            self.backend.upsert(self._state, [models.PointStruct(
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
        for record in self.backend.retrieve(self._collection, chunk_ids, with_vectors=True):
            p = record.payload or {}
            chunks.setdefault((p.get("namespace") or "", p.get("doc_id")), []).append(StoredChunk(
                point_id=str(record.id), chunk_index=int(p.get("chunk_index", -1)),
                version=int(p.get("version", -1)), content_hash=p.get("content_hash", ""),
                model=p.get("model", ""), vector=list(record.vector) if record.vector is not None else None,
                chunk_count=int(p.get("chunk_count", 0)), metadata=event_metadata(p, self._config.payload_layout)))
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
        for record in self.backend.retrieve(self._state, ids):
            p = record.payload or {}
            states[(p.get("namespace") or "", p["doc_id"])] = p
        return states

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """Crash-safe order: (1) widen each document's chunk-index bound in its sync state (its old version,
        or `pending` for a new document, kept),
        (2) upsert the new chunks, (3) delete the stale ones, (4) record the new version and bound. Whatever
        step a crash interrupts, the next look-up still finds every chunk the document may have. Every step
        is conditional on the stored version (module docstring); (5) a document whose recorded version is
        newer than the one written has its older chunks swept."""
        from qdrant_client import models

        backend = self.backend
        current = self._read_states([w.key for w in writes])
        widened = []
        for w in writes:
            before = current.get(w.key)
            bound = max(len(w.records), int(before["chunk_bound"]) if before else 0)
            if before is None or bound > int(before["chunk_bound"]):
                widened.append(self._state_point(w, bound, before or _PENDING))
        if widened:
            backend.upsert(self._state, widened, condition=_not_newer(widened))
        layout = self._config.payload_layout
        points = [models.PointStruct(id=r.point_id, vector=r.vector, payload=chunk_payload(r, layout))
                  for w in writes for r in w.records]
        if points:
            backend.upsert(self._collection, points, condition=_not_newer(points))
        doomed = [models.Filter(must=[models.HasIdCondition(has_id=list(w.stale_ids)), _version_at_most(w)])
                  for w in writes if w.stale_ids]
        if backend.filters_indexed:  # cheap by filter: also sweep any chunk older than the new version
            doomed += [_chunks_of(w.event.doc_id, w.event.namespace, w.event.version) for w in writes]
        if doomed:
            backend.delete(self._collection, models.Filter(should=doomed))
        recorded = [self._state_point(w, len(w.records), None) for w in writes]
        backend.upsert(self._state, recorded, condition=_not_newer(recorded))
        written: dict[DocKey, int] = {}
        for w in writes:
            written[w.key] = max(w.event.version, written.get(w.key, w.event.version))
        newer = [(key, int(state["version"])) for key, state in self._read_states(list(written)).items()
                 if int(state["version"]) > written[key]]
        if newer:  # another writer recorded a newer version: remove what this one inserted beside it
            backend.delete(self._collection, models.Filter(should=[
                _chunks_of(doc_id, namespace or None, version) for (namespace, doc_id), version in newer]))
        backend.make_durable()

    @staticmethod
    def _state_point(write: DocumentWrite, bound: int, keep: Optional[dict[str, Any]]) -> Any:
        from qdrant_client import models

        event = write.event
        payload = {"doc_id": event.doc_id, "namespace": event.namespace, "chunk_bound": bound,
                   "version": keep["version"] if keep else event.version, "op": keep["op"] if keep else event.op}
        return models.PointStruct(id=document_point_id(event.doc_id, event.namespace), vector={}, payload=payload)

    def is_transient(self, error: BaseException) -> bool:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(error, UnexpectedResponse):
            return is_transient_status(error.status_code)
        return isinstance(error, (ResponseHandlingException, TimeoutError, ConnectionError))

    def count(self) -> int:
        return self.backend.count(self._collection)

    def has_collection(self) -> bool:
        return self.backend.exists(self._collection)

    def nearest(self, vector: Sequence[float], limit: int, metadata: Optional[Mapping[str, Any]] = None,
                namespace: Optional[str] = None) -> list[SearchHit]:
        """A filtered query on the chunk collection (the sync state is another collection: never a hit)."""
        from qdrant_client import models

        layout = self._config.payload_layout
        try:
            must: list[Any] = [_field_is(metadata_path(key, layout), value) for key, value in (metadata or {}).items()]
        except ValueError as exc:
            raise StoreConfigError(str(exc)) from exc
        if namespace is not None:
            must.append(_field_is("namespace", namespace))
        points = self.backend.query(self._collection, vector, limit, models.Filter(must=must) if must else None)
        return [SearchHit(score=float(p.score), doc_id=str(payload.get("doc_id")), namespace=payload.get("namespace"),
                          chunk_index=int(payload.get("chunk_index", -1)), version=int(payload.get("version", -1)),
                          text=payload_text(payload), metadata=event_metadata(payload, layout))
                for p in points for payload in [p.payload or {}]]

    def scroll_points(self, sync_state: bool = False, with_vectors: bool = True) -> Iterator[Any]:
        """Every point of the chunk collection (or of the sync-state one), in pages: records with `id`,
        `payload` and `vector`."""
        name = self._state if sync_state else self._collection
        offset = None
        while True:
            records, offset = self.backend.scroll(name, 1000, offset, with_vectors)
            yield from records
            if offset is None:
                return


def _version_range(lt: Optional[int] = None, lte: Optional[int] = None) -> Any:
    """`version < lt` / `version <= lte` as a Qdrant range, whose bounds are doubles: a version above 2**53
    (a file's mtime in ns) is rounded towards the side that keeps the test safe (`lt` down: never matches a
    version >= lt; `lte` up: always matches a version <= lte), whether the engine compares in floats or
    converts the bound to an integer. Exact for versions up to 2**53."""
    from qdrant_client import models

    def bound(value: Optional[int], towards: float) -> Optional[float]:
        if value is None:
            return None
        rounded = float(value)
        return math.nextafter(rounded, towards) if (rounded > value if towards < 0 else rounded < value) else rounded

    return models.FieldCondition(key="version", range=models.Range(lt=bound(lt, -math.inf),
                                                                   lte=bound(lte, math.inf)))


def _field_is(key: str, value: Any) -> Any:
    """`key == value`: a keyword, integer or boolean match; a float as the range [value, value]."""
    from qdrant_client import models

    if isinstance(value, float):
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _version_at_most(write: DocumentWrite) -> Any:
    return _version_range(lte=write.event.version)


def _not_newer(points: Sequence[Any]) -> Any:
    """The upsert condition: an existing point is replaced only if its stored version is at most the written
    one (points grouped by the version they carry; each ID matches only its own group)."""
    from qdrant_client import models

    groups: dict[int, list[str]] = {}
    for p in points:
        groups.setdefault(int(p.payload["version"]), []).append(str(p.id))
    return models.Filter(should=[models.Filter(must=[models.HasIdCondition(has_id=ids), _version_range(lte=version)])
                                 for version, ids in groups.items()])


def _chunks_of(doc_id: str, namespace: Optional[str], older_than: int) -> Any:
    """The document's chunks with a version below `older_than`."""
    from qdrant_client import models

    must: list[Any] = [models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id)),
                       _version_range(lt=older_than)]
    if namespace:
        must.append(models.FieldCondition(key="namespace", match=models.MatchValue(value=namespace)))
    else:
        must.append(models.IsNullCondition(is_null=models.PayloadField(key="namespace")))
    return models.Filter(must=must)
