"""A `uri` is a capability: end to end, a change-log upsert or an Event Grid notification that names a file or
endpoint outside the allow-list is dead-lettered at stage `fetch` and nothing of it reaches the store; an
allowed root still works; an unreachable allowed endpoint costs seconds and the other records go on."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from connectors.objects import FetchConfig, FetchContent
from pipeline.main import run
from tests.conftest import free_port, read_dead_letters, read_points, write_changelog
from transforms.stages import DEAD_LETTERS
from transforms.types import ChangeEvent, SourceRef

SECRET = "TOP-SECRET-7f3a: the launch codes"
KEY = "a2V5a2V5a2V5a2V5"


@pytest.fixture(autouse=True)
def _no_ambient_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)


@pytest.fixture
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers; yields `(port, accepted)`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        server.close()


def azurite_style(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


def sync(tmp_path: Path, log: Path, *extra: str):
    return run(["--input", str(log), "--qdrant_path", str(tmp_path / "store"),
                "--dead_letters", str(tmp_path / "dead.jsonl"), *extra])


def stored_texts(tmp_path: Path) -> dict[str, str]:
    points = read_points(tmp_path / "store")
    return {p["doc_id"]: " ".join(q["text"] for q in points.values() if q["doc_id"] == p["doc_id"])
            for p in points.values()}


def fetch_letters(tmp_path: Path) -> dict[str, dict]:
    return {d["doc_id"]: d for d in read_dead_letters(tmp_path / "dead.jsonl")}


def upsert(doc_id: str, uri: str, version: int = 1) -> dict:
    return {"doc_id": doc_id, "op": "upsert", "version": version, "uri": uri}


def test_uris_outside_the_local_root_are_dead_lettered_and_never_read(tmp_path: Path):
    root, secret_dir = tmp_path / "docs", tmp_path / "secret"
    root.mkdir(), secret_dir.mkdir()
    secret = secret_dir / "s.txt"
    secret.write_text(SECRET)
    (root / "ok.txt").write_text("Pallets are stacked three high in aisle four.")
    (root / "link.txt").symlink_to(secret)
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo")
    log = write_changelog(tmp_path / "log.jsonl", [
        upsert("absolute", str(secret)),
        upsert("traversal", f"{root}/../secret/s.txt"),
        upsert("file-url", secret.as_uri()),
        upsert("symlink", str(root / "link.txt")),
        upsert("passwd", "/etc/passwd"),
        upsert("environ", "/proc/self/environ"),
        upsert("allowed", str(root / "ok.txt")),
        upsert("allowed-url", (root / "ok.txt").as_uri()),
        upsert("folder", str(root / "folder")),
        upsert("fifo", str(root / "fifo")),
        {"doc_id": "inline", "op": "upsert", "version": 1, "text": "Refunds take five days."},
    ])
    summary = sync(tmp_path, log, "--allow_local_root", str(root))
    letters = fetch_letters(tmp_path)
    refused = {"absolute", "traversal", "file-url", "symlink", "passwd", "environ"}
    assert set(letters) == refused | {"folder", "fifo"}
    for doc_id in refused:
        assert (letters[doc_id]["stage"], letters[doc_id]["error_type"]) == ("fetch", "UriNotAllowed"), doc_id
        assert "outside every --allow_local_root" in letters[doc_id]["error"]
    assert all(letters[d]["stage"] == "fetch" and "not a regular file" in letters[d]["error"] for d in ("folder", "fifo"))
    texts = stored_texts(tmp_path)
    assert set(texts) == {"allowed", "allowed-url", "inline"}
    assert "aisle four" in texts["allowed"] and "aisle four" in texts["allowed-url"]
    everything = json.dumps(read_points(tmp_path / "store"))
    assert "TOP-SECRET" not in everything and "root:" not in everything
    assert summary.accounted


def test_without_a_local_root_no_local_file_is_read(tmp_path: Path):
    doc = tmp_path / "doc.txt"
    doc.write_text(SECRET)
    log = write_changelog(tmp_path / "log.jsonl", [
        upsert("path", str(doc)), upsert("relative", "doc.txt"), upsert("url", doc.as_uri()),
        {"doc_id": "inline", "op": "upsert", "version": 1, "text": "Refunds take five days."}])
    summary = sync(tmp_path, log)
    letters = fetch_letters(tmp_path)
    assert set(letters) == {"path", "relative", "url"}
    assert all(d["stage"] == "fetch" and d["error_type"] == "UriNotAllowed" and "no --allow_local_root" in d["error"]
               for d in letters.values())
    assert set(stored_texts(tmp_path)) == {"inline"} and summary.accounted


def event_grid(url: str, sequence: int) -> dict:
    return {"topic": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": "/blobServices/default/containers/docs/blobs/x", "eventType": "Microsoft.Storage.BlobCreated",
            "eventTime": "2026-11-23T10:00:00Z", "id": f"id-{sequence}", "dataVersion": "", "metadataVersion": "1",
            "data": {"api": "PutBlob", "contentType": "text/plain", "contentLength": 10, "blobType": "BlockBlob",
                     "url": url, "sequencer": f"{0:016X}{sequence:016X}"}}


def test_event_grid_urls_to_local_files_or_unconfigured_endpoints_are_dead_lettered(
        tmp_path: Path, silent_listener: tuple[int, list[socket.socket]]):
    port, accepted = silent_listener
    secret = tmp_path / "s.txt"
    secret.write_text(SECRET)
    urls = {secret.as_uri(): "not read", "file:///etc/passwd": "not read",
            f"http://127.0.0.1:{port}/devstoreaccount1/docs/a.txt": "other port than the connection string's",
            f"http://localhost:{port}/devstoreaccount1/docs/a.txt": "another host",
            f"http://127.0.0.1:{port}/latest/meta-data/iam": "not Azure",
            "https://evil.blob.core.windows.net/docs/a.txt": "account not configured"}
    log = write_changelog(tmp_path / "events.jsonl", [event_grid(u, i) for i, u in enumerate(urls, start=1)])
    closed = free_port()  # the connection string's endpoint: nothing listens there
    summary = sync(tmp_path, log, "--notifications", "eventgrid", "--azure_connection_string", azurite_style(closed))
    letters = fetch_letters(tmp_path)
    assert set(letters) == set(urls)
    assert all((d["stage"], d["error_type"]) == ("fetch", "UriNotAllowed") for d in letters.values())
    assert read_points(tmp_path / "store") == {} and summary.accounted
    assert accepted == [], "no request went to an endpoint that only the notification named"


def test_an_allowed_endpoint_that_never_answers_costs_seconds_and_the_other_records_are_applied(
        tmp_path: Path, silent_listener: tuple[int, list[socket.socket]]):
    port, accepted = silent_listener
    config = tmp_path / "sync.json"
    config.write_text(json.dumps({"fetch": {"connect_timeout_s": 1, "read_timeout_s": 1,
                                            "retry": {"max_attempts": 10, "max_elapsed_s": 3}}}))
    log = write_changelog(tmp_path / "log.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 1, "text": "Refunds take five days."},
        upsert("silent", f"http://127.0.0.1:{port}/devstoreaccount1/docs/a.txt"),
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "The VPN needs a hardware token."}])
    started = time.monotonic()
    summary = sync(tmp_path, log, "--config", str(config), "--azure_connection_string", azurite_style(port))
    assert time.monotonic() - started < 30  # includes loading the model; the fetch itself is timed below
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["doc_id"] == "silent" and letter["stage"] == "fetch" and letter["attempts"] >= 2
    assert set(stored_texts(tmp_path)) == {"a", "b"} and summary.accounted
    assert accepted, "the allowed endpoint was tried"


def fetch_outcome(config: FetchConfig, uri: str) -> tuple[list, float]:
    fetch = FetchContent(config)
    fetch.setup()
    event = ChangeEvent(doc_id="d", op="upsert", version=1, uri=uri, source=SourceRef(system="test"), raw=b"{}")
    started = time.monotonic()
    try:
        return list(fetch.process(event)), time.monotonic() - started
    finally:
        fetch.teardown()


def test_a_silent_endpoint_is_a_dead_letter_within_the_deadline(silent_listener: tuple[int, list[socket.socket]]):
    port, _ = silent_listener
    config = FetchConfig.model_validate({"azure_connection_string": azurite_style(port), "read_timeout_s": 1,
                                         "retry": {"max_attempts": 10, "max_elapsed_s": 3}})
    (out,), elapsed = fetch_outcome(config, f"http://127.0.0.1:{port}/devstoreaccount1/docs/a.txt")
    assert out.tag == DEAD_LETTERS and out.value.stage == "fetch" and out.value.attempts >= 2
    assert elapsed < 10


def test_a_closed_port_is_a_dead_letter_within_seconds_with_the_default_limits():
    port = free_port()
    config = FetchConfig(azure_connection_string=azurite_style(port))
    (out,), elapsed = fetch_outcome(config, f"http://127.0.0.1:{port}/devstoreaccount1/docs/a.txt")
    assert out.tag == DEAD_LETTERS and out.value.stage == "fetch" and out.value.attempts > 1
    assert elapsed < 20
