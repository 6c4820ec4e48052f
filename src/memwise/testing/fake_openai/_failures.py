"""Failure injection: which attempts fail (:class:`FailurePlan`) and what each kind of failure looks like.

Faults are chosen per request content and attempt number, never by arrival order, so a plan gives the
same outcome however concurrent calls interleave.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from memwise.testing.fake_openai._http import _Action, _Close, _error, _json_bytes, _Reply
from memwise.testing.fake_openai._stats import _Counters

FailureKind = Literal[
    "rate_limit", "server_error", "unavailable", "timeout", "no_reply", "drop", "malformed", "truncated"
]
FAILURE_KINDS: tuple[FailureKind, ...] = (
    "rate_limit",
    "server_error",
    "unavailable",
    "timeout",
    "no_reply",
    "drop",
    "malformed",
    "truncated",
)


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """Which attempts fail and how.

    Attempt ``i`` (0-based) of each distinct request fails with ``kinds[i % len(kinds)]`` while
    ``i < first_attempts``. After that, an attempt fails with probability ``rate``, drawn from a hash of
    (seed, request, attempt) rather than a shared RNG so concurrency cannot change which calls fail;
    ``max_per_request`` caps those random failures so every request eventually succeeds.

    Args:
        first_attempts: fail this many leading attempts of every distinct request.
        rate: probability that a later attempt fails.
        kinds: failure kinds to draw from.
        seed: varies which attempts the rate picks.
        max_per_request: most rate-drawn failures one request suffers.
        retry_after_s: Retry-After sent with a 429 (fractions allowed).
        hold_s: how long a ``timeout`` holds the connection silent before closing it; make it longer than
            the client's timeout.
    """

    first_attempts: int = 0
    rate: float = 0.0
    kinds: tuple[FailureKind, ...] = FAILURE_KINDS
    seed: int = 0
    max_per_request: int = 3
    retry_after_s: float = 0.05
    hold_s: float = 5.0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAILURE_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown failure kinds {sorted(unknown)}; choose from {FAILURE_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")

    def choose(self, key: str, attempt: int, drawn_so_far: int) -> tuple[FailureKind | None, bool]:
        """The failure for this attempt (or None), and whether it came from the rate draw."""
        if attempt < self.first_attempts:
            return self.kinds[attempt % len(self.kinds)], False
        if self.rate <= 0.0 or drawn_so_far >= self.max_per_request:
            return None, False
        digest = hashlib.blake2b(f"{self.seed}\x1f{attempt}\x1f{key}".encode(), digest_size=16).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.rate:
            return None, False
        return self.kinds[int.from_bytes(digest[8:], "big") % len(self.kinds)], True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailurePlan:
        return cls(**{**data, "kinds": tuple(data.get("kinds", FAILURE_KINDS))})


def inject_failure(plan: FailurePlan, counters: _Counters, key: str, latency_s: float) -> _Action | None:
    """The injected failure for this attempt of ``key``, or None when it should succeed."""
    attempt = counters.attempts[key]
    counters.attempts[key] = attempt + 1
    kind, drawn = plan.choose(key, attempt, counters.drawn[key])
    if kind is None:
        return None
    if drawn:
        counters.drawn[key] += 1
    counters.failures[kind] += 1
    if kind == "timeout":
        return _Action(latency_s + plan.hold_s, _Close())
    if kind == "no_reply":
        return _Action(latency_s, _Close())
    if kind == "drop":
        body = b'{"id":"chatcmpl-dropped","choices":[{"index":0,"message":{"role":"assistant","content":"'
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body) * 3}\r\n\r\n"
        return _Action(latency_s, _Close(head.encode("latin-1") + body))
    return _Action(latency_s, _failure_reply(plan, kind))


def _failure_reply(plan: FailurePlan, kind: FailureKind) -> _Reply:
    if kind == "rate_limit":
        after = plan.retry_after_s
        text = str(int(after)) if float(after).is_integer() else repr(float(after))
        reply = _error(429, "rate limit reached (injected)", kind="rate_limit_error")
        return _Reply(429, reply.body, (("Retry-After", text),))
    if kind == "server_error":
        return _error(500, "internal error (injected)")
    if kind == "unavailable":
        return _error(503, "service unavailable (injected)")
    if kind == "malformed":
        return _Reply(200, b"<html>upstream proxy error: this is not JSON</html>")
    message = {"role": "assistant", "content": "this reply was cut short in transit"}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    whole = _json_bytes({"id": "chatcmpl-truncated", "object": "chat.completion", "choices": [choice]})
    return _Reply(200, whole[: len(whole) // 2])
