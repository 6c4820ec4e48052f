"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (vLLM, llama.cpp, TEI, OpenAI).

Texts go out in batches of ``batch_size``, several batches in flight at once, each with the shared
retry policy; rows come back in input order whatever order the server lists them in, L2-normalised
float32. Connection, API key, concurrency and retries are the chat backend's too:
:class:`memwise._transport.client.OpenAICompatClient`, on :mod:`memwise._transport.http` (a lean keep-alive
pool for plain-HTTP servers, ~0.15 ms of client CPU per call against the openai SDK's ~2.5 ms; https and
proxied URLs use the SDK's HTTP client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from memwise._aio import gather_or_cancel
from memwise._transport.client import OpenAICompatClient, Sleep, load_json, raise_for_status
from memwise._transport.retry import Failure, MalformedReply, RetryPolicy
from memwise.config import EmbedConfig
from memwise.embed.base import Vectors, normalise
from memwise.exceptions import ConfigError, EmbeddingError

log = logging.getLogger(__name__)

#: Dimensions of well-known models, so ``dim`` is right before the first call (caches read it early).
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAICompatEmbedder(OpenAICompatClient):
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
        policy = RetryPolicy(max_retries, retry_budget_s, backoff_base_s, backoff_max_s)
        super().__init__(base_url, model, api_key, api_key_env, max_concurrency, timeout_s, policy, sleep, rng)
        self.batch_size = batch_size
        self._dim = dim
        self._dim_guess = KNOWN_DIMS.get(model, 0)
        self._use_endpoint("/embeddings", "memwise-embedder")

    @classmethod
    def from_config(cls, cfg: EmbedConfig, **overrides: Any) -> Self:
        """Build from an :class:`EmbedConfig`; ``overrides`` pass straight to the constructor."""
        return cls._from_settings(cfg, "backend 'openai' with a base_url", overrides, batch_size=cfg.batch_size)

    @property
    def dim(self) -> int:
        """The vector dimension: as given, as learnt from the server, or the best guess before that."""
        return self._dim or self._dim_guess

    def describe(self) -> str:
        """The endpoint and model name (never the API key)."""
        return f"openai-embeddings({self._endpoint.url}, model={self.model})"

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
        rows = await self._retry(lambda: self._attempt(batch))
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
        reply = await self._post(body)
        raise_for_status(reply)
        return _parse_embeddings(reply.body, len(batch))

    def _give_up(self, message: str, failure: Failure, attempts: int) -> EmbeddingError:
        status = f"status={failure.status}" if failure.status is not None else "no status"
        return EmbeddingError(f"{self.describe()}: {message} ({status}, attempts={attempts})")


def _parse_embeddings(body: bytes, expected: int) -> np.ndarray:
    """Rows in input order; an unusable body is a retryable :class:`MalformedReply`."""
    data = load_json(body)
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
