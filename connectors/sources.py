"""What every source shares: its config reads `RawRecord`s (plus `dead_letters`, stage `read`), names the
parser that turns them into change events, and says how a finished record is acknowledged.

A record is finished once it is applied to every sink, superseded, or dead-lettered; the graph collects
the `SourceRef`s of finished records and hands them, with the refs of every record read, to the source's
`acknowledge` transform (Kafka commits offsets, Redis Streams XACKs, Pub/Sub acks). A crash before that
leaves the records unacknowledged, so the next run reads them again; sinks are idempotent, so that is
harmless.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import apache_beam as beam
from pydantic import BaseModel, ConfigDict

from transforms import counters
from transforms.parse import parse_or_dead_letter
from transforms.stages import DEAD_LETTERS, Parser
from transforms.types import SourceRef


class SourceConfigError(RuntimeError):
    """The source cannot be used as configured (unreachable, missing topic or stream)."""


class SourceConfig(BaseModel):
    """Settings of one source; validated on construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def read(self) -> beam.PTransform:
        """PBegin → outputs `records` (`RawRecord`s) and `dead_letters` (stage `read`)."""
        raise NotImplementedError

    def parser(self) -> Parser:
        return parse_or_dead_letter

    def acknowledge(self) -> Optional[beam.PTransform]:
        """`{"done": refs, "read": refs}` → acknowledges the finished records; None when nothing to do."""
        return None

    def dead_letter_sink(self) -> Optional[beam.PTransform]:
        """Dead letters → the same dead letters once also durable in the source's own dead-letter place (a
        Kafka topic, say); None when the source has none (the dead-letter file is always written)."""
        return None

    @property
    def unbounded(self) -> bool:
        """Whether the source never ends (streaming runners): the graph then works in fixed windows."""
        return False

    def check(self) -> None:
        """Raise `SourceConfigError` at start-up when the source cannot be used."""

    def display(self) -> dict[str, Any]:
        return {}


class BufferedAcknowledger(beam.DoFn):
    """Acknowledges finished records (whatever identifies them to the source: entry IDs, ack IDs) in groups
    (per `limit` and at the end of each bundle);
    subclasses open their client in `setup` and implement `_ack`."""

    limit = 500

    def __init__(self) -> None:
        self._acked = counters.counter(counters.RECORDS_ACKNOWLEDGED)

    def _ack(self, items: list[Any]) -> None:
        raise NotImplementedError

    def start_bundle(self) -> None:
        self._pending: list[Any] = []

    def process(self, item: Any) -> Iterator[Any]:
        self._pending.append(item)
        if len(self._pending) >= self.limit:
            self._flush()
        return iter(())

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        refs, self._pending = self._pending, []
        if refs:
            self._ack(refs)
            self._acked.inc(len(refs))


class ReadWithImpulse(beam.PTransform):
    """A bounded reader DoFn run once from an Impulse: outputs `records` and `dead_letters`."""

    def __init__(self, reader: beam.DoFn) -> None:
        super().__init__()
        self._reader = reader

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "Read" >> beam.ParDo(self._reader).with_outputs(DEAD_LETTERS, main="records"))


class AcknowledgeFinished(beam.PTransform):
    """Finished refs of `system` whose `position[scope_field] == scope` → their ack handles (`handle(ref)`,
    each once) → `acknowledger`."""

    def __init__(self, system: str, scope_field: str, scope: str, handle: Callable[[SourceRef], Any],
                 acknowledger: BufferedAcknowledger) -> None:
        super().__init__()
        self._system, self._field, self._scope = system, scope_field, scope
        self._handle = handle
        self._acknowledger = acknowledger

    def expand(self, refs: dict[str, beam.PCollection]) -> Any:
        system, field, scope = self._system, self._field, self._scope
        return (refs["done"]
                | "Ours" >> beam.Filter(lambda r: r.system == system and r.position.get(field) == scope)
                | "Handles" >> beam.Map(self._handle)
                | "Dedup" >> beam.Distinct()
                | "Acknowledge" >> beam.ParDo(self._acknowledger))


def whole_record(ref: SourceRef) -> SourceRef:
    """The ref of the record a part came from (a record holding several events is split into parts)."""
    if "part_count" not in ref.position:
        return ref
    position = {k: v for k, v in ref.position.items() if k not in ("part", "part_count")}
    return ref.model_copy(update={"position": position})


def _record_key(ref: SourceRef) -> str:
    import json

    return json.dumps([ref.system, sorted(whole_record(ref).position.items())])


class _CompleteRecords(beam.DoFn):
    def process(self, keyed: tuple[str, Iterable[SourceRef]]) -> Iterator[SourceRef]:
        refs = list(keyed[1])
        count = refs[0].position.get("part_count")
        if count is None or len({r.position.get("part") for r in refs}) >= int(count):
            yield whole_record(refs[0])


class FinishedRecords(beam.PTransform):
    """Finished refs → one ref per record whose every part (every event it held) is finished."""

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        return (refs
                | "ByRecord" >> beam.Map(lambda r: (_record_key(r), r))
                | "GroupParts" >> beam.GroupByKey()
                | "WhenComplete" >> beam.ParDo(_CompleteRecords()))
