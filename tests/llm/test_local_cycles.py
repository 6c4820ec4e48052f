"""Opening and closing the embedded model over and over keeps the process flat: the weights load once.

Each `LocalLLM` used to load its own copy on first call and free it on `aclose()`; freeing did not give
the pages back, so an agent that opened a memory (whose policy model is a `LocalLLM`) per task grew by
several MB per cycle and paid a reload every time.
"""

from __future__ import annotations

import asyncio

from memwise.llm.base import ChatRequest
from memwise.llm.local import LocalLLM
from memwise.testing.resources import resident_bytes


def _rss_mb() -> float:
    return resident_bytes() / 2**20


async def _cycle() -> str:
    llm = LocalLLM(seed=0)
    try:
        return (await llm.complete(ChatRequest.of("Say hi", max_tokens=2, temperature=0.0))).text
    finally:
        await llm.aclose()


def test_build_generate_close_cycles_keep_rss_flat() -> None:
    first = asyncio.run(_cycle())  # warm-up: the one load of the process
    before = _rss_mb()
    replies = [asyncio.run(_cycle()) for _ in range(10)]
    grown = _rss_mb() - before
    assert grown < 15, f"RSS grew {grown:.1f} MB over 10 build/generate/close cycles"
    assert replies == [first] * 10  # the shared weights answer exactly as a fresh load did


async def test_a_closed_instance_lets_go_and_a_new_call_takes_the_weights_again() -> None:
    llm = LocalLLM(seed=0)
    await llm.complete(ChatRequest.of("Say hi", max_tokens=1))
    assert llm.loaded
    await llm.aclose()
    assert not llm.loaded
    assert (await llm.complete(ChatRequest.of("Say hi", max_tokens=1))).samples[0].usage.completion_tokens == 1
    await llm.aclose()
