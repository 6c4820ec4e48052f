"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (vLLM, llama.cpp, TEI, OpenAI).

Texts go out in batches of ``batch_size``, several batches in flight at once, each with the shared
retry policy; rows come back in input order whatever order the server lists them in, L2-normalised
float32. The HTTP plumbing is the chat backend's: :mod:`memwise._transport.http` (a lean keep-alive pool for
plain-HTTP servers, ~0.15 ms of client CPU per call against the openai SDK's ~2.5 ms; https and proxied
URLs use the SDK's HTTP client), and the API-key rules of :mod:`memwise.llm.openai_compat`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self

import numpy as np

from memwise._aio import gather_or_cancel
from memwise._transport.http import Endpoint, Timeouts, build_http_client, json_headers, post_body
from memwise._transport.keys import resolve_api_key
from memwise._transport.retry import Failure, HTTPStatusFailure, MalformedReply, RetryPolicy, retry_call
from memwise.config import EmbedConfig
from memwise.embed.base import Vectors, normalise
from memwise.exceptions import ConfigError, EmbeddingError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[object]]

#: Dimensions of well-known models, so ``dim`` is right before the first call (caches read it early).
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAICompatEmbedder:
    """An :class:`~memwise.embed.base.Embedder` on an OpenAI-compatible ``/embeddings`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: embedding model name; also this embedder's ``name`` (the cache key).
        api_key: the key; if None, read from ``api_key_env``; local servers may go without.
        api_key_env: environment variable holding the key.
        batch_size: texts per request.
        dim: the dimension to insist on. If None, ``dim`` reads :data:`KNOWN_DIMS` (else 0) until the first
            reply, whose width then wins: compatible servers reuse well-known names for other models.
        max_concurrency: batches in flight at once.
        timeout_s: per-attempt timeout.
        max_retries: retries after the first attempt, per batch.
        retry_budget_s: time budget of one batch: no backoff wait starts that would end past it.
        backoff_base_s: first backoff ceiling.
        backoff_max_s: largest backoff ceiling.
        sleep: how to wait between attempts; tests inject a recorder.
        rng: jitter source; tests inject a seeded one.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "MEMWISE_API_KEY",
        batch_size: int = 64,
        dim: int | None = None,
        max_concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 8,
        retry_budget_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url or not model:
            raise ConfigError("OpenAICompatEmbedder needs base_url and model")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.batch_size = batch_size
        self._dim = dim
        self._dim_guess = KNOWN_DIMS.get(model, 0)
        self.policy = RetryPolicy(max_retries, retry_budget_s, backoff_base_s, backoff_max_s)
        self._sleep = sleep
        self._rng = rng or random.Random()
        key = resolve_api_key(self.base_url, api_key, api_key_env)
        self._http, self._direct = build_http_client(
            self.base_url, max_connections=max_concurrency, timeout_s=timeout_s
        )
        self._headers = json_headers(key, "memwise-embedder")
        self._endpoint = Endpoint.of(self.base_url, "/embeddings", self._headers)
        self._timeouts = Timeouts(pool=timeout_s, connect=min(timeout_s, 10.0), read=timeout_s)
        self._slots = asyncio.Semaphore(max_concurrency)

    @classmethod
    def from_config(cls, cfg: EmbedConfig, **overrides: Any) -> Self:
        """Build from an :class:`EmbedConfig`; ``overrides`` pass straight to the constructor."""
        if cfg.backend != "openai" or not cfg.base_url:
            raise ConfigError(f"OpenAICompatEmbedder needs backend 'openai' with a base_url, got {cfg.backend!r}")
        params: dict[str, Any] = {
            "base_url": cfg.base_url,
            "model": cfg.model,
            "api_key_env": cfg.api_key_env,
            "batch_size": cfg.batch_size,
        }
        return cls(**{**params, **overrides})

    @property
    def dim(self) -> int:
        """The vector dimension: as given, as learnt from the server, or the best guess before that."""
        return self._dim or self._dim_guess

    def describe(self) -> str:
        """The endpoint and model name (never the API key)."""
        return f"openai-embeddings({self._endpoint.url}, model={self.model})"

    async def aclose(self) -> None:
        """Close the HTTP connections; safe to call again."""
        if not self._http.is_closed:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Unit-norm float32 rows, one per text, in input order.

        Idle connections are closed after each call, so an embedder dropped without ``aclose()`` leaks
        no open sockets until garbage collection.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        try:
            parts: list[np.ndarray] = []
            if self._dim is None:  # learn the dimension once, before fanning out
                parts.append(await self._embed_batch(batches[0]))
                batches = batches[1:]
            parts.extend(await gather_or_cancel(*[self._embed_batch(b) for b in batches]))
        finally:
            if self._direct is not None:
                self._direct.close_idle()
        return normalise(np.concatenate(parts, axis=0))

    async def _embed_batch(self, batch: list[str]) -> np.ndarray:
        rows = await retry_call(
            lambda: self._attempt(batch), self.policy, give_up=self._give_up, sleep=self._sleep, rng=self._rng
        )
        width = rows.shape[1]
        if self._dim is None:
            if self._dim_guess and width != self._dim_guess:
                log.warning("%s returned %d-d vectors, not the usual %d", self.describe(), width, self._dim_guess)
            self._dim = width
        elif width != self._dim:
            raise EmbeddingError(f"{self.describe()}: expected {self._dim}-dimensional vectors, got {width}")
        return rows

    async def _attempt(self, batch: list[str]) -> np.ndarray:
        payload = {"model": self.model, "input": batch, "encoding_format": "float"}
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        async with self._slots:
            reply = await post_body(
                self._http, self._direct, self._endpoint, body, headers=self._headers, timeouts=self._timeouts
            )
        if reply.status >= 400:
            raise HTTPStatusFailure(reply.status, reply.body.decode("utf-8", "replace"), reply.headers)
        return _parse_embeddings(reply.body, len(batch))

    def _give_up(self, message: str, failure: Failure, attempts: int) -> EmbeddingError:
        status = f"status={failure.status}" if failure.status is not None else "no status"
        return EmbeddingError(f"{self.describe()}: {message} ({status}, attempts={attempts})")


def _parse_embeddings(body: bytes, expected: int) -> np.ndarray:
    """Rows in input order; an unusable body is a retryable :class:`MalformedReply`."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedReply(f"body is not JSON ({exc}): {body[:120]!r}") from exc
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else "no"
        raise MalformedReply(f"expected {expected} embeddings, got {got}")
    try:
        ordered = sorted(items, key=lambda item: int(item.get("index", 0)))
        rows = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise MalformedReply(f"embeddings are not numeric lists: {exc}") from exc
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise MalformedReply(f"embeddings have shape {rows.shape}")
    return rows
