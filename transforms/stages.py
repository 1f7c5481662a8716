"""The graph's pure stages as Beam transforms: parse, latest version per document, assemble writes,
and the dead-letter file. None of them talks to a store."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam

from transforms import counters
from transforms.latest import select_latest
from transforms.parse import parse_or_dead_letter
from transforms.reconcile import MissingVectorError, assemble_writes
from transforms.types import ChangeEvent, DeadLetter, DocKey, FanOutPlan, RawRecord, SinkOutcome, SourceRef

DEAD_LETTERS = "dead_letters"
SUPERSEDED = "superseded"  # events settled without a write: superseded, or already in sync everywhere
Parser = Callable[[bytes, SourceRef], Iterable[Any]]


class _ParseRecords(beam.DoFn):
    def __init__(self, parser: Parser) -> None:
        self._parser = parser

    def process(self, record: RawRecord) -> Iterator[Any]:
        for item in self._parser(record.payload, record.source):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, item) if isinstance(item, DeadLetter) else item


class ParseChangeEvents(beam.PTransform):
    """`RawRecord`s → `ChangeEvent`s (main output) and `dead_letters` (stage `parse`)."""

    def __init__(self, parser: Parser = parse_or_dead_letter) -> None:
        super().__init__()
        self._parser = parser

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | beam.ParDo(_ParseRecords(self._parser)).with_outputs(DEAD_LETTERS, main="events")


class _SelectLatest(beam.DoFn):
    def __init__(self) -> None:
        self._superseded = counters.counter(counters.EVENTS_SUPERSEDED)

    def process(self, keyed: tuple[DocKey, Iterable[ChangeEvent]]) -> Iterator[Any]:
        winner, losers = select_latest(keyed[1])
        self._superseded.inc(len(losers))
        yield winner
        for loser in losers:
            yield beam.pvalue.TaggedOutput(SUPERSEDED, loser.event)


class LatestPerDocument(beam.PTransform):
    """Keeps the highest-version event of each `(namespace, doc_id)` (main output `winners`); the rest are
    counted and output as `superseded`."""

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (events
                | "KeyByDocument" >> beam.Map(lambda e: (e.key, e))
                | "GroupByDocument" >> beam.GroupByKey()
                | "SelectLatest" >> beam.ParDo(_SelectLatest()).with_outputs(SUPERSEDED, main="winners"))


class _Assemble(beam.DoFn):
    def __init__(self, model_id: str, dimension: int) -> None:
        self._model_id = model_id
        self._dimension = dimension
        self._embedded = counters.counter(counters.CHUNKS_EMBEDDED)
        self._skipped = counters.counter(counters.CHUNKS_SKIPPED)
        self._tokens = counters.counter(counters.TOKENS_EMBEDDED)

    def process(self, joined: tuple[DocKey, dict[str, list[Any]]]) -> Iterator[Any]:
        _, groups = joined
        for plan in groups["plans"]:
            yield from self._assemble(plan, groups["vectors"], groups["failures"])

    def _assemble(self, plan: FanOutPlan, vectors: list[tuple[int, list[float]]],
                  failures: list[str]) -> Iterator[Any]:
        if failures:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event(
                "embed", failures[0], plan.event, error_type=failures[0].split(":", 1)[0]))
            return
        new_vectors = dict(vectors)
        bad = [i for i, v in new_vectors.items() if not all(math.isfinite(x) for x in v)]
        if bad:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event(
                "embed", f"non-finite vector for chunk(s) {bad}", plan.event, error_type="NonFiniteVector"))
            return
        try:
            writes = assemble_writes(plan, new_vectors, self._model_id, self._dimension)
        except MissingVectorError as exc:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event("embed", exc, plan.event))
            return
        tokens = {c.chunk_index: c.token_count for c in plan.chunks}
        self._embedded.inc(len(new_vectors))
        self._skipped.inc(len(plan.reused_vectors))
        self._tokens.inc(sum(tokens.get(i, 0) for i in new_vectors))
        for sink, write in writes.items():
            yield beam.pvalue.TaggedOutput(sink_tag(sink), write)


def sink_tag(sink: str) -> str:
    """The output tag of `AssembleDocumentWrites` that carries one sink's writes."""
    return f"writes:{sink}"


class AssembleDocumentWrites(beam.PTransform):
    """Joins each document's plan with its new vectors (or embedding failures) into one `DocumentWrite` per
    sink that needs it (tag `sink_tag(sink)`); a document with any failed or non-finite vector is
    dead-lettered (stage `embed`) and written nowhere, never half-written."""

    def __init__(self, model_id: str, dimension: int, sinks: Sequence[str]) -> None:
        super().__init__()
        self._model_id = model_id
        self._dimension = dimension
        self._sinks = tuple(sinks)

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.pvalue.DoOutputsTuple:
        return (inputs
                | "JoinByDocument" >> beam.CoGroupByKey()
                | "Assemble" >> beam.ParDo(_Assemble(self._model_id, self._dimension)).with_outputs(
                    DEAD_LETTERS, *(sink_tag(s) for s in self._sinks), main="unused"))


class _Settle(beam.DoFn):
    def __init__(self) -> None:
        self._applied = counters.counter(counters.EVENTS_APPLIED)
        self._dead = counters.counter(counters.EVENTS_DEAD_LETTERED)

    def process(self, keyed: tuple[DocKey, Iterable[SinkOutcome]]) -> Iterator[SinkOutcome]:
        outcomes = list(keyed[1])
        applied = all(o.applied for o in outcomes)
        (self._applied if applied else self._dead).inc()
        yield SinkOutcome("all", outcomes[0].event, applied)


class SettleEvents(beam.PTransform):
    """Every sink's outcomes for a document → one outcome per event (sink `"all"`): applied when every sink
    that needed the write applied it, else dead-lettered. Counted once; this is what a source acknowledges."""

    def expand(self, outcomes: beam.PCollection) -> beam.PCollection:
        return (outcomes
                | "KeyByDocument" >> beam.Map(lambda o: (o.event.key, o))
                | "GroupByDocument" >> beam.GroupByKey()
                | "Settle" >> beam.ParDo(_Settle()))


def _dead_letter_line(letter: DeadLetter) -> str:
    """Counts the record, and its event as dead-lettered unless a sink failed it (`SettleEvents` counts
    those once per event, however many sinks failed)."""
    counters.counter(counters.DEAD_LETTERS).inc()
    if not letter.stage.startswith("sink:"):
        counters.counter(counters.EVENTS_DEAD_LETTERED).inc()
    return letter.model_dump_json()


class WriteDeadLetters(beam.PTransform):
    """Writes every dead letter as one JSON line to `path` (one file, replaced on each run); with
    `streaming_frequency` (unbounded sources), to files `path-<window>-<shard>` every that many seconds."""

    def __init__(self, path: str, streaming_frequency: int = 0) -> None:
        super().__init__()
        self._path = path
        self._frequency = streaming_frequency

    def expand(self, letters: beam.PCollection) -> Any:
        lines = letters | "ToJson" >> beam.Map(_dead_letter_line)
        if self._frequency:
            return lines | "WriteJsonlFiles" >> beam.io.WriteToText(self._path, triggering_frequency=self._frequency)
        return lines | "WriteJsonl" >> beam.io.WriteToText(self._path, shard_name_template="", num_shards=1)
