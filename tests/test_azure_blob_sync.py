"""Blob notifications end to end on a real Azure Storage emulator (Azurite): blobs are uploaded, overwritten
with a shorter document and deleted; Event Grid messages (as Event Grid would send them) go through a
Storage Queue, with a duplicate and an out-of-order older one; the vector store ends exactly in sync and
every message is deleted from the queue once finished."""
from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from pipeline.main import StartupError, run
from tests.conftest import read_dead_letters, read_points

LONG = " ".join(f"Clause {i}: returns within {i + 10} days need the receipt." for i in range(12))


class Account:
    """Blob container + queue on Azurite, and Event Grid events for what happens to the blobs."""

    def __init__(self, connection: str) -> None:
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueClient

        name = uuid.uuid4().hex[:8]
        self.container = BlobServiceClient.from_connection_string(connection).create_container(f"docs-{name}")
        self.queue = QueueClient.from_connection_string(connection, f"events-{name}")
        self.queue.create_queue()
        self.queue_name = f"events-{name}"
        self._sequence = 0

    def event(self, kind: str, blob: str, content_type: str = "text/plain", size: int = 0) -> dict:
        self._sequence += 1
        client = self.container.get_blob_client(blob)
        return {"topic": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
                "subject": f"/blobServices/default/containers/{self.container.container_name}/blobs/{blob}",
                "eventType": f"Microsoft.Storage.Blob{kind}", "eventTime": "2026-11-23T10:00:00Z",
                "id": str(uuid.uuid4()), "dataVersion": "", "metadataVersion": "1",
                "data": {"api": "PutBlob" if kind == "Created" else "DeleteBlob", "contentType": content_type,
                         "contentLength": size, "blobType": "BlockBlob", "url": client.url,
                         "sequencer": f"{0:016X}{self._sequence:016X}"}}

    def upload(self, blob: str, data: bytes, content_type: str = "text/plain") -> dict:
        from azure.storage.blob import ContentSettings

        self.container.upload_blob(blob, data, overwrite=True, content_settings=ContentSettings(content_type))
        return self.event("Created", blob, content_type, len(data))

    def delete(self, blob: str) -> dict:
        self.container.delete_blob(blob)
        return self.event("Deleted", blob)

    def send(self, *events: dict, encode: bool = True) -> None:
        for e in events:
            body = json.dumps([e])
            self.queue.send_message(base64.b64encode(body.encode()).decode() if encode else body)


def sync(connection: str, account: Account, tmp_path: Path, *extra: str):
    return run(["--source", "azure_queue", "--azure_queue", account.queue_name, "--azure_connection_string",
                connection, "--qdrant_path", str(tmp_path / "store"), "--dead_letters", str(tmp_path / "dead.jsonl"),
                "--chunk_size", "16", "--chunk_overlap", "4", *extra])


def stored(tmp_path: Path) -> dict[str, set[tuple[int, str]]]:
    out: dict[str, set[tuple[int, str]]] = {}
    for p in read_points(tmp_path / "store").values():
        out.setdefault(p["metadata"]["key"], set()).add((p["version"], p["chunk_count"]))
    return out


def test_blobs_created_overwritten_and_deleted_end_exactly_in_sync(tmp_path: Path, azurite: str):
    account = Account(azurite)
    first_policy = account.upload("policy.md", LONG.encode(), "text/markdown")
    faq = account.upload("faq.html", b"<html><body><h1>FAQ</h1><p>Ask us anything.</p></body></html>", "text/html")
    temp = account.upload("temp.txt", b"Short-lived.")
    account.send(first_policy, faq, temp, faq)  # faq twice: a duplicate delivery
    one = sync(azurite, account, tmp_path)
    assert set(stored(tmp_path)) == {"policy.md", "faq.html", "temp.txt"}
    assert max(c for _, c in stored(tmp_path)["policy.md"]) > 3
    assert one.accounted and one.records_acknowledged == 4 and one.events_superseded == 1

    shorter = account.upload("policy.md", b"Returns: 30 days with a receipt.", "text/markdown")
    gone = account.delete("temp.txt")
    account.send(shorter, gone, first_policy, encode=False)  # the older create arrives late, plain JSON
    two = sync(azurite, account, tmp_path)
    state = stored(tmp_path)
    assert set(state) == {"policy.md", "faq.html"} and state["policy.md"] == {(shorter_version(shorter), 1)}
    texts = {p["text"] for p in read_points(tmp_path / "store").values() if p["metadata"]["key"] == "policy.md"}
    assert texts == {"Returns: 30 days with a receipt."}
    assert two.events_superseded == 1 and two.accounted
    assert account.queue.peek_messages(max_messages=32) == [], "every finished message was deleted"
    meta = next(p["metadata"] for p in read_points(tmp_path / "store").values() if p["metadata"]["key"] == "faq.html")
    assert meta["content_type"] == "text/html" and meta["etag"] and meta["size"] > 0


def shorter_version(event: dict) -> int:
    from transforms.notifications import azure_sequencer_version

    return azure_sequencer_version(event["data"]["sequencer"])


def test_missing_unsupported_oversize_and_broken_objects(tmp_path: Path, azurite: str):
    account = Account(azurite)
    vanished = account.upload("vanished.txt", b"Deleted before the pipeline fetched it.")
    account.container.delete_blob("vanished.txt")
    image = account.upload("diagram.png", b"\x89PNG\r\n", "image/png")
    big = account.upload("big.txt", b"x" * 5000)
    broken = account.upload("broken.pdf", b"%PDF-1.7 not really", "application/pdf")
    account.send(vanished, image, big, broken)
    summary = sync(azurite, account, tmp_path, "--max_document_bytes", "4096")
    letters = {Path(d["doc_id"]).name: (d["stage"], d["error"]) for d in read_dead_letters(tmp_path / "dead.jsonl")}
    assert letters["diagram.png"][0] == "extract" and "unsupported document type '.png'" in letters["diagram.png"][1]
    assert letters["big.txt"][0] == "fetch" and "over --max_document_bytes 4096" in letters["big.txt"][1]
    assert letters["broken.pdf"][0] == "extract" and "broken PDF" in letters["broken.pdf"][1]
    assert "vanished.txt" not in letters and summary.events_superseded == 1, "a vanished object is superseded"
    assert summary.accounted and summary.records_acknowledged == 4


def test_a_missing_queue_fails_at_start(tmp_path: Path, azurite: str):
    account = Account(azurite)
    account.queue_name = "no-such-queue"
    with pytest.raises(StartupError, match="cannot be used"):
        sync(azurite, account, tmp_path)
