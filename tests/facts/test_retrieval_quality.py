"""Retrieval quality on the LoCoMo dev conversations, through the product's ingest path.

Not a speed test: it guards the recall figure the README quotes against regressions in ingest,
index text, fusion or the store. The real all-MiniLM-L6-v2 embedder is used; no LLM is called.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from memwise.embed.cache import CachedEmbedder
from memwise.embed.minilm import MiniLMEmbedder
from memwise.facts.retrieval_eval import embed_rate, evaluate_retrieval
from memwise.testing import FakeEmbedder


async def test_hybrid_recall_at_10_beats_baselines_and_target(shared_data: Path) -> None:
    result = await evaluate_retrieval(shared_data / "locomo" / "locomo10_dev.json", MiniLMEmbedder())
    assert result["questions"] == 760
    assert result["recall@10"] >= 0.80  # measured 0.817 (LOO 0.812); 0.802 before the length and spread steps
    # The length prior and the spread over sessions add to the rest of the recipe (measured 0.797 without).
    assert result["recall@10"] > result["ablations"]["full recipe less length and spread"]["recall@10"] + 0.01
    baselines = result["baselines"]
    assert result["recall@10"] > max(b["recall@10"] for b in baselines.values()) + 0.1
    # The session, time-cue, entity and time-window steps add to fusion + context + speaker (0.789).
    assert result["recall@10"] > result["ablations"]["fusion + context + speaker"]["recall@10"] + 0.005
    # Ingest speed is reported against the embedder alone on the same texts, in the same run.
    assert result["embed_only_texts_per_s"] > 0 and result["embedder_load_s"] >= 0
    assert result["ingest_to_embed_ratio"] == pytest.approx(
        result["ingest_turns_per_s"] / result["embed_only_texts_per_s"], rel=0.01
    )


async def test_embed_rate_times_the_embedder_not_its_cache(tmp_path: Path) -> None:
    inner = FakeEmbedder()
    cached = CachedEmbedder(inner, tmp_path / "cache.sqlite3")
    texts = [f"turn {i}" for i in range(20)]
    await cached.embed(texts)  # what ingest would have left in the cache
    assert await embed_rate(cached, texts) > 0
    assert inner.texts_embedded == 40  # embedded again, not answered from the cache
    cached.close()
