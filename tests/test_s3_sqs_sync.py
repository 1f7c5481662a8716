"""S3 notifications end to end on moto's server: objects are uploaded, overwritten with a shorter document
and deleted in a real S3 emulator whose bucket notification sends real S3 event records (and the first
`s3:TestEvent`) to an SQS queue; `--source sqs` reads them, fetches each object from `s3://` and keeps every
sink exactly in sync; every finished message is deleted, and a run killed mid-way (SIGKILL) loses nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.main import StartupError, run
from tests.conftest import REPO, read_dead_letters
from tests.sink_targets import QdrantTarget, target  # noqa: F401 - `target`: one test per sink

LONG = " ".join(f"Clause {i}: returns within {i + 10} days need the receipt." for i in range(12))
SHORT = "Returns: 30 days with a receipt."
SMALL = ["--chunk_size", "16", "--chunk_overlap", "4", "--sqs_wait_seconds", "1"]


class Bucket:
    """A bucket and a queue on moto, the bucket's create/remove notifications configured to the queue."""

    def __init__(self) -> None:
        import boto3

        name = uuid.uuid4().hex[:8]
        self.s3, self.sqs = boto3.client("s3"), boto3.client("sqs")
        self.name = f"docs-{name}"
        self.s3.create_bucket(Bucket=self.name)
        self.queue_url = self.sqs.create_queue(QueueName=f"events-{name}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.name, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})

    def put(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
        time.sleep(0.002)  # event times (moto sends no sequencer) are in ms: keep changes in order

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.name, Key=key)
        time.sleep(0.002)

    def bodies(self) -> list[str]:
        """The messages now on the queue, left there (received once, with a zero visibility timeout)."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            VisibilityTimeout=0)["Messages"]
        return [m["Body"] for m in messages]

    def send(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def left(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])




def sync_args(bucket: Bucket, target: Any, tmp_path: Path, *extra: str) -> list[str]:
    return ["--source", "sqs", "--sqs_queue_url", bucket.queue_url, "--allow_bucket", f"s3://{bucket.name}",
            *target.args, "--dead_letters", str(tmp_path / "dead.jsonl"), *SMALL, *extra]


def documents(target: Any) -> dict[str, tuple[set[int], set[str]]]:
    """doc_id → (versions held, chunk texts)."""
    out: dict[str, tuple[set[int], set[str]]] = {}
    for (doc_id, _, _), (version, text) in target.state().items():
        versions, texts = out.setdefault(doc_id, (set(), set()))
        versions.add(version)
        texts.add(text)
    return out


def test_objects_created_overwritten_and_deleted_end_exactly_in_sync(target: Any, tmp_path: Path, moto_server: str):
    bucket = Bucket()
    bucket.put("policy.md", LONG.encode(), "text/markdown")
    bucket.put("faq page.html", b"<html><head><style>p{color:red}</style></head><body><h1>FAQ</h1>"
                                b"<p>Ask us anything.</p></body></html>", "text/html")
    bucket.put("temp.txt", b"Short-lived.")
    bodies = bucket.bodies()
    first_policy = next(b for b in bodies if "policy.md" in b)
    faq = next(b for b in bodies if "faq+page.html" in b)
    bucket.send(faq)  # a duplicate delivery
    one = run(sync_args(bucket, target, tmp_path))
    uri = f"s3://{bucket.name}/"
    state = documents(target)
    assert set(state) == {uri + "policy.md", uri + "faq page.html", uri + "temp.txt"}
    assert len(target.state()) > 3 and state[uri + "faq page.html"][1] == {"FAQ\nAsk us anything."}
    assert one.skipped == {"s3:TestEvent (no change; deleted from the queue)": 1}, "the test event is no record"
    assert one.accounted and (one.records_read, one.events_superseded, one.events_dead_lettered) == (4, 1, 0)
    assert one.records_acknowledged == 5 and bucket.left() == 0

    bucket.put("policy.md", SHORT.encode(), "text/markdown")
    bucket.delete("temp.txt")
    bucket.send(first_policy)  # the older create arrives late
    two = run(sync_args(bucket, target, tmp_path))
    state = documents(target)
    assert set(state) == {uri + "policy.md", uri + "faq page.html"}
    assert state[uri + "policy.md"][1] == {SHORT} and len(state[uri + "policy.md"][0]) == 1
    assert two.accounted and two.events_superseded == 1 and two.events_dead_lettered == 0
    assert bucket.left() == 0, "every finished message was deleted"
    assert read_dead_letters(tmp_path / "dead.jsonl") == []


def test_missing_unsupported_and_oversize_objects(tmp_path: Path, moto_server: str):
    bucket = Bucket()
    target = QdrantTarget(tmp_path)
    bucket.put("vanished.txt", b"Deleted before the pipeline fetched it.")
    bucket.s3.delete_object(Bucket=bucket.name, Key="vanished.txt")  # its delete event follows
    bucket.put("diagram.png", b"\x89PNG\r\n\x1a\n", "image/png")
    bucket.put("big.txt", b"x" * 5000)
    orphan = next(b for b in bucket.bodies() if "big.txt" in b).replace(bucket.name, bucket.name + "-gone")
    bucket.send(orphan)  # names an object in a bucket that does not exist
    summary = run(sync_args(bucket, target, tmp_path, "--max_document_bytes", "4096", "--allow_bucket",
                            f"s3://{bucket.name}-gone"))
    letters = {d["doc_id"].rsplit("/", 2)[-2:][-1] if "-gone" not in d["doc_id"] else "orphan": (
        d["stage"], d["error_type"], d["error"]) for d in read_dead_letters(tmp_path / "dead.jsonl")}
    assert letters["diagram.png"][:2] == ("extract", "ExtractionError")
    assert "unsupported document type '.png'" in letters["diagram.png"][2]
    assert letters["big.txt"][:2] == ("fetch", "ObjectTooLarge") and "over --max_document_bytes 4096" in letters["big.txt"][2]
    assert letters["orphan"][:2] == ("fetch", "BucketMissing") and "does not exist" in letters["orphan"][2]
    assert set(letters) == {"diagram.png", "big.txt", "orphan"}, "a deleted object is superseded, not dead-lettered"
    assert summary.accounted and summary.events_dead_lettered == 3 and bucket.left() == 0
    assert target.state() == {}


def test_an_object_outside_the_allowed_buckets_is_never_read(tmp_path: Path, moto_server: str):
    bucket = Bucket()
    bucket.put("secret.txt", b"Not for the index.")
    summary = run(["--source", "sqs", "--sqs_queue_url", bucket.queue_url, "--allow_bucket", "s3://some-other",
                   "--qdrant_path", str(tmp_path / "store"), "--dead_letters", str(tmp_path / "dead.jsonl"), *SMALL])
    [letter] = read_dead_letters(tmp_path / "dead.jsonl")
    assert (letter["stage"], letter["error_type"]) == ("fetch", "UriNotAllowed")
    assert f"s3://{bucket.name} is not in --allow_bucket" in letter["error"]
    assert summary.accounted and bucket.left() == 0


def test_a_run_killed_mid_way_is_rerun_without_loss(tmp_path: Path, moto_server: str):
    """The first run is SIGKILLed while messages are in flight (received, not deleted); once their visibility
    timeout runs out, the rerun receives them again and the store ends exactly in sync."""
    bucket = Bucket()
    target = QdrantTarget(tmp_path)
    texts = {f"doc-{i}.txt": f"Document {i}: " + " ".join(f"word{i}x{j}" for j in range(40)) for i in range(12)}
    for key, text in texts.items():
        bucket.put(key, text.encode())
    config = tmp_path / "sqs.yaml"
    config.write_text(f"source: {{type: sqs, queue_url: '{bucket.queue_url}', visibility_timeout_s: 2, "
                      "wait_time_s: 1}\n")
    args = ["--config", str(config), *sync_args(bucket, target, tmp_path)[4:]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    in_flight = 0
    while time.monotonic() < deadline and proc.poll() is None:
        attributes = bucket.sqs.get_queue_attributes(QueueUrl=bucket.queue_url, AttributeNames=[
            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        in_flight = int(attributes["ApproximateNumberOfMessagesNotVisible"])
        if in_flight:
            break
        time.sleep(0.05)
    assert proc.poll() is None and in_flight, "the run was still going, with messages in flight"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert bucket.left() == len(texts), "the killed run deleted no message"
    time.sleep(2.5)  # the killed run's visibility timeout runs out
    summary = run(args)
    state = documents(target)
    assert set(state) == {f"s3://{bucket.name}/{key}" for key in texts}
    for key, text in texts.items():
        versions, chunks = state[f"s3://{bucket.name}/{key}"]
        assert len(versions) == 1 and all(c.split()[0] in text for c in chunks)
        assert any(c.startswith(text.split(":")[0]) for c in chunks)
    assert summary.accounted and summary.events_dead_lettered == 0 and bucket.left() == 0
    assert read_dead_letters(tmp_path / "dead.jsonl") == []


def test_a_missing_queue_fails_at_start(tmp_path: Path, moto_server: str):
    with pytest.raises(StartupError, match="cannot be used"):
        run(["--source", "sqs", "--sqs_queue_url", f"{moto_server}/123456789012/no-such-queue",
             "--qdrant_path", str(tmp_path / "store"), *SMALL])


def test_bounded_reads_redeliveries_and_eventbridge_messages(tmp_path: Path, moto_server: str):
    """`--max_records` leaves the rest for the next run; a message received too often is dead-lettered
    unprocessed and deleted; an EventBridge "Object Created" message (as an EventBridge rule delivers it to
    SQS) is applied like an S3 record."""
    import json

    bucket = Bucket()
    target = QdrantTarget(tmp_path)
    for i in range(3):
        bucket.put(f"note-{i}.txt", f"Note number {i}.".encode())
    bucket.sqs.purge_queue(QueueUrl=bucket.queue_url)  # keep only the messages this test sends
    bucket.put("bridge.txt", b"Delivered by EventBridge.")
    bucket.sqs.purge_queue(QueueUrl=bucket.queue_url)
    bucket.send(json.dumps({"version": "0", "id": "1", "detail-type": "Object Created", "source": "aws.s3",
                            "time": "2026-12-01T06:00:00Z", "detail": {"bucket": {"name": bucket.name},
                                                                       "object": {"key": "bridge.txt", "size": 25}}}))
    bridged = run(sync_args(bucket, target, tmp_path))
    assert bridged.events_applied == 1 and bucket.left() == 0
    assert documents(target) == {f"s3://{bucket.name}/bridge.txt": ({1796104800000000}, {"Delivered by EventBridge."})}
    for i in range(3):
        bucket.send(json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": f"2026-12-01T06:00:0{i}Z",
                                             "s3": {"bucket": {"name": bucket.name},
                                                    "object": {"key": f"note-{i}.txt"}}}]}))
    first = run(sync_args(bucket, target, tmp_path, "--max_records", "2"))
    assert first.records_read == 2 and first.records_acknowledged == 2 and bucket.left() == 1
    assert bucket.bodies() and bucket.bodies()  # two more receives of what is left: 3 deliveries so far
    second = run(sync_args(bucket, target, tmp_path, "--max_delivery_attempts", "2"))
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(d["stage"], d["error_type"], d["attempts"]) for d in letters] == [("read", "TooManyDeliveries", 3)]
    assert second.accounted and second.events_dead_lettered == 1 and bucket.left() == 0
    assert len(documents(target)) == 3, "the bridged object and the two notes read in the capped run"


def test_an_unreachable_s3_endpoint_is_a_fetch_dead_letter_after_bounded_retries(monkeypatch: pytest.MonkeyPatch):
    from connectors.objects import FetchConfig, FetchContent
    from tests.conftest import free_port
    from transforms.types import ChangeEvent

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fetch = FetchContent(FetchConfig.model_validate({"allow": {"buckets": ["s3://docs"]}, "connect_timeout_s": 1,
                                                     "retry": {"max_attempts": 3, "max_elapsed_s": 5}}))
    fetch.setup()
    started = time.monotonic()
    try:
        (out,) = list(fetch.process(ChangeEvent(doc_id="s3://docs/a.txt", op="upsert", version=1, uri="s3://docs/a.txt")))
    finally:
        fetch.teardown()
    assert out.tag == "dead_letters" and out.value.stage == "fetch" and out.value.attempts == 3
    assert "EndpointConnectionError" in out.value.error_type and time.monotonic() - started < 15


def test_messages_in_flight_stay_hidden_past_their_visibility_timeout_until_the_run_ends(moto_server: str):
    """The reader's lease keeper extends the visibility timeout of the messages it holds; once the reader is
    torn down (the run ended without deleting them) they reappear."""
    from connectors.sqs import SqsConfig, _Receive

    bucket = Bucket()
    bucket.put("a.txt", b"Alpha.")
    bucket.put("b.txt", b"Bravo.")
    reader = _Receive(SqsConfig(queue_url=bucket.queue_url, visibility_timeout_s=2, wait_time_s=1))

    def visible() -> int:
        return int(bucket.sqs.get_queue_attributes(QueueUrl=bucket.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])

    reader.setup()
    try:
        records = [r for r in reader.process(None) if not hasattr(r, "tag")]
        assert len(records) == 2 and visible() == 0  # the s3:TestEvent was deleted, the two are held
        time.sleep(4)  # twice the visibility timeout
        assert visible() == 0, "the visibility timeout of messages in flight was extended"
    finally:
        reader.teardown()
    time.sleep(2.5)
    assert visible() == 2, "released at the end of the run, the messages are delivered again"


def test_sqs_backlog_counts_waiting_and_in_flight_messages(moto_server: str):
    from connectors.sqs import SqsConfig

    bucket = Bucket()
    bucket.send(*[json.dumps({"Records": []}) for _ in range(3)])
    config = SqsConfig(queue_url=bucket.queue_url)
    bucket.sqs.receive_message(QueueUrl=bucket.queue_url, MaxNumberOfMessages=1, VisibilityTimeout=60)
    backlog = config.backlog()
    visible, in_flight = ((("queue", bucket.queue_url), ("state", s)) for s in ("visible", "in_flight"))
    assert backlog[visible] + backlog[in_flight] >= 3 and backlog[in_flight] >= 1
