"""Redis Streams source: reads a stream through a consumer group and XACKs each entry only after its change
is applied to every sink (or superseded, or dead-lettered).

One run reads, in order: this consumer's own pending entries (delivered to it by an earlier run that did
not finish), entries pending on other consumers for longer than `claim_idle_ms` (XAUTOCLAIM: their
consumer died), then new entries (`>`) until none arrives for `block_ms`, `max_records` are read or
`max_read_seconds` passed; so a run is bounded even under steady traffic, and successive runs (`--follow`)
keep a store fresh. A re-read pending entry whose delivery count (XPENDING's times delivered, this delivery
included) exceeds `max_delivery_attempts` is dead-lettered unprocessed (stage `read`, `TooManyDeliveries`)
and then acknowledged. Each entry's field `field` holds one
ChangeEvent JSON; an entry without it, and a pending entry deleted or trimmed from the stream before it was
applied, are dead-lettered (stage `read`) and then acknowledged. The entry ID is the record's position
(`{"stream", "id"}`).
"""
from __future__ import annotations

import socket
from typing import Any, Iterator, Literal, Optional

import apache_beam as beam
from pydantic import Field

from connectors.secrets import SecretRef
from connectors.sources import (
    AcknowledgeFinished,
    BoundedReadSettings,
    BufferedAcknowledger,
    ReadBudget,
    ReadWithImpulse,
    SourceConfigError,
    too_many_deliveries,
)
from transforms import counters
from transforms.stages import DEAD_LETTERS
from transforms.types import DeadLetter, RawRecord, SourceRef

SYSTEM = "redis"


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)


class RedisStreamConfig(BoundedReadSettings):
    """`url` (never logged), `stream`, `group` (created at `start_id` when missing: `0` reads the stream's
    whole history, `$` only what arrives later), `consumer` (keep it stable across runs so its own pending
    entries are picked up again)."""

    type: Literal["redis"] = "redis"
    url: SecretRef
    """A reference (see connectors/secrets.py), resolved where the client is made."""
    stream: str
    group: str
    consumer: str = Field(default_factory=lambda: f"vector-sync-{socket.gethostname()}")
    field: str = "data"
    start_id: str = "0"
    read_count: int = Field(default=500, ge=1)
    block_ms: int = Field(default=1000, ge=0)
    claim_idle_ms: int = Field(default=60_000, ge=0)

    def read(self) -> beam.PTransform:
        return ReadWithImpulse(_ReadEntries(self))

    def acknowledge(self) -> beam.PTransform:
        """XACKs every finished entry of this stream."""
        return AcknowledgeFinished(SYSTEM, "stream", self.stream, lambda r: str(r.position["id"]), _XAck(self))

    def check(self) -> None:
        try:
            client = _client(self.url.get_secret_value())
            client.ping()
            ensure_group(client, self)
            client.close()
        except Exception as exc:  # noqa: BLE001 - reported as one start-up line
            raise SourceConfigError(f"Redis stream {self.stream!r} cannot be used: {type(exc).__name__}: {exc}") from exc

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """The group's pending entries (delivered, not acknowledged) and, on Redis 7+, its lag (not delivered)."""
        client = _client(self.url.get_secret_value())
        try:
            groups = {g["name"]: g for g in client.xinfo_groups(self.stream)}
        finally:
            client.close()
        group = groups.get(self.group) or groups.get(self.group.encode())
        if group is None:
            return {}
        found = {(("stream", self.stream), ("state", "pending")): int(group["pending"])}
        if group.get("lag") is not None:
            found[(("stream", self.stream), ("state", "undelivered"))] = int(group["lag"])
        return found

    def display(self) -> dict[str, Any]:
        return {"source": "redis", "stream": self.stream, "group": self.group, "consumer": self.consumer}


def ensure_group(client: Any, config: RedisStreamConfig) -> None:
    import redis

    try:
        client.xgroup_create(config.stream, config.group, id=config.start_id, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class _ReadEntries(beam.DoFn):
    def __init__(self, config: RedisStreamConfig) -> None:
        self._config = config
        self._read = counters.counter(counters.RECORDS_READ)

    def setup(self) -> None:
        self._client = _client(self._config.url.get_secret_value())

    def teardown(self) -> None:
        self._client.close()

    def process(self, _: Any) -> Iterator[Any]:
        c = self._config
        ensure_group(self._client, c)
        self._budget = ReadBudget(c.max_records, c.max_read_seconds)
        self._seen: set[str] = set()  # an entry can come back from XAUTOCLAIM after this run re-read it
        yield from self._own_pending()
        yield from self._claimed()
        while not self._budget.exhausted:
            block_ms = int(min(c.block_ms, self._budget.seconds_left() * 1000))
            reply = self._client.xreadgroup(c.group, c.consumer, {c.stream: ">"},
                                             count=self._budget.take(c.read_count), block=block_ms or None)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            yield from self._records(entries)

    def _own_pending(self) -> Iterator[Any]:
        """Entries delivered to this consumer earlier and never acknowledged (a run that did not finish)."""
        c = self._config
        after = "0"
        while not self._budget.exhausted:
            reply = self._client.xreadgroup(c.group, c.consumer, {c.stream: after},
                                             count=self._budget.take(c.read_count))
            entries = reply[0][1] if reply else []
            if not entries:
                return
            after = entries[-1][0]
            yield from self._records(entries, self._deliveries(entries))

    def _claimed(self) -> Iterator[Any]:
        """Entries pending on other consumers idle for `claim_idle_ms` (their consumer died): XAUTOCLAIM."""
        c = self._config
        cursor = "0-0"
        while not self._budget.exhausted:
            reply = self._client.xautoclaim(c.stream, c.group, c.consumer, min_idle_time=c.claim_idle_ms,
                                            start_id=cursor, count=self._budget.take(c.read_count))
            cursor, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            yield from self._records([(entry_id, None) for entry_id in deleted])
            yield from self._records(entries, self._deliveries(entries))
            if _id(cursor) == "0-0":
                return

    def _deliveries(self, entries: list[Any]) -> dict[str, int]:
        """Times each of these pending entries (just re-read or claimed by this consumer) was delivered."""
        if not entries:
            return {}
        c = self._config
        pending = self._client.xpending_range(c.stream, c.group, min=entries[0][0], max=entries[-1][0],
                                              count=len(entries), consumername=c.consumer)
        return {_id(p["message_id"]): int(p["times_delivered"]) for p in pending}

    def _records(self, entries: list[Any], deliveries: Optional[dict[str, int]] = None) -> Iterator[Any]:
        c = self._config
        for entry_id, fields in entries:
            if _id(entry_id) in self._seen:
                continue
            self._seen.add(_id(entry_id))
            self._budget.spend()
            self._read.inc()
            source = SourceRef(system=SYSTEM, position={"stream": c.stream, "id": _id(entry_id)})
            if not fields:  # pending, but deleted or trimmed since its delivery (XADD needs one field or more)
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    "read", "the entry was deleted or trimmed from the stream (XDEL, XTRIM, MAXLEN) after it was "
                    "delivered and before it was applied: its content is gone", b"", source,
                    error_type="EntryTrimmed"))
                continue
            payload = fields.get(c.field.encode())
            if payload is None:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    "read", f"stream entry has no field {c.field!r} (fields: {sorted(_id(k) for k in fields)})",
                    repr(fields).encode(), source, error_type="MissingField"))
                continue
            delivered = (deliveries or {}).get(_id(entry_id), 1)
            if delivered > c.max_delivery_attempts:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, too_many_deliveries(
                    delivered, c.max_delivery_attempts, payload, source))
                continue
            yield RawRecord(payload, source)


def _id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _XAck(BufferedAcknowledger):
    def __init__(self, config: RedisStreamConfig) -> None:
        super().__init__()
        self._config = config

    def setup(self) -> None:
        self._client = _client(self._config.url.get_secret_value())

    def teardown(self) -> None:
        self._client.close()

    def _ack(self, entry_ids: list[str]) -> None:
        self._client.xack(self._config.stream, self._config.group, *entry_ids)
