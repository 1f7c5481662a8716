"""The graph's keyed steps in streaming: per-document order, and the joins, kept by keyed state instead of
per-window GroupByKeys, so nothing depends on windows, triggers or the watermark.

A streaming run works in the global window. `OrderPerDocument` remembers, per `(namespace, doc_id)`, the
highest event it let through (`transforms.latest.superseded_in_flight`: version, then delete over upsert;
the same payload again is a duplicate) and supersedes any event that does not outrank it, whenever it
arrives: an older version in a later window, a record behind the watermark, a duplicate. Several versions of one document can still be
in flight at once (each let through when it was the newest so far); from here on each event is keyed by
its `flight_key`, so their chunks and outcomes never mix, and the sink writers keep the order again
(`connectors.base.WriteDocumentsInOrder`). `AssembleWhenComplete` joins a plan with its vectors as soon as
the last one arrives; `SettleWhenComplete` settles an event once every sink it was written to reported.
No element is ever dropped for being late: there is no window to be late for.
"""
from __future__ import annotations

from typing import Any, Iterator, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec

from transforms import counters
from transforms.latest import digest, held_rank, superseded_in_flight
from transforms.stages import DEAD_LETTERS, SUPERSEDED, _Assemble, sink_tag
from transforms.types import ChangeEvent, DocKey, SinkOutcome

FlightKey = tuple[DocKey, int, str, str]
"""`(document key, version, op, digest of the raw payload)`: one event of a document in flight."""
DOC_KEYED = Tuple[Tuple[str, str], Any]
"""Type hint of elements keyed by document: gives stateful steps a deterministic key coder."""
FLIGHT_KEYED = Tuple[Tuple[Tuple[str, str], int, str, str], Any]
"""Type hint of elements keyed by `flight_key`."""


def flight_key(event: ChangeEvent) -> FlightKey:
    return (event.key, event.version, event.op, digest(event))


class _KeepOrder(beam.DoFn):
    HIGHEST = ReadModifyWriteStateSpec("highest", PickleCoder())

    def __init__(self) -> None:
        self._superseded = counters.counter(counters.EVENTS_SUPERSEDED)

    def process(self, keyed: tuple[DocKey, ChangeEvent],
                highest: Any = beam.DoFn.StateParam(HIGHEST)) -> Iterator[Any]:
        _, event = keyed
        if superseded_in_flight(event, highest.read()) is not None:
            self._superseded.inc()
            yield beam.pvalue.TaggedOutput(SUPERSEDED, event)
            return
        highest.write(held_rank(event))
        yield event


class OrderPerDocument(beam.PTransform):
    """Streaming's `LatestPerDocument`: an event goes on (main output `winners`) only if no earlier event of
    its document outranks it (`superseded_in_flight`); the rest are counted and output as `superseded`.
    Keyed state (version, delete, payload digest per document), no window: late and out-of-window events
    are ordered like any other."""

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (events
                | "KeyByDocument" >> beam.Map(lambda e: (e.key, e)).with_output_types(DOC_KEYED)
                | "KeepOrder" >> beam.ParDo(_KeepOrder()).with_outputs(SUPERSEDED, main="winners"))


class _AssembleWhenComplete(_Assemble):
    PARTS = BagStateSpec("parts", PickleCoder())

    def process(self, keyed: tuple[FlightKey, tuple[str, Any]],  # type: ignore[override]
                parts: Any = beam.DoFn.StateParam(PARTS)) -> Iterator[Any]:
        key, part = keyed
        parts.add(part)
        groups: dict[str, list[Any]] = {"plans": [], "vectors": [], "failures": []}
        for kind, value in parts.read():
            groups[kind].append(value)
        if not groups["plans"]:
            return
        needed = len(groups["plans"][0].indexes_to_embed)
        if len({i for i, _ in groups["vectors"]}) + len(groups["failures"]) < needed:
            return
        parts.clear()
        yield from super().process((key, groups))


def _tagged(kind: str) -> Any:
    return lambda kv: (kv[0], (kind, kv[1]))


class AssembleWhenComplete(beam.PTransform):
    """Streaming's `AssembleDocumentWrites`: the same outputs (a `DocumentWrite` per sink under
    `sink_tag(sink)`, `dead_letters`), each event's plan joined with its vectors (or embedding failures)
    in keyed state, the moment the last one arrives (keys are `flight_key`s)."""

    def __init__(self, model_id: str, dimension: int, sinks: tuple[str, ...]) -> None:
        super().__init__()
        self._model_id, self._dimension, self._sinks = model_id, dimension, tuple(sinks)

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.pvalue.DoOutputsTuple:
        parts = [inputs[name] | f"Tag:{name}" >> beam.Map(_tagged(name)) for name in ("plans", "vectors", "failures")]
        return (parts
                | "AllParts" >> beam.Flatten().with_output_types(FLIGHT_KEYED)
                | "JoinWhenComplete" >> beam.ParDo(_AssembleWhenComplete(self._model_id, self._dimension))
                .with_outputs(DEAD_LETTERS, *(sink_tag(s) for s in self._sinks), main="unused"))


def settle(outcomes: list[SinkOutcome]) -> SinkOutcome:
    """One outcome for the event (sink `"all"`): dead-lettered if any sink failed it, else superseded if a
    sink had a newer version already, else applied."""
    failed = any(not o.applied and not o.superseded for o in outcomes)
    superseded = not failed and any(o.superseded for o in outcomes)
    return SinkOutcome("all", outcomes[0].event, applied=not failed and not superseded, superseded=superseded,
                       sinks=len(outcomes))


class _SettleWhenComplete(beam.DoFn):
    OUTCOMES = BagStateSpec("outcomes", PickleCoder())

    def __init__(self) -> None:
        self._applied = counters.counter(counters.EVENTS_APPLIED)
        self._superseded = counters.counter(counters.EVENTS_SUPERSEDED)
        self._dead = counters.counter(counters.EVENTS_DEAD_LETTERED)

    def process(self, keyed: tuple[FlightKey, SinkOutcome],
                outcomes: Any = beam.DoFn.StateParam(OUTCOMES)) -> Iterator[SinkOutcome]:
        _, outcome = keyed
        outcomes.add(outcome)
        seen = list(outcomes.read())
        if len({o.sink for o in seen}) < outcome.sinks:
            return
        outcomes.clear()
        settled = settle(seen)
        (self._applied if settled.applied else self._superseded if settled.superseded else self._dead).inc()
        yield settled


class SettleWhenComplete(beam.PTransform):
    """Streaming's `SettleEvents`: every sink's outcome for an event → one settled outcome (sink `"all"`),
    once all the sinks it was written to reported (keyed state by `flight_key`). Counted once."""

    def expand(self, outcomes: beam.PCollection) -> beam.PCollection:
        return (outcomes
                | "KeyByEvent" >> beam.Map(lambda o: (flight_key(o.event), o)).with_output_types(FLIGHT_KEYED)
                | "SettleWhenComplete" >> beam.ParDo(_SettleWhenComplete()))
