"""Fetch the content of upsert events that name an object (`uri`, no `text`) and extract its text.

Every URI goes through the allow-list first (`transforms.uri_policy.UriPolicy`, `--allow_local_root`,
`--allow_bucket`, `--allow_azure_account`): a URI outside it is dead-lettered (stage `fetch`, error type
`UriNotAllowed`, the reason) and never read; by default nothing is allowed. What the policy resolved is
read: Azure Blob with azure-storage-blob (the connection string's credentials for its own account only, else
a SAS in the URL or public access); `gs://` and `s3://` through Beam's FileSystems (the `gcp` and `aws`
extras of apache-beam); local files (resolved, regular files only) directly.

Each object costs bounded time: Azure requests have connect and read timeouts and no SDK retries, and the
retries here (transient errors, with backoff) stop once `retry.max_elapsed_s` has passed, so an unreachable
endpoint is a dead letter after seconds and the other records go on. An object that no longer exists was
deleted after the event: the event is superseded (the delete event that follows removes the document). An
object larger than `max_document_bytes`, an unsupported type, a broken file or a fetch that keeps failing is
dead-lettered (stages `fetch` and `extract`) with the reason. The object's container/bucket, key, content
type, size and etag land in the event metadata.
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

    def fetch(self, uri: str) -> tuple[bytes, dict[str, Any]]:
        """`(bytes, {"content_type", "size", "etag"})`; raises `UriNotAllowed` (before any read),
        `ObjectMissing` or `ObjectTooLarge`."""
        connection = self._config.connection_string()
        target = self._config.allow.resolve(uri, azure_endpoint(connection) if connection else None)
        if isinstance(target, AzureBlob):
            return self._fetch_azure(uri, target, connection)
        if isinstance(target, BucketObject):
            return self._fetch_bucket(target)
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

    def _fetch_bucket(self, target: BucketObject) -> tuple[bytes, dict[str, Any]]:
        """Exactly the named object (no glob expansion), through Beam's FileSystems."""
        from apache_beam.io.filesystems import FileSystems

        filesystem = FileSystems.get_filesystem(target.uri)
        if not filesystem.exists(target.uri):
            raise ObjectMissing(target.uri)
        self._check_size(target.uri, filesystem.metadata(target.uri).size_in_bytes)
        try:
            with filesystem.open(target.uri) as fh:
                data = fh.read(self._config.max_document_bytes + 1)
        except FileNotFoundError as exc:
            raise ObjectMissing(target.uri) from exc
        self._check_size(target.uri, len(data))
        return data, {"size": len(data)}

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

        if isinstance(error, HttpResponseError) and error.status_code is not None:
            return is_transient_status(error.status_code, 412)  # 412: changed mid-read
        return isinstance(error, (ServiceRequestError, ServiceResponseError, TimeoutError, ConnectionError))

    def close(self) -> None:
        if self._azure is not None:
            self._azure.close()
            self._azure = None


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
            (data, details), _ = call_with_retries(lambda: self._fetcher.fetch(uri), self._fetcher.is_transient,
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
