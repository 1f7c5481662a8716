"""The embedded Qdrant store on Qdrant Edge (pip `qdrant-edge-py`): Qdrant's own engine in-process, crash-safe
through its write-ahead log. Edge has shards, not collections: each collection is one shard folder under the
store's path (`<path>/<collection>/`, the sync state in `<path>/<collection>__sync_state/`), with the same
points, payloads and IDs as on a server. The chunk shard holds one unnamed (default) cosine vector and
keyword/integer payload indexes on `doc_id` and `version`; a payload-only shard (the sync state) declares
one unused sparse vector, because a shard needs at least one vector.

A shard allows one open handle (its WAL is locked): a second process opening the folder gets
`StoreConfigError` naming it. A folder written by qdrant-client's local mode is refused with the way on
(`python -m pipeline.convert_store`).
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from connectors.base import StoreConfigError
from connectors.qdrant.backends import IdsOrFilter, QdrantBackend, is_client_local_folder, one_writer_message

CONFIG_FILE = "edge_config.json"
PAYLOAD_ONLY_VECTOR = "unused"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def old_format_message(path: str) -> str:
    return (f"{path} was written by qdrant-client's local mode, the embedded store before Qdrant Edge: convert it "
            f"once with `python -m pipeline.convert_store {path} NEW_FOLDER` and run with --qdrant_path "
            "NEW_FOLDER, or keep it with --qdrant_embedded client (README: Embedded store)")


class EdgeBackend(QdrantBackend):
    """One folder of Edge shards; every shard present is opened (and so locked) when the backend is made."""

    filters_indexed = True

    def __init__(self, path: str, flush_each_batch: bool = False) -> None:
        if is_client_local_folder(path):
            raise StoreConfigError(old_format_message(path))
        self.location = path
        self._root = Path(path)
        self._flush_each_batch = flush_each_batch
        self._shards: dict[str, Any] = {}
        self._lock = threading.Lock()
        try:
            for config in sorted(self._root.glob(f"*/{CONFIG_FILE}")):
                self._open(config.parent.name)
        except BaseException:
            self.close()
            raise

    def _folder(self, name: str) -> Path:
        if not _NAME.match(name) or name in (".", ".."):
            raise StoreConfigError(f"Qdrant collection name {name!r} cannot name a folder of the embedded store")
        return self._root / name

    def _open(self, name: str) -> Any:
        from qdrant_edge import EdgeShard

        try:
            shard = EdgeShard.load(str(self._folder(name)))
        except Exception as exc:  # noqa: BLE001 - Edge raises plain Exceptions; a held lock is one we name
            if "WouldBlock" in str(exc):
                raise StoreConfigError(one_writer_message(self.location)) from exc
            raise
        self._shards[name] = shard
        return shard

    def _shard(self, name: str) -> Any:
        shard = self._shards.get(name)
        if shard is None:
            raise StoreConfigError(f"Qdrant collection {name!r} does not exist at {self.location}")
        return shard

    def exists(self, name: str) -> bool:
        return name in self._shards or (self._folder(name) / CONFIG_FILE).is_file()

    def create(self, name: str, dimension: Optional[int]) -> None:
        import qdrant_edge as qe

        if dimension is None:
            config = qe.EdgeConfig(sparse_vectors={PAYLOAD_ONLY_VECTOR: qe.EdgeSparseVectorParams()},
                                   on_disk_payload=True)
        else:
            config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
                                   on_disk_payload=True)
        with self._lock:
            try:
                shard = qe.EdgeShard.create(str(self._folder(name)), config)
            except Exception as exc:  # noqa: BLE001
                if "WouldBlock" in str(exc):
                    raise StoreConfigError(one_writer_message(self.location)) from exc
                raise
            self._shards[name] = shard
        if dimension is not None:
            shard.update(qe.UpdateOperation.create_field_index("doc_id", qe.PayloadSchemaType.Keyword))
            shard.update(qe.UpdateOperation.create_field_index("version", qe.PayloadSchemaType.Integer))

    def vector_params(self, name: str) -> tuple[int, str]:
        vectors = json.loads((self._folder(name) / CONFIG_FILE).read_text(encoding="utf-8")).get("vectors") or {}
        if set(vectors) != {""}:
            raise StoreConfigError(f"Qdrant collection {name!r} uses named vectors; expected one unnamed vector")
        return int(vectors[""]["size"]), str(vectors[""]["distance"])

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Any]:
        return self._shard(name).retrieve(list(ids), with_payload=True, with_vector=with_vectors) if ids else []

    def upsert(self, name: str, points: Sequence[Any], condition: Optional[Any] = None) -> None:
        import qdrant_edge as qe

        edge_points = [qe.Point(p.id, p.vector if p.vector is not None else {}, p.payload) for p in points]
        self._shard(name).update(qe.UpdateOperation.upsert_points(
            edge_points, condition=edge_filter(condition) if condition is not None else None))

    def delete(self, name: str, selector: IdsOrFilter) -> None:
        import qdrant_edge as qe

        operation = (qe.UpdateOperation.delete_points(list(selector)) if isinstance(selector, (list, tuple))
                     else qe.UpdateOperation.delete_points_by_filter(edge_filter(selector)))
        self._shard(name).update(operation)

    def count(self, name: str) -> int:
        import qdrant_edge as qe

        return self._shard(name).count(qe.CountRequest(exact=True))

    def scroll(self, name: str, limit: int, offset: Any, with_vectors: bool) -> tuple[list[Any], Any]:
        import qdrant_edge as qe

        return self._shard(name).scroll(qe.ScrollRequest(offset=offset, limit=limit, with_payload=True,
                                                         with_vector=with_vectors))

    def query(self, name: str, vector: Sequence[float], limit: int, condition: Optional[Any] = None) -> list[Any]:
        import qdrant_edge as qe

        return self._shard(name).query(qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(list(vector)), with_payload=True,
            filter=edge_filter(condition) if condition is not None else None))

    def make_durable(self) -> None:
        if self._flush_each_batch:
            for shard in list(self._shards.values()):
                shard.flush()

    def close(self) -> None:
        with self._lock:
            shards, self._shards = self._shards, {}
        for shard in shards.values():
            shard.close()


def edge_filter(condition: Any) -> Any:
    """A `qdrant_client.models.Filter` (must/should/must_not of field match/range, is-null, has-id and nested
    filters: what the sink uses) as the equivalent `qdrant_edge.Filter`."""
    import qdrant_edge as qe
    from qdrant_client import models

    def one(c: Any) -> Any:
        if isinstance(c, models.Filter):
            return edge_filter(c)
        if isinstance(c, models.IsNullCondition):
            return qe.IsNullCondition(c.is_null.key)
        if isinstance(c, models.HasIdCondition):
            return qe.HasIdCondition({str(i) for i in c.has_id})
        if isinstance(c, models.FieldCondition):
            match = qe.MatchValue(c.match.value) if isinstance(c.match, models.MatchValue) else None
            if c.match is not None and match is None:
                raise ValueError(f"no Edge translation for match {c.match!r}")
            rng = c.range
            return qe.FieldCondition(key=c.key, match=match, range=qe.RangeFloat(
                gte=rng.gte, gt=rng.gt, lte=rng.lte, lt=rng.lt) if rng is not None else None)
        raise ValueError(f"no Edge translation for condition {c!r}")

    def many(conditions: Any) -> Optional[list[Any]]:
        if conditions is None:
            return None
        return [one(c) for c in (conditions if isinstance(conditions, list) else [conditions])]

    return qe.Filter(must=many(condition.must), should=many(condition.should), must_not=many(condition.must_not))
