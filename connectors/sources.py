"""What every source shares: its config reads `RawRecord`s (plus `dead_letters`, stage `read`), names the
parser that turns them into change events, and says how a finished record is acknowledged.

A record is finished once it is applied to every sink, superseded, or dead-lettered; the graph collects
the `SourceRef`s of finished records and hands them, with the refs of every record read, to the source's
`acknowledge` transform (Kafka commits offsets, Redis Streams XACKs, Pub/Sub acks, Azure queues and SQS
delete messages). A crash before that
leaves the records unacknowledged, so the next run reads them again; sinks are idempotent, so that is
harmless.

A record delivered more than `max_delivery_attempts` times (its earlier deliveries never finished: a run
that crashed on it, say) is dead-lettered unprocessed (stage `read`, `TooManyDeliveries`) and so
acknowledged, instead of being retried forever. A bounded read of a queue-like source stops after
`max_records` or `max_read_seconds`, so it ends under steady traffic; leases of records in flight are kept by
a `LeaseKeeper` until they are acknowledged.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import SetStateSpec
from pydantic import BaseModel, ConfigDict, Field

from transforms import counters
from transforms.parse import parse_or_dead_letter
from transforms.stages import DEAD_LETTERS, Parser
from transforms.types import DeadLetter, SourceRef

_LOG = logging.getLogger(__name__)


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

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """Records held by the source and not acknowledged yet, by label pairs (partition, stream, state),
        where the source can tell it cheaply; `{}` where it cannot. The metrics endpoint asks now and then."""
        return {}

    def display(self) -> dict[str, Any]:
        return {}


class BoundedReadSettings(SourceConfig):
    """The caps of a bounded read that receives (Redis Streams, Pub/Sub pull, Azure queue, SQS): it ends after
    `max_records` records or `max_read_seconds` of reading (None: no cap), whichever comes first, and a
    record delivered more than `max_delivery_attempts` times is dead-lettered unprocessed."""

    max_records: Optional[int] = Field(default=10_000, ge=1)
    max_read_seconds: Optional[float] = Field(default=300.0, gt=0)
    max_delivery_attempts: int = Field(default=5, ge=1)


class ReadBudget:
    """What a bounded read may still take: records left of `max_records`, time left of `max_read_seconds`
    (counted from construction)."""

    def __init__(self, max_records: Optional[int], max_seconds: Optional[float]) -> None:
        self.records: float = max_records if max_records is not None else float("inf")
        self._deadline = time.monotonic() + max_seconds if max_seconds is not None else float("inf")

    @property
    def exhausted(self) -> bool:
        return self.records <= 0 or time.monotonic() >= self._deadline

    def take(self, wanted: int) -> int:
        """How many records the next request may ask for (at most `wanted`)."""
        return int(min(wanted, self.records))

    def seconds_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def spend(self) -> None:
        self.records -= 1


def too_many_deliveries(deliveries: int, limit: int, payload: bytes, source: SourceRef) -> DeadLetter:
    """The dead letter (stage `read`) of a record delivered `deliveries` times, more than `limit`."""
    return DeadLetter.of(
        "read", f"delivered {deliveries} times, more than max_delivery_attempts={limit} (earlier deliveries "
        "never finished): dead-lettered unprocessed instead of retried again", payload, source,
        attempts=deliveries, error_type="TooManyDeliveries")


class LeaseKeeper:
    """Keeps the leases (Pub/Sub ack deadlines, Azure and SQS visibility timeouts) of records read and not yet
    acknowledged, for as long as they are in flight: a daemon thread calls `extend` with the held
    `[(key, handle)]` whose lease is half spent (in groups of `group`), every quarter lease, and keeps the
    handles it returns (Azure gives a new pop receipt each time; a key missing from the result is dropped:
    its message is gone). A record leaves on `release` (acknowledged); every record leaves when the keeper
    `stop`s (the reader's teardown: the run ended), so their leases then run out and they are redelivered.

    Keepers are found by name within the process (`LeaseKeeper.find`): the acknowledger releases the records
    it acknowledges and acknowledges with the current handle. Where it runs in another process than the
    reader (not on the DirectRunner), it acknowledges with the handle the record was read with."""

    _by_name: dict[str, "LeaseKeeper"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, name: str, extend: Callable[[list[tuple[Any, Any]]], dict[Any, Any]], lease_s: float,
                 group: int = 1000) -> None:
        self.name = name
        self._extend, self._lease_s, self._group = extend, lease_s, group
        self._held: dict[Any, tuple[Any, float]] = {}  # key -> (handle, when its lease was last set)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper:{name}", daemon=True)

    @classmethod
    def start(cls, name: str, extend: Callable[[list[tuple[Any, Any]]], dict[Any, Any]], lease_s: float,
              group: int = 1000) -> "LeaseKeeper":
        keeper = cls(name, extend, lease_s, group)
        with cls._registry_lock:
            cls._by_name[name] = keeper
        keeper._thread.start()
        return keeper

    @classmethod
    def find(cls, name: str) -> Optional["LeaseKeeper"]:
        with cls._registry_lock:
            return cls._by_name.get(name)

    def hold(self, key: Any, handle: Any) -> None:
        """`key`'s lease was just set (read, or extended on read) with `handle`."""
        with self._lock:
            self._held[key] = (handle, time.monotonic())

    def release(self, key: Any, handle: Any) -> Any:
        """Stops extending `key`; returns its current handle (`handle` when it is not held)."""
        with self._lock:
            held = self._held.pop(key, None)
        return held[0] if held is not None else handle

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def stop(self) -> None:
        self._stopped.set()
        with self._registry_lock:
            if self._by_name.get(self.name) is self:
                del self._by_name[self.name]
        self._thread.join(timeout=30)
        with self._lock:
            self._held.clear()

    def _run(self) -> None:
        while not self._stopped.wait(max(0.2, self._lease_s / 4)):
            try:
                self._extend_due()
            except Exception as exc:  # noqa: BLE001 - the next round tries again; the lease may run out
                _LOG.warning("lease keeper %s: extending leases failed: %s: %s", self.name, type(exc).__name__, exc)

    def _extend_due(self) -> None:
        with self._lock:
            due = [key for key, (_, since) in self._held.items() if time.monotonic() - since >= self._lease_s / 2]
        for start in range(0, len(due), self._group):
            if self._stopped.is_set():
                return
            with self._lock:  # a release waits for this group, then gets the handle the extension left
                items = [(key, self._held[key][0]) for key in due[start:start + self._group] if key in self._held]
                if not items:
                    continue
                now = time.monotonic()
                extended = self._extend(items)
                for key, _ in items:
                    if key in extended:
                        self._held[key] = (extended[key], now)
                    else:
                        self._held.pop(key, None)


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


class _CompleteRecordsInState(beam.DoFn):
    PARTS = SetStateSpec("parts", PickleCoder())

    def process(self, keyed: tuple[str, SourceRef], parts: Any = beam.DoFn.StateParam(PARTS)) -> Iterator[SourceRef]:
        _, ref = keyed
        count = ref.position.get("part_count")
        if count is None:
            yield ref
            return
        parts.add(ref.position.get("part"))
        if len(set(parts.read())) >= int(count):
            parts.clear()
            yield whole_record(ref)


class FinishedRecordsInState(beam.PTransform):
    """Streaming's `FinishedRecords`: a record's ref goes on once every part is finished, counted in keyed
    state (no window: parts finished at any time, in any order, meet)."""

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        return (refs
                | "ByRecord" >> beam.Map(lambda r: (_record_key(r), r)).with_output_types(Tuple[str, Any])
                | "WhenComplete" >> beam.ParDo(_CompleteRecordsInState()))
