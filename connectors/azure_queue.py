"""Azure Storage Queue source, as Event Grid delivers storage notifications to it: each message is received
with a visibility timeout (hidden from other readers meanwhile) and deleted only after its change is applied
to every sink, superseded or dead-lettered. A message that is not finished reappears after the timeout, so
a crashed run loses nothing. A run is bounded: it receives until the queue is empty or `max_records`.
Message bodies are Event Grid JSON, plain or base64-encoded (both are delivered in practice).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterator, Literal, Optional

import apache_beam as beam
from pydantic import Field

from connectors.secrets import SecretRef
from connectors.sources import AcknowledgeFinished, BufferedAcknowledger, ReadWithImpulse, SourceConfig, SourceConfigError
from transforms import counters
from transforms.notifications import NotificationParser
from transforms.stages import Parser
from transforms.types import RawRecord, SourceRef

SYSTEM = "azure_queue"


class AzureQueueConfig(SourceConfig):
    """`queue` on the account of `connection_string` (a reference, see connectors/secrets.py; default
    `env:AZURE_STORAGE_CONNECTION_STRING`), resolved where the client is made."""

    type: Literal["azure_queue"] = "azure_queue"
    queue: str
    connection_string: Optional[SecretRef] = None
    visibility_timeout_s: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    max_records: Optional[int] = Field(default=None, ge=1)

    def connection(self) -> str:
        value = (self.connection_string or SecretRef.env("AZURE_STORAGE_CONNECTION_STRING")).resolve_or_none()
        if not value:
            raise SourceConfigError("--source azure_queue needs --azure_connection_string "
                                    "(or AZURE_STORAGE_CONNECTION_STRING)")
        return value

    def client(self) -> Any:
        from azure.storage.queue import QueueClient

        return QueueClient.from_connection_string(self.connection(), self.queue)

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

    def process(self, _: Any) -> Iterator[RawRecord]:
        c = self._config
        client = c.client()
        budget = c.max_records if c.max_records is not None else float("inf")
        try:
            while budget > 0:
                batch = list(client.receive_messages(max_messages=int(min(32, budget)),
                                                     visibility_timeout=c.visibility_timeout_s))
                if not batch:
                    return
                for message in batch:
                    budget -= 1
                    self._read.inc()
                    yield RawRecord(message_bytes(message.content), SourceRef(system=SYSTEM, position={
                        "queue": c.queue, "message_id": message.id, "pop_receipt": message.pop_receipt,
                        "dequeue_count": message.dequeue_count}))
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
        from azure.core.exceptions import ResourceNotFoundError

        for message_id, pop_receipt in receipts:
            try:
                self._client.delete_message(message_id, pop_receipt)
            except ResourceNotFoundError:  # already deleted, or its visibility timeout ran out (redelivered)
                pass
