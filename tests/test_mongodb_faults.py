"""The MongoDB sink survives its server going away: pymongo reconnects on its own, and a stopped server
costs about `timeout_ms` (pymongo's monitor, whose socket timeout is connectTimeoutMS, finds the server gone
and cancels the operation; `socket_timeout_ms` is the backstop), not forever. Runs its own mongoeco wire server (the stand-in for MongoDB here)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from connectors.mongodb import MongoConfig, MongoStore
from tests.conftest import MONGOECO_PYTHON, REPO, free_port, stop_process_group
from transforms.retry import RetryPolicy, call_with_retries
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

RETRY = RetryPolicy(max_attempts=10, initial_backoff_s=0.2, max_backoff_s=1.0)


class MongoServer:
    """A mongoeco server on a fixed port, which a test may kill and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.proc: Any = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([str(MONGOECO_PYTHON), str(REPO / "tests" / "mongoeco_server.py"),
                                      str(self.port)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line

    def stop(self) -> None:
        stop_process_group(self.proc)


@pytest.fixture
def server() -> Iterator[MongoServer]:
    if not MONGOECO_PYTHON.exists():
        pytest.skip("no mongoeco venv (make test makes it with Python 3.13)")
    mongo = MongoServer()
    try:
        yield mongo
    finally:
        os.killpg(mongo.proc.pid, signal.SIGCONT)
        mongo.stop()


def one_write(version: int) -> DocumentWrite:
    event = ChangeEvent(doc_id="d", op="upsert", version=version, text=f"v{version}")
    record = ChunkRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, "d#0")), "d", None, 0, 1, version, event.text, "h", "m",
                         {}, [0.1, 0.2, 0.3])
    return DocumentWrite(event, (record,), ())


def write_with_retries(store: MongoStore, write: DocumentWrite) -> int:
    return call_with_retries(lambda: store.write_documents([write]), store.is_transient, RETRY)[1]


def test_the_mongodb_client_reconnects_after_its_server_restarts(server: MongoServer):
    store = MongoConfig(uri=server.uri, timeout_ms=1000).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([one_write(1)])
        server.stop()
        server.start()  # an in-memory server: it comes back empty, but the same client must reach it again
        write_with_retries(store, one_write(2))
        assert store.read_documents([("", "d")])[("", "d")].version == 2
    finally:
        store.close()


def test_a_stopped_mongodb_costs_the_timeout_then_the_retry_succeeds(server: MongoServer):
    store = MongoConfig(uri=server.uri, timeout_ms=1000, socket_timeout_ms=2000).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([one_write(1)])
        os.killpg(server.proc.pid, signal.SIGSTOP)
        outcome: dict[str, Any] = {}

        def attempt() -> None:
            started = time.monotonic()
            try:
                store.write_documents([one_write(2)])
                outcome["error"] = None
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout=15)
        os.killpg(server.proc.pid, signal.SIGCONT)
        worker.join(timeout=15)
        assert "seconds" in outcome and outcome["seconds"] < 6, "the write waited on a stopped server"
        assert outcome["error"] is not None and store.is_transient(outcome["error"])
        write_with_retries(store, one_write(3))
        assert store.read_documents([("", "d")])[("", "d")].version == 3
    finally:
        store.close()
