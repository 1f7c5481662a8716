"""PostgreSQL + pgvector sink: one row per chunk in `<table>` (the shared record schema, `embedding
vector(d)`, an HNSW cosine index and a `(namespace, doc_id)` index) and one row per document in
`<table>__sync_state` (last applied version and op; a delete leaves a tombstone).

Each batch is one transaction: rows are upserted with `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE
stored.version <= new.version`, so a write never replaces a newer version; then every chunk of the
document with an older version (stale, or deleted) is removed by filter; then the sync state is recorded.
Identifiers are quoted by psycopg's `sql.Identifier`, values are always bound parameters; the table name is
taken literally (capitals, dots and quotes included; it lives in the connection's first `search_path` schema)
and is at most 48 bytes, so the state table and index names derived from it stay under Postgres' 63-byte
limit. The empty string stands for "no namespace" in both tables.

With `payload_layout: llamaindex` the sink also keeps a view `data_<table>` (lower-cased, as LlamaIndex names
it) in the shape LlamaIndex's `PGVectorStore(table_name=<table>)` reads: `id` (bigint from the chunk UUID),
`node_id`, `text`, `embedding` and `metadata_` (the event metadata flat, plus `_node_content`: the chunk as a
`TextNode` whose SOURCE is the doc_id, `_node_type`, `doc_id`, `document_id`, `ref_doc_id`). The rows stay in
the native table: LangChain's `PGVectorStore` reads that one by naming its columns (README).

Connections: made on first use and made again after one breaks (a restarted server, a killed backend), so
the sink's retries carry a write across a server restart. Connecting is bounded by `connect_timeout_s`; each
read or write (one transaction) by `timeout_s`: the server cancels a longer statement (`statement_timeout`)
and the client cuts a connection that has not answered by then (a stopped server); both are transient
errors. TCP keepalives find a connection whose server vanished while idle. Error messages never show the
DSN's password.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from typing import Any, ClassVar, Iterator, Literal, Mapping, Optional, Sequence

from pydantic import Field, field_validator

from connectors.base import SearchHit, StoreConfig, StoreConfigError, VectorStore
from connectors.secrets import SecretRef
from transforms.ids import scheme_comment, scheme_in_comment, scheme_mismatch
from transforms.types import DocKey, DocumentWrite, StoredChunk, StoredDocument

STATE_SUFFIX = "__sync_state"
INDEX_SUFFIXES = ("_embedding_hnsw", "_doc_idx")
MAX_IDENTIFIER_BYTES = 63  # Postgres truncates longer names (NAMEDATALEN - 1)
MAX_TABLE_BYTES = MAX_IDENTIFIER_BYTES - max(len(s) for s in (STATE_SUFFIX, *INDEX_SUFFIXES))
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}


def _require_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - in requirements.txt
        raise ImportError("the pgvector sink needs: pip install 'psycopg[binary]' pgvector") from exc
    return psycopg


def _as_floats(value: Any) -> Optional[list[float]]:
    """A pgvector value (a `Vector`, a numpy array or a list) as a list of floats."""
    if value is None:
        return None
    if hasattr(value, "to_list"):
        value = value.to_list()
    return [float(x) for x in value]


class PgVectorConfig(StoreConfig):
    """`dsn` (libpq URI or key/value string; the password may be in `PGPASSWORD`), `table` created on
    start unless `create_table` is off; `connect_timeout_s` bounds a connection attempt and `timeout_s` each
    read or write (DSN settings such as `connect_timeout` or `keepalives_idle` take precedence)."""

    layouts: ClassVar[tuple[str, ...]] = ("native", "llamaindex")

    type: Literal["pgvector"] = "pgvector"
    dsn: SecretRef
    """A reference (`env:NAME`, `file:PATH`, `gcp-secret:...`; see connectors/secrets.py), resolved where the
    connection is made."""
    table: str = "documents"
    create_table: bool = True
    connect_timeout_s: int = Field(default=10, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("table")
    @classmethod
    def _table_fits(cls, table: str) -> str:
        if not table or "\x00" in table:
            raise ValueError("--pg_table must be a non-empty name without NUL characters")
        size = len(table.encode("utf-8"))
        if size > MAX_TABLE_BYTES:
            raise ValueError(f"--pg_table {table[:20]!r}... is {size} bytes; at most {MAX_TABLE_BYTES} are allowed "
                             f"(Postgres cuts names at {MAX_IDENTIFIER_BYTES} bytes, and the sync-state table and "
                             f"indexes add up to {MAX_IDENTIFIER_BYTES - MAX_TABLE_BYTES})")
        return table

    @property
    def sink_type(self) -> str:
        return "pgvector"

    def create_store(self) -> "PgVectorStore":
        return PgVectorStore(self)

    def display(self) -> dict[str, Any]:
        return {"sink": self.sink_name, "table": self.table}


def dsn_settings(dsn: str) -> dict[str, Any]:
    """The DSN's settings; a DSN libpq cannot parse is a `StoreConfigError` that does not quote it (the
    parser's message would show the password)."""
    psycopg = _require_psycopg()
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise StoreConfigError("the pgvector DSN (--pg_dsn) is not a valid PostgreSQL connection string: give a "
                               "postgresql://user@host:port/db URI or key=value pairs (not shown: it may hold a "
                               "password)") from None


def without_secrets(message: str, dsn: str, settings: dict[str, Any]) -> str:
    """`message` with the DSN and its password (when it shows up) replaced by `***`."""
    for secret in (dsn, settings.get("password")):
        if secret:
            message = message.replace(str(secret), "***")
    return message


def _cut(conn: Any) -> None:
    """Shuts the connection's socket down (from another thread): a call waiting on a server that does not
    answer returns at once with a connection error."""
    try:
        fd = os.dup(conn.fileno())
    except Exception:  # noqa: BLE001 - already closed
        return
    with socket.socket(fileno=fd) as sock:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class PgVectorStore(VectorStore):
    def __init__(self, config: PgVectorConfig) -> None:
        psycopg = _require_psycopg()
        self._config = config
        self._dsn = config.dsn.get_secret_value()
        self._settings = dsn_settings(self._dsn)
        self._psycopg = psycopg
        self._conn: Any = None
        self._has_vector = False
        self._sql = psycopg.sql
        self._table = psycopg.sql.Identifier(config.table)
        self._state = psycopg.sql.Identifier(config.table + STATE_SUFFIX)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _connection(self, with_vector: bool) -> Any:
        """The open connection, or a new one when there is none or it broke; `with_vector`: pgvector's types
        registered on it (the extension must exist). Setting it up is bounded like a call."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.close()
        if self._conn is None:
            defaults = {"connect_timeout": str(self._config.connect_timeout_s), **KEEPALIVES,
                        "tcp_user_timeout": str(int(self._config.timeout_s * 1000))}
            extra = {k: v for k, v in defaults.items() if k not in self._settings}
            try:
                conn = self._psycopg.connect(self._dsn, autocommit=False, **extra)
            except self._psycopg.Error as exc:
                raise type(exc)(without_secrets(str(exc), self._dsn, self._settings)) from None
            self._conn, self._has_vector = conn, False
            with self._deadline(conn):
                conn.execute("SELECT set_config('statement_timeout', %s, false)",
                             (f"{int(self._config.timeout_s * 1000)}ms",))
                conn.commit()
        if with_vector and not self._has_vector:
            from pgvector.psycopg import register_vector

            with self._deadline(self._conn):
                register_vector(self._conn)
                self._conn.commit()
            self._has_vector = True
        return self._conn

    @contextlib.contextmanager
    def _deadline(self, conn: Any) -> Iterator[None]:
        """Cuts `conn` if the block has not finished after `timeout_s`; drops it when it broke (the next call
        reconnects)."""
        watchdog = threading.Timer(self._config.timeout_s, _cut, (conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()
            if conn is self._conn and (conn.closed or conn.broken):
                self.close()

    @contextlib.contextmanager
    def _transaction(self, with_vector: bool = True) -> Iterator[Any]:
        """A cursor in one transaction on a working connection, bounded by `timeout_s`."""
        conn = self._connection(with_vector)
        with self._deadline(conn), conn.transaction(), conn.cursor() as cur:
            yield cur

    def _q(self, template: str) -> Any:
        return self._sql.SQL(template).format(
            table=self._table, state=self._state,
            hnsw=self._sql.Identifier(self._config.table + "_embedding_hnsw"),
            doc_idx=self._sql.Identifier(self._config.table + "_doc_idx"))

    def ensure_ready(self, dimension: int) -> None:
        try:
            self._ensure_ready(dimension)
        except self._psycopg.OperationalError as exc:
            raise StoreConfigError(f"cannot use PostgreSQL for the pgvector sink: {exc}".splitlines()[0]) from exc

    def _ensure_ready(self, dimension: int) -> None:
        with self._transaction(with_vector=False) as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute("SELECT to_regclass(quote_ident(%s))", (self._config.table,))
            exists = cur.fetchone()[0] is not None
            if not exists and not self._config.create_table:
                raise StoreConfigError(f"pgvector table {self._config.table!r} does not exist and auto-create is off")
            if not exists:
                cur.execute(self._q(
                    "CREATE TABLE {table} (id uuid PRIMARY KEY, doc_id text NOT NULL, namespace text NOT NULL, "
                    "chunk_index integer NOT NULL, chunk_count integer NOT NULL, version bigint NOT NULL, "
                    "text text NOT NULL, content_hash text NOT NULL, model text NOT NULL, metadata jsonb NOT NULL, "
                    "embedding vector(" + str(int(dimension)) + ") NOT NULL)"))
                cur.execute(self._q("CREATE INDEX IF NOT EXISTS {hnsw} ON {table} "
                                    "USING hnsw (embedding vector_cosine_ops)"))
                cur.execute(self._q("CREATE INDEX IF NOT EXISTS {doc_idx} ON {table} (namespace, doc_id)"))
            cur.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s)) "
                        "AND attname = 'embedding'", (self._config.table,))
            row = cur.fetchone()
            if row is None:
                raise StoreConfigError(f"pgvector table {self._config.table!r} has no 'embedding' column")
            if row[0] != dimension:
                raise StoreConfigError(
                    f"dimension mismatch: pgvector table {self._config.table!r} holds {row[0]}-d vectors but the "
                    f"model produces {dimension}-d vectors; use another --pg_table or the model that filled it")
            cur.execute(self._q(
                "CREATE TABLE IF NOT EXISTS {state} (namespace text NOT NULL, doc_id text NOT NULL, "
                "version bigint NOT NULL, op text NOT NULL, PRIMARY KEY (namespace, doc_id))"))
            self._ensure_id_scheme(cur)
            if self._config.payload_layout == "llamaindex":
                self._ensure_llamaindex_view(cur)

    def _ensure_id_scheme(self, cur: Any) -> None:
        """The ID scheme is recorded as the chunk table's COMMENT (`beam-vector-sync id_scheme=2`): set on a
        table without rows, checked otherwise (see transforms.ids)."""
        cur.execute("SELECT obj_description(%s::regclass, 'pg_class')", (self._table.as_string(cur),))
        found = scheme_in_comment(cur.fetchone()[0])
        if found is None:
            cur.execute(self._q("SELECT EXISTS (SELECT 1 FROM {table}) OR EXISTS (SELECT 1 FROM {state})"))
            if not cur.fetchone()[0]:
                cur.execute(self._sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    self._table, self._sql.Literal(scheme_comment())))
                return
        problem = scheme_mismatch(f"pgvector table {self._config.table!r}", found, "another --pg_table")
        if problem:
            raise StoreConfigError(problem)

    def _ensure_llamaindex_view(self, cur: Any) -> None:
        """`data_<table>` as LlamaIndex's PGVectorStore reads it (module docstring); replaced on every start."""
        node = ("jsonb_build_object('id_', t.id::text, 'embedding', NULL, 'metadata', t.metadata, "
                "'excluded_embed_metadata_keys', '[]'::jsonb, 'excluded_llm_metadata_keys', '[]'::jsonb, "
                "'relationships', jsonb_build_object('1', jsonb_build_object('node_id', t.doc_id, 'node_type', '4', "
                "'metadata', '{{}}'::jsonb, 'hash', NULL, 'class_name', 'RelatedNodeInfo')), "
                "'metadata_template', {key_template}, 'metadata_separator', {newline}, 'text', '', "
                "'mimetype', 'text/plain', 'start_char_idx', NULL, 'end_char_idx', NULL, "
                "'text_template', {text_template}, 'class_name', 'TextNode')::text")
        cur.execute(self._sql.SQL(
            "CREATE OR REPLACE VIEW {view} AS SELECT "
            "('x' || left(replace(t.id::text, '-', ''), 15))::bit(60)::bigint AS id, t.id::text AS node_id, "
            "t.text, t.embedding, t.metadata || jsonb_build_object('_node_content', " + node + ", "
            "'_node_type', 'TextNode', 'doc_id', t.doc_id, 'document_id', t.doc_id, 'ref_doc_id', t.doc_id) "
            "AS metadata_ FROM {table} t").format(
            view=self._sql.Identifier("data_" + self._config.table.lower()), table=self._table,
            key_template=self._sql.Literal("{key}: {value}"), newline=self._sql.Literal("\n"),
            text_template=self._sql.Literal("{metadata_str}\n\n{content}")))

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        if not keys:
            return {}
        namespaces = [k[0] for k in keys]
        doc_ids = [k[1] for k in keys]
        with self._transaction() as cur:
            cur.execute(self._q("SELECT s.namespace, s.doc_id, s.version, s.op FROM {state} s "
                                "JOIN unnest(%s::text[], %s::text[]) AS k(namespace, doc_id) "
                                "USING (namespace, doc_id)"), (namespaces, doc_ids))
            states = {(ns, doc): (version, op) for ns, doc, version, op in cur.fetchall()}
            cur.execute(self._q("SELECT t.namespace, t.doc_id, t.id, t.chunk_index, t.version, t.content_hash, "
                                "t.model, t.embedding, t.chunk_count, t.metadata FROM {table} t "
                                "JOIN unnest(%s::text[], %s::text[]) AS k(namespace, doc_id) "
                                "USING (namespace, doc_id)"), (namespaces, doc_ids))
            chunks: dict[DocKey, list[StoredChunk]] = {}
            for ns, doc, pid, index, version, chash, model, emb, count, meta in cur.fetchall():
                chunks.setdefault((ns, doc), []).append(StoredChunk(
                    str(pid), index, version, chash, model, _as_floats(emb),
                    chunk_count=count, metadata=meta or {}))
        return {key: StoredDocument.assemble(chunks.get(key, ()), *states.get(key, ()))
                for key in set(states) | set(chunks)}

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        import numpy as np

        rows = [(r.point_id, r.doc_id, r.namespace or "", r.chunk_index, r.chunk_count, r.version, r.text,
                 r.content_hash, r.model, json.dumps(r.metadata), np.asarray(r.vector, dtype=np.float32))
                for w in writes for r in w.records]
        with self._transaction() as cur:
            if rows:
                cur.executemany(self._q(
                    "INSERT INTO {table} AS t (id, doc_id, namespace, chunk_index, chunk_count, version, text, "
                    "content_hash, model, metadata, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET doc_id = EXCLUDED.doc_id, namespace = EXCLUDED.namespace, "
                    "chunk_index = EXCLUDED.chunk_index, chunk_count = EXCLUDED.chunk_count, "
                    "version = EXCLUDED.version, text = EXCLUDED.text, content_hash = EXCLUDED.content_hash, "
                    "model = EXCLUDED.model, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding "
                    "WHERE t.version <= EXCLUDED.version"), rows)
            cur.execute(self._q(
                "DELETE FROM {table} t USING unnest(%s::text[], %s::text[], %s::bigint[]) AS k(namespace, doc_id, "
                "version) WHERE t.namespace = k.namespace AND t.doc_id = k.doc_id AND t.version < k.version"),
                ([w.event.namespace or "" for w in writes], [w.event.doc_id for w in writes],
                 [w.event.version for w in writes]))
            stale = [pid for w in writes for pid in w.stale_ids]
            if stale:
                cur.execute(self._q("DELETE FROM {table} t USING unnest(%s::uuid[], %s::bigint[]) AS k(id, version) "
                                    "WHERE t.id = k.id AND t.version <= k.version"),
                            (stale, [w.event.version for w in writes for _ in w.stale_ids]))
            cur.executemany(self._q(
                "INSERT INTO {state} AS s (namespace, doc_id, version, op) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (namespace, doc_id) DO UPDATE SET version = EXCLUDED.version, op = EXCLUDED.op "
                "WHERE s.version <= EXCLUDED.version"),
                [(w.event.namespace or "", w.event.doc_id, w.event.version, w.event.op) for w in writes])

    def is_transient(self, error: BaseException) -> bool:
        psycopg = _require_psycopg()
        return isinstance(error, (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                                  psycopg.errors.DeadlockDetected, TimeoutError, ConnectionError))

    def count(self) -> int:
        with self._transaction() as cur:
            cur.execute(self._q("SELECT count(*) FROM {table}"))
            return int(cur.fetchone()[0])

    def nearest(self, vector: Sequence[float], limit: int, metadata: Optional[Mapping[str, Any]] = None,
                namespace: Optional[str] = None) -> list[SearchHit]:
        """`ORDER BY embedding <=> query` (the HNSW cosine index; with pgvector >= 0.8 an iterative scan, so a
        selective filter still fills `limit`), the metadata filter as JSONB containment (`metadata @> {...}`),
        the namespace as an equality; score = 1 - cosine distance."""
        import numpy as np

        query = np.asarray(vector, dtype=np.float32)
        where, params = ["t.metadata @> %s::jsonb"], [json.dumps(dict(metadata or {}))]
        if namespace is not None:
            where.append("t.namespace = %s")
            params.append(namespace)
        with self._transaction() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            version = tuple(int(part) for part in str(cur.fetchone()[0]).split(".")[:2] if part.isdigit())
            if version >= (0, 8):  # keep scanning the HNSW graph until `limit` rows pass the filter
                cur.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            cur.execute(self._q(
                "SELECT 1 - (t.embedding <=> %s) AS score, t.doc_id, t.namespace, t.chunk_index, t.version, t.text, "
                "t.metadata FROM {table} t WHERE " + " AND ".join(where) + " ORDER BY t.embedding <=> %s LIMIT %s"),
                [query, *params, query, int(limit)])
            return [SearchHit(score=float(score), doc_id=doc, namespace=ns or None, chunk_index=index, version=version,
                              text=text, metadata=meta or {})
                    for score, doc, ns, index, version, text, meta in cur.fetchall()]
