"""One test target per sink: the command-line arguments that point the pipeline at a fresh store, and the
store's content read back in one shape for every sink: `{(doc_id, namespace, chunk_index): (version, text)}`.
`forget_id_scheme()` removes the store's ID-scheme marker, so it looks like a store written before scheme 2.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import read_points, read_rows
from tests.pinecone_fake import FakePineconeIndex

State = dict[tuple[str, Optional[str], int], tuple[int, str]]
API_KEY = "test-key"


class QdrantTarget:
    name = "qdrant"

    def __init__(self, work: Path) -> None:
        self.path = work / "store"
        self.args = ["--qdrant_path", str(self.path)]

    def state(self) -> State:
        return {(p["doc_id"], p["namespace"], p["chunk_index"]): (p["version"], p["text"])
                for p in read_points(self.path).values()}

    def snapshot(self) -> Any:
        return read_points(self.path)

    def forget_id_scheme(self) -> None:
        from connectors.qdrant import QdrantConfig
        from transforms.ids import SCHEME_MARKER_UUID

        store = QdrantConfig(path=str(self.path)).create_store()
        try:
            store.backend.delete("documents__sync_state", [SCHEME_MARKER_UUID])
        finally:
            store.close()

    def close(self) -> None:
        pass


class PgVectorTarget:
    name = "pgvector"

    def __init__(self, pg_uri: str) -> None:
        self.uri, self.table = pg_uri, f"t_{uuid.uuid4().hex[:10]}"
        self.args = ["--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", self.table]

    def state(self) -> State:
        return {(doc, ns, index): (version, text) for doc, ns, index, version, text in read_rows(
            self.uri, self.table).values()}

    def snapshot(self) -> Any:
        import psycopg

        with psycopg.connect(self.uri) as conn:
            return sorted(conn.execute(psycopg.sql.SQL("SELECT id, version, text, embedding::text FROM {}").format(
                psycopg.sql.Identifier(self.table))).fetchall())

    def forget_id_scheme(self) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("COMMENT ON TABLE {} IS NULL").format(psycopg.sql.Identifier(self.table)))

    def close(self) -> None:
        pass


class PineconeTarget:
    """A fresh fake index (see tests/pinecone_fake.py) behind the real SDK."""

    name = "pinecone"

    def __init__(self, dimension: int = 384) -> None:
        os.environ.setdefault("PINECONE_API_KEY", API_KEY)
        self.index = FakePineconeIndex(dimension, api_key=API_KEY)
        self.args = ["--sink", "pinecone", "--pinecone_index_host", self.index.url]
        self.one_namespace: Optional[str] = None

    def prepare(self) -> None:
        """The index as an earlier run's start leaves it (ID-scheme marker written), so failures scripted
        next hit the run's writes, not its start."""
        from connectors.pinecone import PineconeConfig

        store = PineconeConfig(index_host=self.index.url, namespace=self.one_namespace).create_store()
        try:
            store.ensure_ready(self.index.dimension)
        finally:
            store.close()

    def use_one_namespace(self, name: str) -> None:
        """`--pinecone_namespace name`: every event's vectors in one Pinecone namespace."""
        self.one_namespace = name
        self.args = [*self.args, "--pinecone_namespace", name]

    def state(self) -> State:
        out: State = {}
        for namespace in self.index.namespaces():
            if namespace.endswith("__sync_state"):
                continue
            for _, (_, m) in self.index.vectors(namespace).items():
                assert self.one_namespace == namespace or (
                    self.one_namespace is None and (m.get("namespace") or "") == namespace)
                out[(m["doc_id"], m.get("namespace"), int(m["chunk_index"]))] = (int(m["version"]), m["text"])
        return out

    def snapshot(self) -> Any:
        return {ns: self.index.vectors(ns) for ns in self.index.namespaces()}

    def forget_id_scheme(self) -> None:
        from transforms.ids import SCHEME_MARKER_ID

        self.index.remove((self.one_namespace or "") + "__sync_state", [SCHEME_MARKER_ID])

    def close(self) -> None:
        self.index.close()


class MongoTarget:
    name = "mongodb"

    def __init__(self, server: tuple[str, str, str]) -> None:
        self.uri, self.factory, self.kind = server
        self.database = f"db_{uuid.uuid4().hex[:10]}"
        self.args = ["--sink", "mongodb", "--mongo_uri", self.uri, "--mongo_db", self.database,
                     "--mongo_client_factory", self.factory]

    def collection(self, name: str = "documents") -> Any:
        from connectors.mongodb import load_client_factory

        return load_client_factory(self.factory)(self.uri)[self.database][name]

    def state(self) -> State:
        return {(d["doc_id"], d.get("namespace"), d["chunk_index"]): (d["version"], d["text"])
                for d in self.collection().find()}

    def snapshot(self) -> Any:
        return sorted((str(d["_id"]), d["version"], d["text"], d["embedding"]) for d in self.collection().find())

    def forget_id_scheme(self) -> None:
        from transforms.ids import SCHEME_MARKER_ID

        self.collection("documents__sync_state").delete_one({"_id": SCHEME_MARKER_ID})

    def close(self) -> None:
        pass


@pytest.fixture(params=["qdrant", "pgvector", "pinecone", "mongodb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Every sink, one test each (import this fixture where a test runs against all of them)."""
    if request.param == "qdrant":
        made: Any = QdrantTarget(tmp_path)
    elif request.param == "pgvector":
        made = PgVectorTarget(request.getfixturevalue("pg_uri"))
    elif request.param == "pinecone":
        made = PineconeTarget()
    else:
        made = MongoTarget(request.getfixturevalue("mongo_server"))
    yield made
    made.close()
