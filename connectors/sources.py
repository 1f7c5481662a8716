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
from transforms.types import SourceRef

Parser = Callable[[bytes, SourceRef], Iterable[Any]]


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
