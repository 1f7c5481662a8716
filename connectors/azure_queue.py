"""Azure Storage Queue source, as Event Grid delivers storage notifications to it: each message is received
with a visibility timeout (hidden from other readers meanwhile) and deleted only after its change is applied
to every sink, superseded or dead-lettered. A message that is not finished reappears after the timeout, so
a crashed run loses nothing. While a message is in flight a `LeaseKeeper` extends its visibility timeout
(each extension gives it a new pop receipt, which the delete then uses), until it is deleted or the run
ends. A run is bounded: it receives until the queue is empty, `max_records` messages or `max_read_seconds`.
A message whose `dequeue_count` exceeds `max_delivery_attempts` is dead-lettered unprocessed (stage `read`,
`TooManyDeliveries`) and deleted. Message bodies are Event Grid JSON, plain or base64-encoded (both are delivered in practice).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Iterator, Literal, Optional

import apache_beam as beam
from pydantic import Field

from connectors.secrets import SecretRef
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
from transforms.notifications import NotificationParser
from transforms.stages import DEAD_LETTERS, Parser
from transforms.types import RawRecord, SourceRef

SYSTEM = "azure_queue"
_LOG = logging.getLogger(__name__)


class AzureQueueConfig(BoundedReadSettings):
    """`queue` on the account of `connection_string` (a reference, see connectors/secrets.py; default
    `env:AZURE_STORAGE_CONNECTION_STRING`), resolved where the client is made."""

    type: Literal["azure_queue"] = "azure_queue"
    queue: str
    connection_string: Optional[SecretRef] = None
    visibility_timeout_s: int = Field(default=600, ge=1, le=7 * 24 * 3600)

    def connection(self) -> str:
        value = (self.connection_string or SecretRef.env("AZURE_STORAGE_CONNECTION_STRING")).resolve_or_none()
        if not value:
            raise SourceConfigError("--source azure_queue needs --azure_connection_string "
                                    "(or AZURE_STORAGE_CONNECTION_STRING)")
        return value

    def client(self) -> Any:
        from azure.storage.queue import QueueClient

        return QueueClient.from_connection_string(self.connection(), self.queue)

    @property
    def lease_keeper_name(self) -> str:
        return f"{SYSTEM}:{self.queue}"

    def read(self) -> beam.PTransform:
        return ReadWithImpulse(_Receive(self))

    def parser(self) -> Parser:
        return NotificationParser("eventgrid")

    def acknowledge(self) -> beam.PTransform:
        """Deletes every finished message of this queue."""
        return AcknowledgeFinished(SYSTEM, "queue", self.queue, lambda r: (str(r.position["message_id"]),
                                                                          str(r.position["pop_receipt"])), _Delete(self))

    def check(self) -> None:
        try:
            client = self.client()
            client.get_queue_properties()
            client.close()
        except SourceConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one start-up line
            raise SourceConfigError(f"Azure queue {self.queue!r} cannot be used: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0]}") from exc

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """The queue's approximate message count (visible and in flight; Azure's own estimate)."""
        client = self.client()
        try:
            return {(("queue", self.queue),): int(client.get_queue_properties().approximate_message_count or 0)}
        finally:
            client.close()

    def display(self) -> dict[str, Any]:
        return {"source": "azure_queue", "queue": self.queue}


def message_bytes(content: Any) -> bytes:
    """The message body as JSON bytes: plain JSON as is, base64 of JSON decoded."""
    raw = content if isinstance(content, bytes) else str(content).encode("utf-8")
    try:
        json.loads(raw)
        return raw
    except ValueError:
        pass
    try:
        decoded = base64.b64decode(raw, validate=True)
        json.loads(decoded)
        return decoded
    except (binascii.Error, ValueError):
        return raw  # neither: the parser dead-letters it with the reason


class _Receive(beam.DoFn):
    def __init__(self, config: AzureQueueConfig) -> None:
        self._config = config
        self._read = counters.counter(counters.RECORDS_READ)

    def setup(self) -> None:
        self._keeper_client = self._config.client()
        self._keeper = LeaseKeeper.start(self._config.lease_keeper_name, self._extend,
                                         self._config.visibility_timeout_s, group=16)

    def teardown(self) -> None:
        self._keeper.stop()
        self._keeper_client.close()

    def _extend(self, held: list[tuple[str, str]]) -> dict[str, str]:
        """A new visibility timeout (and pop receipt) for each held message; a deleted one is dropped."""
        from azure.core.exceptions import HttpResponseError

        extended = {}
        for message_id, pop_receipt in held:
            try:
                extended[message_id] = self._keeper_client.update_message(
                    message_id, pop_receipt, visibility_timeout=self._config.visibility_timeout_s).pop_receipt
            except HttpResponseError as exc:  # gone, or received again elsewhere: no longer ours to keep
                _LOG.info("Azure queue %s: message %s no longer held: %s", self._config.queue, message_id,
                          getattr(exc, "error_code", None) or type(exc).__name__)
        return extended

    def process(self, _: Any) -> Iterator[Any]:
        c = self._config
        client = c.client()
        budget = ReadBudget(c.max_records, c.max_read_seconds)
        try:
            while not budget.exhausted:
                batch = list(client.receive_messages(max_messages=budget.take(32),
                                                     visibility_timeout=c.visibility_timeout_s))
                if not batch:
                    return
                for message in batch:
                    self._keeper.hold(message.id, message.pop_receipt)
                    budget.spend()
                    self._read.inc()
                    payload = message_bytes(message.content)
                    source = SourceRef(system=SYSTEM, position={
                        "queue": c.queue, "message_id": message.id, "pop_receipt": message.pop_receipt,
                        "dequeue_count": message.dequeue_count})
                    if message.dequeue_count > c.max_delivery_attempts:
                        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, too_many_deliveries(
                            message.dequeue_count, c.max_delivery_attempts, payload, source))
                        continue
                    yield RawRecord(payload, source)
        finally:
            client.close()


class _Delete(BufferedAcknowledger):
    def __init__(self, config: AzureQueueConfig) -> None:
        super().__init__()
        self._config = config

    def setup(self) -> None:
        self._client = self._config.client()

    def teardown(self) -> None:
        self._client.close()

    def _ack(self, receipts: list[tuple[str, str]]) -> None:
        """Deletes each message with its current pop receipt (the lease keeper's, when it extended it)."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        keeper = LeaseKeeper.find(self._config.lease_keeper_name)
        for message_id, pop_receipt in receipts:
            if keeper is not None:
                pop_receipt = keeper.release(message_id, pop_receipt)
            try:
                self._client.delete_message(message_id, pop_receipt)
            except ResourceNotFoundError:  # already deleted
                pass
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) != "PopReceiptMismatch":
                    raise
                # its visibility timeout ran out and it was received again: that delivery deletes it
                _LOG.warning("Azure queue %s: message %s was received again before its delete; it will be "
                             "processed again (idempotently)", self._config.queue, message_id)
