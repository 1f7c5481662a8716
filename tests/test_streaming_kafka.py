"""The unbounded Kafka reader's restriction, checkpoint (`defer_remainder`) and watermark, run as a runner
would call them (a restriction tracker view and a watermark estimator) against the real test broker, and
the per-partition commit ledger that streaming runs acknowledge with."""
from __future__ import annotations

from typing import Any

import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Timestamp
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import (UNBOUNDED_END, KafkaConfig, PartitionLedger, _ReadPartition, _ReadPartitionUnbounded,
                              advance_watermark)
from tests.conftest import create_topic, produce
from transforms.types import RawRecord

NOW_MS = int(Timestamp.now().micros // 1000)


def config(bootstrap: str, topic: str, **extra: Any) -> KafkaConfig:
    return KafkaConfig(bootstrap=bootstrap, topics=(topic,), group="reader-test", poll_timeout_s=0.5, **extra)


def read_once(reader: Any, topic: str, partition: int, restriction: OffsetRange,
              watermark: Any = None) -> tuple[list[Any], ThreadsafeRestrictionTracker, ManualWatermarkEstimator]:
    """One `process` call, as a runner makes it: returns its outputs, the tracker and the estimator."""
    tracker = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(restriction))
    estimator = ManualWatermarkEstimator(watermark)
    outputs = list(reader.process((topic, partition), RestrictionTrackerView(tracker), estimator))
    return outputs, tracker, estimator


@pytest.fixture
def reader_for(kafka_bootstrap: str):
    made: list[Any] = []

    def make(topic: str, unbounded: bool = True) -> Any:
        c = config(kafka_bootstrap, topic, stop_at_end=not unbounded)
        reader = _ReadPartitionUnbounded(c) if unbounded else _ReadPartition(c)
        reader.setup()
        made.append(reader)
        return reader
    yield make
    for reader in made:
        reader.teardown()


def test_the_unbounded_restriction_starts_at_the_committed_offset_and_has_no_end(kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, [("k", {"n": i}, {"partition": 0}) for i in range(5)])
    reader = reader_for(topic)
    assert reader.initial_restriction((topic, 0)) == OffsetRange(0, UNBOUNDED_END)
    assert reader.initial_restriction((topic, 1)) == OffsetRange(0, UNBOUNDED_END), "an empty partition"
    consumer = Consumer(config(kafka_bootstrap, topic).client_settings())
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()
    assert reader.initial_restriction((topic, 0)) == OffsetRange(3, UNBOUNDED_END)
    bounded = reader_for(topic, unbounded=False)
    assert bounded.initial_restriction((topic, 0)) == OffsetRange(3, 5)


def test_an_idle_partition_checkpoints_the_rest_and_its_watermark_moves_to_now(kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=1)
    old = NOW_MS - 3_600_000  # an hour ago, and out of order within the partition
    produce(kafka_bootstrap, topic, [("a", {"n": 0}, {"timestamp": old + 2000}), ("b", {"n": 1}, {"timestamp": old}),
                                     ("c", {"n": 2}, {"timestamp": old + 1000})])
    reader = reader_for(topic)
    before = Timestamp.now()
    outputs, tracker, estimator = read_once(reader, topic, 0, OffsetRange(0, UNBOUNDED_END))
    assert [o.value.source.position["offset"] for o in outputs] == [0, 1, 2]
    assert [o.timestamp for o in outputs] == [Timestamp.of((old + d) / 1000) for d in (2000, 0, 1000)]
    assert all(isinstance(o.value, RawRecord) for o in outputs)
    residual, delay = tracker.deferred_status()
    assert residual == OffsetRange(3, UNBOUNDED_END), "the checkpoint resumes after the last record read"
    assert tracker.current_restriction() == OffsetRange(0, 3)
    tracker.check_done()  # the primary is finished: every offset in it was claimed
    assert estimator.current_watermark() >= before, "idle and caught up: the watermark is now, not an hour ago"


def test_an_empty_partition_never_holds_the_watermark(kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=1)
    reader = reader_for(topic)
    before = Timestamp.now()
    outputs, tracker, estimator = read_once(reader, topic, 0, OffsetRange(0, UNBOUNDED_END))
    assert outputs == []
    assert tracker.deferred_status()[0] == OffsetRange(0, UNBOUNDED_END)
    assert estimator.current_watermark() is not None and estimator.current_watermark() >= before


def test_resuming_the_checkpoint_reads_what_arrived_since_and_the_watermark_never_goes_back(
        kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("a", {"n": 0})])
    reader = reader_for(topic)
    _, tracker, estimator = read_once(reader, topic, 0, OffsetRange(0, UNBOUNDED_END))
    residual, _ = tracker.deferred_status()
    held = estimator.current_watermark()
    produce(kafka_bootstrap, topic, [("b", {"n": 1}, {"timestamp": NOW_MS - 86_400_000})])  # a day old
    outputs, tracker, estimator = read_once(reader, topic, 0, residual, watermark=held)
    assert [o.value.source.position["offset"] for o in outputs] == [1]
    assert estimator.current_watermark() >= held, "an older timestamp never moves the watermark back"
    assert tracker.deferred_status()[0] == OffsetRange(2, UNBOUNDED_END)


def test_the_bounded_read_ends_at_the_end_offset_without_a_checkpoint(kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("a", {"n": i}) for i in range(3)])
    reader = reader_for(topic, unbounded=False)
    outputs, tracker, _ = read_once(reader, topic, 0, reader.initial_restriction((topic, 0)))
    assert len(outputs) == 3 and tracker.deferred_status() is None
    tracker.check_done()


def test_advance_watermark_only_moves_forward():
    estimator = ManualWatermarkEstimator(None)
    advance_watermark(estimator, Timestamp.of(10))
    advance_watermark(estimator, Timestamp.of(5))
    assert estimator.current_watermark() == Timestamp.of(10)
    advance_watermark(estimator, Timestamp.of(12))
    assert estimator.current_watermark() == Timestamp.of(12)


def test_the_ledger_commits_only_the_contiguous_finished_prefix():
    ledger = PartitionLedger(4)
    for offset in (4, 5, 6, 7):
        assert ledger.note("read", offset) == 0
    assert ledger.note("done", 6) == 0 and ledger.next == 4, "5 and 4 are not finished"
    assert ledger.note("done", 4) == 1 and ledger.next == 5
    assert ledger.note("done", 5) == 2 and ledger.next == 7
    assert ledger.note("done", 3) == 0 and ledger.next == 7, "an offset already committed changes nothing"
    assert ledger.note("done", 7) == 1 and ledger.next == 8
    assert ledger.done == set() and ledger.gaps == {}, "what is committed is forgotten"


def test_the_ledger_never_passes_an_offset_it_has_not_heard_of():
    ledger = PartitionLedger(0)
    assert ledger.note("done", 1) == 0 and ledger.next == 0, "offset 0's refs may still be on their way"
    assert ledger.note("done", 0) == 2 and ledger.next == 2


def test_the_ledger_skips_only_gaps_the_reader_reported():
    ledger = PartitionLedger(2)
    assert ledger.note("read", 5, gap_from=2) == 0 and ledger.next == 5, "offsets 2-4 hold no record"
    assert ledger.note("done", 5, gap_from=2) == 1 and ledger.next == 6
    assert ledger.note("done", 9, gap_from=7) == 0 and ledger.next == 6, "6 is neither finished nor a gap"
    assert ledger.note("done", 6) == 2 and ledger.next == 10


def test_the_reader_reports_a_gap_before_the_first_record_after_its_start(kafka_bootstrap: str, reader_for):
    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("a", {"n": i}) for i in range(4)])
    reader = reader_for(topic)
    outputs, _, _ = read_once(reader, topic, 0, OffsetRange(2, UNBOUNDED_END))
    assert [o.value.source.position.get("gap_from") for o in outputs] == [None, None], "2 and 3: no gap"


def test_partitions_added_while_the_job_runs_are_read_once_listed(kafka_bootstrap: str):
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to
    from confluent_kafka.admin import AdminClient, NewPartitions

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from connectors.kafka import _ListPartitions, _NewPartitions

    topic = create_topic(kafka_bootstrap, partitions=2)
    lister = _ListPartitions(config(kafka_bootstrap, topic))
    first = list(lister.process(None))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        for future in admin.create_partitions([NewPartitions(topic, 3)]).values():
            future.result(10)
    except Exception as exc:  # noqa: BLE001 - the test broker may not implement CreatePartitions
        pytest.skip(f"the test broker cannot add partitions: {exc}")
    second = list(lister.process(None))
    assert first == [(topic, 0), (topic, 1)] and second == [(topic, 0), (topic, 1), (topic, 2)]

    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    stream = TestStream().add_elements(first).advance_watermark_to(60).add_elements(second)
    with beam.Pipeline(options=options) as p:
        new = p | stream.advance_watermark_to_infinity() | beam.ParDo(_NewPartitions())
        assert_that(new, equal_to(second))
