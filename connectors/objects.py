"""Fetch the content of upsert events that name an object (`uri`, no `text`) and extract its text.

Every URI goes through the allow-list first (`transforms.uri_policy.UriPolicy`, `--allow_local_root`,
`--allow_bucket`, `--allow_azure_account`): a URI outside it is dead-lettered (stage `fetch`, error type
`UriNotAllowed`, the reason) and never read; by default nothing is allowed. What the policy resolved is
read: Azure Blob with azure-storage-blob (the connection string's credentials for its own account only, else
a SAS in the URL or public access); `gs://` with google-cloud-storage (connectors/gcs.py: the generation a
GCS notification names, `STORAGE_EMULATOR_HOST` for an emulator) and `s3://` with boto3 (connectors/s3.py:
the version an S3 event names, if any; `AWS_ENDPOINT_URL_S3` for an emulator or an S3-compatible store);
local files (resolved, regular files only) directly.

Each object costs bounded time: Azure requests have connect and read timeouts and no SDK retries, and the
retries here (transient errors, with backoff) stop once `retry.max_elapsed_s` has passed, so an unreachable
endpoint is a dead letter after seconds and the other records go on. An object that no longer exists was
deleted after the event: the event is superseded (the delete event that follows removes the document); a
GCS generation or S3 version that no longer exists was overwritten or deleted, so the same holds. An object
in a bucket that does not exist is dead-lettered (stage `fetch`, `BucketMissing`). An
object larger than `max_document_bytes`, an unsupported type, a broken file or a fetch that keeps failing is
dead-lettered (stages `fetch` and `extract`) with the reason. The object's container/bucket, key, content
type, size and etag (and a GCS generation, an S3 version id) land in the event metadata.
"""
from __future__ import annotations

import os
import stat
from typing import Any, Iterator, Optional

import apache_beam as beam
from pydantic import BaseModel, ConfigDict, Field

from connectors.secrets import SecretRef
from transforms import counters
from transforms.extract import ExtractionError, extract_text
from transforms.retry import GaveUp, RetryPolicy, call_with_retries, is_transient_status
from transforms.stages import DEAD_LETTERS, DEFAULT_MAX_DOCUMENT_BYTES, SUPERSEDED
from transforms.types import ChangeEvent, DeadLetter
from transforms.uri_policy import AzureBlob, BucketObject, LocalFile, UriPolicy, azure_endpoint


class ObjectMissing(Exception):
    """The object does not exist (any more)."""


class BucketMissing(Exception):
    """The bucket the URI names does not exist: a configuration error, not a deleted object (dead-lettered)."""


class ObjectTooLarge(ValueError):
    """The object is larger than `max_document_bytes`."""


class NotARegularFile(ValueError):
    """A local path that names a directory, device, FIFO or socket."""


class FetchRetryPolicy(RetryPolicy):
    max_elapsed_s: Optional[float] = Field(default=20.0, gt=0)
    """A fetch starts no new attempt after this many seconds, unless set to None in a config file."""


class FetchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_document_bytes: int = Field(default=DEFAULT_MAX_DOCUMENT_BYTES, ge=1)
    azure_connection_string: Optional[SecretRef] = None
    """A reference (see connectors/secrets.py), resolved by each worker; default:
    `env:AZURE_STORAGE_CONNECTION_STRING`; without one, Azure URLs must carry a SAS or be public."""
    allow: UriPolicy = UriPolicy()
    """What a `uri` may name; nothing by default."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    """Azure requests: seconds to connect, and to wait for each read from the socket."""
    retry: FetchRetryPolicy = FetchRetryPolicy()

    def connection_string(self) -> Optional[str]:
        return (self.azure_connection_string or SecretRef.env("AZURE_STORAGE_CONNECTION_STRING")).resolve_or_none()


class ObjectFetcher:
    """Reads objects by URI; one per DoFn instance (holds the Azure service client)."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._azure: Any = None
        self._s3: Any = None
        self._gcs: Any = None

    def fetch(self, uri: str, metadata: Optional[dict[str, Any]] = None) -> tuple[bytes, dict[str, Any]]:
        """`(bytes, {"content_type", "size", "etag", ...})`; raises `UriNotAllowed` (before any read),
        `ObjectMissing` or `ObjectTooLarge`. `metadata`: the event's, whose `generation` (GCS) or `version_id`
        (S3) names the exact object version to read."""
        connection = self._config.connection_string()
        target = self._config.allow.resolve(uri, azure_endpoint(connection) if connection else None)
        if isinstance(target, AzureBlob):
            return self._fetch_azure(uri, target, connection)
        if isinstance(target, BucketObject):
            return self._fetch_bucket(target, metadata or {})
        return self._fetch_local(uri, target)

    def _fetch_azure(self, uri: str, target: AzureBlob, connection: Optional[str]) -> tuple[bytes, dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobClient, BlobServiceClient

        limits = {"connection_timeout": self._config.connect_timeout_s,
                  "read_timeout": self._config.read_timeout_s, "retry_total": 0}  # the retries are ours
        try:
            if target.url is None:
                if self._azure is None:
                    self._azure = BlobServiceClient.from_connection_string(connection, **limits)
                client = self._azure.get_blob_client(target.container, target.blob)
            else:
                client = BlobClient.from_blob_url(target.url, **limits)
            props = client.get_blob_properties()
            self._check_size(uri, props.size)
            data = client.download_blob(etag=props.etag, match_condition=_if_match()).readall()
        except ResourceNotFoundError as exc:
            raise ObjectMissing(uri) from exc
        return data, {"content_type": props.content_settings.content_type, "size": props.size,
                      "etag": (props.etag or "").strip('"')}

    def _fetch_bucket(self, target: BucketObject, metadata: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """Exactly the named object (no glob expansion): `gs://` with google-cloud-storage, `s3://` with boto3."""
        key = target.uri.split("://", 1)[1].partition("/")[2]
        if not key:
            raise ValueError(f"{target.uri} names a bucket, not an object")
        limit = self._config.max_document_bytes
        if target.uri.startswith("gs://"):
            from connectors import gcs

            if self._gcs is None:
                self._gcs = gcs.client()
            generation = metadata.get("generation")
            return gcs.read_object(self._gcs, target.uri, target.bucket, key,
                                   int(generation) if generation is not None else None, limit, self._check_size,
                                   (self._config.connect_timeout_s, self._config.read_timeout_s))
        from connectors import s3

        if self._s3 is None:
            self._s3 = s3.client(self._config.connect_timeout_s, self._config.read_timeout_s)
        return s3.read_object(self._s3, target.uri, target.bucket, key, metadata.get("version_id"), limit,
                              self._check_size)

    def _fetch_local(self, uri: str, target: LocalFile) -> tuple[bytes, dict[str, Any]]:
        """The resolved path, opened without following a symlink put there since, and only a regular file."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(target.path, flags)
        except FileNotFoundError as exc:
            raise ObjectMissing(uri) from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotARegularFile(f"{uri} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            self._check_size(uri, info.st_size)
            data = fh.read(self._config.max_document_bytes + 1)
        self._check_size(uri, len(data))
        return data, {"size": len(data)}

    def _check_size(self, uri: str, size: Optional[int]) -> None:
        if size is not None and size > self._config.max_document_bytes:
            raise ObjectTooLarge(f"{uri} is {size} bytes, over --max_document_bytes "
                                 f"{self._config.max_document_bytes}")

    def is_transient(self, error: BaseException) -> bool:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        if type(error).__module__.startswith(("botocore", "boto3")):
            from connectors import s3

            return s3.is_transient(error)
        if type(error).__module__.startswith(("google.", "requests")):
            from connectors import gcs

            return gcs.is_transient(error)
        if isinstance(error, HttpResponseError) and error.status_code is not None:
            return is_transient_status(error.status_code, 412)  # 412: changed mid-read
        return isinstance(error, (ServiceRequestError, ServiceResponseError, TimeoutError, ConnectionError))

    def close(self) -> None:
        if self._azure is not None:
            self._azure.close()
            self._azure = None
        if self._s3 is not None:
            self._s3.close()
            self._s3 = None
        if self._gcs is not None:
            self._gcs.close()
            self._gcs = None


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


class FetchContent(beam.DoFn):
    """Upsert events with a `uri` and no `text` → the same event with the object's text and details;
    events with text pass through. Missing objects → `superseded`; failures → `dead_letters`."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._superseded = counters.counter(counters.EVENTS_SUPERSEDED)

    def setup(self) -> None:
        self._fetcher = ObjectFetcher(self._config)

    def teardown(self) -> None:
        self._fetcher.close()

    def process(self, event: ChangeEvent) -> Iterator[Any]:
        if event.op != "upsert" or event.text is not None or not event.uri:
            yield event
            return
        try:
            yield from self._fetch(event, event.uri)
        except Exception as exc:  # noqa: BLE001 - any failure is this event's dead letter, never a crash
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event("fetch", exc, event))

    def _fetch(self, event: ChangeEvent, uri: str) -> Iterator[Any]:
        try:
            (data, details), _ = call_with_retries(lambda: self._fetcher.fetch(uri, event.metadata),
                                                   self._fetcher.is_transient,
                                                   self._config.retry)
        except GaveUp as failure:
            if isinstance(failure.cause, ObjectMissing):
                self._superseded.inc()
                yield beam.pvalue.TaggedOutput(SUPERSEDED, event)
                return
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event(
                "fetch", failure.cause, event, attempts=failure.attempts))
            return
        metadata = {**event.metadata, **{k: v for k, v in details.items() if v is not None}}
        try:
            text = extract_text(uri, data, metadata.get("content_type"))
        except ExtractionError as exc:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.for_event("extract", exc, event))
            return
        yield event.model_copy(update={"text": text, "metadata": metadata})
