"""Streaming runs of the shipped graph on the DirectRunner (`--streaming`), with a TestStream standing in for
the Kafka reader and nothing else replaced.

Records are really produced to the test broker (with the Kafka timestamps the schedule gives them), read
back with a consumer and turned into `RawRecord`s by the reader's own `_raw_record`, so offsets, parsing,
commits and the dead-letter topic are the shipped code. The schedule then replays them as a TestStream:
elements at their Kafka timestamp (late ones behind the watermark included) and watermark advances.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from confluent_kafka import Consumer, TopicPartition
from pydantic import ConfigDict

from connectors.kafka import KafkaConfig, _raw_record
from pipeline.graph import build_graph
from pipeline.main import prepare_stores, resolve
from pipeline.options import parse_args
from pipeline.summary import RunSummary, summary_from_metrics
from tests.conftest import produce
from transforms import counters
from transforms.stages import DEAD_LETTERS
from transforms.types import RawRecord


BASE = int(time.time()) // 1000 * 1000
"""Schedules count seconds from here: recent, so a broker's retention keeps the records; window-aligned."""


@dataclass(frozen=True)
class Record:
    """One record to produce: `value` a dict (JSON), bytes/str verbatim, or None (a tombstone)."""

    key: str
    value: Any
    ts: float  # seconds after `BASE`: the Kafka timestamp (also the element's event time)
    partition: int = 0
    headers: Optional[dict[str, str]] = None


@dataclass(frozen=True)
class Watermark:
    to: float


Step = Union[Record, Watermark]


class _Replay(beam.PTransform):
    def __init__(self, stream: TestStream) -> None:
        super().__init__()
        self._stream = stream

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        return (pbegin | "TestStream" >> self._stream
                | "AsReader" >> beam.ParDo(_Identity()).with_outputs(DEAD_LETTERS, main="records"))


class _Identity(beam.DoFn):
    """Counts each record read, as the reader does."""

    def __init__(self) -> None:
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, record: RawRecord) -> Any:
        self._read.inc()
        yield record


class TestStreamKafka(KafkaConfig):
    """The Kafka source with its reader replaced by a TestStream (everything else is `KafkaConfig`'s)."""

    __test__ = False
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    stream: Any = None

    def read(self) -> beam.PTransform:
        return _Replay(self.stream)


@dataclass
class StreamingRun:
    """What a streaming run left: the records as produced (with their offsets), and the runner's metrics
    (the streaming DirectRunner loses the counts of later bundles, so tests do not assert them)."""

    summary: RunSummary
    records: list[RawRecord] = field(default_factory=list)


def produce_schedule(bootstrap: str, topic: str, steps: Sequence[Step]) -> tuple[TestStream, list[RawRecord]]:
    """Produces the schedule's records (in schedule order), reads them back, and returns the TestStream
    that replays them in the same order at their timestamps, with the schedule's watermark advances."""
    records = [s for s in steps if isinstance(s, Record)]
    produce(bootstrap, topic, [
        (r.key, r.value, {"timestamp": int((BASE + r.ts) * 1000), "partition": r.partition,
                          **({"headers": r.headers} if r.headers else {})}) for r in records])
    by_partition: dict[int, list[Any]] = {}
    for p in sorted({r.partition for r in records}):
        want = sum(1 for r in records if r.partition == p)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "harness-reader",
                             "enable.auto.commit": False})
        try:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            got: list[Any] = []
            deadline = time.monotonic() + 30
            while len(got) < want and time.monotonic() < deadline:
                got += [m for m in consumer.consume(num_messages=500, timeout=1.0) if m.error() is None]
        finally:
            consumer.close()
        assert len(got) == want, f"partition {p}: read back {len(got)} of {want} records"
        by_partition[p] = got
    cursors = {p: iter(ms) for p, ms in by_partition.items()}
    stream = TestStream()
    raw: list[RawRecord] = []
    for step in steps:
        if isinstance(step, Watermark):
            stream = stream.advance_watermark_to(BASE + step.to)
            continue
        record = _raw_record(next(cursors[step.partition]))
        raw.append(record)
        stream = stream.add_elements([beam.window.TimestampedValue(record, BASE + step.ts)])
    return stream.advance_watermark_to_infinity(), raw


def run_streaming(bootstrap: str, topic: str, steps: Sequence[Step], sink_args: Sequence[str], work: Path,
                  *extra: str) -> StreamingRun:
    """Runs the shipped graph in streaming mode over the schedule; returns when the TestStream ends."""
    argv = ["--source", "kafka", "--kafka_bootstrap", bootstrap, "--kafka_topic", topic, "--kafka_group", "sync",
            *sink_args, "--dead_letters", str(work / "dead.jsonl"), "--chunk_size", "16", "--chunk_overlap", "4",
            *extra]
    config, _ = parse_args(argv)
    stream, raw = produce_schedule(bootstrap, topic, steps)
    source = TestStreamKafka(**{**config.source.model_dump(), "stream": stream})
    config = config.model_copy(update={"source": source})
    model = resolve(config.model, config.backend, config.onnx_cache)
    prepare_stores(config, model)
    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, config, model)
    result = pipeline.run()
    result.wait_until_finish()
    summary = summary_from_metrics(result, time.monotonic() - started, [s.sink_name for s in config.stores])
    return StreamingRun(summary, raw)


def committed(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sync"})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                       timeout=10)]
    finally:
        consumer.close()


def committed_to_end(bootstrap: str, topic: str, partitions: int) -> bool:
    """Every partition's committed offset is its end offset (a partition that never held a record may
    have none)."""
    return all(c == e or (e == 0 and c < 0) for c, e in zip(committed(bootstrap, topic, partitions),
                                                           end_offsets(bootstrap, topic, partitions)))


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every record of a one-partition topic (waits for `expected` of them, at most `timeout` seconds)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [m for m in consumer.consume(num_messages=100, timeout=0.5) if m.error() is None]
        if len(got) >= expected:  # and nothing more arrives
            got += [m for m in consumer.consume(num_messages=100, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    return got


def sink_flags(target: Any) -> list[str]:
    """A `tests.sink_targets` target's flags, so several targets can share one pipeline."""
    return target.args if target.args[:1] == ["--sink"] else ["--sink", "qdrant", *target.args]


def upsert(doc_id: str, version: int, text: str, ts: float, partition: int = 0) -> Record:
    return Record(doc_id, {"doc_id": doc_id, "op": "upsert", "version": version, "text": text}, ts, partition)


def delete(doc_id: str, version: int, ts: float, partition: int = 0) -> Record:
    return Record(doc_id, {"doc_id": doc_id, "op": "delete", "version": version}, ts, partition)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
