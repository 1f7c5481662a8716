"""Pub/Sub source against Google's Pub/Sub emulator (shipped on this machine image): messages are
acknowledged only once applied, so a message that was pulled but not finished comes back; Beam's native
ReadFromPubSub path is checked as far as a non-Dataflow machine allows (the pipeline proto)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import apache_beam as beam
import pytest

from pipeline.main import StartupError, run
from tests.conftest import read_points

PROJECT = "test-project"


def make_subscription(ack_deadline: int = 10) -> tuple[str, str]:
    from google.cloud import pubsub_v1

    name = uuid.uuid4().hex[:8]
    topic, subscription = f"projects/{PROJECT}/topics/t-{name}", f"projects/{PROJECT}/subscriptions/s-{name}"
    pubsub_v1.PublisherClient().create_topic(request={"name": topic})
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                            "ack_deadline_seconds": ack_deadline})
    subscriber.close()
    return topic, subscription


def publish(topic: str, *events: object) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    for e in events:
        publisher.publish(topic, e if isinstance(e, bytes) else json.dumps(e).encode()).result(30)


def pubsub_args(subscription: str, tmp_path: Path) -> list[str]:
    return ["--source", "pubsub", "--pubsub_subscription", subscription, "--qdrant_path", str(tmp_path / "store"),
            "--dead_letters", str(tmp_path / "dead.jsonl")]


def left_on_subscription(subscription: str) -> int:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 100}, timeout=5)
        return len(response.received_messages)
    finally:
        subscriber.close()


def test_messages_are_applied_then_acknowledged(tmp_path: Path, pubsub_emulator: str):
    topic, subscription = make_subscription()
    publish(topic, {"doc_id": "a", "op": "upsert", "version": 2, "text": "Alpha, newer."},
            {"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha, older."},
            {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo."}, b"{broken")
    summary = run(pubsub_args(subscription, tmp_path))
    docs = {(p["doc_id"], p["version"]) for p in read_points(tmp_path / "store").values()}
    assert docs == {("a", 2), ("b", 1)}
    assert (summary.records_read, summary.records_acknowledged, summary.events_dead_lettered) == (4, 4, 1)
    assert left_on_subscription(subscription) == 0, "every finished message was acknowledged"


def test_a_pulled_but_unfinished_message_is_delivered_again(tmp_path: Path, pubsub_emulator: str):
    from google.cloud import pubsub_v1

    topic, subscription = make_subscription(ack_deadline=10)
    publish(topic, {"doc_id": "c", "op": "upsert", "version": 1, "text": "Charlie."})
    subscriber = pubsub_v1.SubscriberClient()  # a reader that dies before acknowledging
    pulled = subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=10)
    assert len(pulled.received_messages) == 1
    subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_deadline_seconds": 0,
                                            "ack_ids": [m.ack_id for m in pulled.received_messages]})
    subscriber.close()
    summary = run(pubsub_args(subscription, tmp_path))
    assert summary.records_read == 1 and {p["doc_id"] for p in read_points(tmp_path / "store").values()} == {"c"}


def test_a_missing_subscription_fails_at_start(tmp_path: Path, pubsub_emulator: str):
    with pytest.raises(StartupError, match="cannot be used"):
        run(pubsub_args(f"projects/{PROJECT}/subscriptions/none", tmp_path))


def test_native_read_from_pubsub_builds_for_streaming_runners():
    from pipeline.graph import build_graph
    from pipeline.main import resolve
    from pipeline.options import parse_args

    config, _ = parse_args(["--source", "pubsub", "--pubsub_subscription", f"projects/{PROJECT}/subscriptions/s",
                            "--pubsub_native"])
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--streaming"]))
    build_graph(pipeline, config, resolve(None))
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any("ReadFromPubSub" in n for n in names) and not any(n.endswith("Acknowledge") for n in names)
