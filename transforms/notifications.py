"""Object-store change notifications → `ChangeEvent`s whose `uri` names the object (the content is fetched
later), whatever carried them (Kafka, Pub/Sub, Redis Streams, a JSONL file, an Azure Storage Queue).

- Azure Event Grid, Event Grid schema or CloudEvents 1.0: `Microsoft.Storage.BlobCreated` → upsert,
  `Microsoft.Storage.BlobDeleted` → delete; doc_id and uri = `data.url`; version from `data.sequencer`.
- GCS Pub/Sub notifications (JSON_API_V1): `OBJECT_FINALIZE` → upsert, `OBJECT_DELETE` and `OBJECT_ARCHIVE`
  → delete (attributes `eventType`, `bucketId`, `objectId`, `objectGeneration`; from Pub/Sub message
  attributes, or a JSON `{"attributes": ..., "data": ...}` envelope); doc_id and uri = `gs://bucket/object`;
  version = generation, kept as `generation` in the metadata (the fetch reads exactly that generation). A
  delete or archive with `overwrittenByGeneration` (an overwrite, not a removal) is an upsert of the newer
  generation, so the document never disappears in between.
- S3 event notifications: `ObjectCreated:*` → upsert, `ObjectRemoved:*` → delete; `object.key` is
  URL-decoded (`+` is a space); doc_id and uri = `s3://bucket/key`; version from `object.sequencer`. The same
  events as EventBridge delivers them (`source` `aws.s3`, `detail-type` `Object Created` / `Object Deleted`;
  the key is not URL-encoded there), and either shape inside an SNS envelope (`{"Type": "Notification",
  "Message": "..."}`), are parsed the same way. An S3-compatible store that sends no sequencer (moto, some
  MinIO versions) gets the event time in microseconds as the version: changes within one millisecond are
  then ordered only by the tie rule (a delete wins). `s3:TestEvent` (sent when a notification is configured)
  is no change: `is_s3_test_event` tells a source to acknowledge it without parsing.

Sequencers are hexadecimal strings ordered per object. They become integer versions in the same order: an
Azure sequencer (two 64-bit halves) packs as `high << 40 | low`, an S3 sequencer is its value; one that
does not fit 63 bits is dead-lettered rather than mis-ordered. Object details (container/bucket, key,
content type, size, etag) go into the metadata. Other event types (a tier change, a metadata update) are
dead-lettered with the reason `not a create or delete`.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Iterator, Optional, Union
from urllib.parse import unquote, unquote_plus, urlparse

from pydantic import ValidationError

from transforms.parse import PARSE_STAGE, RecordError, load_json, summarise
from transforms.types import ChangeEvent, DeadLetter, SourceRef

MAX_VERSION = 2**63 - 1
FORMATS = ("auto", "eventgrid", "gcs", "s3")


class NotificationError(RecordError):
    """A notification that cannot become a change event (the message says why)."""


def azure_sequencer_version(sequencer: str) -> int:
    """`high << 40 | low` of the two 64-bit hex halves (order-preserving while `low < 2**40`)."""
    text = sequencer.strip()
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise NotificationError(f"sequencer {sequencer!r} is not hexadecimal") from exc
    high, low = value >> 64, value & (2**64 - 1)
    if low >= 2**40 or high >= 2**23:
        raise NotificationError(f"sequencer {sequencer!r} does not fit a 63-bit version")
    return high << 40 | low


def s3_sequencer_version(sequencer: str) -> int:
    try:
        value = int(sequencer.strip(), 16)
    except ValueError as exc:
        raise NotificationError(f"sequencer {sequencer!r} is not hexadecimal") from exc
    if value > MAX_VERSION:
        raise NotificationError(f"sequencer {sequencer!r} does not fit a 63-bit version")
    return value


def _event(doc_id: str, op: str, version: int, metadata: dict[str, Any], source: SourceRef,
           payload: bytes) -> ChangeEvent:
    try:
        return ChangeEvent(doc_id=doc_id, op=op, version=version, uri=doc_id if op == "upsert" else None,
                           metadata={k: v for k, v in metadata.items() if v is not None}, source=source,
                           raw=payload)
    except ValidationError as exc:
        raise NotificationError(f"invalid notification: {summarise(exc)}") from exc


def azure_blob_location(uri: str) -> Optional[tuple[str, str, str]]:
    """`(account, container, blob)` of an Azure Blob URL, or None for any other URI."""
    parsed = urlparse(uri)
    path = unquote(parsed.path).lstrip("/")
    if parsed.scheme == "azfs":
        container, _, blob = path.partition("/")
        return parsed.netloc, container, blob
    if parsed.scheme in ("http", "https") and parsed.hostname:
        if parsed.hostname.endswith(".blob.core.windows.net"):
            container, _, blob = path.partition("/")
            return parsed.hostname.split(".")[0], container, blob
        if parsed.hostname in ("127.0.0.1", "localhost"):  # Azurite: /ACCOUNT/CONTAINER/BLOB
            account, _, rest = path.partition("/")
            container, _, blob = rest.partition("/")
            return account, container, blob
    return None


# --- Azure Event Grid ----------------------------------------------------------------------------------------

AZURE_OPS = {"Microsoft.Storage.BlobCreated": "upsert", "Microsoft.Storage.BlobDeleted": "delete"}


def is_event_grid(obj: Any) -> bool:
    return isinstance(obj, dict) and str(obj.get("eventType", obj.get("type", ""))).startswith("Microsoft.Storage.")


def from_event_grid(obj: dict[str, Any], source: SourceRef, payload: bytes) -> ChangeEvent:
    """One Event Grid event, in the Event Grid schema (`eventType`) or as a CloudEvent (`type`)."""
    kind = obj.get("eventType") or obj.get("type")
    op = AZURE_OPS.get(kind)
    if op is None:
        raise NotificationError(f"Event Grid event {kind!r} is not a create or delete")
    data = obj.get("data") or {}
    url, sequencer = data.get("url"), data.get("sequencer")
    if not url or not sequencer:
        raise NotificationError("Event Grid blob event without data.url or data.sequencer")
    _, container, blob = azure_blob_location(url) or ("", "", "")
    metadata = {"container": container, "key": blob, "content_type": data.get("contentType"),
                "size": data.get("contentLength"), "etag": data.get("eTag"), "event_time":
                obj.get("eventTime") or obj.get("time")}
    return _event(url, op, azure_sequencer_version(str(sequencer)), metadata, source, payload)


# --- GCS -----------------------------------------------------------------------------------------------------

GCS_OPS = {"OBJECT_FINALIZE": "upsert", "OBJECT_DELETE": "delete", "OBJECT_ARCHIVE": "delete"}


ATTRIBUTE_PREFIX = "attr."
"""Message attributes (Pub/Sub) are kept in a record's position as `attr.<name>` fields."""


def attribute_fields(attributes: Any) -> dict[str, str]:
    """A message's attributes as position fields (GCS notifications carry their event there)."""
    return {ATTRIBUTE_PREFIX + k: v for k, v in (attributes or {}).items()}


def gcs_attributes(obj: Any, source: SourceRef) -> Optional[tuple[dict[str, str], dict[str, Any]]]:
    """The notification's attributes and object resource: from a `{"attributes", "data"}` envelope, or from
    Pub/Sub message attributes the source kept in the record's position (`attr.<name>`)."""
    if isinstance(obj, dict) and isinstance(obj.get("attributes"), dict) and "eventType" in obj["attributes"]:
        data = obj.get("data") or {}
        if isinstance(data, str):
            data = load_json(base64.b64decode(data))
        return {k: str(v) for k, v in obj["attributes"].items()}, data
    attributes = {k[len(ATTRIBUTE_PREFIX):]: str(v) for k, v in source.position.items()
                  if k.startswith(ATTRIBUTE_PREFIX)}
    if "eventType" in attributes and "bucketId" in attributes:
        return attributes, obj if isinstance(obj, dict) else {}
    return None


def from_gcs(attributes: dict[str, str], resource: dict[str, Any], source: SourceRef, payload: bytes) -> ChangeEvent:
    kind = attributes.get("eventType")
    op = GCS_OPS.get(kind or "")
    if op is None:
        raise NotificationError(f"GCS notification {kind!r} is not a create or delete")
    bucket, name, generation = attributes.get("bucketId"), attributes.get("objectId"), attributes.get("objectGeneration")
    if not bucket or not name or not generation:
        raise NotificationError("GCS notification without bucketId, objectId or objectGeneration")
    newer = attributes.get("overwrittenByGeneration")
    if op == "delete" and newer:  # overwritten, not removed: the object now holds generation `newer`
        return _event(f"gs://{bucket}/{name}", "upsert", _generation(newer), {
            "bucket": bucket, "key": name, "generation": _generation(newer),
            "event_time": attributes.get("eventTime")}, source, payload)
    metadata = {"bucket": bucket, "key": name, "generation": _generation(generation),
                "content_type": resource.get("contentType"),
                "size": int(resource["size"]) if resource.get("size") else None, "etag": resource.get("etag"),
                "event_time": attributes.get("eventTime")}
    return _event(f"gs://{bucket}/{name}", op, _generation(generation), metadata, source, payload)


def _generation(value: str) -> int:
    try:
        generation = int(value)
    except ValueError as exc:
        raise NotificationError(f"GCS generation {value!r} is not an integer") from exc
    if not 0 <= generation <= MAX_VERSION:
        raise NotificationError(f"GCS generation {value!r} does not fit a 63-bit version")
    return generation


# --- S3 ------------------------------------------------------------------------------------------------------

def is_s3(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("Records"), list) and all(
        isinstance(r, dict) and "s3" in r for r in obj["Records"])


def is_s3_test_event(payload: bytes) -> bool:
    """Whether a message is the `s3:TestEvent` S3 sends when a notification is configured (no change)."""
    if b"s3:TestEvent" not in payload:
        return False
    try:
        obj = _unwrap_sns(json.loads(payload))
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("Event") == "s3:TestEvent"


def _unwrap_sns(obj: Any) -> Any:
    """The message inside an SNS envelope (S3 → SNS → SQS without raw delivery); anything else as is."""
    if isinstance(obj, dict) and obj.get("Type") == "Notification" and isinstance(obj.get("Message"), str):
        return load_json(obj["Message"])
    return obj


def _event_time_version(when: Any) -> int:
    """An ISO-8601 event time as microseconds since the epoch (the version when there is no sequencer)."""
    try:
        moment = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError as exc:
        raise NotificationError(f"S3 event without object.sequencer and with no usable eventTime ({when!r})") from exc
    return int(moment.timestamp() * 1_000_000)


def _s3_event(op: str, bucket: Any, key: Any, sequencer: Any, when: Any, details: dict[str, Any],
              source: SourceRef, payload: bytes) -> ChangeEvent:
    if not bucket or not key:
        raise NotificationError("S3 event without bucket name or object key")
    version = s3_sequencer_version(str(sequencer)) if sequencer else _event_time_version(when)
    metadata = {"bucket": bucket, "key": key, "event_time": when, **details}
    return _event(f"s3://{bucket}/{key}", op, version, metadata, source, payload)


def from_s3_record(record: dict[str, Any], source: SourceRef, payload: bytes) -> ChangeEvent:
    name = str(record.get("eventName", ""))
    op = "upsert" if name.startswith("ObjectCreated:") else "delete" if name.startswith("ObjectRemoved:") else None
    if op is None:
        raise NotificationError(f"S3 event {name!r} is not a create or delete")
    s3 = record["s3"]
    obj = s3.get("object", {})
    return _s3_event(op, s3.get("bucket", {}).get("name"), unquote_plus(obj.get("key") or ""), obj.get("sequencer"),
                     record.get("eventTime"), {"size": obj.get("size"), "etag": obj.get("eTag"),
                                               "version_id": obj.get("versionId")}, source, payload)


EVENTBRIDGE_OPS = {"Object Created": "upsert", "Object Deleted": "delete"}


def is_eventbridge_s3(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("source") == "aws.s3" and isinstance(obj.get("detail"), dict)


def from_eventbridge(obj: dict[str, Any], source: SourceRef, payload: bytes) -> ChangeEvent:
    kind = obj.get("detail-type")
    op = EVENTBRIDGE_OPS.get(str(kind))
    if op is None:
        raise NotificationError(f"EventBridge S3 event {kind!r} is not a create or delete")
    detail = obj["detail"]
    o = detail.get("object") or {}
    return _s3_event(op, (detail.get("bucket") or {}).get("name"), o.get("key"), o.get("sequencer"), obj.get("time"),
                     {"size": o.get("size"), "etag": o.get("etag"), "version_id": o.get("version-id")},
                     source, payload)


# --- entry point ---------------------------------------------------------------------------------------------

def _part(source: SourceRef, index: int, count: int) -> SourceRef:
    """The ref of part `index` of a record that holds `count` events (acknowledged once all are done)."""
    if count == 1:
        return source
    return source.model_copy(update={"position": {**source.position, "part": index, "part_count": count}})


class NotificationParser:
    """`(payload, source)` → `ChangeEvent`s (one per notification in the record) or `parse` dead letters."""

    def __init__(self, notification_format: str = "auto") -> None:
        if notification_format not in FORMATS:
            raise ValueError(f"notification format {notification_format!r}; expected one of {FORMATS}")
        self._format = notification_format

    def __call__(self, payload: bytes, source: SourceRef) -> Iterator[Union[ChangeEvent, DeadLetter]]:
        try:
            items = list(self._notifications(payload, source))
        except (RecordError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            yield DeadLetter.of(PARSE_STAGE, exc, payload, source, error_type=type(exc).__name__)
            return
        for index, make in enumerate(items):
            ref = _part(source, index, len(items))
            try:
                yield make(ref)
            except (RecordError, ValueError, KeyError, TypeError) as exc:
                yield DeadLetter.of(PARSE_STAGE, exc, payload, ref, error_type=type(exc).__name__)

    def _notifications(self, payload: bytes, source: SourceRef) -> Iterator[Any]:
        text = payload.decode("utf-8").strip()
        obj = load_json(text) if text else None
        fmt = self._format
        if fmt in ("auto", "s3"):
            obj = _unwrap_sns(obj)
        gcs = gcs_attributes(obj, source) if fmt in ("auto", "gcs") else None
        if gcs is not None:
            yield lambda ref: from_gcs(gcs[0], gcs[1], ref, payload)
        elif fmt in ("auto", "s3") and is_s3(obj):
            for record in obj["Records"]:
                yield lambda ref, r=record: from_s3_record(r, ref, payload)
        elif fmt in ("auto", "s3") and is_eventbridge_s3(obj):
            yield lambda ref: from_eventbridge(obj, ref, payload)
        elif fmt in ("auto", "eventgrid") and (is_event_grid(obj) or (
                isinstance(obj, list) and obj and all(is_event_grid(e) for e in obj))):
            for event in (obj if isinstance(obj, list) else [obj]):
                yield lambda ref, e=event: from_event_grid(e, ref, payload)
        else:
            raise NotificationError(f"not a {'known' if fmt == 'auto' else fmt} storage notification")
