"""Leases of records in flight are extended for as long as they are in flight (a `LeaseKeeper` per reader):
with a lease far shorter than the run, no message becomes visible or is delivered again while the run holds
it, every message is acknowledged once, and the keeper stops when the run ends."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from pipeline.main import run
from tests.conftest import read_points
from tests.test_azure_blob_sync import LONG, Account
from tests.test_pubsub_source import left_on_subscription, make_subscription, publish


def keeper_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lease-keeper:")]


def with_source(tmp_path: Path, source: dict) -> list[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"source": source}))
    return ["--config", str(config), "--qdrant_path", str(tmp_path / "store"), "--dead_letters",
            str(tmp_path / "dead.jsonl"), "--chunk_size", "16", "--chunk_overlap", "4"]


def test_azure_visibility_is_extended_while_the_run_holds_the_messages(tmp_path: Path, azurite: str):
    account = Account(azurite)
    account.send(*[account.upload(f"doc-{i}.txt", f"{i}. {LONG}".encode()) for i in range(6)])
    lapsed: list[str] = []
    running = threading.Event()
    running.set()

    def watch() -> None:  # a message visible again after a reader received it is one whose lease ran out
        while running.is_set():
            lapsed.extend(m.id for m in account.queue.peek_messages(max_messages=32) if m.dequeue_count)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run([*with_source(tmp_path, {"type": "azure_queue", "queue": account.queue_name,
                                               "visibility_timeout_s": 2}), "--azure_connection_string", azurite])
    finally:
        running.clear()
        watcher.join()
    assert lapsed == [], "no message became visible again while the run held it"
    assert summary.records_read == 6 and summary.records_acknowledged == 6
    assert {p["metadata"]["key"] for p in read_points(tmp_path / "store").values()} == {f"doc-{i}.txt" for i in range(6)}
    assert account.queue.peek_messages(max_messages=32) == [], "every message was deleted with its current receipt"
    assert keeper_threads() == [], "the keeper stopped with the run"


def test_azure_messages_held_by_the_reader_stay_invisible_past_two_leases_then_reappear(azurite: str):
    """The reader itself, held for a fixed time (a whole run may end sooner than two leases): its keeper
    extends the visibility of the messages it received; once it is torn down without deleting them, they
    are delivered again."""
    from connectors.azure_queue import AzureQueueConfig, _Receive
    from connectors.secrets import SecretRef

    account = Account(azurite)
    account.send(*[account.upload(f"held-{i}.txt", f"{i}. {LONG}".encode()) for i in range(3)])
    reader = _Receive(AzureQueueConfig(queue=account.queue_name, visibility_timeout_s=2,
                                       connection_string=SecretRef.model_validate(azurite)))
    reader.setup()
    try:
        records = [r for r in reader.process(None) if not hasattr(r, "tag")]
        assert len(records) == 3 and account.queue.peek_messages(max_messages=32) == []
        time.sleep(5)  # more than two leases
        assert account.queue.peek_messages(max_messages=32) == [], "the visibility of held messages was extended"
    finally:
        reader.teardown()
    time.sleep(2.5)
    assert len(account.queue.peek_messages(max_messages=32)) == 3, "released, the messages are delivered again"


def test_pubsub_ack_deadline_is_extended_while_the_run_holds_the_messages(tmp_path: Path, pubsub_emulator: str):
    """The reader waits 14 s for more messages (idle_timeout_s) while holding the first ones, whose ack
    deadline is 10 s: without extensions they are delivered again, to this very reader (`max_records` only
    bounds that case)."""
    topic, subscription = make_subscription(ack_deadline=10)
    publish(topic, *[{"doc_id": f"d{i}", "op": "upsert", "version": 1, "text": f"Doc {i}."} for i in range(3)])
    summary = run(with_source(tmp_path, {"type": "pubsub", "subscription": subscription, "ack_deadline_s": 10,
                                         "idle_timeout_s": 14, "max_records": 6}))
    assert summary.records_read == 3, "no message was delivered twice"
    assert summary.records_acknowledged == 3 and left_on_subscription(subscription) == 0
    assert keeper_threads() == [], "the keeper stopped with the run"
