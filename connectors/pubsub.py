"""Google Pub/Sub source: a pull subscriber that acknowledges each message only after its change is applied
to every sink (or superseded, or dead-lettered), so it also runs on Flink and the DirectRunner, where Beam's
Python `ReadFromPubSub` cannot be used; `native` switches to Beam's `ReadFromPubSub` for Dataflow (which
acknowledges once messages are durably in the pipeline, and whose replays the idempotent sinks absorb).

A pull run is bounded: it pulls until a pull returns nothing for `idle_timeout_s` or `max_records` messages
were read, extending each message's ack deadline to `ack_deadline_s` so it is not redelivered while being
processed. `PUBSUB_EMULATOR_HOST` points the client at the emulator.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Literal, Optional

import apache_beam as beam
from pydantic import Field

from connectors.sources import AcknowledgeFinished, BufferedAcknowledger, ReadWithImpulse, SourceConfig, SourceConfigError
from transforms import counters
from transforms.notifications import attribute_fields
from transforms.stages import DEAD_LETTERS
from transforms.types import RawRecord, SourceRef

SYSTEM = "pubsub"


class PubSubConfig(SourceConfig):
    """`subscription` is `projects/P/subscriptions/S`."""

    type: Literal["pubsub"] = "pubsub"
    subscription: str = Field(pattern=r"^projects/[^/]+/subscriptions/[^/]+$")
    native: bool = False
    max_messages: int = Field(default=500, ge=1, le=1000)
    max_records: Optional[int] = Field(default=None, ge=1)
    idle_timeout_s: float = Field(default=3.0, gt=0)
    ack_deadline_s: int = Field(default=600, ge=10, le=600)

    def read(self) -> beam.PTransform:
        return ReadPubSubNative(self) if self.native else ReadWithImpulse(_Pull(self))

    def acknowledge(self) -> Optional[beam.PTransform]:
        """Acknowledges every finished message of this subscription (the pull reader only)."""
        if self.native:
            return None
        return AcknowledgeFinished(SYSTEM, "subscription", self.subscription, lambda r: str(r.position["ack_id"]),
                                   _Ack(self))

    @property
    def unbounded(self) -> bool:
        return self.native

    def check(self) -> None:
        if self.native:
            return
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        try:
            subscriber.get_subscription(request={"subscription": self.subscription}, timeout=15)
        except Exception as exc:  # noqa: BLE001 - one start-up line
            raise SourceConfigError(f"Pub/Sub subscription {self.subscription} cannot be used: "
                                    f"{type(exc).__name__}: {exc}") from exc
        finally:
            subscriber.close()

    def display(self) -> dict[str, Any]:
        return {"source": "pubsub", "subscription": self.subscription, "native": self.native}


class _Pull(beam.DoFn):
    def __init__(self, config: PubSubConfig) -> None:
        self._config = config
        self._read = counters.counter(counters.RECORDS_READ)

    def setup(self) -> None:
        from google.cloud import pubsub_v1

        self._subscriber = pubsub_v1.SubscriberClient()

    def teardown(self) -> None:
        self._subscriber.close()

    def process(self, _: Any) -> Iterator[RawRecord]:
        from google.api_core import exceptions

        c = self._config
        budget = c.max_records if c.max_records is not None else float("inf")
        idle_since = time.monotonic()
        while budget > 0 and time.monotonic() - idle_since < c.idle_timeout_s:
            try:
                response = self._subscriber.pull(request={"subscription": c.subscription, "max_messages": int(
                    min(c.max_messages, budget))}, timeout=c.idle_timeout_s)
            except exceptions.DeadlineExceeded:
                continue
            received = list(response.received_messages)
            if not received:
                continue
            idle_since = time.monotonic()
            self._subscriber.modify_ack_deadline(request={"subscription": c.subscription, "ack_ids": [
                m.ack_id for m in received], "ack_deadline_seconds": c.ack_deadline_s})
            for m in received:
                budget -= 1
                self._read.inc()
                yield RawRecord(m.message.data, SourceRef(system=SYSTEM, position={
                    **attribute_fields(m.message.attributes), "subscription": c.subscription,
                    "message_id": m.message.message_id, "ack_id": m.ack_id, "delivery_attempt": m.delivery_attempt}))


class ReadPubSubNative(beam.PTransform):
    """Beam's `ReadFromPubSub` (Dataflow; streaming only) with each message as a `RawRecord`."""

    def __init__(self, config: PubSubConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        subscription = self._config.subscription

        def to_record(message: Any) -> RawRecord:
            counters.counter(counters.RECORDS_READ).inc()
            return RawRecord(message.data, SourceRef(system=SYSTEM, position={
                **attribute_fields(message.attributes), "subscription": subscription,
                "message_id": message.message_id or ""}))

        return (pbegin
                | "ReadFromPubSub" >> beam.io.ReadFromPubSub(subscription=subscription, with_attributes=True)
                | "ToRecords" >> beam.Map(to_record).with_outputs(DEAD_LETTERS, main="records"))


class _Ack(BufferedAcknowledger):
    def __init__(self, config: PubSubConfig) -> None:
        super().__init__()
        self._config = config

    def setup(self) -> None:
        from google.cloud import pubsub_v1

        self._subscriber = pubsub_v1.SubscriberClient()

    def teardown(self) -> None:
        self._subscriber.close()

    def _ack(self, ack_ids: list[str]) -> None:
        self._subscriber.acknowledge(request={"subscription": self._config.subscription, "ack_ids": ack_ids})
