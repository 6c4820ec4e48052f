"""A fast, fault-injecting fake of an OpenAI-compatible server, for tests and benches.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length or chunked request bodies) on a raw
``asyncio.Protocol``, answering each request from a timer rather than a task, to serve thousands of
requests a second next to the client on a small machine; a web framework would spend more CPU than the
client under test and distort benches.

Faults are chosen per *request content* and attempt number, never by arrival order, so a failure plan
gives the same outcome however concurrent calls interleave. Counters record every attempt and every
successful reply per distinct prompt, which is what lets a test prove that retries neither lost nor
duplicated a call.

Three ways to run it::

    async with FakeOpenAIServer(latency_s=0.01) as srv:          # in the running event loop
        ...srv.base_url...
    with FakeOpenAIServer().in_thread() as srv:                  # own loop in a background thread
        ...
    with FakeOpenAIServer(latency_s=0.05).in_process() as srv:   # own process (benches)
        srv.stats()                                              # fetched over GET /_stats

or from a shell: ``python -m memwise.testing.fake_openai --port 8000 --latency 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np

log = logging.getLogger(__name__)

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

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
_REASONS |= {503: "Service Unavailable", 405: "Method Not Allowed", 411: "Length Required"}
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What a responder sees: one choice of one chat request."""

    messages: tuple[dict[str, Any], ...]
    choice_index: int
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        """The last user message: the request's identity for counting and for the default echo."""
        return _last_user(self.messages)


Responder = Callable[[ChatCall], str]
JsonResponder = Callable[[ChatCall, dict[str, Any]], str]


def echo_responder(call: ChatCall) -> str:
    """Deterministic default reply, so tests can check each result against its own prompt."""
    return f"echo: {call.prompt}"


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


@dataclass(slots=True)
class ServerStats:
    """Counters, as a snapshot.

    ``attempts_by_key`` counts every request per distinct prompt (last user message; for embeddings the
    inputs joined by U+001F); ``completed_by_key`` counts only the replies fully written with status 200.
    """

    requests: int = 0
    completions: int = 0
    embeddings: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    attempts_by_key: dict[str, int] = field(default_factory=dict)
    completed_by_key: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    response_format_seen: int = 0
    response_format_rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerStats:
        return cls(**data)


class _Counters:
    """The live counters: mutated only on the server's own event loop."""

    def __init__(self) -> None:
        self.requests = 0
        self.completions = 0
        self.embeddings = 0
        self.failures: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.drawn: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.rf_seen = 0
        self.rf_rejected = 0

    def snapshot(self, open_connections: int) -> ServerStats:
        return ServerStats(
            requests=self.requests,
            completions=self.completions,
            embeddings=self.embeddings,
            failures=dict(self.failures),
            attempts_by_key=dict(self.attempts),
            completed_by_key=dict(self.completed),
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            connections_opened=self.connections,
            connections_open=open_connections,
            response_format_seen=self.rf_seen,
            response_format_rejected=self.rf_rejected,
        )


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    kind: Literal["chat", "embeddings", "other"] = "other"


@dataclass(frozen=True, slots=True)
class _Close:
    """Write ``partial`` (possibly nothing) and close the connection instead of replying."""

    partial: bytes = b""


@dataclass(frozen=True, slots=True)
class _Action:
    """What to do with one request, and after how many seconds."""

    delay_s: float
    outcome: _Reply | _Close


def _last_user(messages: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> int:
    return len(text.split())


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error(status: int, message: str, *, param: str | None = None, kind: str = "server_error") -> _Reply:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return _Reply(status, _json_bytes(body))


def hashed_unit_vector(text: str, dim: int) -> list[float]:
    """The fake embedding of ``text``: a unit vector seeded by the text's hash, identical across runs."""
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    vec = np.random.default_rng(seed).standard_normal(dim)
    vec /= np.linalg.norm(vec)
    return [float(x) for x in vec.astype(np.float32)]


class FakeOpenAIServer:
    """A fake OpenAI-compatible server on 127.0.0.1 (a free port unless ``port`` is given).

    Args:
        latency_s: delay before each reply (a timer, so requests overlap freely).
        responder: reply text for one choice; defaults to ``"echo: <last user message>"``.
        json_responder: reply text when the request carries a ``json_schema`` response_format; gets the
            schema. Without one, the plain responder answers.
        failures: the failure plan; none by default.
        reject_response_format: answer 400 to any request carrying ``response_format``, as servers that
            lack structured output do.
        ignore_n: answer one choice whatever ``n`` asks, as some servers do.
        dim: embedding dimension.
        model: model name reported back and listed by ``/v1/models``.
        port: fixed port; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        responder: Responder | None = None,
        json_responder: JsonResponder | None = None,
        failures: FailurePlan | None = None,
        reject_response_format: bool = False,
        ignore_n: bool = False,
        dim: int = 384,
        model: str = "fake-model",
        port: int = 0,
    ) -> None:
        self.latency_s = latency_s
        self.responder = responder
        self.json_responder = json_responder
        self.failures = failures or FailurePlan()
        self.reject_response_format = reject_response_format
        self.ignore_n = ignore_n
        self.dim = dim
        self.model = model
        self.port = port
        self._counters = _Counters()
        self._server: asyncio.Server | None = None
        self._connections: set[_HTTPConnection] = set()
        self._serial = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1`` (still readable after the server stopped)."""
        if not self.port:
            raise RuntimeError("the fake server has not been started")
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HTTPConnection(self), "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every open connection, held ones included."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.abort()
        await self._server.wait_closed()
        for _ in range(3):  # let connection_lost callbacks run before the loop goes away
            if not self._connections:
                break
            await asyncio.sleep(0)
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def stats(self) -> ServerStats:
        """A snapshot of the counters (call from the server's own loop)."""
        return self._counters.snapshot(len(self._connections))

    def in_thread(self) -> ThreadedServer:
        """Run this server on its own event loop in a background thread (a context manager)."""
        return ThreadedServer(self)

    def in_process(self) -> ProcessServer:
        """Run a copy of this server in a separate Python process (a context manager).

        Only plain settings cross the process boundary, so custom responders are refused here.
        """
        if self.responder is not None or self.json_responder is not None:
            raise ValueError("in_process() cannot carry custom responders; use in_thread() or the async form")
        return ProcessServer(self.settings())

    def settings(self) -> dict[str, Any]:
        """The serialisable settings, as ``--config`` accepts them."""
        return {
            "latency_s": self.latency_s,
            "failures": {**asdict(self.failures), "kinds": list(self.failures.kinds)},
            "reject_response_format": self.reject_response_format,
            "ignore_n": self.ignore_n,
            "dim": self.dim,
            "model": self.model,
        }

    # ------------------------------------------------------------------ endpoints

    def _count_success(self, reply: _Reply) -> None:
        if reply.status != 200 or reply.key is None:
            return
        self._counters.completed[reply.key] += 1
        if reply.kind == "chat":
            self._counters.completions += 1
        elif reply.kind == "embeddings":
            self._counters.embeddings += 1

    def _decide(self, request: _Request) -> _Action:
        """Everything about one request is settled on arrival; only its delivery waits (on a timer)."""
        path = request.path[3:] if request.path.startswith("/v1/") else request.path
        if path == "/_stats":
            return _Action(0.0, _Reply(200, _json_bytes(self.stats().to_json())))
        self._counters.requests += 1
        if path == "/models" and request.method == "GET":
            return _Action(0.0, _Reply(200, _json_bytes(self._models())))
        if request.method != "POST" or path not in ("/chat/completions", "/embeddings"):
            status = 404 if request.method == "POST" else 405
            return _Action(0.0, _error(status, f"no route for {request.method} {request.path}"))
        try:
            body = json.loads(request.body)
        except ValueError:
            return _Action(0.0, _error(400, "request body is not valid JSON", kind="invalid_request_error"))
        if not isinstance(body, dict):
            return _Action(0.0, _error(400, "request body must be a JSON object", kind="invalid_request_error"))
        if path == "/chat/completions":
            key = _last_user(body.get("messages") or [])
        else:
            inputs = body.get("input")
            key = "\x1f".join(map(str, inputs)) if isinstance(inputs, list) else str(inputs)
        failure = self._maybe_fail(key)
        if failure is not None:
            return failure
        reply = self._chat(body, key) if path == "/chat/completions" else self._embeddings(body, key)
        return _Action(self.latency_s, reply)

    def _maybe_fail(self, key: str) -> _Action | None:
        """The injected failure for this attempt of ``key``, or None when it should succeed."""
        counters = self._counters
        attempt = counters.attempts[key]
        counters.attempts[key] = attempt + 1
        kind, drawn = self.failures.choose(key, attempt, counters.drawn[key])
        if kind is None:
            return None
        if drawn:
            counters.drawn[key] += 1
        counters.failures[kind] += 1
        if kind == "timeout":
            return _Action(self.latency_s + self.failures.hold_s, _Close())
        if kind == "no_reply":
            return _Action(self.latency_s, _Close())
        if kind == "drop":
            body = b'{"id":"chatcmpl-dropped","choices":[{"index":0,"message":{"role":"assistant","content":"'
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body) * 3}\r\n\r\n"
            return _Action(self.latency_s, _Close(head.encode("latin-1") + body))
        return _Action(self.latency_s, self._failure_reply(kind))

    def _failure_reply(self, kind: FailureKind) -> _Reply:
        if kind == "rate_limit":
            after = self.failures.retry_after_s
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

    def _models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "memwise-fake"}]}

    def _chat(self, body: dict[str, Any], key: str) -> _Reply:
        messages = tuple(m for m in body.get("messages") or [] if isinstance(m, dict))
        response_format = body.get("response_format")
        if response_format is not None:
            self._counters.rf_seen += 1
            if self.reject_response_format:
                self._counters.rf_rejected += 1
                return _error(
                    400,
                    "response_format of type json_schema is not supported by this server",
                    param="response_format",
                    kind="invalid_request_error",
                )
        schema = None
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
        n = 1 if self.ignore_n else int(body.get("n") or 1)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        choices = []
        completion_tokens = 0
        for index in range(n):
            call = ChatCall(messages, index, body)
            if schema is not None and self.json_responder is not None:
                text = self.json_responder(call, schema)
            else:
                text = (self.responder or echo_responder)(call)
            finish = "stop"
            words = text.split()
            if isinstance(max_tokens, int) and len(words) > max_tokens:
                text, finish = " ".join(words[:max_tokens]), "length"
                words = words[:max_tokens]
            completion_tokens += len(words)
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in messages)
        self._serial += 1
        payload = {
            "id": f"chatcmpl-fake-{self._serial}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _Reply(200, _json_bytes(payload), key=key, kind="chat")

    def _embeddings(self, body: dict[str, Any], key: str) -> _Reply:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "input must be a string or a list of strings", kind="invalid_request_error")
        dim = int(body.get("dimensions") or self.dim)
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_unit_vector(text, dim)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(_tokens(t) for t in texts)
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _Reply(200, _json_bytes(payload), key=key, kind="embeddings")


class _HTTPConnection(asyncio.Protocol):
    """One client connection: parse requests from the byte stream, answer each on a timer.

    Requests on one connection are answered in order (HTTP/1.1 without pipelining surprises): the next
    is parsed only once the current one is answered. No task per request, just a timer handle, which is
    most of why this serves thousands of requests a second.
    """

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.TimerHandle | None = None
        self.busy = False
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)
        self.server._counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        self._settle()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if self.transport is not None:
            self.transport.abort()

    def _settle(self) -> None:
        if self.busy and self.counted:
            self.server._counters.in_flight -= 1
        self.busy = False

    def _next(self) -> None:
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        try:
            request = _parse_request(self.buffer)
        except ValueError:
            self.transport.write(_encode(_error(400, "malformed HTTP request"), keep_alive=False))
            self.transport.close()
            return
        if request is None:
            return
        self.busy = True
        self.counted = not request.path.endswith("/_stats")  # looking at the counters must not move them
        if self.counted:
            counters = self.server._counters
            counters.in_flight += 1
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            action = self.server._decide(request)
        except Exception as exc:  # a faulty responder: say so in a reply rather than drop the connection
            log.exception("fake server failed to answer %s %s", request.method, request.path)
            action = _Action(0.0, _error(500, f"fake server error: {type(exc).__name__}: {exc}"))
        if action.delay_s > 0:
            loop = asyncio.get_running_loop()
            self.pending = loop.call_later(action.delay_s, self._deliver, action.outcome, request.keep_alive)
        else:
            self._deliver(action.outcome, request.keep_alive)

    def _deliver(self, outcome: _Reply | _Close, keep_alive: bool) -> None:
        self.pending = None
        transport = self.transport
        self._settle()
        if transport is None or transport.is_closing():
            return
        if isinstance(outcome, _Close):
            if outcome.partial:
                transport.write(outcome.partial)
            transport.close()
            return
        transport.write(_encode(outcome, keep_alive))
        self.server._count_success(outcome)
        if keep_alive:
            self._next()
        else:
            transport.close()


def _parse_request(buffer: bytearray) -> _Request | None:
    """Take one complete request off the front of ``buffer``, or None if it has not all arrived."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEADER_BYTES:
            raise ValueError("request head too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parsed = _parse_chunked(buffer, start)
        if parsed is None:
            return None
        body, stop = parsed
    else:
        stop = start + int(headers.get("content-length", "0"))
        if len(buffer) < stop:
            return None
        body = bytes(buffer[start:stop])
    del buffer[:stop]
    return _Request(method.upper(), target.split("?", 1)[0], headers, body)


def _parse_chunked(buffer: bytearray, pos: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0].strip(), 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else None
        if len(buffer) < pos + size + 2:
            return None
        parts.append(bytes(buffer[pos : pos + size]))
        pos += size + 2


def _encode(reply: _Reply, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}"]
    head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(reply.body)}")
    if not keep_alive:
        head.append("Connection: close")
    head.extend(f"{k}: {v}" for k, v in reply.headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


# ---------------------------------------------------------------------- run modes


class ThreadedServer:
    """A :class:`FakeOpenAIServer` on its own event loop in a daemon thread."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stats(self) -> ServerStats:
        """A snapshot taken on the server's loop, so it never races a request in progress."""
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the fake server is not running")
        done: concurrent.futures.Future[ServerStats] = concurrent.futures.Future()

        def snap() -> None:
            try:
                done.set_result(self.server.stats())
            except BaseException as exc:  # handed to the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(snap)
        return done.result(timeout=10)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the fake server failed to start") from self._error
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        alive = self._thread is not None and self._thread.is_alive()
        if alive and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.server:
            self._ready.set()
            await self._stop.wait()


class ProcessServer:
    """A fake server in a child process; counters come over ``GET /_stats``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[str] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the fake server is not running")
        return self._base_url

    def stats(self) -> ServerStats:
        with urllib.request.urlopen(self.base_url + "/_stats", timeout=10) as reply:
            return ServerStats.from_json(json.loads(reply.read()))

    def __enter__(self) -> Self:
        src_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "memwise.testing.fake_openai", "--port", "0"]
        cmd += ["--config", json.dumps(self.settings)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("fake-openai listening on "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake server process did not start: {line!r}")
        self._base_url = line.removeprefix("fake-openai listening on ").strip()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None


# ---------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m memwise.testing.fake_openai", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one)")
    parser.add_argument("--latency", type=float, default=None, help="seconds before each reply")
    parser.add_argument("--dim", type=int, default=None, help="embedding dimension")
    parser.add_argument("--model", default=None, help="model name to report")
    parser.add_argument("--fail-first", type=int, default=None, help="fail the first K attempts of each request")
    parser.add_argument("--fail-rate", type=float, default=None, help="fail later attempts with this probability")
    parser.add_argument("--fail-kinds", default=None, help=f"comma-separated subset of {','.join(FAILURE_KINDS)}")
    parser.add_argument("--seed", type=int, default=None, help="seed of the failure draw")
    parser.add_argument("--reject-response-format", action="store_true", help="answer 400 to response_format")
    parser.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n asks")
    parser.add_argument("--config", default=None, help="settings as JSON (FakeOpenAIServer.settings())")
    return parser.parse_args(argv)


def _server_from_args(args: argparse.Namespace) -> FakeOpenAIServer:
    settings: dict[str, Any] = json.loads(args.config) if args.config else {}
    failures = dict(settings.pop("failures", {}))
    if args.fail_first is not None:
        failures["first_attempts"] = args.fail_first
    if args.fail_rate is not None:
        failures["rate"] = args.fail_rate
    if args.fail_kinds:
        failures["kinds"] = [k.strip() for k in args.fail_kinds.split(",") if k.strip()]
    if args.seed is not None:
        failures["seed"] = args.seed
    for flag, name in (("latency", "latency_s"), ("dim", "dim"), ("model", "model")):
        if getattr(args, flag) is not None:
            settings[name] = getattr(args, flag)
    if args.reject_response_format:
        settings["reject_response_format"] = True
    if args.ignore_n:
        settings["ignore_n"] = True
    return FakeOpenAIServer(port=args.port, failures=FailurePlan.from_dict(failures), **settings)


async def _serve(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake-openai listening on {server.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    asyncio.run(_serve(_server_from_args(_parse_args(argv))))


if __name__ == "__main__":
    main()
