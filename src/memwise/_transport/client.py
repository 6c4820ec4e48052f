"""The part of an OpenAI-compatible backend that does not depend on which endpoint it calls.

The chat backend (``llm``) and the embedding backend (``embed``) differ only in the body they send and
how they read the reply; the API key, the HTTP client, the prepared request head, the concurrency
slots, the retry loop and closing are the same, so they live here once.
"""

from __future__ import annotations

import asyncio
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, Self, TypeVar

from memwise._transport.http import Endpoint, HttpReply, Timeouts, build_http_client, json_headers, post_body
from memwise._transport.keys import resolve_api_key
from memwise._transport.retry import Failure, HTTPStatusFailure, MalformedReply, RetryPolicy, retry_call
from memwise.exceptions import ConfigError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[object]]


class EndpointSettings(Protocol):
    """The configuration fields both backends are built from (``ModelConfig`` and ``EmbedConfig`` have them)."""

    @property
    def backend(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def api_key_env(self) -> str: ...


class OpenAICompatClient(ABC):
    """Connection, concurrency and retries for one backend instance on an OpenAI-compatible server.

    Subclasses build the request body, parse the reply and say in :meth:`_give_up` which error a failed
    call raises; they call :meth:`_use_endpoint` once they know their path and user agent. The
    constructor's arguments are the backends' own, documented there; ``policy`` is the retry policy
    they build from their retry arguments.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        api_key_env: str,
        max_concurrency: int,
        timeout_s: float,
        policy: RetryPolicy,
        sleep: Sleep,
        rng: random.Random | None,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.timeout_s = timeout_s
        self.policy = policy
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._key = resolve_api_key(self.base_url, api_key, api_key_env)
        self._http, self._direct = build_http_client(
            self.base_url, max_connections=max_concurrency, timeout_s=timeout_s
        )
        self._timeouts = Timeouts(pool=timeout_s, connect=min(timeout_s, 10.0), read=timeout_s)
        self._slots = asyncio.Semaphore(max_concurrency)

    @classmethod
    def _from_settings(cls, cfg: EndpointSettings, needs: str, overrides: dict[str, Any], **params: Any) -> Self:
        """Build from a config whose backend must be ``openai`` with a base URL; ``overrides`` win over it."""
        if cfg.backend != "openai" or not cfg.base_url:
            raise ConfigError(f"{cls.__name__} needs {needs}, got {cfg.backend!r}")
        params = {"base_url": cfg.base_url, "model": cfg.model, "api_key_env": cfg.api_key_env, **params}
        return cls(**{**params, **overrides})

    def _use_endpoint(self, path: str, user_agent: str) -> None:
        """Prepare the request head for ``path`` once, so each call only joins bytes."""
        self._headers = json_headers(self._key, user_agent)
        self._endpoint = Endpoint.of(self.base_url, path, self._headers)

    async def aclose(self) -> None:
        """Close the HTTP connections; safe to call again."""
        if not self._http.is_closed:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _post(self, body: bytes) -> HttpReply:
        """POST ``body`` to the endpoint, holding one of the concurrency slots while it is in flight."""
        async with self._slots:
            return await post_body(
                self._http, self._direct, self._endpoint, body, headers=self._headers, timeouts=self._timeouts
            )

    async def _retry(
        self,
        attempt: Callable[[], Awaitable[T]],
        policy: RetryPolicy | None = None,
        on_retry: Callable[[Failure], None] | None = None,
    ) -> T:
        """Run ``attempt`` under ``policy`` (this client's unless given), raising :meth:`_give_up`'s error."""
        return await retry_call(
            attempt,
            policy or self.policy,
            give_up=self._give_up,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=on_retry,
        )

    @abstractmethod
    def _give_up(self, message: str, failure: Failure, attempts: int) -> Exception:
        """The backend's own error for a call that failed for good."""


def raise_for_status(reply: HttpReply) -> None:
    """An error reply becomes :class:`HTTPStatusFailure`, which the retry loop classifies by status."""
    if reply.status >= 400:
        raise HTTPStatusFailure(reply.status, reply.body.decode("utf-8", "replace"), reply.headers)


def load_json(body: bytes) -> Any:
    """The decoded body; one that is not JSON is a retryable :class:`MalformedReply`."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise MalformedReply(f"body is not JSON ({exc}): {body[:120]!r}") from exc
