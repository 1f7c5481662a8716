"""GCS notifications end to end: objects are uploaded, overwritten with a shorter document and deleted on
fake-gcs-server (the real binary), which publishes real JSON_API_V1 notifications to Google's Pub/Sub
emulator; `--source pubsub --notifications gcs` reads them, fetches each object's exact generation from
`gs://` and keeps every sink exactly in sync, with a duplicate and a late older notification; the
subscription is drained."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any


from pipeline.main import run
from tests.conftest import read_dead_letters
from tests.sink_targets import QdrantTarget, target  # noqa: F401 - `target`: one test per sink
from tests.test_pubsub_source import left_on_subscription

LONG = " ".join(f"Clause {i}: returns within {i + 10} days need the receipt." for i in range(12))
SHORT = "Returns: 30 days with a receipt."
SMALL = ["--chunk_size", "16", "--chunk_overlap", "4"]


class Bucket:
    """A bucket on fake-gcs-server and a subscription to the topic its notifications go to."""

    def __init__(self, fake_gcs: tuple[str, str]) -> None:
        from google.cloud import pubsub_v1, storage

        project, self.topic = fake_gcs
        name = uuid.uuid4().hex[:8]
        self.subscription = f"projects/{project}/subscriptions/s-{name}"
        subscriber = pubsub_v1.SubscriberClient()
        subscriber.create_subscription(request={"name": self.subscription, "topic": self.topic,
                                                "ack_deadline_seconds": 10})
        subscriber.close()
        self.bucket = storage.Client().create_bucket(f"docs-{name}")
        self.name = self.bucket.name
        self.generations: dict[str, list[int]] = {}

    def upload(self, name: str, data: bytes, content_type: str = "text/plain") -> int:
        blob = self.bucket.blob(name)
        blob.upload_from_string(data, content_type=content_type)
        self.generations.setdefault(name, []).append(blob.generation)
        return blob.generation

    def delete(self, name: str) -> None:
        self.bucket.blob(name).delete()

    def messages(self, expected: int) -> list[tuple[dict[str, str], bytes]]:
        """`(attributes, data)` of the `expected` notifications now on the subscription, left there (a pull
        may return only some of them, and the emulator publishes asynchronously: pull until all are in)."""
        import time

        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        found: dict[str, tuple[str, dict[str, str], bytes]] = {}
        deadline = time.monotonic() + 30
        try:
            while len(found) < expected and time.monotonic() < deadline:
                for m in subscriber.pull(request={"subscription": self.subscription, "max_messages": 100},
                                         timeout=10).received_messages:
                    found[m.message.message_id] = (m.ack_id, dict(m.message.attributes), m.message.data)
            subscriber.modify_ack_deadline(request={"subscription": self.subscription, "ack_deadline_seconds": 0,
                                                    "ack_ids": [ack_id for ack_id, _, _ in found.values()]})
        finally:
            subscriber.close()
        assert len(found) == expected, f"expected {expected} notifications, got {len(found)}"
        return [(attributes, data) for _, attributes, data in found.values()]

    def publish(self, attributes: dict[str, str], data: bytes) -> None:
        from google.cloud import pubsub_v1

        pubsub_v1.PublisherClient().publish(self.topic, data, **attributes).result(30)




def sync(bucket: Bucket, target: Any, tmp_path: Path, *extra: str):
    return run(["--source", "pubsub", "--pubsub_subscription", bucket.subscription, "--notifications", "gcs",
                "--allow_bucket", f"gs://{bucket.name}", *target.args, "--dead_letters", str(tmp_path / "dead.jsonl"),
                *SMALL, *extra])


def documents(target: Any) -> dict[str, tuple[set[int], set[str]]]:
    """doc_id → (versions held, chunk texts)."""
    out: dict[str, tuple[set[int], set[str]]] = {}
    for (doc_id, _, _), (version, text) in target.state().items():
        versions, texts = out.setdefault(doc_id, (set(), set()))
        versions.add(version)
        texts.add(text)
    return out


def notification(messages: list[tuple[dict[str, str], bytes]], name: str, event_type: str) -> tuple[dict[str, str], bytes]:
    return next(m for m in messages if m[0]["objectId"] == name and m[0]["eventType"] == event_type)


def test_objects_created_overwritten_and_deleted_end_exactly_in_sync(target: Any, tmp_path: Path,
                                                                     fake_gcs: tuple[str, str]):
    bucket = Bucket(fake_gcs)
    first_policy = bucket.upload("policy.md", LONG.encode(), "text/markdown")
    bucket.upload("faq page.html", b"<html><head><script>var x = 1;</script></head><body><h1>FAQ</h1>"
                                   b"<p>Ask us anything.</p></body></html>", "text/html")
    bucket.upload("temp.txt", b"Short-lived.")
    messages = bucket.messages(3)
    assert {m[0]["payloadFormat"] for m in messages} == {"JSON_API_V1"}
    bucket.publish(*notification(messages, "faq page.html", "OBJECT_FINALIZE"))  # a duplicate delivery
    one = sync(bucket, target, tmp_path)
    uri = f"gs://{bucket.name}/"
    state = documents(target)
    assert set(state) == {uri + "policy.md", uri + "faq page.html", uri + "temp.txt"}
    assert state[uri + "policy.md"][0] == {first_policy} and len(state[uri + "policy.md"][1]) > 3
    assert state[uri + "faq page.html"][1] == {"FAQ\nAsk us anything."}
    assert one.accounted and (one.records_read, one.events_superseded, one.events_dead_lettered) == (4, 1, 0)
    assert one.records_acknowledged == 4 and left_on_subscription(bucket.subscription) == 0

    second_policy = bucket.upload("policy.md", SHORT.encode(), "text/markdown")  # notifies delete g1 + finalize g2
    bucket.delete("temp.txt")
    bucket.publish(*notification(messages, "policy.md", "OBJECT_FINALIZE"))  # the older generation, late
    assert len(bucket.messages(4)) == 4, "all four notifications are in before the run"
    two = sync(bucket, target, tmp_path)
    state = documents(target)
    assert set(state) == {uri + "policy.md", uri + "faq page.html"}
    assert state[uri + "policy.md"] == ({second_policy}, {SHORT})
    assert two.accounted and two.records_read == 4 and two.events_dead_lettered == 0
    assert two.events_superseded == 2, "the late older generation, and the overwrite's second notice of g2"
    assert left_on_subscription(bucket.subscription) == 0, "the subscription is drained"
    assert read_dead_letters(tmp_path / "dead.jsonl") == []


def test_an_overwritten_generation_is_superseded_and_never_fetched_as_newer(tmp_path: Path, fake_gcs: tuple[str, str]):
    """Both notifications of a generation overwritten before the run are read: the old generation is gone, so
    its finalize is superseded (its text never reaches the store), and the newer one is applied."""
    bucket = Bucket(fake_gcs)
    target = QdrantTarget(tmp_path)
    bucket.upload("notes.txt", b"First draft, soon replaced.")
    old_finalize = notification(bucket.messages(1), "notes.txt", "OBJECT_FINALIZE")
    newer = bucket.upload("notes.txt", b"Final text.")
    bucket.messages(3)  # finalize g1, the overwrite notice of g1, finalize g2: all in before the run
    summary = sync(bucket, target, tmp_path)
    assert documents(target) == {f"gs://{bucket.name}/notes.txt": ({newer}, {"Final text."})}
    assert summary.accounted and summary.events_dead_lettered == 0
    bucket.publish(*old_finalize)  # alone in a run: its generation no longer exists
    again = sync(bucket, target, tmp_path)
    assert (again.records_read, again.events_superseded) == (1, 1)
    assert documents(target) == {f"gs://{bucket.name}/notes.txt": ({newer}, {"Final text."})}


def test_missing_unsupported_and_oversize_objects(tmp_path: Path, fake_gcs: tuple[str, str]):
    bucket = Bucket(fake_gcs)
    target = QdrantTarget(tmp_path)
    bucket.upload("diagram.png", b"\x89PNG\r\n\x1a\n", "image/png")
    bucket.upload("big.txt", b"x" * 5000)
    attributes, data = notification(bucket.messages(2), "big.txt", "OBJECT_FINALIZE")
    bucket.publish({**attributes, "bucketId": "no-such-bucket", "objectId": "orphan.txt"}, data)
    summary = sync(bucket, target, tmp_path, "--max_document_bytes", "4096", "--allow_bucket", "gs://no-such-bucket")
    letters = {d["doc_id"].rsplit("/", 1)[1]: (d["stage"], d["error_type"], d["error"])
               for d in read_dead_letters(tmp_path / "dead.jsonl")}
    assert set(letters) == {"diagram.png", "big.txt", "orphan.txt"}
    assert letters["diagram.png"][:2] == ("extract", "ExtractionError")
    assert "unsupported document type '.png'" in letters["diagram.png"][2]
    assert letters["big.txt"][:2] == ("fetch", "ObjectTooLarge") and "over --max_document_bytes 4096" in letters["big.txt"][2]
    assert letters["orphan.txt"][:2] == ("fetch", "BucketMissing") and "does not exist" in letters["orphan.txt"][2]
    assert summary.accounted and summary.events_dead_lettered == 3
    assert left_on_subscription(bucket.subscription) == 0 and target.state() == {}


def test_a_bucket_outside_the_allow_list_is_never_read(tmp_path: Path, fake_gcs: tuple[str, str]):
    bucket = Bucket(fake_gcs)
    bucket.upload("secret.txt", b"Not for the index.")
    bucket.messages(1)
    summary = run(["--source", "pubsub", "--pubsub_subscription", bucket.subscription, "--notifications", "gcs",
                   "--allow_bucket", "gs://some-other", "--qdrant_path", str(tmp_path / "store"),
                   "--dead_letters", str(tmp_path / "dead.jsonl"), *SMALL])
    [letter] = read_dead_letters(tmp_path / "dead.jsonl")
    assert (letter["stage"], letter["error_type"]) == ("fetch", "UriNotAllowed")
    assert f"gs://{bucket.name} is not in --allow_bucket" in letter["error"]
    assert summary.accounted and left_on_subscription(bucket.subscription) == 0
