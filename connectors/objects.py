"""Fetch the content of upsert events that name an object (`uri`, no `text`) and extract its text.

Azure Blob URLs (`https://ACCOUNT.blob.core.windows.net/...`, Azurite's `http://127.0.0.1:10000/ACCOUNT/...`)
and `azfs://ACCOUNT/CONTAINER/BLOB` are read with azure-storage-blob (the connection string's credentials, or
a SAS in the URL); `gs://`, `s3://`, `file://` and local paths through Beam's FileSystems (the `gcp` and
`aws` extras of apache-beam provide the first two). Transient errors are retried with backoff. An object
that no longer exists was deleted after the event: the event is superseded (the delete event that follows
removes the document). An object larger than `max_document_bytes`, an unsupported type, a broken file or a
fetch that keeps failing is dead-lettered (stages `fetch` and `extract`) with the reason. The object's
container/bucket, key, content type, size and etag land in the event metadata.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional
from urllib.parse import unquote, urlparse

import apache_beam as beam
from pydantic import BaseModel, ConfigDict, Field

from connectors.secrets import SecretRef
from transforms import counters
from transforms.extract import ExtractionError, extract_text
from transforms.notifications import azure_blob_location
from transforms.retry import GaveUp, RetryPolicy, call_with_retries, is_transient_status
from transforms.stages import DEAD_LETTERS, DEFAULT_MAX_DOCUMENT_BYTES, SUPERSEDED
from transforms.types import ChangeEvent, DeadLetter


class ObjectMissing(Exception):
    """The object does not exist (any more)."""


class ObjectTooLarge(ValueError):
    """The object is larger than `max_document_bytes`."""


class FetchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_document_bytes: int = Field(default=DEFAULT_MAX_DOCUMENT_BYTES, ge=1)
    azure_connection_string: Optional[SecretRef] = None
    """A reference (see connectors/secrets.py), resolved by each worker; default:
    `env:AZURE_STORAGE_CONNECTION_STRING`; without one, Azure URLs must carry a SAS or be public."""
    retry: RetryPolicy = RetryPolicy()

    def connection_string(self) -> Optional[str]:
        return (self.azure_connection_string or SecretRef.env("AZURE_STORAGE_CONNECTION_STRING")).resolve_or_none()


class ObjectFetcher:
    """Reads objects by URI; one per DoFn instance (holds the Azure service client)."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._azure: Any = None

    def fetch(self, uri: str) -> tuple[bytes, dict[str, Any]]:
        """`(bytes, {"content_type", "size", "etag"})`; raises `ObjectMissing` or `ObjectTooLarge`."""
        location = azure_blob_location(uri)
        return self._fetch_azure(uri, *location) if location else self._fetch_filesystem(uri)

    def _fetch_azure(self, uri: str, account: str, container: str, blob: str) -> tuple[bytes, dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobClient, BlobServiceClient

        connection = self._config.connection_string()
        try:
            if connection:
                if self._azure is None:
                    self._azure = BlobServiceClient.from_connection_string(connection)
                client = self._azure.get_blob_client(container, blob)
            else:
                client = BlobClient.from_blob_url(uri)
            props = client.get_blob_properties()
            self._check_size(uri, props.size)
            data = client.download_blob(etag=props.etag, match_condition=_if_match()).readall()
        except ResourceNotFoundError as exc:
            raise ObjectMissing(uri) from exc
        return data, {"content_type": props.content_settings.content_type, "size": props.size,
                      "etag": (props.etag or "").strip('"')}

    def _fetch_filesystem(self, uri: str) -> tuple[bytes, dict[str, Any]]:
        from apache_beam.io.filesystems import FileSystems

        path = unquote(urlparse(uri).path) if uri.startswith("file://") else uri
        matched = FileSystems.match([path])[0].metadata_list
        if not matched:
            raise ObjectMissing(uri)
        self._check_size(uri, matched[0].size_in_bytes)
        try:
            with FileSystems.open(path) as fh:
                data = fh.read(self._config.max_document_bytes + 1)
        except FileNotFoundError as exc:
            raise ObjectMissing(uri) from exc
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
