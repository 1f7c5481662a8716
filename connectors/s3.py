"""Amazon S3 objects, read for the fetch stage with boto3: exactly one object (a version, when the event names
one), its size checked before the body is read and the body read only if its ETag is still the one checked
(`If-Match`), so a concurrent overwrite is retried instead of mixed. Region, credentials and the endpoint
come from the usual AWS chain (environment, shared config and credentials files, instance or task role);
`AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) points it at an S3-compatible store or an emulator. Requests
have connect and read timeouts and no SDK retries (the fetch stage retries)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from connectors.objects import BucketMissing, ObjectMissing

_MISSING = {"404", "NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound"}


def client(connect_timeout_s: float, read_timeout_s: float) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(
        connect_timeout=connect_timeout_s, read_timeout=read_timeout_s, retries={"total_max_attempts": 1}))


def read_object(s3: Any, uri: str, bucket: str, key: str, version_id: Optional[str], max_bytes: int,
                check_size: Callable[[str, Optional[int]], None]) -> tuple[bytes, dict[str, Any]]:
    """`(bytes, {"content_type", "size", "etag", "version_id"})`; raises `ObjectMissing` (no such key or
    version), `BucketMissing` or what `check_size` raises."""
    from botocore.exceptions import ClientError

    which = {"VersionId": version_id} if version_id else {}
    try:
        head = s3.head_object(Bucket=bucket, Key=key, **which)
        check_size(uri, head.get("ContentLength"))
        body = s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"], **which)["Body"]
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
            if not _bucket_exists(s3, bucket):
                raise BucketMissing(f"{uri}: bucket s3://{bucket} does not exist") from exc
            raise ObjectMissing(uri) from exc
        raise
    check_size(uri, len(data))
    return data, {"content_type": head.get("ContentType"), "size": len(data),
                  "etag": (head.get("ETag") or "").strip('"'), "version_id": head.get("VersionId")}


def _bucket_exists(s3: Any, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
            return False
        return True  # forbidden or the like: not evidence that it is missing


def is_transient(error: BaseException) -> bool:
    """Connection trouble, timeouts, throttling, 5xx, and 412 (the object changed between head and get)."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, ReadTimeoutError

    from transforms.retry import is_transient_status

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status is not None and is_transient_status(int(status), 412)
    return isinstance(error, (BotoConnectionError, ReadTimeoutError))
