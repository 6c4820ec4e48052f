"""The user-facing memory API: scoping through every method, versioned updates, answering."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from memwise.embed.base import Vectors
from memwise.exceptions import ConfigError, StoreError
from memwise.facts.memory import AsyncMemory, Memory
from memwise.llm.base import ChatRequest
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder, ScriptedLLM

ALICE = [
    {"role": "user", "content": "I adopted a beagle called Pepper last weekend."},
    {"role": "assistant", "content": "Congratulations on adopting Pepper!"},
]
BOB = [{"role": "user", "content": "My beagle Rex loves the beach."}]


def _memory(tmp_path: Path, llm: ScriptedLLM | None = None) -> AsyncMemory:
    return AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder(), llm=llm)


async def _two_users(mem: AsyncMemory) -> None:
    await mem.add(ALICE, user_id="alice", session_time=datetime(2023, 5, 8, 13, 56))
    await mem.add(BOB, user_id="bob", session_time=datetime(2023, 6, 1, 9, 0))


async def test_user_never_sees_another_users_memory_through_any_method(tmp_path: Path) -> None:
    mem = _memory(tmp_path)
    await _two_users(mem)
    alice_ids = {r.id for r in await mem.get_all(user_id="alice")}
    assert len(alice_ids) == 2
    for query in ("beagle", "Pepper adopted", "Rex beach", ""):
        hits = await mem.search(query, user_id="bob", top_k=50)
        assert all(h.record.user_id == "bob" for h in hits)
        assert not alice_ids & {h.record.id for h in hits}
    assert {r.user_id for r in await mem.get_all(user_id="bob", include_history=True)} == {"bob"}
    stolen = next(iter(alice_ids))
    for call in (
        mem.get(stolen, user_id="bob"),
        mem.update(stolen, "Pepper is mine now", user_id="bob"),
        mem.delete(stolen, user_id="bob"),
        mem.history(stolen, user_id="bob"),
    ):
        with pytest.raises(StoreError, match="no memory"):
            await call
    # Nothing bob tried changed alice's memory.
    assert {r.id for r in await mem.get_all(user_id="alice")} == alice_ids
    await mem.aclose()


async def test_update_keeps_history_and_search_returns_current(tmp_path: Path) -> None:
    mem = _memory(tmp_path)
    await _two_users(mem)
    first = next(r for r in await mem.get_all(user_id="alice") if "beagle" in r.text)
    second = await mem.update(first.id, "I adopted a beagle called Pepper; she is two years old.", user_id="alice")
    third = await mem.update(second.id, "Pepper the beagle turned three.", user_id="alice")
    chain = await mem.history(second.id, user_id="alice")
    assert [r.id for r in chain] == [first.id, second.id, third.id]
    assert chain[0].valid_to is not None and chain[-1].valid_to is None
    current = {r.id for r in await mem.get_all(user_id="alice")}
    assert third.id in current and first.id not in current and second.id not in current
    hits = await mem.search("Pepper beagle", user_id="alice", top_k=10)
    assert first.id not in {h.record.id for h in hits}
    with_history = await mem.search("Pepper beagle", user_id="alice", top_k=10, include_history=True)
    assert first.id in {h.record.id for h in with_history}
    with pytest.raises(StoreError, match="no longer current"):
        await mem.update(first.id, "rewrite of an old version", user_id="alice")
    await mem.aclose()


async def test_delete_hides_but_keeps_history(tmp_path: Path) -> None:
    mem = _memory(tmp_path)
    await _two_users(mem)
    target = (await mem.get_all(user_id="bob"))[0]
    await mem.delete(target.id, user_id="bob")
    assert await mem.get_all(user_id="bob") == []
    assert await mem.search("Rex", user_id="bob") == []
    assert [r.id for r in await mem.history(target.id, user_id="bob")] == [target.id]
    await mem.aclose()


async def test_search_time_range_is_a_hard_filter(tmp_path: Path) -> None:
    mem = _memory(tmp_path)
    await mem.add(["Pepper learned to sit."], user_id="alice", session_time=datetime(2023, 5, 8))
    await mem.add(["Pepper learned to roll over."], user_id="alice", session_time=datetime(2023, 6, 19))
    hits = await mem.search("Pepper learned", user_id="alice", since=datetime(2023, 6, 1))
    assert [h.record.text for h in hits] == ["user: Pepper learned to roll over."]
    await mem.aclose()


async def test_answer_puts_question_date_and_only_own_memories_in_the_prompt(tmp_path: Path) -> None:
    seen: list[ChatRequest] = []

    def reply(req: ChatRequest) -> str:
        seen.append(req)
        return "Pepper."

    mem = _memory(tmp_path, llm=ScriptedLLM(reply))
    await _two_users(mem)
    answer = await mem.answer("What is my dog called?", user_id="alice", question_date=datetime(2023, 7, 1))
    assert answer.text == "Pepper."
    prompt = seen[0].messages[-1].content
    assert "Today is 2023-07-01 (Saturday)." in prompt
    assert "2023-05-08 13:56 Monday" in prompt and "Pepper" in prompt
    assert "Rex" not in prompt
    assert all(h.record.user_id == "alice" for h in answer.memories)
    await mem.aclose()


def test_answer_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        with pytest.raises(ConfigError, match="needs a chat model"):
            mem.answer("anything?", user_id="alice")


def test_user_id_is_required(tmp_path: Path) -> None:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        with pytest.raises(ConfigError, match="user_id is required"):
            mem.search("x", user_id="")


def test_sync_twin_runs_many_calls_on_one_loop(tmp_path: Path) -> None:
    llm = ScriptedLLM(lambda req: "ok")
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder(), llm=llm) as mem:
        for i in range(3):
            mem.add([f"fact number {i}"], user_id="u")
        assert len(mem.get_all(user_id="u")) == 3
        assert mem.answer("which facts?", user_id="u").text == "ok"
        assert mem.search("fact number 2", user_id="u", top_k=1)[0].record.text == "user: fact number 2"


async def test_consolidate_through_the_api_keeps_history_and_scope(tmp_path: Path) -> None:
    import json

    def decide(req: ChatRequest) -> str:
        return json.dumps({"decisions": [{"candidate": 1, "action": "UPDATE", "reason": "newer"}]})

    mem = _memory(tmp_path, llm=ScriptedLLM(decide))
    await mem.add(["I live in Berlin."], user_id="alice", session_time=datetime(2023, 1, 1))
    await mem.add(["I live in Lisbon now."], user_id="alice", session_time=datetime(2023, 6, 1))
    await mem.add(["I live in Berlin."], user_id="bob", session_time=datetime(2023, 1, 1))
    report = await mem.consolidate(user_id="alice", threshold=0.3)
    assert report.decisions["UPDATE"] == 1
    current = [r.text for r in await mem.get_all(user_id="alice")]
    assert current == ["user: I live in Lisbon now."]
    newest = (await mem.get_all(user_id="alice"))[0]
    assert [r.text for r in await mem.history(newest.id, user_id="alice")] == [
        "user: I live in Berlin.",
        "user: I live in Lisbon now.",
    ]
    assert [r.text for r in await mem.get_all(user_id="bob")] == ["user: I live in Berlin."]
    await mem.aclose()


class _SlowEmbedder(FakeEmbedder):
    """Yields to the event loop while it embeds, as a real embedder (a thread, a server) does."""

    async def embed(self, texts: Sequence[str]) -> Vectors:
        await asyncio.sleep(0.02)
        return await super().embed(texts)


async def test_concurrent_edits_never_fork_a_memory_or_undo_a_delete(tmp_path: Path) -> None:
    mem = AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=_SlowEmbedder())
    first = (await mem.add("I live in Lisbon.", user_id="alice")).unit_ids[0]
    # A client retrying a slow update: before, both passed the check and the memory had two current versions.
    edits = await asyncio.gather(
        mem.update(first, "I live in Porto.", user_id="alice"),
        mem.update(first, "I live in Porto.", user_id="alice"),
        return_exceptions=True,
    )
    assert sorted(type(e).__name__ for e in edits) == ["Record", "StoreError"]
    assert [r.text for r in await mem.get_all(user_id="alice")] == ["I live in Porto."]
    # A delete that lands while an edit is embedding: before, the edit then wrote a new current version.
    tea = (await mem.add("I like tea.", user_id="bob")).unit_ids[0]
    await asyncio.gather(
        mem.update(tea, "I like coffee.", user_id="bob"), mem.delete(tea, user_id="bob"), return_exceptions=True
    )
    assert await mem.get_all(user_id="bob") == []
    # delete_all while an edit is embedding: the edit must not outlive it either.
    cake = (await mem.add("I like cake.", user_id="carol")).unit_ids[0]
    await asyncio.gather(
        mem.update(cake, "I like pie.", user_id="carol"), mem.delete_all(user_id="carol"), return_exceptions=True
    )
    assert await mem.get_all(user_id="carol") == []
    await mem.aclose()


def test_answer_checks_its_arguments_as_search_does(tmp_path: Path) -> None:
    llm = ScriptedLLM(lambda req: "ok")
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder(), llm=llm) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
        for top_k in (0, -1, True):  # before: answered from no memories at all, as if the user had none
            with pytest.raises(ConfigError, match="top_k"):
                mem.answer("What is my dog called?", user_id="alice", top_k=top_k)
        with pytest.raises(ConfigError, match="question"):  # before: AttributeError from deep inside
            mem.answer(None, user_id="alice")  # type: ignore[arg-type]
        assert llm.calls == 0


def test_closing_a_memory_twice_is_harmless(tmp_path: Path) -> None:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
        mem.close()  # and the with block closes it again: before, a RuntimeError about a closed loop
