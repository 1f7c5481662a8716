"""Google Cloud Storage objects, read for the fetch stage with google-cloud-storage: exactly one generation
of one object (the notification's, when it names one: a generation that was overwritten or deleted since is
gone, so its event is superseded), its size checked before the body is read. Credentials and project come
from Application Default Credentials; `STORAGE_EMULATOR_HOST` (`http://HOST:PORT`) points the client at an
emulator (fake-gcs-server) with anonymous credentials. Each request has a timeout and no SDK retries (the
fetch stage retries)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from connectors.objects import BucketMissing, ObjectMissing


def client() -> Any:
    from google.cloud import storage

    return storage.Client()


def read_object(gcs: Any, uri: str, bucket: str, name: str, generation: Optional[int], max_bytes: int,
                check_size: Callable[[str, Optional[int]], None], timeout_s: tuple[float, float]
                ) -> tuple[bytes, dict[str, Any]]:
    """`(bytes, {"content_type", "size", "etag", "generation"})`; raises `ObjectMissing` (no such object or
    generation), `BucketMissing` or what `check_size` raises."""
    from google.api_core.exceptions import NotFound

    blob = gcs.bucket(bucket).blob(name, generation=generation)
    try:
        blob.reload(timeout=timeout_s, retry=None)
        check_size(uri, blob.size)
        data = blob.download_as_bytes(end=max_bytes, if_generation_match=blob.generation, timeout=timeout_s,
                                      retry=None)
    except NotFound as exc:
        if not gcs.bucket(bucket).exists(timeout=timeout_s, retry=None):
            raise BucketMissing(f"{uri}: bucket gs://{bucket} does not exist") from exc
        raise ObjectMissing(uri) from exc
    check_size(uri, len(data))
    return data, {"content_type": blob.content_type, "size": len(data), "etag": blob.etag,
                  "generation": blob.generation}


def is_transient(error: BaseException) -> bool:
    """Timeouts, connection trouble, 408/429/5xx, and 412 (the generation changed between reads)."""
    import requests
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.exceptions import TransportError

    from transforms.retry import is_transient_status

    if isinstance(error, GoogleAPICallError) and error.code is not None:
        return is_transient_status(int(error.code), 412)
    return isinstance(error, (requests.ConnectionError, requests.Timeout, TransportError, TimeoutError,
                              ConnectionError))
