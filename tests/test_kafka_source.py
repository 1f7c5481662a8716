"""Kafka source against a real Kafka-protocol broker in its own process (pip `noida-db`; not a Java Kafka):
several partitions, upserts, shrinking updates, tombstones, malformed records, offsets committed only after
apply, a killed run resumed without loss, another JSON shape with a JSON Schema, and a dead-letter topic."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.main import StartupError, run
from tests.conftest import REPO, create_topic, produce, read_dead_letters, read_points

LONG = " ".join(f"Section {i}: forklifts yield to pedestrians in aisle {i}." for i in range(10))


def kafka_args(bootstrap: str, topic: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--source", "kafka", "--kafka_bootstrap", bootstrap, "--kafka_topic", topic, "--kafka_group", "sync",
            "--kafka_stop_at_end", "--qdrant_path", str(tmp_path / "store"), "--dead_letters",
            str(tmp_path / "dead.jsonl"), "--chunk_size", "16", "--chunk_overlap", "4", *extra]


def stored(tmp_path: Path) -> dict[str, tuple[set[int], int]]:
    out: dict[str, tuple[set[int], int]] = {}
    for p in read_points(tmp_path / "store").values():
        versions, count = out.get(p["doc_id"], (set(), 0))
        out[p["doc_id"]] = (versions | {p["version"]}, count + 1)
    return out


def committed(bootstrap: str, topic: str, partitions: int = 3) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sync"})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                       timeout=10)]
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int = 3) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def test_end_to_end_with_partitions_tombstones_and_malformed_records(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap)
    produce(kafka_bootstrap, topic, [
        ("long", {"doc_id": "long", "op": "upsert", "version": 1, "text": LONG}),
        ("keep", {"op": "upsert", "version": 1, "text": "The key names this document."}),
        ("gone", {"doc_id": "gone", "op": "upsert", "version": 1, "text": "Soon a tombstone."}),
        ("bad", b"{not json"),
        ("badv", {"doc_id": "badv", "op": "upsert", "version": "one", "text": "x"}),
    ])
    first = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert set(stored(tmp_path)) == {"long", "keep", "gone"} and stored(tmp_path)["long"][1] > 2
    assert (first.records_read, first.events_applied, first.events_dead_lettered) == (5, 3, 2) and first.accounted
    assert committed(kafka_bootstrap, topic) == end_offsets(kafka_bootstrap, topic)
    assert sorted(d["error_type"] for d in read_dead_letters(tmp_path / "dead.jsonl")) == ["RecordError"] * 2

    produce(kafka_bootstrap, topic, [
        ("long", {"doc_id": "long", "op": "upsert", "version": 2, "text": "Short now."}),
        ("gone", None, {"headers": {"version": "2"}}),  # tombstone: deletes the key's document at version 2
    ])
    second = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert second.records_read == 2, "a second run starts from the committed offsets"
    assert stored(tmp_path) == {"long": ({2}, 1), "keep": (stored(tmp_path)["keep"][0], 1)}
    assert committed(kafka_bootstrap, topic) == end_offsets(kafka_bootstrap, topic)
    assert run(kafka_args(kafka_bootstrap, topic, tmp_path)).records_read == 0


def test_a_killed_run_loses_nothing_and_the_next_run_finishes_the_work(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap)
    produce(kafka_bootstrap, topic, [(f"d{i}", {"doc_id": f"d{i}", "op": "upsert", "version": 1,
                                                "text": f"Document {i}. " + LONG}) for i in range(40)])
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *kafka_args(kafka_bootstrap, topic, tmp_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)  # somewhere in start-up, reading, embedding or writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(c < 0 or c <= e for c, e in zip(committed(kafka_bootstrap, topic), end_offsets(kafka_bootstrap, topic)))
    rerun = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert set(stored(tmp_path)) == {f"d{i}" for i in range(40)} and rerun.accounted
    assert committed(kafka_bootstrap, topic) == end_offsets(kafka_bootstrap, topic)


def test_another_json_shape_with_a_schema_and_a_dead_letter_topic(tmp_path: Path, kafka_bootstrap: str):
    topic, dead_topic = create_topic(kafka_bootstrap), create_topic(kafka_bootstrap, partitions=1)
    schema = tmp_path / "product.schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["product", "updated_at"], "properties": {
        "product": {"type": "object", "required": ["sku", "name"]}, "updated_at": {"type": "integer"}}}))
    produce(kafka_bootstrap, topic, [
        ("X-1", {"product": {"sku": "X-1", "name": "Widget X", "description": "Battery lasts ten hours."},
                 "updated_at": 1700000000, "price": 10}),
        ("X-2", {"product": {"sku": "X-2"}, "updated_at": 5}),  # no name: fails the schema
    ])
    summary = run(kafka_args(kafka_bootstrap, topic, tmp_path, "--doc_id_field", "product.sku",
                             "--text_fields", "product.name,product.description", "--version_field", "updated_at",
                             "--kafka_json_schema", str(schema), "--dead_letter_topic", dead_topic))
    points = list(read_points(tmp_path / "store").values())
    assert [(p["doc_id"], p["version"]) for p in points] == [("X-1", 1700000000)]
    assert points[0]["text"].startswith("Widget X") and points[0]["metadata"]["price"] == 10
    assert summary.events_dead_lettered == 1

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "dlt-reader",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dead_topic])
    message, deadline = None, time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        message = m if m is not None and m.error() is None else None
    consumer.close()
    assert message is not None and message.key() == b"X-2"
    headers = {k: v.decode() for k, v in message.headers()}
    assert headers["__connect.errors.topic"] == topic and headers["__connect.errors.stage"] == "parse"
    assert "JSON Schema" in headers["__connect.errors.exception.message"]
    assert json.loads(message.value()) == {"product": {"sku": "X-2"}, "updated_at": 5}


def test_a_tombstone_deletes_a_document_versioned_by_a_millisecond_field(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap)
    args = kafka_args(kafka_bootstrap, topic, tmp_path, "--doc_id_field", "sku", "--text_fields", "name",
                      "--version_field", "updated_at")
    produce(kafka_bootstrap, topic, [
        ("A", {"sku": "A", "name": "Widget A", "updated_at": 1732400000000}),
        ("B", {"sku": "B", "name": "Widget B", "updated_at": 1732400000000}),
        ("C", {"sku": "C", "name": "Widget C"}),  # no version: dead-lettered, never the offset
    ])
    first = run(args)
    assert set(stored(tmp_path)) == {"A", "B"} and first.events_dead_lettered == 1
    produce(kafka_bootstrap, topic, [("A", None, {"headers": {"version": "1732400000001"}}),
                                     ("B", None)])  # a tombstone without a version header
    second = run(args)
    assert set(stored(tmp_path)) == {"B"}, "the tombstone's header version outranks the field's"
    assert (second.events_applied, second.events_dead_lettered) == (1, 1) and second.accounted
    earlier, letter = read_dead_letters(tmp_path / "dead.jsonl")  # dead letters are appended across runs
    assert earlier["doc_id"] == "C"
    assert letter["doc_id"] == "B" and "needs a 'version' header" in letter["error"]


def test_record_timestamps_version_values_and_tombstones_alike(tmp_path: Path, kafka_bootstrap: str):
    topic, now = create_topic(kafka_bootstrap), int(time.time() * 1000)  # older records fall out of retention
    produce(kafka_bootstrap, topic, [
        ("A", {"op": "upsert", "version": 10 ** 15, "text": "Its own version is not read."}, {"timestamp": now}),
        ("A", None, {"timestamp": now + 1}),
        ("B", {"op": "upsert", "text": "Kept."}, {"timestamp": now + 2}),
    ])
    summary = run(kafka_args(kafka_bootstrap, topic, tmp_path, "--kafka_version_from", "timestamp"))
    assert stored(tmp_path) == {"B": ({now + 2}, 1)} and summary.accounted


def test_parsing_versions_headers_and_emptied_values_without_a_broker():
    from connectors.kafka import KafkaConfig
    from transforms.types import ChangeEvent, SourceRef

    parse = KafkaConfig(bootstrap="-", topics=("t",), group="g", doc_id_field="sku", text_fields=("name",),
                        version_field="at").parser()

    def one(payload: bytes, **position):
        (out,) = parse(payload, SourceRef(system="kafka", position={"offset": 7, "key": "K", **position}))
        return out

    emptied = one(b'{"sku": "K", "name": "", "at": 5}')
    assert isinstance(emptied, ChangeEvent) and (emptied.text, emptied.version) == ("", 5)
    assert "needs a 'text'" in one(b'{"sku": "K", "at": 5}').error
    assert one(b"", tombstone=1, version_header=" 9 ").version == 9
    assert "not an integer" in one(b"", tombstone=1, version_header="soon").error


def test_two_version_sources_are_refused_at_start(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap)
    with pytest.raises(StartupError, match="two version sources"):
        run(kafka_args(kafka_bootstrap, topic, tmp_path, "--version_field", "updated_at",
                       "--kafka_version_from", "offset"))


def test_a_missing_topic_fails_at_start(tmp_path: Path, kafka_bootstrap: str):
    with pytest.raises(StartupError, match="not found"):
        run(kafka_args(kafka_bootstrap, "no-such-topic", tmp_path))


def test_unbounded_reading_on_the_direct_runner_is_refused_with_the_way_out(tmp_path: Path, kafka_bootstrap: str):
    topic = create_topic(kafka_bootstrap)
    args = [a for a in kafka_args(kafka_bootstrap, topic, tmp_path) if a != "--kafka_stop_at_end"]
    with pytest.raises(StartupError, match="--follow SECONDS"):
        run(args)


def test_follow_turns_into_successive_bounded_runs():
    from pipeline.main import split_process_flags

    argv = ["--source", "kafka", "--follow", "30", "--kafka_group", "g"]
    flags, rest = split_process_flags(argv)
    assert flags.follow == 30 and rest == ["--source", "kafka", "--kafka_group", "g"]
    assert split_process_flags(["--follow=2.5"])[0].follow == 2.5
    assert split_process_flags(["--source", "redis"])[0].follow is None
    with pytest.raises(SystemExit):  # argparse's one-line usage error, exit status 2
        split_process_flags(["--follow", "soon"])
