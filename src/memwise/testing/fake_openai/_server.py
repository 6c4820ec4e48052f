"""The fake server itself: lifecycle, routing, and the chat, embeddings and models endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np

from memwise.testing.fake_openai._connection import _HTTPConnection
from memwise.testing.fake_openai._failures import FailurePlan, inject_failure
from memwise.testing.fake_openai._http import _Action, _error, _json_bytes, _Reply, _Request
from memwise.testing.fake_openai._runners import ProcessServer, ThreadedServer
from memwise.testing.fake_openai._stats import ServerStats, _Counters


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
        failure = inject_failure(self.failures, self._counters, key, self.latency_s)
        if failure is not None:
            return failure
        reply = self._chat(body, key) if path == "/chat/completions" else self._embeddings(body, key)
        return _Action(self.latency_s, reply)

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
