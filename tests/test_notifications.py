"""Notification parsers on sample payloads in the providers' documented shapes (tests/samples/, adapted from
the Azure Event Grid, GCS and S3 documentation examples; keys changed to exercise URL-decoding)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from transforms.notifications import NotificationParser, azure_sequencer_version, s3_sequencer_version
from transforms.types import ChangeEvent, DeadLetter, SourceRef

SAMPLES = REPO / "tests" / "samples"
SOURCE = SourceRef(system="test", position={"line": 1})


def parse(name_or_bytes, fmt: str = "auto", source: SourceRef = SOURCE) -> list:
    payload = name_or_bytes if isinstance(name_or_bytes, bytes) else (SAMPLES / name_or_bytes).read_bytes()
    return list(NotificationParser(fmt)(payload, source))


def test_event_grid_blob_created():
    (event,) = parse("eventgrid_blob_created.json")
    assert isinstance(event, ChangeEvent) and event.op == "upsert"
    assert event.doc_id == event.uri == "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt"
    assert event.version == azure_sequencer_version("00000000000004420000000000028963") == (0x442 << 40) | 0x28963
    assert event.metadata == {"container": "testcontainer", "key": "new-file.txt", "content_type": "text/plain",
                              "size": 524288, "etag": '"0x8D4BCC2E4835CD0"', "event_time": "2017-06-26T18:41:00.9584103Z"}


def test_event_grid_cloudevents_delete_with_an_encoded_name():
    (event,) = parse("eventgrid_blob_deleted_cloudevent.json", "eventgrid")
    assert (event.op, event.uri, event.metadata["key"]) == ("delete", None, "file with spaces.txt")
    assert event.doc_id.endswith("file%20with%20spaces.txt")


def test_gcs_finalize_from_an_envelope_and_from_pubsub_attributes():
    (event,) = parse("gcs_object_finalize.json")
    assert (event.doc_id, event.op, event.version) == ("gs://my-bucket/docs/handbook v2.md", "upsert", 1700000000123456)
    assert event.metadata["bucket"] == "my-bucket" and event.metadata["size"] == 2048
    sample = json.loads((SAMPLES / "gcs_object_finalize.json").read_text())
    attributes = {f"attr.{k}": v for k, v in {**sample["attributes"], "eventType": "OBJECT_DELETE"}.items()}
    (deleted,) = parse(json.dumps(sample["data"]).encode(), "gcs", SourceRef(system="pubsub", position=attributes))
    assert (deleted.op, deleted.doc_id) == ("delete", "gs://my-bucket/docs/handbook v2.md")


def test_s3_records_decode_keys_and_become_parts_of_one_record():
    created, removed = parse("s3_put_and_delete.json")
    assert (created.op, created.doc_id) == ("upsert", "s3://amzn-s3-demo-bucket/reports/Q3 summary(2024).txt")
    assert created.version == s3_sequencer_version("0055AED6DCD90281E5") < removed.version
    assert (removed.op, removed.doc_id) == ("delete", "s3://amzn-s3-demo-bucket/old/notes.md")
    assert [e.source.position["part"] for e in (created, removed)] == [0, 1]
    assert {e.source.position["part_count"] for e in (created, removed)} == {2}


@pytest.mark.parametrize("payload, reason", [
    (b'{"eventType": "Microsoft.Storage.BlobTierChanged", "data": {"url": "u", "sequencer": "1"}}',
     "not a create or delete"),
    (b'{"hello": "world"}', "not a known storage notification"),
    (b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k", '
     b'"sequencer": "FFFFFFFFFFFFFFFFFFFF"}}}]}', "does not fit a 63-bit version"),
    (b"not json", "Expecting value"),
])
def test_unusable_notifications_are_dead_lettered_with_the_reason(payload: bytes, reason: str):
    (letter,) = parse(payload)
    assert isinstance(letter, DeadLetter) and letter.stage == "parse" and reason in letter.error


def test_sequencers_keep_their_order():
    a, b = "00000000000004420000000000028963", "00000000000004420000000000028964"
    c = "00000000000004430000000000000001"
    assert azure_sequencer_version(a) < azure_sequencer_version(b) < azure_sequencer_version(c)


def test_gcs_overwrite_notification_is_an_upsert_of_the_newer_generation():
    attributes = {"attr.eventType": "OBJECT_DELETE", "attr.bucketId": "b", "attr.objectId": "a.txt",
                  "attr.objectGeneration": "100", "attr.overwrittenByGeneration": "200"}
    (event,) = parse(b'{"size": "11"}', "gcs", SourceRef(system="pubsub", position=attributes))
    assert (event.op, event.version, event.metadata["generation"]) == ("upsert", 200, 200)
    (deleted,) = parse(b'{}', "gcs", SourceRef(system="pubsub", position={
        **attributes, "attr.eventType": "OBJECT_ARCHIVE", "attr.overwrittenByGeneration": ""}))
    assert (deleted.op, deleted.version) == ("delete", 100)


S3_PUT = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-12-01T05:44:15.427Z",
                       "s3": {"bucket": {"name": "docs"}, "object": {"key": "a+b%2Bc.txt", "size": 5}}}]}


def test_s3_without_a_sequencer_is_versioned_by_event_time_and_sns_envelopes_are_unwrapped():
    (event,) = parse(json.dumps({"Type": "Notification", "Message": json.dumps(S3_PUT)}).encode(), "s3")
    assert (event.doc_id, event.op, event.version) == ("s3://docs/a b+c.txt", "upsert", 1796103855427000)
    later = json.loads(json.dumps(S3_PUT))
    later["Records"][0]["eventTime"] = "2026-12-01T05:44:15.428Z"
    assert parse(json.dumps(later).encode())[0].version > event.version


def test_eventbridge_object_created_and_deleted():
    def eventbridge(kind: str, sequencer: str) -> bytes:
        return json.dumps({"version": "0", "detail-type": kind, "source": "aws.s3", "time": "2026-12-01T05:00:00Z",
                           "detail": {"bucket": {"name": "docs"}, "object": {
                               "key": "reports/Q3 summary.txt", "size": 9, "etag": "e", "sequencer": sequencer}}}).encode()
    (created,) = parse(eventbridge("Object Created", "0055AED6DCD90281E5"))
    (deleted,) = parse(eventbridge("Object Deleted", "0055AED6DCD90281E6"), "s3")
    assert (created.op, created.doc_id, created.metadata["size"]) == ("upsert", "s3://docs/reports/Q3 summary.txt", 9)
    assert deleted.op == "delete" and deleted.version > created.version
    (letter,) = parse(eventbridge("Object Restore Completed", "01"))
    assert isinstance(letter, DeadLetter) and "not a create or delete" in letter.error


def test_the_s3_test_event_is_recognised_directly_and_inside_sns():
    from transforms.notifications import is_s3_test_event

    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-01T05:44:15.421Z", "Bucket": "docs"}
    assert is_s3_test_event(json.dumps(test_event).encode())
    assert is_s3_test_event(json.dumps({"Type": "Notification", "Message": json.dumps(test_event)}).encode())
    assert not is_s3_test_event(json.dumps(S3_PUT).encode()) and not is_s3_test_event(b"s3:TestEvent{")
