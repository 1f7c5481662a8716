"""The few storage calls the Qdrant sink makes, behind one small interface, and its qdrant-client
implementation (a server URL, or qdrant-client's local mode on a folder). The Edge implementation is in
`connectors/qdrant/edge.py`. Points and filters are qdrant-client models in every backend.

Collections: the chunk collection holds one unnamed cosine vector per point; a payload-only collection (the
sync state) is made with `dimension=None`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from connectors.base import StoreConfigError

IdsOrFilter = Union[Sequence[str], Any]  # a list of point IDs, or a qdrant_client.models.Filter


class QdrantBackend(ABC):
    """One Qdrant location (a server, or a folder on disk)."""

    location: str
    filters_indexed: bool = False
    """Whether a filter delete is cheap (payload indexes): then older chunks are also swept by filter."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def create(self, name: str, dimension: Optional[int]) -> None:
        """A collection with one unnamed cosine vector of `dimension`, or payload-only when None."""

    @abstractmethod
    def vector_params(self, name: str) -> tuple[int, str]:
        """(size, distance name) of the collection's unnamed vector; `StoreConfigError` for named vectors."""

    @abstractmethod
    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Any]:
        """Records (`id`, `payload`, `vector`) of the IDs present."""

    @abstractmethod
    def upsert(self, name: str, points: Sequence[Any], condition: Optional[Any] = None) -> None:
        """Upsert `models.PointStruct`s, waiting for the write; with `condition` (a `models.Filter`) an existing
        point is replaced only if its stored payload matches it (a new ID is always inserted)."""

    @abstractmethod
    def delete(self, name: str, selector: IdsOrFilter) -> None:
        """Delete by IDs or by `models.Filter`, waiting for the write."""

    @abstractmethod
    def count(self, name: str) -> int: ...

    @abstractmethod
    def scroll(self, name: str, limit: int, offset: Any, with_vectors: bool) -> tuple[list[Any], Any]:
        """One page of records and the next offset (None at the end)."""

    @abstractmethod
    def query(self, name: str, vector: Sequence[float], limit: int, condition: Optional[Any] = None) -> list[Any]:
        """Nearest points (`score`, `payload`), best first; with `condition` (a `models.Filter`) only points
        whose payload matches it."""

    def make_durable(self) -> None:
        """Called after each write batch when `local_durability` is `full`."""

    @abstractmethod
    def close(self) -> None: ...


class ClientBackend(QdrantBackend):
    """qdrant-client: a server (`url`), or its local mode on a folder (`path`): a pure-Python store that holds
    every point in memory and commits through SQLite (`fast`: WAL journal, `synchronous=NORMAL`; `full`: its
    own fsync per point)."""

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, path: Optional[str] = None,
                 fast_commits: bool = True) -> None:
        from qdrant_client import QdrantClient

        self._fast_commits = fast_commits and path is not None
        if path is not None:
            refuse_edge_folder(path)
            Path(path).mkdir(parents=True, exist_ok=True)
            try:
                self.client = QdrantClient(path=path)
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise StoreConfigError(one_writer_message(path)) from exc
                raise
            self.location = path
            self._use_fast_commits()
        else:
            self.client = QdrantClient(url=url, api_key=api_key, timeout=30)
            self.location = str(url)
            self.filters_indexed = True

    def _use_fast_commits(self) -> None:
        """WAL journal and `synchronous=NORMAL` on each local collection's SQLite file. qdrant-client's local
        mode commits once per point, and with its default journal each commit waits for an fsync."""
        if not self._fast_commits:
            return
        collections = getattr(getattr(self.client, "_client", None), "collections", None)
        if not isinstance(collections, dict):
            return
        for collection in collections.values():
            connection = getattr(getattr(collection, "storage", None), "storage", None)
            if connection is not None:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")

    def exists(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def create(self, name: str, dimension: Optional[int]) -> None:
        from qdrant_client import models

        if dimension is None:
            self.client.create_collection(name, vectors_config={})
        else:
            self.client.create_collection(name, vectors_config=models.VectorParams(
                size=dimension, distance=models.Distance.COSINE))
            if self.filters_indexed:  # payload indexes are a server feature (no-ops, with a warning, locally)
                for field, schema in (("doc_id", models.PayloadSchemaType.KEYWORD),
                                      ("version", models.PayloadSchemaType.INTEGER)):
                    self.client.create_payload_index(name, field, field_schema=schema)
        self._use_fast_commits()

    def vector_params(self, name: str) -> tuple[int, str]:
        from qdrant_client import models

        params = self.client.get_collection(name).config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise StoreConfigError(f"Qdrant collection {name!r} uses named vectors; expected one unnamed vector")
        return params.size, str(getattr(params.distance, "value", params.distance))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Any]:
        return self.client.retrieve(name, ids=list(ids), with_payload=True, with_vectors=with_vectors) if ids else []

    def upsert(self, name: str, points: Sequence[Any], condition: Optional[Any] = None) -> None:
        self.client.upsert(name, points=list(points), wait=True, update_filter=condition)

    def delete(self, name: str, selector: IdsOrFilter) -> None:
        from qdrant_client import models

        chosen = (models.PointIdsList(points=list(selector)) if isinstance(selector, (list, tuple))
                  else models.FilterSelector(filter=selector))
        self.client.delete(name, points_selector=chosen, wait=True)

    def count(self, name: str) -> int:
        return self.client.count(name, exact=True).count

    def scroll(self, name: str, limit: int, offset: Any, with_vectors: bool) -> tuple[list[Any], Any]:
        return self.client.scroll(name, limit=limit, offset=offset, with_payload=True, with_vectors=with_vectors)

    def query(self, name: str, vector: Sequence[float], limit: int, condition: Optional[Any] = None) -> list[Any]:
        return self.client.query_points(name, query=list(vector), limit=limit, query_filter=condition,
                                        with_payload=True).points

    def close(self) -> None:
        self.client.close()


def one_writer_message(path: str) -> str:
    return (f"the embedded Qdrant store {path} is open in another process (one writer per folder): wait for "
            "that pipeline or search to finish, or use a Qdrant server (--qdrant_url) for several writers")


def is_client_local_folder(path: str) -> bool:
    """A folder written by qdrant-client's local mode (`meta.json` beside a `collection/` folder)."""
    return (Path(path) / "meta.json").is_file() and (Path(path) / "collection").is_dir()


def refuse_edge_folder(path: str) -> None:
    if any(Path(path).glob("*/edge_config.json")):
        raise StoreConfigError(f"{path} holds a Qdrant Edge store: open it without --qdrant_embedded client, or "
                               "give qdrant-client's local mode another --qdrant_path")
