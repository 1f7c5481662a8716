"""Google Pub/Sub source: a pull subscriber that acknowledges each message only after its change is applied
to every sink (or superseded, or dead-lettered), so it also runs on Flink and the DirectRunner, where Beam's
Python `ReadFromPubSub` cannot be used; `native` switches to Beam's `ReadFromPubSub` for Dataflow (which
acknowledges once messages are durably in the pipeline, and whose replays the idempotent sinks absorb).

A pull run is bounded: it pulls until a pull returns nothing for `idle_timeout_s`, `max_records` messages
were read or `max_read_seconds` passed. Each message's ack deadline is set to `ack_deadline_s` when pulled and
extended by a `LeaseKeeper` until it is acknowledged (or the run ends), so it is not redelivered while in
flight however long the run takes. A message whose `delivery_attempt` exceeds `max_delivery_attempts` is
dead-lettered unprocessed (stage `read`, `TooManyDeliveries`) and acknowledged: Pub/Sub counts delivery
attempts only on a subscription with a dead-letter policy (the emulator too); without one there is no count
and nothing is dead-lettered this way. Keep `max_delivery_attempts` below the policy's own maximum, or
Pub/Sub forwards the message to its dead-letter topic first. `PUBSUB_EMULATOR_HOST` points the client at the
emulator.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Literal, Optional

import apache_beam as beam
from pydantic import Field

from connectors.sources import (
    AcknowledgeFinished,
    BoundedReadSettings,
    BufferedAcknowledger,
    LeaseKeeper,
    ReadBudget,
    ReadWithImpulse,
    SourceConfigError,
    too_many_deliveries,
)
from transforms import counters
from transforms.notifications import attribute_fields
from transforms.stages import DEAD_LETTERS
from transforms.types import RawRecord, SourceRef

SYSTEM = "pubsub"


class PubSubConfig(BoundedReadSettings):
    """`subscription` is `projects/P/subscriptions/S`."""

    type: Literal["pubsub"] = "pubsub"
    subscription: str = Field(pattern=r"^projects/[^/]+/subscriptions/[^/]+$")
    native: bool = False
    max_messages: int = Field(default=500, ge=1, le=1000)
    idle_timeout_s: float = Field(default=3.0, gt=0)
    ack_deadline_s: int = Field(default=600, ge=10, le=600)

    @property
    def lease_keeper_name(self) -> str:
        return f"{SYSTEM}:{self.subscription}"

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
        self._keeper = LeaseKeeper.start(self._config.lease_keeper_name, self._extend, self._config.ack_deadline_s)

    def teardown(self) -> None:
        self._keeper.stop()
        self._subscriber.close()

    def _extend(self, held: list[tuple[str, str]]) -> dict[str, str]:
        self._subscriber.modify_ack_deadline(request={"subscription": self._config.subscription, "ack_ids": [
            ack_id for ack_id, _ in held], "ack_deadline_seconds": self._config.ack_deadline_s})
        return dict(held)

    def process(self, _: Any) -> Iterator[Any]:
        from google.api_core import exceptions

        c = self._config
        budget = ReadBudget(c.max_records, c.max_read_seconds)
        idle_since = time.monotonic()
        while not budget.exhausted and time.monotonic() - idle_since < c.idle_timeout_s:
            try:
                response = self._subscriber.pull(request={"subscription": c.subscription, "max_messages": budget.take(
                    c.max_messages)}, timeout=min(c.idle_timeout_s, max(1.0, budget.seconds_left())))
            except exceptions.DeadlineExceeded:
                continue
            received = list(response.received_messages)
            if not received:
                continue
            idle_since = time.monotonic()
            self._subscriber.modify_ack_deadline(request={"subscription": c.subscription, "ack_ids": [
                m.ack_id for m in received], "ack_deadline_seconds": c.ack_deadline_s})
            for m in received:
                self._keeper.hold(m.ack_id, m.ack_id)
                budget.spend()
                self._read.inc()
                source = SourceRef(system=SYSTEM, position={
                    **attribute_fields(m.message.attributes), "subscription": c.subscription,
                    "message_id": m.message.message_id, "ack_id": m.ack_id, "delivery_attempt": m.delivery_attempt})
                if m.delivery_attempt > c.max_delivery_attempts:  # 0 where the subscription has no policy
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, too_many_deliveries(
                        m.delivery_attempt, c.max_delivery_attempts, m.message.data, source))
                    continue
                yield RawRecord(m.message.data, source)


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
        keeper = LeaseKeeper.find(self._config.lease_keeper_name)
        if keeper is not None:
            for ack_id in ack_ids:
                keeper.release(ack_id, ack_id)
        self._subscriber.acknowledge(request={"subscription": self._config.subscription, "ack_ids": ack_ids})
