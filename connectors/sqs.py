"""Amazon SQS source, as S3 delivers its event notifications (directly, through SNS, or from EventBridge):
each message is received with long polling and a visibility timeout (hidden from other readers meanwhile)
and deleted only once every record it holds is applied to every sink, superseded or dead-lettered. A message
not finished reappears after the timeout, so a crashed run loses nothing; while a message is in flight a
`LeaseKeeper` extends its visibility timeout, until it is deleted or the run ends. A run is bounded: it
receives until a long poll of `wait_time_s` returns nothing, `max_records` messages or `max_read_seconds`.
A message received more than `max_delivery_attempts` times (`ApproximateReceiveCount`) is dead-lettered
unprocessed (stage `read`, `TooManyDeliveries`) and deleted. The `s3:TestEvent` message S3 sends when a
notification is configured holds no change: it is deleted at once and counted as skipped.

Region, credentials and endpoint come from the usual AWS chain (environment, shared config and credentials
files, instance or task role; `AWS_ENDPOINT_URL_SQS` or `AWS_ENDPOINT_URL` for an emulator); none of them
is logged. Without a configured region, the region of an `https://sqs.REGION.amazonaws.com/...` queue URL
is used; without a configured endpoint, a queue URL that is not on amazonaws.com (ElasticMQ, moto,
LocalStack) is its own endpoint.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterator, Literal, Optional
from urllib.parse import urlparse

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
from transforms.notifications import NotificationParser, is_s3_test_event
from transforms.stages import DEAD_LETTERS, Parser
from transforms.types import RawRecord, SourceRef

SYSTEM = "sqs"
BATCH = 10
"""SQS receives, deletes and changes visibility of at most 10 messages a request."""
_AWS_REGION_URL = re.compile(r"^sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_LOG = logging.getLogger(__name__)


class SqsConfig(BoundedReadSettings):
    """`queue_url`; `region` and `endpoint_url` override the AWS chain (a `--config` file only)."""

    type: Literal["sqs"] = "sqs"
    queue_url: str = Field(pattern=r"^https?://[^/]+/.+")
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    wait_time_s: int = Field(default=10, ge=0, le=20)
    """Long polling: each receive waits up to this long for a message; the run ends after one empty wait."""
    visibility_timeout_s: int = Field(default=600, ge=1, le=12 * 3600)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "sqs", region_name=self._region(), endpoint_url=self._endpoint(),
            config=Config(connect_timeout=10, read_timeout=self.wait_time_s + 20,
                          retries={"mode": "standard", "max_attempts": 5}))

    def _region(self) -> Optional[str]:
        if self.region:
            return self.region
        if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            return None  # the chain has one
        import boto3

        if boto3.session.Session().region_name:
            return None
        match = _AWS_REGION_URL.match(urlparse(self.queue_url).hostname or "")
        return match[1] if match else "us-east-1"

    def _endpoint(self) -> Optional[str]:
        if self.endpoint_url:
            return self.endpoint_url
        if os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL"):
            return None  # the chain has one
        parsed = urlparse(self.queue_url)
        if (parsed.hostname or "").endswith((".amazonaws.com", ".amazonaws.com.cn")):
            return None
        return f"{parsed.scheme}://{parsed.netloc}"

    @property
    def lease_keeper_name(self) -> str:
        return f"{SYSTEM}:{self.queue_url}"

    def read(self) -> beam.PTransform:
        return ReadWithImpulse(_Receive(self))

    def parser(self) -> Parser:
        return NotificationParser("s3")

    def acknowledge(self) -> beam.PTransform:
        """Deletes every finished message of this queue."""
        return AcknowledgeFinished(SYSTEM, "queue", self.queue_url, lambda r: (
            str(r.position["message_id"]), str(r.position["receipt_handle"])), _Delete(self))

    def check(self) -> None:
        try:
            self.client().get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        except Exception as exc:  # noqa: BLE001 - one start-up line (botocore messages name no secret)
            raise SourceConfigError(f"SQS queue {self.queue_url} cannot be used: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """The queue's approximate counts: messages waiting (`state="visible"`) and in flight (`"in_flight"`)."""
        found = self.client().get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return {(("queue", self.queue_url), ("state", "visible")): int(found["ApproximateNumberOfMessages"]),
                (("queue", self.queue_url), ("state", "in_flight")): int(found["ApproximateNumberOfMessagesNotVisible"])}

    def display(self) -> dict[str, Any]:
        return {"source": "sqs", "queue_url": self.queue_url}


class _Receive(beam.DoFn):
    def __init__(self, config: SqsConfig) -> None:
        self._config = config
        self._read = counters.counter(counters.RECORDS_READ)
        self._acked = counters.counter(counters.RECORDS_ACKNOWLEDGED)
        self._test_events = counters.skipped_counter("s3:TestEvent (no change; deleted from the queue)")

    def setup(self) -> None:
        self._client = self._config.client()
        self._keeper = LeaseKeeper.start(self._config.lease_keeper_name, self._extend,
                                         self._config.visibility_timeout_s, group=BATCH)

    def teardown(self) -> None:
        self._keeper.stop()
        self._client.close()

    def _extend(self, held: list[tuple[str, str]]) -> dict[str, str]:
        """A new visibility timeout for each held message (its receipt handle stays valid); one whose
        handle is no longer valid (deleted, or received again elsewhere) is dropped."""
        reply = self._client.change_message_visibility_batch(QueueUrl=self._config.queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": self._config.visibility_timeout_s}
            for i, (_, handle) in enumerate(held)])
        failed = {int(f["Id"]) for f in reply.get("Failed", [])}
        for f in reply.get("Failed", []):
            _LOG.info("SQS %s: message %s no longer held: %s", self._config.queue_url, held[int(f["Id"])][0],
                      f.get("Code"))
        return {key: handle for i, (key, handle) in enumerate(held) if i not in failed}

    def process(self, _: Any) -> Iterator[Any]:
        c = self._config
        budget = ReadBudget(c.max_records, c.max_read_seconds)
        while not budget.exhausted:
            reply = self._client.receive_message(
                QueueUrl=c.queue_url, MaxNumberOfMessages=max(1, budget.take(BATCH)),
                WaitTimeSeconds=int(min(c.wait_time_s, budget.seconds_left())),
                VisibilityTimeout=c.visibility_timeout_s, MessageSystemAttributeNames=["ApproximateReceiveCount"])
            batch = reply.get("Messages", [])
            if not batch:
                return
            for message in batch:
                budget.spend()
                payload = message.get("Body", "").encode("utf-8")
                if is_s3_test_event(payload):
                    self._client.delete_message(QueueUrl=c.queue_url, ReceiptHandle=message["ReceiptHandle"])
                    self._test_events.inc()
                    self._acked.inc()
                    continue
                self._keeper.hold(message["MessageId"], message["ReceiptHandle"])
                self._read.inc()
                received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
                source = SourceRef(system=SYSTEM, position={
                    "queue": c.queue_url, "message_id": message["MessageId"],
                    "receipt_handle": message["ReceiptHandle"], "receive_count": received})
                if received > c.max_delivery_attempts:
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, too_many_deliveries(
                        received, c.max_delivery_attempts, payload, source))
                    continue
                yield RawRecord(payload, source)


class _Delete(BufferedAcknowledger):
    limit = BATCH

    def __init__(self, config: SqsConfig) -> None:
        super().__init__()
        self._config = config

    def setup(self) -> None:
        self._client = self._config.client()

    def teardown(self) -> None:
        self._client.close()

    def _ack(self, messages: list[tuple[str, str]]) -> None:
        """Deletes the messages in batches of 10; a receipt handle no longer valid (the visibility timeout
        ran out and the message was received again) leaves it to that delivery, which is idempotent."""
        keeper = LeaseKeeper.find(self._config.lease_keeper_name)
        for start in range(0, len(messages), BATCH):
            group = messages[start:start + BATCH]
            handles = [keeper.release(m, h) if keeper is not None else h for m, h in group]
            reply = self._client.delete_message_batch(QueueUrl=self._config.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(handles)])
            for failure in reply.get("Failed", []):
                message_id = group[int(failure["Id"])][0]
                if failure.get("SenderFault") and failure.get("Code") in ("ReceiptHandleIsInvalid",
                                                                          "InvalidParameterValue"):
                    _LOG.warning("SQS %s: message %s was received again before its delete; it will be processed "
                                 "again (idempotently)", self._config.queue_url, message_id)
                    continue
                raise RuntimeError(f"SQS {self._config.queue_url}: deleting message {message_id} failed: "
                                   f"{failure.get('Code')}: {failure.get('Message')}")
