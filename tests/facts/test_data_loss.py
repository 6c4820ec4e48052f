"""Nothing a user adds is silently dropped: new content under a known id, look-alike scope ids, one string."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from memwise.embed.cache import CachedEmbedder
from memwise.exceptions import ConfigError
from memwise.facts.ingest import ingest_conversation, receipt_id
from memwise.facts.memory import AsyncMemory, Memory
from memwise.facts.types import Conversation, Session, Turn
from memwise.facts.units import fact_record, turn_record, unit_id
from memwise.llm.base import ChatRequest
from memwise.store.base import Filters
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder, ScriptedLLM

EVERYTHING = Filters(include_invalid=True)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        yield mem


def session(n: int, texts: list[str], *, turn_prefix: str | None = None) -> Session:
    when = datetime(2023, 5, 1 + n)
    sid = f"s{n}"
    prefix = turn_prefix or f"D{n}"
    turns = tuple(
        Turn(id=f"{prefix}:{i}", speaker="Ann", text=text, session_id=sid, index=i, timestamp=when)
        for i, text in enumerate(texts)
    )
    return Session(id=sid, turns=turns, timestamp=when)


SAID = ["I moved to Oslo.", "I work at a bakery.", "I got a cat.", "It is grey."]


def shown(request: ChatRequest) -> list[str]:
    """Which of :data:`SAID` an extraction prompt shows (read by content, whatever the prompt's layout)."""
    return [text for text in SAID if text in request.messages[-1].content]


def fact_per_turn(request: ChatRequest) -> str:
    facts = [{"text": f"Ann said: {text}", "speaker": "Ann", "source_ids": []} for text in shown(request)]
    return json.dumps({"facts": facts})


def texts(mem: Memory, user_id: str) -> list[str]:
    return sorted(r.text for r in mem.get_all(user_id=user_id))


# -- 1. new content under a known conversation or session id is stored ---------------------------


def test_new_messages_under_a_known_conversation_id_are_stored(memory: Memory) -> None:
    first = memory.add(["I adopted a beagle."], user_id="alice", conversation_id="chat-42")
    second = memory.add(["Her name is Pepper."], user_id="alice", conversation_id="chat-42")
    assert (first.units_written, second.units_written, second.skipped) == (1, 1, False)
    assert texts(memory, "alice") == ["user: Her name is Pepper.", "user: I adopted a beagle."]


def test_the_same_messages_again_are_a_no_op(memory: Memory) -> None:
    for conversation_id in ("chat-42", None):
        memory.add(["I adopted a beagle."], user_id="bob", conversation_id=conversation_id)
        again = memory.add(["I adopted a beagle."], user_id="bob", conversation_id=conversation_id)
        assert again.skipped and again.units_written == 0
    assert texts(memory, "bob") == ["user: I adopted a beagle."] * 2  # once per conversation


def test_a_session_id_reused_with_other_words_keeps_both(memory: Memory) -> None:
    memory.add(["I like tea."], user_id="alice", session_id="daily", conversation_id="c")
    report = memory.add(["I like coffee."], user_id="alice", session_id="daily", conversation_id="c")
    assert report.units_written == 1 and not report.skipped
    assert texts(memory, "alice") == ["user: I like coffee.", "user: I like tea."]


def test_a_session_resent_with_more_messages_stores_only_the_new_ones(memory: Memory) -> None:
    memory.add(["I like tea."], user_id="alice", session_id="daily")
    report = memory.add(["I like tea.", "And scones."], user_id="alice", session_id="daily")
    assert (report.units_written, report.units_present) == (1, 1)
    assert texts(memory, "alice") == ["user: And scones.", "user: I like tea."]


async def test_a_new_session_in_a_known_conversation_asks_only_about_the_new_one(store: SQLiteStore) -> None:
    s1, s2 = session(1, SAID[:2]), session(2, SAID[2:])
    llm = ScriptedLLM(fact_per_turn)
    await ingest_conversation(
        Conversation("conv", (s1,)), store=store, embedder=FakeEmbedder(), user_id="u", mode="facts", llm=llm
    )
    asked_before = llm.calls
    report = await ingest_conversation(
        Conversation("conv", (s1, s2)), store=store, embedder=FakeEmbedder(), user_id="u", mode="facts", llm=llm
    )
    assert (report.skipped, report.sessions_present, report.units_written) == (False, 1, 2)
    assert llm.calls > asked_before
    assert all(shown(request) and set(shown(request)) <= set(SAID[2:]) for request in llm.requests[asked_before:])
    facts = sorted(f.text for f in store.list_records(Filters(user_id="u", kind="fact")))
    assert facts == sorted(f"Ann said: {text}" for text in SAID)

    asked_before = llm.calls
    again = await ingest_conversation(
        Conversation("conv", (s1, s2)), store=store, embedder=FakeEmbedder(), user_id="u", mode="facts", llm=llm
    )
    assert again.skipped and again.units_present == 4 and llm.calls == asked_before


async def test_a_turn_id_repeated_with_other_words_in_one_conversation_is_kept(store: SQLiteStore) -> None:
    # Both sessions number their turns "D:0", "D:1": a dataset (or a caller) reusing ids.
    first = session(1, ["first a", "first b"], turn_prefix="D")
    conv = Conversation("conv", (first, session(2, ["second a", "second b"], turn_prefix="D")))
    report = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u")
    assert report.units_written == 4
    assert sorted(u.text for u in store.list_records(Filters(user_id="u"))) == [
        "Ann: first a", "Ann: first b", "Ann: second a", "Ann: second b",
    ]  # fmt: skip


async def test_a_concurrent_identical_ingest_writes_once(store: SQLiteStore) -> None:
    conv = Conversation("conv", (session(1, SAID[:2]),))
    replies = iter(range(100))

    async def different_every_time(request: ChatRequest) -> str:
        await asyncio.sleep(0.01)  # both ingests are extracting before either writes
        return json.dumps({"facts": [{"text": f"Ann said thing {next(replies)}.", "speaker": "Ann", "source_ids": []}]})

    llm = ScriptedLLM(different_every_time)
    reports = await asyncio.gather(
        *(
            ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u", mode="facts", llm=llm)
            for _ in range(2)
        )
    )
    assert sorted(r.skipped for r in reports) == [False, True]
    written = next(r for r in reports if not r.skipped)
    assert store.count(Filters(user_id="u")) == written.units_written == written.facts


# -- 2. scope ids never collide ------------------------------------------------------------------


def test_ids_do_not_collide_across_a_separator_inside_a_part() -> None:
    turn = Turn(id="t0", speaker="Ann", text="hello", session_id="s", index=0)
    alice = turn_record(turn, conversation_id="\x1fC", user_id="alice")
    other = turn_record(turn, conversation_id="C", user_id="alice\x1f")
    assert alice.id != other.id
    assert unit_id("alice", None, "C") != unit_id("alice", "", "C")
    sess = Session(id="s", turns=(turn,))
    assert receipt_id(sess, "\x1fC", "turns", user_id="alice") != receipt_id(sess, "C", "turns", user_id="alice\x1f")
    both = {"speaker": "Ann", "timestamp": None, "conversation_id": "c", "session_id": "s", "user_id": "u"}
    one_id_with_a_comma = fact_record("Ann likes tea.", source_ids=["a,b"], **both)  # type: ignore[arg-type]
    two_ids = fact_record("Ann likes tea.", source_ids=["a", "b"], **both)  # type: ignore[arg-type]
    assert one_id_with_a_comma.id != two_ids.id


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"user_id": "alice", "conversation_id": "\x1fC"}, "conversation_id"),
        ({"user_id": "alice\x1f", "conversation_id": "C"}, "user_id"),
        ({"user_id": "alice", "agent_id": ""}, "agent_id"),
        ({"user_id": "alice", "run_id": "r\n1"}, "run_id"),
        ({"user_id": "alice", "session_id": ""}, "session_id"),
    ],
)
def test_ill_formed_scope_ids_are_refused_by_name(memory: Memory, kwargs: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        memory.add(["I adopted a beagle."], **kwargs)
    assert memory.inner.store.count(EVERYTHING) == 0


async def test_ingest_refuses_an_empty_agent_id_that_would_alias_none(store: SQLiteStore) -> None:
    conv = Conversation("conv", (session(1, ["hello"]),))
    await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u")
    with pytest.raises(ConfigError, match="agent_id"):
        await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u", agent_id="")


def test_an_embedder_name_with_a_nul_is_refused_by_the_cache(tmp_path: Path) -> None:
    # The cache key is sha256(name + NUL + text): a NUL inside the name would let two (name, text) pairs meet.
    inner = FakeEmbedder()
    inner.name = "model\0x"
    with pytest.raises(ConfigError, match="NUL"):
        CachedEmbedder(inner, tmp_path / "cache.sqlite3")


# -- 3. one string is one message ----------------------------------------------------------------


def test_a_plain_string_is_one_message(memory: Memory) -> None:
    report = memory.add("I adopted a beagle", user_id="alice")
    assert report.units_written == 1
    assert texts(memory, "alice") == ["user: I adopted a beagle"]


def test_a_single_message_dict_is_one_message(memory: Memory) -> None:
    memory.add({"role": "assistant", "content": "Noted: you adopted a beagle."}, user_id="alice")
    assert texts(memory, "alice") == ["assistant: Noted: you adopted a beagle."]


async def test_messages_of_another_type_are_refused(tmp_path: Path) -> None:
    mem = AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    with pytest.raises(ConfigError, match="messages must be"):
        await mem.add(b"I adopted a beagle", user_id="alice")  # type: ignore[arg-type]
    await mem.aclose()
