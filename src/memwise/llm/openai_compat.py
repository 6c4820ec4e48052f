"""Chat completions from any OpenAI-compatible server (vLLM, llama.cpp, SGLang, Ollama, OpenAI itself).

Retries are ours (see :mod:`memwise._transport.retry`): the SDK's own are switched off so that behaviour
under 429/5xx/timeouts/dropped connections is one documented policy, tested against the fake server.

Why the hot path is not ``client.chat.completions.create``: with dozens of calls in flight against a
local server, per-call client CPU decides throughput, and the SDK's ~2.5 ms of CPU per call (against
~0.15 ms on the lean path) would keep ``bench/llm_client.py`` (2,000 calls, 64 in flight) far from its
1.25x target; :mod:`memwise._transport.http` has the measurements. So:

* one ``AsyncOpenAI`` client per instance holds the configuration (base URL, key, timeouts) and carries
  every call when ``sdk_requests=True``, as one ``client.post`` of pre-encoded JSON;
* otherwise, for plain-HTTP endpoints, a call is written straight onto a pooled keep-alive connection
  of :class:`~memwise._transport.http.KeepAliveTransport` (the same pool the SDK's HTTP client runs on here),
  with a request head built once per instance and the reply parsed by ``json.loads`` rather than
  pydantic;
* HTTPS and proxied endpoints (remote APIs, where network latency dwarfs client CPU) keep the SDK's own
  HTTP client, its pool limits raised to ``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Self

import openai

from memwise._transport.client import OpenAICompatClient, Sleep, load_json, raise_for_status
from memwise._transport.http import HttpReply
from memwise._transport.retry import Failure, MalformedReply, RetryPolicy, httpx
from memwise.config import ModelConfig
from memwise.exceptions import ConfigError, LLMError
from memwise.llm.base import ChatRequest, ChatResponse, Sample, Usage

log = logging.getLogger(__name__)

_RESPONSE_FORMAT_HINTS = ("response_format", "json_schema", "unsupported", "not supported")


# -------------------------------------------------------------------------------------------- backend


class OpenAICompatLLM(OpenAICompatClient):
    """A :class:`~memwise.llm.base.ChatModel` on an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent to the server; also this backend's ``name``.
        api_key: the key; if None, read from ``api_key_env``; local servers may go without.
        api_key_env: environment variable holding the key.
        max_concurrency: HTTP requests in flight at once (backoff waits hold no slot).
        timeout_s: per-attempt timeout.
        max_retries: retries after the first attempt.
        retry_budget_s: time budget of one call: no backoff wait starts that would end past it.
        backoff_base_s: first backoff ceiling (doubles per retry, full jitter).
        backoff_max_s: largest backoff ceiling.
        sdk_requests: send each call through the OpenAI SDK's request pipeline instead of the lean path
            (same behaviour, about five times the client CPU per call).
        sleep: how to wait between attempts; tests inject a recorder.
        rng: jitter source; tests inject a seeded one.

    Example:
        >>> llm = OpenAICompatLLM(base_url="http://127.0.0.1:8000/v1", model="m")  # doctest: +SKIP
        >>> (await llm.complete(ChatRequest.of("hi"))).text  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "MEMWISE_API_KEY",
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 8,
        retry_budget_s: float = 300.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sdk_requests: bool = False,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url:
            raise ConfigError("OpenAICompatLLM needs base_url, e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise ConfigError(f"OpenAICompatLLM needs a model name for {base_url} (set MEMWISE_MODEL)")
        policy = RetryPolicy(max_retries, retry_budget_s, backoff_base_s, backoff_max_s)
        super().__init__(base_url, model, api_key, api_key_env, max_concurrency, timeout_s, policy, sleep, rng)
        self.sdk_requests = sdk_requests
        # The SDK client runs on the same HTTP client; it carries every call when sdk_requests is set.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._key, max_retries=0, timeout=timeout_s, http_client=self._http
        )
        self._use_endpoint("/chat/completions", f"memwise {self._client.user_agent}")
        self._response_format_ok = True
        self._n_ok = True

    @classmethod
    def from_config(cls, cfg: ModelConfig, **overrides: Any) -> Self:
        """Build from a :class:`ModelConfig`; ``overrides`` pass straight to the constructor."""
        return cls._from_settings(
            cfg,
            "an 'openai' model config with base_url",
            overrides,
            max_concurrency=cfg.max_concurrency,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            retry_budget_s=cfg.retry_budget_s,
        )

    @property
    def supports_response_format(self) -> bool:
        """False once the server has rejected ``response_format``; callers then parse tolerantly."""
        return self._response_format_ok

    def describe(self) -> str:
        """The endpoint and model name (never the API key)."""
        return f"openai({self.base_url}, model={self.model})"

    # ---------------------------------------------------------------- calls

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send the request, retrying transient failures under this client's retry policy."""
        return await self._complete(request, self.policy)

    async def health_check(self) -> str:
        """One tiny call with few retries, for ``memwise doctor``: a line saying what answered and how fast."""
        policy = RetryPolicy(min(1, self.policy.max_retries), min(self.policy.budget_s, 30.0), 0.2, 2.0)
        request = ChatRequest.of("Reply with the word OK.", max_tokens=4)
        response = await self._complete(request, policy)
        sample = response.samples[0]
        retried = f" after {len(response.retries)} retries ({', '.join(response.retries)})" if response.retries else ""
        return f"{self.describe()} answered {sample.text!r} in {sample.latency_s:.2f}s{retried}"

    async def _complete(self, request: ChatRequest, policy: RetryPolicy) -> ChatResponse:
        start = time.perf_counter()
        retried: list[str] = []  # why each retried attempt failed; the reply carries it to the ledger
        if request.n > 1 and not self._n_ok:
            choices, usage = await self._fill(request, [], policy, retried)
        else:
            choices, usage = await self._retry(
                lambda: self._attempt(request), policy, lambda failure: retried.append(failure.label)
            )
            if len(choices) < request.n:
                log.info("%s returned %d of %d choices; asking per sample", self.describe(), len(choices), request.n)
                self._n_ok = False
                choices, usage = await self._fill(request, choices, policy, retried, usage)
        latency = time.perf_counter() - start
        return ChatResponse(
            model=self.model, samples=_samples(choices[: request.n], usage, latency), retries=tuple(retried)
        )

    async def _fill(
        self,
        request: ChatRequest,
        have: list[dict[str, Any]],
        policy: RetryPolicy,
        retried: list[str],
        usage: Usage | None = None,
    ) -> tuple[list[dict[str, Any]], Usage]:
        """Top up to ``request.n`` choices with seeded single-sample calls, for servers that ignore ``n``.

        Usage is then per call, so the split in :func:`_samples` sees exact counts only approximately.
        """

        async def one(index: int) -> tuple[list[dict[str, Any]], Usage]:
            single = request.single(index)
            return await self._retry(
                lambda: self._attempt(single), policy, lambda failure: retried.append(failure.label)
            )

        extra = await asyncio.gather(*(one(i) for i in range(len(have), request.n)))
        total = usage or Usage()
        choices = list(have)
        for got, used in extra:
            choices.append(got[0])
            total = total + used
        return choices, total

    async def _attempt(self, request: ChatRequest) -> tuple[list[dict[str, Any]], Usage]:
        use_format = request.json_schema is not None and self._response_format_ok
        reply = await self._post(_encode_chat(self.model, request, use_format, self._n_ok))
        if use_format and reply.status in (400, 422) and _rejects_response_format(reply.body):
            log.warning("%s rejected response_format; sending plain requests from now on", self.describe())
            self._response_format_ok = False
            reply = await self._post(_encode_chat(self.model, request, False, self._n_ok))
        raise_for_status(reply)
        return _parse_chat(reply.body)

    async def _post(self, body: bytes) -> HttpReply:
        if not self.sdk_requests:
            return await super()._post(body)
        async with self._slots:
            return await self._post_sdk(body)

    async def _post_sdk(self, body: bytes) -> HttpReply:
        """The same POST through the SDK's request pipeline; its status errors become plain replies."""
        try:
            response = await self._client.post("/chat/completions", cast_to=httpx.Response, content=body)
        except openai.APIStatusError as exc:
            return HttpReply(exc.status_code, exc.response.headers, exc.response.content)
        return HttpReply(response.status_code, response.headers, response.content)

    def _give_up(self, message: str, failure: Failure, attempts: int) -> LLMError:
        return LLMError(
            message,
            backend=self.describe(),
            status=failure.status,
            retry_after=failure.retry_after,
            attempts=attempts,
        )


def _encode_chat(model: str, request: ChatRequest, with_format: bool, send_n: bool) -> bytes:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
    }
    if request.n > 1 and send_n:
        payload["n"] = request.n
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.stop:
        payload["stop"] = list(request.stop)
    if with_format and request.json_schema is not None:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": False},
        }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rejects_response_format(body: bytes) -> bool:
    text = body.decode("utf-8", "replace").lower()
    return any(hint in text for hint in _RESPONSE_FORMAT_HINTS)


def _parse_chat(body: bytes) -> tuple[list[dict[str, Any]], Usage]:
    """Choices in index order and the call's usage; anything unusable is a retryable :class:`MalformedReply`."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise MalformedReply(f"body is not a JSON object: {body[:120]!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("reply has no choices")
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise MalformedReply("a choice has no message content")
    if len(choices) > 1:
        choices = sorted(choices, key=lambda c: c.get("index", 0))
    raw_usage = data.get("usage")
    if not isinstance(raw_usage, dict):
        raw_usage = {}
    usage = Usage(int(raw_usage.get("prompt_tokens") or 0), int(raw_usage.get("completion_tokens") or 0))
    return choices, usage


def _samples(choices: list[dict[str, Any]], usage: Usage, latency: float) -> tuple[Sample, ...]:
    """One sample per choice; completion tokens split as evenly as integers allow, prompt tokens to each."""
    share, extra = divmod(usage.completion_tokens, len(choices))
    return tuple(
        Sample(
            text=choice["message"]["content"],
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            usage=Usage(usage.prompt_tokens, share + (1 if i < extra else 0)),
            latency_s=latency,
        )
        for i, choice in enumerate(choices)
    )
