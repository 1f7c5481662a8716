"""The graph's pure stages as Beam transforms: parse, latest version per document, assemble writes,
and the dead-letter file. None of them talks to a store."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import apache_beam as beam

from transforms import counters
from transforms.latest import select_latest
from transforms.parse import PARSE_STAGE, parse_or_dead_letter
from transforms.reconcile import MissingVectorError, assemble_writes
from transforms.types import ChangeEvent, DeadLetter, DocKey, FanOutPlan, RawRecord, SinkOutcome, SourceRef

DEAD_LETTERS = "dead_letters"
SUPERSEDED = "superseded"  # events settled without a write: superseded, or already in sync everywhere
Parser = Callable[[bytes, SourceRef], Iterable[Any]]


DEFAULT_MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
"""`--max_document_bytes`: the largest document text (inline or fetched) the pipeline takes."""
ENVELOPE_BYTES = 64 * 1024
"""A record may exceed `max_document_bytes` by this much (its doc_id, metadata and JSON syntax)."""
KEPT_PAYLOAD_BYTES = 64 * 1024
"""A dead letter of an oversize record keeps this much of its payload (the size is in the message)."""


class DocumentTooLarge(ValueError):
    """A record or a document's text is larger than `--max_document_bytes` allows."""


class NoEvents(ValueError):
    """A record that parsed but held no change event (an S3 message with no records, say)."""


def utf8_length_over(text: str, limit: int) -> Optional[int]:
    """The UTF-8 size of `text` when it is over `limit`, else None (encodes only when the length is unclear)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text) if len(text) > limit else len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


class _ParseRecords(beam.DoFn):
    """Each record ends as its events or as exactly one `parse` dead letter: a record over the size limit, a
    parser that raises anything at all, a record that holds no event, or an event whose text is over
    `max_document_bytes` (then the whole record is dead-lettered, none of its events go on)."""

    def __init__(self, parser: Parser, max_document_bytes: Optional[int]) -> None:
        self._parser = parser
        self._max_document_bytes = max_document_bytes
        self._extra_parts = counters.counter(counters.RECORD_EXTRA_PARTS)

    def process(self, record: RawRecord) -> Iterator[Any]:
        try:
            items = self._parse(record)
        except Exception as exc:  # noqa: BLE001 - any failure is this record's dead letter, never a crash
            payload = record.payload[:KEPT_PAYLOAD_BYTES] if isinstance(exc, DocumentTooLarge) else record.payload
            items = [DeadLetter.of(PARSE_STAGE, exc, payload, record.source,
                                   doc_id=getattr(exc, "doc_id", None), error_type=type(exc).__name__)]
        if len(items) > 1:
            self._extra_parts.inc(len(items) - 1)
        for item in items:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, item) if isinstance(item, DeadLetter) else item

    def _parse(self, record: RawRecord) -> list[Any]:
        limit = self._max_document_bytes
        if limit is not None and len(record.payload) > limit + ENVELOPE_BYTES:
            raise DocumentTooLarge(f"record is {len(record.payload)} bytes, over --max_document_bytes {limit} "
                                   f"(+{ENVELOPE_BYTES} for the envelope); payload kept: first "
                                   f"{KEPT_PAYLOAD_BYTES} bytes")
        items = list(self._parser(record.payload, record.source))
        if not items:
            raise NoEvents("the record holds no change event")
        for item in items:
            size = utf8_length_over(item.text, limit) if isinstance(item, ChangeEvent) and item.text and limit else None
            if size is not None:
                error = DocumentTooLarge(f"text of {item.doc_id!r} is {size} bytes, over --max_document_bytes "
                                         f"{limit}; payload kept: first {KEPT_PAYLOAD_BYTES} bytes")
                error.doc_id = item.doc_id  # type: ignore[attr-defined]
                raise error
        return items


class ParseChangeEvents(beam.PTransform):
    """`RawRecord`s → `ChangeEvent`s (main output) and `dead_letters` (stage `parse`): every record yields
    its events or one dead letter, whatever the input."""

    def __init__(self, parser: Parser = parse_or_dead_letter, max_document_bytes: Optional[int] = None) -> None:
        super().__init__()
        self._parser = parser
        self._max_document_bytes = max_document_bytes

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | beam.ParDo(_ParseRecords(self._parser, self._max_document_bytes)).with_outputs(
            DEAD_LETTERS, main="events")


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
            try:
                outputs = list(self._assemble(plan, groups["vectors"], groups["failures"]))
            except Exception as exc:  # noqa: BLE001 - one document's failure is its dead letter
                outputs = [beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event("assemble", exc, plan.event))]
            yield from outputs

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
