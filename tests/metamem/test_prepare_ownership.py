"""One ownership rule: `memwise ingest`, `bench qa` and `metamem prepare` file a conversation under the same user."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.metamem.test_prepare import _write_longmemeval  # pyright: ignore[reportPrivateUsage]

from memwise.facts.ingest import ingest_many
from memwise.facts.memory import AsyncMemory
from memwise.facts.ownership import owner_of
from memwise.facts.readers import read_longmemeval
from memwise.metamem.prepare import prepare_from_conversations, prepare_questions
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder


async def test_questions_search_the_memory_ingest_filed_under_the_datasets_user(tmp_path: Path) -> None:
    # A conversation that names its user (as a JSONL group does) is ingested under that user by `memwise
    # ingest`; preparing its questions must search that user's memory, not one named after the conversation.
    convs = [
        replace(c, metadata={**c.metadata, "user_id": "alice"})
        for c in read_longmemeval(_write_longmemeval(tmp_path / "lme.json"))
    ][:1]
    memory = AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    try:
        await ingest_many(convs, store=memory.store, embedder=memory.embedder, user_id=owner_of)
        (question,) = await prepare_questions(convs, memory=memory, top_k=3)
        assert question.memories
        for memory_id in question.metadata["memory_ids"]:
            assert (await memory.get(memory_id, user_id="alice")).user_id == "alice"
    finally:
        await memory.aclose()


async def test_prepare_reuses_what_ingest_stored_instead_of_filing_a_second_copy(tmp_path: Path) -> None:
    convs = [
        replace(c, metadata={**c.metadata, "user_id": "alice"})
        for c in read_longmemeval(_write_longmemeval(tmp_path / "lme.json"))
    ]
    memory = AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    try:
        await ingest_many(convs, store=memory.store, embedder=memory.embedder, user_id=owner_of)
        before = memory.store.count()
        turns: list[int] = []
        prepared = await prepare_from_conversations(convs, memory=memory, top_k=3, on_ingested=turns.append)
        assert memory.store.count() == before  # nothing re-filed under the conversation ids
        assert len(prepared) == 3 and len(turns) == len(convs)
    finally:
        await memory.aclose()
