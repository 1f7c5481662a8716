"""The streaming graph's keyed steps on the DirectRunner with `--streaming` and a TestStream (each
`add_elements` is its own bundle, so state is what carries order from one to the next): per-document order,
the plan/vector join, the writer's order (a store without conditional writes, recording what it is asked to
write), settling across sinks, and buffered outputs keeping their own timestamp."""
from __future__ import annotations

import threading
from typing import Any, Literal, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from connectors.base import StoreConfig, VectorStore, WriteDocumentsInOrder
from transforms.ordering import AssembleWhenComplete, OrderPerDocument, SettleWhenComplete, flight_key
from transforms.stages import DEAD_LETTERS, SUPERSEDED, sink_tag
from transforms.types import (ChangeEvent, Chunk, ChunkRecord, DocKey, DocumentWrite, FanOutPlan, SinkOutcome,
                              StoredDocument)


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(options=options)


def event(doc_id: str, version: int, op: str = "upsert", text: str = "t") -> ChangeEvent:
    raw = f"{doc_id}:{version}:{op}:{text}".encode()
    return ChangeEvent(doc_id=doc_id, op=op, version=version, text=text if op == "upsert" else None, raw=raw)


def bundles(*groups: Sequence[Any]) -> TestStream:
    stream = TestStream()
    for i, group in enumerate(groups):
        stream = stream.add_elements(list(group)).advance_watermark_to(10 * (i + 1))
    return stream.advance_watermark_to_infinity()


def test_order_per_document_supersedes_older_duplicate_and_tied_upserts_in_later_bundles():
    a2, a1, a2_delete, b1 = event("a", 2), event("a", 1), event("a", 2, "delete"), event("b", 1)
    with streaming_pipeline() as p:
        ordered = p | bundles([a2], [a1, b1], [a2_delete], [a2, b1]) | OrderPerDocument()
        label = lambda e: (e.doc_id, e.version, e.op)  # noqa: E731
        assert_that(ordered.winners | "W" >> beam.Map(label),
                    equal_to([("a", 2, "upsert"), ("b", 1, "upsert"), ("a", 2, "delete")]), label="winners")
        assert_that(ordered[SUPERSEDED] | "S" >> beam.Map(label),
                    equal_to([("a", 1, "upsert"), ("a", 2, "upsert"), ("b", 1, "upsert")]), label="superseded")


def plan_for(e: ChangeEvent, chunks: int, reused: Sequence[int] = ()) -> FanOutPlan:
    parts = tuple(Chunk(f"{e.doc_id}-{i}", i, f"text {i}", f"h{i}", 3) for i in range(chunks))
    return FanOutPlan(e, parts, {i: [1.0, 0.0] for i in reused}, {"s1": (), "s2": ()})


def test_a_plan_is_assembled_once_its_last_vector_arrives_whatever_the_order():
    a, b = event("a", 1), event("b", 3)
    ka, kb = flight_key(a), flight_key(b)
    with streaming_pipeline() as p:
        parts = p | bundles([("vectors", (ka, (1, [0.0, 1.0])))],
                            [("plans", (ka, plan_for(a, 3, reused=[2]))), ("plans", (kb, plan_for(b, 1)))],
                            [("vectors", (ka, (0, [1.0, 1.0])))],
                            [("failures", (kb, "RuntimeError: boom"))])
        inputs = {name: parts | f"Only:{name}" >> beam.FlatMap(lambda kv, n=name: [kv[1]] if kv[0] == n else [])
                  for name in ("plans", "vectors", "failures")}
        assembled = inputs | AssembleWhenComplete("m", 2, ("s1", "s2"))
        assert_that(assembled[sink_tag("s1")] | "W1" >> beam.Map(lambda w: (w.event.doc_id, len(w.records), w.sinks)),
                    equal_to([("a", 3, 2)]), label="s1")
        assert_that(assembled[sink_tag("s2")] | "W2" >> beam.Map(lambda w: w.event.doc_id), equal_to(["a"]),
                    label="s2")
        assert_that(assembled[DEAD_LETTERS] | "D" >> beam.Map(lambda d: (d.doc_id, d.stage)),
                    equal_to([("b", "embed")]), label="dead")


def test_an_event_settles_once_every_sink_it_was_written_to_reported():
    a, b, c = event("a", 1), event("b", 1), event("c", 1)
    outcomes = [SinkOutcome("s1", a, True, sinks=2), SinkOutcome("s1", b, True, sinks=2),
                SinkOutcome("s1", c, False, superseded=True, sinks=2)]
    later = [SinkOutcome("s2", a, True, sinks=2), SinkOutcome("s2", b, False, sinks=2),
             SinkOutcome("s2", c, True, sinks=2)]
    with streaming_pipeline() as p:
        settled = p | bundles(outcomes, later) | SettleWhenComplete()
        assert_that(settled | beam.Map(lambda o: (o.event.doc_id, o.applied, o.superseded)),
                    equal_to([("a", True, False), ("b", False, False), ("c", False, True)]))


class RecordingStore(VectorStore):
    """A store with no conditional write that records every write it is asked for (`written`, per
    process: the DirectRunner runs in this one)."""

    written: list[tuple[str, int, tuple[str, ...], tuple[str, ...]]] = []
    lock = threading.Lock()

    def ensure_ready(self, dimension: int) -> None:
        pass

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        return {}

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        with self.lock:
            self.written.extend((w.event.doc_id, w.event.version, tuple(r.point_id for r in w.records),
                                 tuple(w.stale_ids)) for w in writes)

    def count(self) -> int:
        return 0


class RecordingConfig(StoreConfig):
    type: Literal["recording"] = "recording"

    @property
    def sink_type(self) -> str:
        return "recording"

    def create_store(self) -> VectorStore:
        return RecordingStore()


def write_of(e: ChangeEvent, chunks: int) -> DocumentWrite:
    records = tuple(ChunkRecord(f"{e.doc_id}-{i}", e.doc_id, None, i, chunks, e.version, "t", "h", "m", {}, [1.0])
                    for i in range(chunks))
    return DocumentWrite(e, records, ())


def test_the_writer_never_writes_an_older_version_after_a_newer_one_and_drops_what_the_newer_one_replaced():
    RecordingStore.written.clear()
    a2, a1, a6 = event("a", 2), event("a", 1), event("a", 6)
    b3, b4, b5 = event("b", 3), event("b", 4), event("b", 5)
    groups = [[write_of(a2, 3)], [write_of(a1, 5)], [write_of(b3, 1), write_of(b4, 2)],
              [write_of(b5, 1), write_of(b4, 2)], [write_of(a6, 1)]]
    with streaming_pipeline() as p:
        writes = (p | bundles(*groups) | beam.Map(lambda w: (w.key, w)))
        written = writes | beam.ParDo(WriteDocumentsInOrder(RecordingConfig(batch_size=100))).with_outputs(
            DEAD_LETTERS, main="outcomes")
        assert_that(written.outcomes | beam.Map(lambda o: (o.event.doc_id, o.event.version, o.applied, o.superseded)),
                    equal_to([("a", 2, True, False), ("a", 1, False, True), ("b", 3, False, True),
                              ("b", 4, True, False), ("b", 5, True, False), ("b", 4, False, True),
                              ("a", 6, True, False)]))
    assert [(doc, v) for doc, v, _, _ in RecordingStore.written] == [("a", 2), ("b", 4), ("b", 5), ("a", 6)]
    a6_write = RecordingStore.written[-1]
    assert a6_write[2] == ("a-0",) and set(a6_write[3]) == {"a-1", "a-2"}, \
        "the newer write also deletes the chunks the earlier admitted write added"


def test_the_in_flight_rule_is_the_precedence_rule_with_a_digest_for_the_last_tie_break():
    from transforms.latest import held_rank, superseded_in_flight

    a2, a2_delete = event("a", 2), event("a", 2, "delete")
    assert superseded_in_flight(a2, None) is None
    assert superseded_in_flight(event("a", 1), held_rank(a2)) == "older version 1 < 2"
    assert superseded_in_flight(a2, held_rank(a2)) == "duplicate"
    assert superseded_in_flight(a2, held_rank(a2_delete)) == "same version 2 as a delete (a delete wins a tie)"
    assert superseded_in_flight(a2_delete, held_rank(a2)) is None
    assert superseded_in_flight(event("a", 2, text="other"), held_rank(a2)) is None, "a different payload goes on"
    assert superseded_in_flight(event("a", 3), held_rank(a2_delete)) is None


class _Stamp(beam.DoFn):
    def process(self, outcome: SinkOutcome, timestamp=beam.DoFn.TimestampParam) -> Any:
        yield outcome.event.doc_id, outcome.sinks, int(timestamp.micros // 1_000_000)


def test_buffered_outputs_keep_their_own_timestamp_when_a_later_element_flushes_the_buffer():
    """A batch of two flushed while the second element is processed: the first's outcome keeps time 5."""
    from apache_beam.transforms.window import TimestampedValue

    from connectors.base import WriteDocuments

    RecordingStore.written.clear()
    writes = [TimestampedValue(dataclass_replace(write_of(event(d, 1), 1), sinks=2), t) for d, t in (("x", 5), ("y", 15))]
    with streaming_pipeline() as p:
        written = (p | TestStream().add_elements(writes).advance_watermark_to_infinity()
                   | beam.ParDo(WriteDocuments(RecordingConfig(batch_size=2))).with_outputs(DEAD_LETTERS,
                                                                                           main="outcomes"))
        assert_that(written.outcomes | beam.ParDo(_Stamp()), equal_to([("x", 2, 5), ("y", 2, 15)]))


def dataclass_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)
