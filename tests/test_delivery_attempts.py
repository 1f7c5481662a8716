"""A record delivered more than `--max_delivery_attempts` times is dead-lettered unprocessed (stage `read`,
`TooManyDeliveries`) and acknowledged on the next run, on each real server, while the other records are
applied: Redis delivery counts (own pending and claimed entries), Azure dequeue counts, Pub/Sub delivery
attempts (a subscription with a dead-letter policy), Kafka runs started at the same committed offset."""
from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import KafkaConfig, _ReadPartition
from pipeline.main import run
from tests.conftest import create_topic, produce, read_dead_letters, read_points
from tests.test_azure_blob_sync import Account, sync
from tests.test_kafka_source import kafka_args
from tests.test_pubsub_source import PROJECT, left_on_subscription, pubsub_args, publish
from tests.test_redis_source import add, stream_args


def doc(doc_id: str) -> dict:
    return {"doc_id": doc_id, "op": "upsert", "version": 1, "text": f"Document {doc_id}."}


def stored_ids(tmp_path: Path, key: str = "doc_id") -> set[str]:
    return {p[key] if key == "doc_id" else p["metadata"][key] for p in read_points(tmp_path / "store").values()}


def the_dead_letter(tmp_path: Path) -> dict:
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert (letter["stage"], letter["error_type"]) == ("read", "TooManyDeliveries")
    return letter


def test_redis_entries_delivered_too_often_are_dead_lettered_and_acknowledged(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    client.xgroup_create(stream, "sync", id="0", mkstream=True)
    add(client, stream, doc("own-poison"))
    client.xreadgroup("sync", "worker-1", {stream: ">"})
    for _ in range(4):  # four more runs of this consumer re-read it and crashed: delivered 5 times
        client.xreadgroup("sync", "worker-1", {stream: "0"})
    add(client, stream, doc("dead-poison"))
    client.xreadgroup("sync", "crashed-worker", {stream: ">"})
    for _ in range(4):
        client.xreadgroup("sync", "crashed-worker", {stream: "0"})
    add(client, stream, doc("good"))
    client.xreadgroup("sync", "worker-1", {stream: ">"})  # delivered once before: still retried
    add(client, stream, doc("new"))

    summary = run(stream_args(redis_url, stream, tmp_path, "--redis_claim_idle_ms", "0"))
    assert stored_ids(tmp_path) == {"good", "new"}
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert {(d["stage"], d["error_type"], d["attempts"]) for d in letters} == {("read", "TooManyDeliveries", 6)}
    assert {json.loads(base64.b64decode(d["payload"]))["doc_id"] for d in letters} == {"own-poison", "dead-poison"}
    assert summary.records_read == 4 and summary.records_acknowledged == 4 and summary.accounted
    assert client.xpending(stream, "sync")["pending"] == 0


def test_azure_messages_dequeued_too_often_are_dead_lettered_and_deleted(tmp_path: Path, azurite: str):
    account = Account(azurite)
    account.send(account.upload("poison.txt", b"Crashes every reader."))
    for _ in range(3):  # three readers received it and died
        (message,) = account.queue.receive_messages(max_messages=1, visibility_timeout=30)
        account.queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    account.send(account.upload("good.txt", b"Fine."))
    summary = sync(azurite, account, tmp_path, "--max_delivery_attempts", "3")
    assert stored_ids(tmp_path, "key") == {"good.txt"}
    letter = the_dead_letter(tmp_path)
    assert letter["attempts"] == 4 and letter["source"]["position"]["message_id"] == message.id
    assert "poison.txt" in base64.b64decode(letter["payload"]).decode()
    assert summary.records_read == 2 and summary.records_acknowledged == 2
    assert account.queue.peek_messages(max_messages=32) == [], "both messages were deleted"


def test_pubsub_messages_delivered_too_often_are_dead_lettered_and_acknowledged(tmp_path: Path, pubsub_emulator: str):
    """The emulator counts `delivery_attempt` on a subscription with a dead-letter policy (Pub/Sub's own
    policy forwards after 5 attempts, so ours is set lower to dead-letter first)."""
    from google.cloud import pubsub_v1

    name = uuid.uuid4().hex[:8]
    topic, dead, subscription = (f"projects/{PROJECT}/topics/t-{name}", f"projects/{PROJECT}/topics/dl-{name}",
                                 f"projects/{PROJECT}/subscriptions/s-{name}")
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(request={"name": topic})
    publisher.create_topic(request={"name": dead})
    subscriber.create_subscription(request={"name": subscription, "topic": topic, "ack_deadline_seconds": 10,
                                            "dead_letter_policy": {"dead_letter_topic": dead,
                                                                   "max_delivery_attempts": 5}})
    publish(topic, doc("poison"))
    for _ in range(2):  # two readers pulled it and died
        (m,) = subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=10).received_messages
        subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_ids": [m.ack_id],
                                                "ack_deadline_seconds": 0})
    subscriber.close()
    publish(topic, doc("good"))
    summary = run([*pubsub_args(subscription, tmp_path), "--max_delivery_attempts", "2"])
    assert stored_ids(tmp_path) == {"good"}
    letter = the_dead_letter(tmp_path)
    assert letter["attempts"] == 3 and json.loads(base64.b64decode(letter["payload"]))["doc_id"] == "poison"
    assert summary.records_read == 2 and summary.records_acknowledged == 2
    assert left_on_subscription(subscription) == 0


def committed_with_metadata(bootstrap: str, topic: str) -> TopicPartition:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sync"})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp
    finally:
        consumer.close()


def commit(bootstrap: str, topic: str, offset: int, metadata: str) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sync", "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset, metadata=metadata)], asynchronous=False)
    finally:
        consumer.close()


def test_kafka_runs_that_start_at_an_offset_are_counted_in_the_commit_metadata(kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap, partitions=1)
    config = KafkaConfig(bootstrap=kafka_bootstrap, topics=(topic,), group="sync", stop_at_end=True)
    reader = _ReadPartition(config)
    reader.initial_restriction((topic, 0))  # nothing to read: no attempt at anything
    assert committed_with_metadata(kafka_bootstrap, topic).offset < 0
    produce(kafka_bootstrap, topic, [("k", doc("k"))])
    for runs in (1, 2):  # two runs started at offset 0 (and crashed)
        reader.initial_restriction((topic, 0))
        tp = committed_with_metadata(kafka_bootstrap, topic)
        assert (tp.offset, json.loads(tp.metadata)) == (0, {"vector_sync": {"offset": 0, "runs": runs}})


def test_kafka_record_at_an_offset_where_too_many_runs_started_is_dead_lettered_and_passed(
        tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("poison", doc("poison")), ("good", doc("good")), ("also", doc("also"))])
    # five runs started at offset 0 and were killed (SIGKILL, OOM) on its record, as the metadata records
    commit(kafka_bootstrap, topic, 0, json.dumps({"vector_sync": {"offset": 0, "runs": 5}}))
    summary = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert stored_ids(tmp_path) == {"good", "also"}
    letter = the_dead_letter(tmp_path)
    assert letter["attempts"] == 6 and letter["source"]["position"]["offset"] == 0
    assert json.loads(base64.b64decode(letter["payload"]))["doc_id"] == "poison"
    assert summary.records_read == 3 and summary.accounted
    assert committed_with_metadata(kafka_bootstrap, topic).offset == 3


def test_kafka_a_last_record_dead_lettered_at_read_is_committed(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("poison", doc("poison"))])
    commit(kafka_bootstrap, topic, 0, json.dumps({"vector_sync": {"offset": 0, "runs": 5}}))
    run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert the_dead_letter(tmp_path)["attempts"] == 6
    assert committed_with_metadata(kafka_bootstrap, topic).offset == 1
