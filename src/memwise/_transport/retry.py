"""One retry policy for every HTTP backend: what to retry, how long to wait, when to give up.

Backends call :func:`retry_call` with a coroutine factory for one attempt. Each failed attempt is
classified once into a :class:`Failure` (status, Retry-After hint, retryable or not); the loop waits
with exponential backoff and full jitter, or as long as the server's Retry-After asks, until the call
succeeds, the retries run out, or the time budget would be overspent. It then raises the backend's own
error type, built by ``give_up``, chained to the last underlying exception.

Classification is by exception type and HTTP status, never by class-name strings, so a renamed class in
a dependency fails loudly in tests instead of silently turning an error permanent.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

import openai

try:  # openai >= 3 speaks httpx2; older releases speak httpx, which has the same API.
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]

T = TypeVar("T")

FailureKind = Literal["status", "malformed", "timeout", "connection"]
_LABELS: dict[str, str] = {
    "status": "HTTP error",
    "malformed": "malformed reply",
    "timeout": "timeout",
    "connection": "connection error",
}

#: 4xx statuses that are worth repeating: request timeout, conflict (often a transient lock), rate limit.
RETRYABLE_4XX = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed attempt tells the retry loop.

    Attributes:
        reason: the failure in words, for the final error message.
        retryable: whether another attempt may succeed.
        status: the HTTP status, or None for timeouts and connection errors.
        retry_after: the server's Retry-After hint in seconds, when it gave one.
        kind: what sort of failure, for :attr:`label`.
    """

    reason: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    kind: FailureKind = "status"

    @property
    def label(self) -> str:
        """A short, countable name for why the attempt failed: ``"HTTP 429"``, ``"timeout"``...

        Example:
            >>> Failure("HTTP 429: slow down", True, 429).label
            'HTTP 429'
            >>> Failure("timed out (ReadTimeout)", True, kind="timeout").label
            'timeout'
        """
        if self.kind == "status" and self.status is not None:
            return f"HTTP {self.status}"
        return _LABELS[self.kind]


class MalformedReply(Exception):
    """A reply arrived but its body cannot be used (bad or truncated JSON, no choices, no content).

    Servers behind flaky proxies produce these under load, so they are retried like a 503.
    """

    def __init__(self, message: str, *, status: int | None = 200) -> None:
        super().__init__(message)
        self.status = status


class HTTPStatusFailure(Exception):
    """A non-2xx reply, raised by backends that read status codes themselves."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str] | None = None) -> None:
        preview = body if len(body) <= 300 else body[:300] + "..."
        super().__init__(f"HTTP {status}: {preview}")
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a retry count and a time budget.

    Args:
        max_retries: attempts after the first; 0 disables retrying.
        budget_s: the most time one call may spend, counted from its first attempt; a wait that would
            end past it is not started.
        base_s: the first backoff ceiling; the n-th retry waits uniformly in [0, min(cap_s, base_s * 2**n)].
        cap_s: the largest backoff ceiling.
    """

    max_retries: int = 8
    budget_s: float = 300.0
    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.budget_s < 0 or self.base_s < 0 or self.cap_s < 0:
            raise ValueError("budget_s, base_s and cap_s must be >= 0")

    def delay(self, retry_index: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry_index`` (0-based).

        Full jitter spreads a burst of failed calls over the whole window instead of re-synchronising
        them. A Retry-After hint is honoured as a floor; a little jitter on top keeps many callers told
        the same instant from arriving together.
        """
        ceiling = min(self.cap_s, self.base_s * math.pow(2.0, min(retry_index, 62)))
        if retry_after is not None:
            return retry_after + rng.uniform(0.0, min(self.base_s, ceiling))
        return rng.uniform(0.0, ceiling)


def is_retryable_status(status: int) -> bool:
    """429, 408, 409 and every 5xx are worth repeating; other 4xx mean the request itself is wrong."""
    return status in RETRYABLE_4XX or 500 <= status <= 599


def parse_retry_after(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """The wait a server asked for, in seconds: ``retry-after-ms``, or ``Retry-After`` as seconds or a date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify(exc: BaseException) -> Failure | None:
    """The :class:`Failure` an exception stands for, or None when it is not a transport failure at all.

    None means "a bug or a cancellation, not the server": the loop lets it propagate untouched.
    """
    if isinstance(exc, HTTPStatusFailure):
        return _status_failure(exc.status, exc.headers, str(exc))
    if isinstance(exc, openai.APIStatusError):
        return _status_failure(exc.status_code, exc.response.headers, f"HTTP {exc.status_code}: {exc.message}")
    if isinstance(exc, MalformedReply):
        return Failure(f"malformed reply: {exc}", True, exc.status, kind="malformed")
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return Failure(f"malformed reply: {exc}", True, 200, kind="malformed")
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return Failure(f"timed out ({type(exc).__name__})", True, kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return Failure(f"connection failed ({detail})", True, kind="connection")
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return Failure(f"connection failed ({type(exc).__name__}: {exc})", True, kind="connection")
    if isinstance(exc, httpx.DecodingError):
        return Failure(f"malformed reply: {exc}", True, 200, kind="malformed")
    return None


def _status_failure(status: int, headers: Mapping[str, str], reason: str) -> Failure:
    retryable = is_retryable_status(status)
    return Failure(reason, retryable, status, parse_retry_after(headers) if retryable else None)


GiveUp = Callable[[str, Failure, int], Exception]


async def retry_call(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    give_up: GiveUp,
    classify_failure: Callable[[BaseException], Failure | None] = classify,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[Failure], None] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds or the policy says stop.

    Args:
        attempt: makes one attempt; a fresh coroutine per call.
        policy: retry count, budget and backoff.
        give_up: builds the backend's error from (message, last failure, attempts made); it is raised
            ``from`` the last exception.
        classify_failure: maps an exception to a :class:`Failure`; None lets it propagate as is.
        sleep: injectable for tests.
        rng: the jitter source; injectable for tests.
        clock: monotonic seconds; injectable for tests.
        on_retry: told of each failed attempt that is about to be retried, so a caller can report the
            retries of a call that in the end succeeded (they would otherwise show only as slowness).
    """
    rng = rng or random.Random()
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except Exception as exc:
            failure = classify_failure(exc)
            if failure is None:
                raise
            if not failure.retryable:
                raise give_up(f"{failure.reason} (not retryable)", failure, attempts) from exc
            if attempts > policy.max_retries:
                message = f"gave up after {attempts} attempts; last error: {failure.reason}"
                raise give_up(message, failure, attempts) from exc
            wait = policy.delay(attempts - 1, failure.retry_after, rng)
            spent = clock() - start
            if spent + wait > policy.budget_s:
                message = (
                    f"retry budget of {policy.budget_s:g}s spent after {attempts} attempts "
                    f"({spent:.2f}s elapsed, next wait {wait:.2f}s); last error: {failure.reason}"
                )
                raise give_up(message, failure, attempts) from exc
            if on_retry is not None:
                on_retry(failure)
            await sleep(wait)
