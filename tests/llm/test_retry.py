"""The retry policy on its own: classification, Retry-After, backoff bounds, retry count and budget."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest

from memwise._transport.retry import (
    Failure,
    HTTPStatusFailure,
    MalformedReply,
    RetryPolicy,
    classify,
    httpx,
    is_retryable_status,
    parse_retry_after,
    retry_call,
)

_REQUEST = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


class GaveUp(Exception):
    def __init__(self, message: str, failure: Failure, attempts: int) -> None:
        super().__init__(message)
        self.failure = failure
        self.attempts = attempts


class Recorder:
    """An injected sleep: records the waits, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers or {}, request=_REQUEST)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=None)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_permanent(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_seconds_fractions_millis_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": " 0.25 "}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def test_full_jitter_stays_within_the_doubling_ceiling() -> None:
    policy = RetryPolicy(max_retries=10, budget_s=100, base_s=0.5, cap_s=4.0)
    rng = random.Random(7)
    for retry in range(10):
        ceiling = min(4.0, 0.5 * 2**retry)
        waits = [policy.delay(retry, None, rng) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # jitter really spans the window
    assert RetryPolicy(base_s=1.0).delay(3, None, random.Random(1)) == RetryPolicy(base_s=1.0).delay(
        3, None, random.Random(1)
    )


def test_retry_after_is_a_floor_with_a_little_jitter() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=1.0)
    waits = [policy.delay(0, 2.0, random.Random(i)) for i in range(50)]
    assert all(2.0 <= w <= 2.1 for w in waits)


@pytest.mark.parametrize(
    ("exc", "retryable", "status"),
    [
        (_status_error(429, {"retry-after": "2"}), True, 429),
        (_status_error(503), True, 503),
        (_status_error(500), True, 500),
        (_status_error(400), False, 400),
        (_status_error(401), False, 401),
        (openai.APITimeoutError(request=_REQUEST), True, None),
        (openai.APIConnectionError(request=_REQUEST), True, None),
        (httpx.ReadTimeout("slow"), True, None),
        (httpx.RemoteProtocolError("closed mid-reply"), True, None),
        (httpx.ConnectError("refused"), True, None),
        (ConnectionResetError("reset"), True, None),
        (TimeoutError(), True, None),
        (MalformedReply("no choices"), True, 200),
        (json.JSONDecodeError("Expecting value", "{", 1), True, 200),
        (HTTPStatusFailure(502, "bad gateway"), True, 502),
        (HTTPStatusFailure(404, "no such route"), False, 404),
    ],
)
def test_classify(exc: BaseException, retryable: bool, status: int | None) -> None:
    failure = classify(exc)
    assert failure is not None
    assert (failure.retryable, failure.status) == (retryable, status)


def test_classify_reads_retry_after_from_sdk_and_plain_errors() -> None:
    sdk = classify(_status_error(429, {"Retry-After": "2"}))
    plain = classify(HTTPStatusFailure(503, "busy", {"retry-after": "1.5"}))
    assert sdk is not None and sdk.retry_after == 2.0
    assert plain is not None and plain.retry_after == 1.5


def test_bugs_are_not_classified() -> None:
    assert classify(KeyError("x")) is None
    assert classify(ValueError("x")) is None


def _in_turn(outcomes: list[BaseException | str]) -> Callable[[], Awaitable[str]]:
    """An attempt that raises or returns the next of ``outcomes`` each time it is made."""

    async def attempt() -> str:
        item = outcomes.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return attempt


async def test_recovers_and_reports_each_wait() -> None:
    outcomes: list[BaseException | str] = [httpx.ReadTimeout("t"), _status_error(503), "done"]
    sleep = Recorder()
    policy = RetryPolicy(max_retries=5, budget_s=10, base_s=0.2, cap_s=1.0)
    result = await retry_call(_in_turn(outcomes), policy, give_up=GaveUp, sleep=sleep, rng=random.Random(0))
    assert result == "done"
    assert len(sleep.waits) == 2 and sleep.waits[0] <= 0.2 and sleep.waits[1] <= 0.4


async def test_honours_retry_after() -> None:
    calls = 0
    sleep = Recorder()

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise HTTPStatusFailure(429, "slow down", {"retry-after": "1.25"})
        return "ok"

    policy = RetryPolicy(max_retries=2, budget_s=10, base_s=0.01, cap_s=0.05)
    assert await retry_call(attempt, policy, give_up=GaveUp, sleep=sleep) == "ok"
    assert sleep.waits and 1.25 <= sleep.waits[0] <= 1.26


async def test_gives_up_after_max_retries_chained_to_the_last_error() -> None:
    errors = [_status_error(500), _status_error(502), _status_error(503)]

    async def attempt() -> str:
        raise errors.pop(0)

    with pytest.raises(GaveUp) as info:
        await retry_call(attempt, RetryPolicy(max_retries=2, base_s=0.0), give_up=GaveUp, sleep=Recorder())
    assert info.value.attempts == 3
    assert info.value.failure.status == 503
    assert "gave up after 3 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, openai.APIStatusError) and info.value.__cause__.status_code == 503


async def test_budget_stops_before_a_wait_that_would_overrun_it() -> None:
    clock_now = 0.0
    sleep_calls: list[float] = []

    async def sleep(seconds: float) -> None:
        nonlocal clock_now
        sleep_calls.append(seconds)
        clock_now += seconds

    async def attempt() -> str:
        nonlocal clock_now
        clock_now += 1.0  # each attempt takes a second
        raise HTTPStatusFailure(503, "busy", {"retry-after": "2"})

    policy = RetryPolicy(max_retries=100, budget_s=10.0, base_s=0.0, cap_s=0.0)
    with pytest.raises(GaveUp) as info:
        await retry_call(attempt, policy, give_up=GaveUp, sleep=sleep, clock=lambda: clock_now)
    # Attempts end at t=1, 4, 7 and 10, each followed by a 2 s wait while that still ends within the
    # 10 s budget; after the fourth, a wait to t=12 would overrun it.
    assert info.value.attempts == 4
    assert sleep_calls == [2.0, 2.0, 2.0]
    assert "retry budget of 10s spent" in str(info.value)


async def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise HTTPStatusFailure(400, "bad request")

    with pytest.raises(GaveUp, match="not retryable") as info:
        await retry_call(attempt, RetryPolicy(), give_up=GaveUp, sleep=Recorder())
    assert calls == 1 and info.value.attempts == 1


async def test_unclassified_exceptions_propagate_untouched() -> None:
    async def attempt() -> str:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retry_call(attempt, RetryPolicy(), give_up=GaveUp, sleep=Recorder())


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(budget_s=-1)


async def test_each_retried_attempt_is_reported_with_why_it_failed() -> None:
    outcomes: list[BaseException | str] = [
        _status_error(429, {"retry-after": "0"}),
        httpx.ReadTimeout("t"),
        httpx.ConnectError("refused"),
        MalformedReply("not JSON"),
        _status_error(503),
        "done",
    ]
    told: list[str] = []

    policy = RetryPolicy(max_retries=8, budget_s=10, base_s=0.01, cap_s=0.01)
    result = await retry_call(
        _in_turn(outcomes),
        policy,
        give_up=GaveUp,
        sleep=Recorder(),
        on_retry=lambda failure: told.append(failure.label),
    )
    assert result == "done"
    assert told == ["HTTP 429", "timeout", "connection error", "malformed reply", "HTTP 503"]


async def test_the_attempt_that_gives_up_is_not_reported_as_a_retry() -> None:
    told: list[Failure] = []

    async def attempt() -> str:
        raise _status_error(500)

    policy = RetryPolicy(max_retries=2, budget_s=10, base_s=0.01, cap_s=0.01)
    with pytest.raises(GaveUp):
        await retry_call(attempt, policy, give_up=GaveUp, sleep=Recorder(), on_retry=told.append)
    assert [f.label for f in told] == ["HTTP 500", "HTTP 500"]  # 3 attempts, 2 retries
