from __future__ import annotations

import pytest

from transforms.retry import GaveUp, RetryPolicy, call_with_retries

POLICY = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=0.3)


def flaky(failures: list[BaseException]):
    def call():
        if failures:
            raise failures.pop(0)
        return "ok"
    return call


def test_transient_errors_are_retried_with_bounded_jittered_backoff():
    sleeps: list[float] = []
    result, attempts = call_with_retries(flaky([TimeoutError(), TimeoutError()]), lambda e: True, POLICY,
                                         sleep=sleeps.append)
    assert (result, attempts) == ("ok", 3)
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


def test_permanent_error_is_not_retried():
    with pytest.raises(GaveUp) as info:
        call_with_retries(flaky([ValueError("bad")]), lambda e: False, POLICY, sleep=lambda s: None)
    assert info.value.attempts == 1 and not info.value.transient and isinstance(info.value.cause, ValueError)


def test_gives_up_after_max_attempts():
    errors = [ConnectionError(str(i)) for i in range(10)]
    with pytest.raises(GaveUp) as info:
        call_with_retries(flaky(errors), lambda e: True, POLICY, sleep=lambda s: None)
    assert info.value.attempts == 4 and info.value.transient


def test_http_statuses_worth_retrying_are_timeouts_throttling_and_server_errors():
    from transforms.retry import is_transient_status

    assert [s for s in (400, 401, 404, 408, 409, 412, 413, 429, 500, 503) if is_transient_status(s)] == [
        408, 429, 500, 503]
    assert is_transient_status(412, 412) and not is_transient_status(404, 412)


def test_no_attempt_starts_after_the_total_deadline():
    now = [0.0]

    def slow_failure():
        now[0] += 4.0  # each attempt takes 4 s (a read timeout), then fails transiently
        raise TimeoutError("read timed out")

    policy = RetryPolicy(max_attempts=50, initial_backoff_s=0.0, max_backoff_s=0.0, max_elapsed_s=10.0)
    with pytest.raises(GaveUp) as info:
        call_with_retries(slow_failure, lambda e: True, policy, sleep=lambda s: None, clock=lambda: now[0])
    assert info.value.attempts == 3 and info.value.transient and now[0] == 12.0
