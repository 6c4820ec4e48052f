"""OpenAICompatEmbedder against the fake server: batching, order, normalisation, dimension, errors."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import pytest

from memwise.config import EmbedConfig
from memwise.embed.base import Embedder
from memwise.embed.openai_compat import OpenAICompatEmbedder
from memwise.exceptions import ConfigError, EmbeddingError
from memwise.testing.fake_openai import FailurePlan, FakeOpenAIServer, hashed_unit_vector


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def make_embedder(server: FakeOpenAIServer, **overrides: Any) -> OpenAICompatEmbedder:
    params: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "fake-embed",
        "batch_size": 4,
        "timeout_s": 2.0,
        "max_retries": 4,
        "backoff_base_s": 0.005,
        "sleep": _no_wait,
        "rng": random.Random(0),
    }
    return OpenAICompatEmbedder(**{**params, **overrides})


async def test_batches_keep_order_and_rows_are_unit_float32() -> None:
    texts = [f"text {i}" for i in range(10)]
    async with FakeOpenAIServer(dim=16) as srv:
        embedder = make_embedder(srv)
        try:
            assert isinstance(embedder, Embedder)
            assert embedder.dim == 0  # unknown model, dimension not given: learnt from the first reply
            vectors = await embedder.embed(texts)
        finally:
            await embedder.aclose()
        stats = srv.stats()
    assert vectors.shape == (10, 16) and vectors.dtype == np.float32 and embedder.dim == 16
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    expected = np.asarray([hashed_unit_vector(t, 16) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert stats.embeddings == 3  # batches of 4, 4, 2
    assert sorted(len(k.split("\x1f")) for k in stats.completed_by_key) == [2, 4, 4]


async def test_rows_are_reordered_by_index_and_normalised() -> None:
    async with FakeOpenAIServer(dim=8) as srv:
        embedder = make_embedder(srv, batch_size=100)
        try:
            one = await embedder.embed(["alpha", "beta", "gamma"])
            reversed_order = await embedder.embed(["gamma", "beta", "alpha"])
        finally:
            await embedder.aclose()
    np.testing.assert_allclose(one, reversed_order[::-1], atol=1e-7)


async def test_given_dimension_is_checked() -> None:
    async with FakeOpenAIServer(dim=8) as srv:
        embedder = make_embedder(srv, dim=12)
        try:
            assert embedder.dim == 12
            with pytest.raises(EmbeddingError, match="expected 12-dimensional vectors, got 8"):
                await embedder.embed(["x"])
        finally:
            await embedder.aclose()


async def test_known_models_guess_their_dimension_until_the_server_says_otherwise() -> None:
    async with FakeOpenAIServer(dim=8) as srv:
        embedder = make_embedder(srv, model="text-embedding-3-small")
        try:
            assert embedder.dim == 1536
            assert (await embedder.embed(["x"])).shape == (1, 8)
            assert embedder.dim == 8
        finally:
            await embedder.aclose()


async def test_empty_input_and_single_string_misuse() -> None:
    async with FakeOpenAIServer(dim=8) as srv:
        embedder = make_embedder(srv, dim=8)
        try:
            assert (await embedder.embed([])).shape == (0, 8)
            with pytest.raises(TypeError):
                await embedder.embed("one string")
        finally:
            await embedder.aclose()


@pytest.mark.parametrize("kind", ["rate_limit", "unavailable", "drop", "malformed", "truncated", "no_reply"])
async def test_batches_survive_failures(kind: str) -> None:
    plan = FailurePlan(first_attempts=1, kinds=(kind,), retry_after_s=0.0)  # type: ignore[arg-type]
    texts = [f"t{i}" for i in range(9)]
    async with FakeOpenAIServer(dim=8, failures=plan) as srv:
        embedder = make_embedder(srv)
        try:
            vectors = await embedder.embed(texts)
        finally:
            await embedder.aclose()
        stats = srv.stats()
    expected = np.asarray([hashed_unit_vector(t, 8) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert stats.failures == {kind: 3} and stats.embeddings == 3


async def test_persistent_failure_names_the_endpoint_and_status() -> None:
    plan = FailurePlan(first_attempts=100, kinds=("server_error",))
    async with FakeOpenAIServer(failures=plan) as srv:
        embedder = make_embedder(srv, max_retries=2)
        try:
            with pytest.raises(EmbeddingError) as info:
                await embedder.embed(["a", "b", "c", "d", "e"])
        finally:
            await embedder.aclose()
        endpoint = f"{srv.base_url}/embeddings"
    message = str(info.value)
    assert endpoint in message and "status=500" in message and "attempts=3" in message


async def test_idle_connections_are_closed_after_each_call() -> None:
    """Embedders may be dropped without aclose (the protocol has none): no socket may outlive a call."""
    async with FakeOpenAIServer(dim=8) as srv:
        embedder = make_embedder(srv)
        await embedder.embed(["a", "b", "c", "d", "e"])
        await asyncio.sleep(0.01)
        stats = srv.stats()
        assert stats.connections_opened >= 1 and stats.connections_open == 0


def test_from_config() -> None:
    cfg = EmbedConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="e5", batch_size=7)
    embedder = OpenAICompatEmbedder.from_config(cfg)
    assert (embedder.name, embedder.batch_size) == ("e5", 7)
    assert embedder.describe() == "openai-embeddings(http://127.0.0.1:9/v1/embeddings, model=e5)"
    asyncio.run(embedder.aclose())
    with pytest.raises(ConfigError):
        OpenAICompatEmbedder.from_config(EmbedConfig())
