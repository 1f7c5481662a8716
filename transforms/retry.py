"""Retry a call with exponential backoff and full jitter, for transient errors only."""
from __future__ import annotations

import random
import time
from typing import Callable, Optional, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class RetryPolicy(BaseModel):
    max_attempts: int = Field(default=5, ge=1)
    initial_backoff_s: float = Field(default=0.2, ge=0)
    max_backoff_s: float = Field(default=10.0, ge=0)
    max_elapsed_s: Optional[float] = Field(default=None, gt=0)
    """No new attempt starts once this many seconds have passed since the first (with the backoff before it);
    None: attempts alone bound the retries."""

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(attempt-1))]."""
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1)))


TRANSIENT_HTTP_STATUSES = (408, 429)  # request timeout, too many requests; and every 5xx


def is_transient_status(status: int, *also: int) -> bool:
    """Whether an HTTP answer with `status` is worth retrying: 408, 429, any 5xx, and the `also` codes."""
    return status >= 500 or status in TRANSIENT_HTTP_STATUSES or status in also


class GaveUp(Exception):
    """The call failed permanently, or transiently `attempts` times; `cause` is the last error."""

    def __init__(self, cause: BaseException, attempts: int, transient: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause} (after {attempts} attempt(s))")
        self.cause = cause
        self.attempts = attempts
        self.transient = transient


def call_with_retries(call: Callable[[], T], is_transient: Callable[[BaseException], bool], policy: RetryPolicy,
                      on_retry: Callable[[BaseException, int], None] = lambda e, a: None,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> tuple[T, int]:
    """`(result, attempts)`; raises `GaveUp` at once on a permanent error, or after the last transient one (the
    last attempt, or the one after which the backoff would end past `max_elapsed_s`)."""
    attempt, started = 0, clock()
    while True:
        attempt += 1
        try:
            return call(), attempt
        except Exception as exc:  # noqa: BLE001 - classified right below
            transient = is_transient(exc)
            if not transient or attempt >= policy.max_attempts:
                raise GaveUp(exc, attempt, transient) from exc
            delay = policy.backoff(attempt)
            if policy.max_elapsed_s is not None and clock() - started + delay > policy.max_elapsed_s:
                raise GaveUp(exc, attempt, transient) from exc
            on_retry(exc, attempt)
            sleep(delay)
