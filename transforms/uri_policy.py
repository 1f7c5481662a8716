"""Which URIs a content fetch may read: the one allow-list every fetch goes through (a `uri` is a capability,
not a free read). Nothing is allowed by default.

- Local paths and `file://` URLs: only under a configured root (`--allow_local_root DIR`), after `..` and
  symlinks are resolved (`os.path.realpath`), so neither can lead out of it. Only regular files are read.
- `gs://BUCKET/...` and `s3://BUCKET/...`: only the configured buckets (`--allow_bucket gs://BUCKET`).
- Azure Blob (`https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB`, `azfs://ACCOUNT/CONTAINER/BLOB`, and
  Azurite's path-style `http://HOST:PORT/ACCOUNT/CONTAINER/BLOB`): only configured storage accounts, or
  `ACCOUNT/CONTAINER` pairs (`--allow_azure_account`), plus the account of the fetch's connection string (all
  its containers, unless the account is also listed with containers). The connection string's credentials
  are used only for a URL of its own account; a path-style URL is allowed only when its host:port is the
  connection string's BlobEndpoint and its account that connection's, so no request goes to an address that
  only the data named.
- Any other URI (other http(s) URLs, other schemes) is refused: there is no generic web fetch, so no request
  can reach a loopback, link-local or private address a record chose.

`UriPolicy.resolve` returns what to read (`LocalFile`, `BucketObject`, `AzureBlob`) or raises `UriNotAllowed`
with the reason; the fetcher reads only what it returned.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import ParseResult, quote, unquote, urlparse

from pydantic import BaseModel, ConfigDict, field_validator

AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^(\$root|\$web|[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?)$")
_BUCKET = re.compile(r"^(gs|s3)://([a-z0-9][a-z0-9._-]{1,221}[a-z0-9])/?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UriNotAllowed(ValueError):
    """The URI is outside the configured allow-list (the message says why); it is never read."""


@dataclass(frozen=True)
class LocalFile:
    path: str
    """Resolved: absolute, no `..`, no symlink."""


@dataclass(frozen=True)
class BucketObject:
    uri: str
    bucket: str


@dataclass(frozen=True)
class AzureBlob:
    account: str
    container: str
    blob: str
    url: Optional[str]
    """None: read with the connection string (its own account); else the URL to read anonymously or with the
    SAS it carries."""


Target = Union[LocalFile, BucketObject, AzureBlob]


@dataclass(frozen=True)
class AzureEndpoint:
    """Where a connection string's blob requests go."""

    account: str
    scheme: str
    host: str
    port: int
    path_style: bool
    """Azurite/emulator style: the account is the first path segment (`http://127.0.0.1:10000/ACCOUNT`)."""


def azure_endpoint(connection_string: str) -> Optional[AzureEndpoint]:
    """The account and BlobEndpoint of an Azure Storage connection string (keys are case-insensitive, as in the
    SDK); None when it names neither."""
    settings = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            settings[key.strip().lower()] = value.strip()
    if settings.get("usedevelopmentstorage", "").lower() == "true":
        settings.setdefault("accountname", "devstoreaccount1")
        settings.setdefault("blobendpoint", "http://127.0.0.1:10000/devstoreaccount1")
    account = settings.get("accountname", "").lower()
    endpoint = settings.get("blobendpoint")
    if not endpoint and account:
        suffix = settings.get("endpointsuffix", "core.windows.net")
        endpoint = f"{settings.get('defaultendpointsprotocol', 'https')}://{account}.blob.{suffix}"
    if not endpoint:
        return None
    parsed = urlparse(endpoint)
    scheme = parsed.scheme.lower()
    try:
        port = parsed.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    first_segment = parsed.path.strip("/").split("/")[0].lower()
    account = account or first_segment or (parsed.hostname or "").split(".")[0]
    if not parsed.hostname or not account:
        return None
    return AzureEndpoint(account=account, scheme=scheme, host=parsed.hostname.lower(), port=port,
                         path_style=bool(first_segment))


def within(path: str, root: str) -> bool:
    """Whether absolute, normalised `path` is `root` itself or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


class UriPolicy(BaseModel):
    """The allow-list (`fetch.allow` in a `--config` file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_roots: tuple[str, ...] = ()
    """Folders whose files may be read by path or `file://` URL (`--allow_local_root`)."""
    buckets: tuple[str, ...] = ()
    """`gs://BUCKET` / `s3://BUCKET` (`--allow_bucket`)."""
    azure_accounts: tuple[str, ...] = ()
    """`ACCOUNT` (every container) or `ACCOUNT/CONTAINER` (`--allow_azure_account`)."""

    @field_validator("local_roots")
    @classmethod
    def _roots(cls, roots: tuple[str, ...]) -> tuple[str, ...]:
        if any(not r or "\0" in r for r in roots):
            raise ValueError("a local root must be a non-empty path")
        return roots

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, buckets: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for bucket in buckets:
            match = _BUCKET.match(bucket.strip())
            if not match:
                raise ValueError(f"allowed bucket {bucket!r}: expected gs://BUCKET or s3://BUCKET")
            out.append(f"{match[1]}://{match[2]}")
        return tuple(out)

    @field_validator("azure_accounts")
    @classmethod
    def _accounts(cls, accounts: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for entry in accounts:
            account, _, container = entry.strip().lower().partition("/")
            if not _ACCOUNT.match(account) or (container and not _CONTAINER.match(container)):
                raise ValueError(f"allowed Azure account {entry!r}: expected ACCOUNT or ACCOUNT/CONTAINER "
                                 "(storage account and container names as Azure spells them)")
            out.append(f"{account}/{container}" if container else account)
        return tuple(out)

    def resolve(self, uri: str, azure: Optional[AzureEndpoint] = None) -> Target:
        """What to read for `uri`, given the connection string's endpoint; raises `UriNotAllowed`."""
        if not uri or "\0" in uri:
            raise UriNotAllowed("empty URI or NUL in the URI")
        parsed = urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme == "" or (scheme == "file" and parsed.netloc in ("", "localhost")):
            return self._local(uri if scheme == "" else unquote(parsed.path), uri)
        if scheme in ("gs", "s3"):
            return self._bucket(uri, scheme, parsed.netloc)
        if scheme == "azfs":
            container, _, blob = unquote(parsed.path).lstrip("/").partition("/")
            return self._azure(uri, parsed.netloc.lower(), container, blob, azure, own_host=False)
        if scheme in ("http", "https") and parsed.hostname:
            return self._http(uri, scheme, parsed.hostname.lower(), parsed, azure)
        raise UriNotAllowed(f"{_shown(uri)}: {scheme or 'this'} URIs are not fetched (local paths under "
                            "--allow_local_root, gs:// and s3:// buckets under --allow_bucket, and Azure Blob "
                            "URLs of --allow_azure_account accounts are)")

    def _local(self, path: str, uri: str) -> LocalFile:
        if not self.local_roots:
            raise UriNotAllowed(f"{_shown(uri)}: local files are not read (no --allow_local_root)")
        resolved = os.path.realpath(path)
        for root in self.local_roots:
            if within(resolved, os.path.realpath(root)):
                return LocalFile(resolved)
        raise UriNotAllowed(f"{_shown(uri)}: resolves to {_shown(resolved)}, outside every --allow_local_root")

    def _bucket(self, uri: str, scheme: str, bucket: str) -> BucketObject:
        if f"{scheme}://{bucket}" not in self.buckets:
            raise UriNotAllowed(f"{_shown(uri)}: bucket {scheme}://{bucket} is not in --allow_bucket")
        return BucketObject(uri, bucket)

    def _http(self, uri: str, scheme: str, host: str, parsed: ParseResult,
              azure: Optional[AzureEndpoint]) -> AzureBlob:
        path = unquote(parsed.path).lstrip("/")
        if host.endswith(AZURE_BLOB_SUFFIX) and host.count(".") == AZURE_BLOB_SUFFIX.count("."):
            container, _, blob = path.partition("/")
            return self._azure(uri, host.split(".")[0], container, blob, azure, own_host=True)
        try:
            port = parsed.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise UriNotAllowed(f"{_shown(uri)}: bad port") from exc
        if azure is not None and azure.path_style and (scheme, host, port) == (azure.scheme, azure.host, azure.port):
            account, _, rest = path.partition("/")
            container, _, blob = rest.partition("/")
            if account.lower() != azure.account:
                raise UriNotAllowed(f"{_shown(uri)}: account {account!r} at the connection string's BlobEndpoint "
                                    f"is not the connection string's account {azure.account!r}")
            return self._azure(uri, azure.account, container, blob, azure, own_host=False)
        raise UriNotAllowed(f"{_shown(uri)}: http(s) URLs are fetched only from Azure Blob Storage "
                            f"(ACCOUNT{AZURE_BLOB_SUFFIX}, or the connection string's BlobEndpoint); "
                            f"{host}:{port} is neither")

    def _azure(self, uri: str, account: str, container: str, blob: str, azure: Optional[AzureEndpoint],
               own_host: bool) -> AzureBlob:
        if not _ACCOUNT.match(account) or not container or not blob:
            raise UriNotAllowed(f"{_shown(uri)}: not an Azure blob URL (ACCOUNT, CONTAINER and BLOB needed)")
        listed = [e.partition("/")[2] for e in self.azure_accounts if e.partition("/")[0] == account]
        connected = azure is not None and azure.account == account
        if listed:
            allowed = "" in listed or container.lower() in listed
        else:
            allowed = connected
        if not allowed:
            what = f"container {account}/{container}" if listed else f"storage account {account!r}"
            raise UriNotAllowed(f"{_shown(uri)}: {what} is not in --allow_azure_account"
                                + ("" if connected else " nor the connection string's account"))
        if connected:
            return AzureBlob(account, container, blob, url=None)
        if not own_host:
            raise UriNotAllowed(f"{_shown(uri)}: no connection string for account {account!r} "
                                f"(only {account}{AZURE_BLOB_SUFFIX} URLs are read without one)")
        url = uri if urlparse(uri).scheme.lower() == "https" else None
        return AzureBlob(account, container, blob,
                         url=url or f"https://{account}{AZURE_BLOB_SUFFIX}/{container}/{quote(blob)}")


def _shown(uri: str, limit: int = 200) -> str:
    """The URI for a message: without a query (a SAS is a secret), shortened."""
    text = uri.split("?", 1)[0] if "://" in uri else uri
    return repr(text if len(text) <= limit else text[:limit] + "...")
