"""CachedEmbedder and build_embedder: repeated texts are never embedded twice."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memwise.config import EmbedConfig
from memwise.embed.base import Embedder, Vectors
from memwise.embed.cache import CachedEmbedder
from memwise.embed.registry import build_embedder
from memwise.exceptions import ConfigError, EmbeddingError
from memwise.testing.fake_embedder import FakeEmbedder


class Recording(FakeEmbedder):
    """A FakeEmbedder that remembers each batch it was asked for and can be told to fail or stall."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__(dim)
        self.batches: list[list[str]] = []
        self.fail = False
        self.delay = 0.0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise EmbeddingError("backend down")
        return await super().embed(texts)


async def test_only_missing_texts_reach_the_inner_embedder(tmp_path: Path) -> None:
    inner = Recording()
    cache = CachedEmbedder(inner, tmp_path / "cache.db")
    assert isinstance(cache, Embedder) and cache.name == inner.name and cache.dim == 32
    first = await cache.embed(["alpha", "beta", "alpha"])
    assert inner.batches == [["alpha", "beta"]]  # deduplicated within the batch
    np.testing.assert_array_equal(first[0], first[2])
    second = await cache.embed(["beta", "gamma", "alpha"])
    assert inner.batches[-1] == ["gamma"]
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])
    assert (cache.hits, cache.misses) == (2, 4)
    await cache.embed(["alpha", "beta", "gamma"])
    assert len(inner.batches) == 2
    np.testing.assert_array_equal(second, np.asarray(await Recording().embed(["beta", "gamma", "alpha"])))
    assert (await cache.embed([])).shape == (0, 32)
    cache.close()

    # A new instance (another process, tomorrow) finds them in the file.
    again_inner = Recording()
    again = CachedEmbedder(again_inner, tmp_path / "cache.db")
    np.testing.assert_array_equal(await again.embed(["beta", "gamma", "alpha"]), second)
    assert again_inner.batches == []
    again.close()


async def test_the_model_name_is_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    small, large = Recording(dim=32), Recording(dim=64)
    a, b = CachedEmbedder(small, path), CachedEmbedder(large, path)
    assert a.key("x") != b.key("x")
    assert (await a.embed(["same text"])).shape == (1, 32)
    assert (await b.embed(["same text"])).shape == (1, 64)
    assert len(large.batches) == 1
    a.close()
    b.close()


async def test_concurrent_calls_share_work_in_flight(tmp_path: Path) -> None:
    inner = Recording()
    inner.delay = 0.05
    cache = CachedEmbedder(inner, tmp_path / "cache.db")
    texts = ["one", "two", "three"]
    results = await asyncio.gather(*(cache.embed(texts) for _ in range(6)))
    assert sum(len(batch) for batch in inner.batches) == 3
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    cache.close()


async def test_failures_propagate_and_cache_nothing(tmp_path: Path) -> None:
    inner = Recording()
    inner.fail, inner.delay = True, 0.02
    cache = CachedEmbedder(inner, tmp_path / "cache.db")
    outcomes = await asyncio.gather(cache.embed(["x", "y"]), cache.embed(["y"]), return_exceptions=True)
    assert all(isinstance(o, EmbeddingError) for o in outcomes)
    inner.fail = False
    await cache.embed(["x", "y"])
    assert inner.batches[-1] == ["x", "y"]


async def test_wrong_shape_from_inner_is_an_error(tmp_path: Path) -> None:
    class Broken(FakeEmbedder):
        async def embed(self, texts: Sequence[str]) -> Vectors:
            return np.zeros((1, self.dim), dtype=np.float32)

    cache = CachedEmbedder(Broken(16), tmp_path / "cache.db")
    with pytest.raises(EmbeddingError, match="shape"):
        await cache.embed(["a", "b"])


async def test_inner_that_learns_its_dim_on_the_first_call(tmp_path: Path) -> None:
    class Lazy:
        """Like a remote model of unknown size: dim reads 0 until a reply has been seen."""

        name = "lazy-remote"

        def __init__(self) -> None:
            self.model = FakeEmbedder(24)
            self.dim = 0
            self.batches: list[list[str]] = []

        def describe(self) -> str:
            return self.name

        async def embed(self, texts: Sequence[str]) -> Vectors:
            self.batches.append(list(texts))
            self.dim = 24
            return await self.model.embed(texts)

    path = tmp_path / "cache.db"
    inner = Lazy()
    cache = CachedEmbedder(inner, path)
    assert cache.dim == 0
    first = await cache.embed(["a", "b"])
    assert first.shape == (2, 24) and cache.dim == 24
    fresh_inner = Lazy()  # a new process: dim unknown again, but the cache answers
    again = await CachedEmbedder(fresh_inner, path).embed(["b", "a"])
    np.testing.assert_array_equal(again, first[::-1])
    assert fresh_inner.batches == []


def test_many_threads_and_instances_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    inners = [Recording() for _ in range(6)]
    errors: list[BaseException] = []

    def worker(inner: Recording) -> None:
        try:
            cache = CachedEmbedder(inner, path)
            for round_ in range(5):
                asyncio.run(cache.embed([f"text {i}" for i in range(round_ * 10, round_ * 10 + 40)]))
            cache.close()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(inner,)) for inner in inners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final_inner = Recording()
    final = CachedEmbedder(final_inner, path)
    asyncio.run(final.embed([f"text {i}" for i in range(80)]))
    assert final_inner.batches == []


# -- build_embedder -----------------------------------------------------------------------------


def test_registry_minilm(tmp_path: Path) -> None:
    pytest.importorskip("memwise.embed.minilm")
    from memwise.embed.minilm import MiniLMEmbedder

    plain = build_embedder(EmbedConfig(batch_size=8))
    assert isinstance(plain, MiniLMEmbedder) and plain.batch_size == 8 and plain.dim == 384
    cached = build_embedder(EmbedConfig(), cache_path=tmp_path / "c.db")
    assert isinstance(cached, CachedEmbedder) and isinstance(cached.inner, MiniLMEmbedder)
    assert cached.name == "all-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match="only all-MiniLM-L6-v2"):
        build_embedder(EmbedConfig(model="bge-large"))


def test_registry_openai_is_imported_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[EmbedConfig] = []

    class StubOpenAI(FakeEmbedder):
        @classmethod
        def from_config(cls, cfg: EmbedConfig) -> StubOpenAI:
            seen.append(cfg)
            return cls(dim=8)

    module = types.ModuleType("memwise.embed.openai_compat")
    module.OpenAICompatEmbedder = StubOpenAI  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "memwise.embed.openai_compat", module)
    cfg = EmbedConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(build_embedder(cfg), StubOpenAI) and seen == [cfg]
    cached = build_embedder(cfg, cache_path=str(tmp_path / "c.db"))
    assert isinstance(cached, CachedEmbedder) and cached.dim == 8
