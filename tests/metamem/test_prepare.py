"""Preparing MetaMem questions from ingested conversations: scoping, dates, types, gold answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.ingest import ingest_many
from memwise.facts.memory import AsyncMemory
from memwise.facts.readers import read_locomo, read_longmemeval
from memwise.facts.types import Conversation, Question, Session, Turn
from memwise.metamem.data import MetaQuestion, load_questions, save_questions
from memwise.metamem.prepare import prepare_questions
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.question_types import LOCOMO_CATEGORIES
from memwise.testing import FakeEmbedder

TOP_K = 5


def _session(sid: str, date: str, lines: list[str], answer_at: int | None = None) -> dict[str, Any]:
    turns = []
    for i, text in enumerate(lines):
        turn: dict[str, Any] = {"role": "user" if i % 2 == 0 else "assistant", "content": text}
        if answer_at == i:
            turn["has_answer"] = True
        turns.append(turn)
    return {"id": sid, "date": date, "turns": turns}


def _longmemeval_record(
    qid: str, qtype: str, question: str, answer: str, date: str, sessions: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "question_id": qid,
        "question_type": qtype,
        "question": question,
        "answer": answer,
        "question_date": date,
        "haystack_dates": [s["date"] for s in sessions],
        "haystack_session_ids": [s["id"] for s in sessions],
        "haystack_sessions": [s["turns"] for s in sessions],
        "answer_session_ids": [sessions[0]["id"]],
    }


def _write_longmemeval(path: Path) -> Path:
    # Every haystack talks about dogs, so a search that leaked across users would find the others.
    records = [
        _longmemeval_record(
            "lme_1",
            "temporal-reasoning",
            "How many days before the vet visit did I adopt my dog?",
            "3 days",
            "2023/05/30 (Tue) 23:40",
            [
                _session("a1", "2023/05/20 (Sat) 10:00", ["I adopted a dog named Pepper today.", "Congrats!"], 0),
                _session("a2", "2023/05/23 (Tue) 09:00", ["Took Pepper the dog to the vet.", "Hope all is well."], 0),
                _session("a3", "2023/05/25 (Thu) 18:00", ["I cooked pasta for dinner.", "Sounds tasty."]),
            ],
        ),
        _longmemeval_record(
            "lme_2",
            "knowledge-update",
            "What is the name of my dog now?",
            "Biscuit",
            "2023/08/01 (Tue) 12:00",
            [
                _session("b1", "2023/06/01 (Thu) 10:00", ["My dog is called Rex.", "Nice name."], 0),
                _session("b2", "2023/07/01 (Sat) 10:00", ["We renamed the dog Biscuit.", "Cute!"], 0),
            ],
        ),
        _longmemeval_record(
            "lme_3_abs",
            "single-session-user",
            "What breed is my cat?",
            "You did not mention a cat; only a dog.",
            "2023/09/10 (Sun) 08:00",
            [_session("c1", "2023/09/01 (Fri) 10:00", ["My dog loves the beach.", "Dogs usually do."])],
        ),
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[AsyncMemory]:
    mem = AsyncMemory(store=SQLiteStore(tmp_path / "memory.db"), embedder=FakeEmbedder())
    yield mem
    await mem.aclose()


async def _ingest(memory: AsyncMemory, convs: list[Conversation]) -> None:
    await ingest_many(convs, store=memory.store, embedder=memory.embedder, user_id=lambda c: c.id)


async def _assert_scoped(memory: AsyncMemory, conv: Conversation, question: MetaQuestion) -> None:
    turn_ids = {t.id for t in conv.turns()}
    for memory_id, text in zip(question.metadata["memory_ids"], question.memories, strict=True):
        record = await memory.get(memory_id, user_id=conv.id)  # raises for another user's memory
        assert set(record.metadata["source_ids"]) <= turn_ids
        assert record.text in text


async def test_longmemeval_questions_get_scoped_memories_dates_and_types(tmp_path: Path, memory: AsyncMemory) -> None:
    convs = read_longmemeval(_write_longmemeval(tmp_path / "lme.json"))
    await _ingest(memory, convs)
    questions = await prepare_questions(convs, memory=memory, top_k=TOP_K)
    assert [q.question_id for q in questions] == ["lme_1", "lme_2", "lme_3_abs"]  # abstention suffix kept
    by_id = {c.id: c for c in convs}
    for q in questions:
        conv = by_id[q.question_id]
        assert 0 < len(q.memories) <= TOP_K
        await _assert_scoped(memory, conv, q)
        assert q.answer.strip() and q.metadata["question_date_source"] == "dataset"
    first = questions[0]
    assert first.question_type == "temporal-reasoning"
    assert first.question_date == "2023/05/30 (Tue) 23:40"
    assert first.question_datetime == datetime(2023, 5, 30, 23, 40)
    # Rendered "<timestamp> <weekday> <text>", oldest first; source ids kept beside, never in the text.
    assert first.memories[0] == "2023-05-20 10:00 Saturday user: I adopted a dog named Pepper today."
    assert first.metadata["source_ids"][0] == ["a1:0"]
    assert len(first.metadata["source_ids"]) == len(first.memories)
    stamps = [m[:16] for m in first.memories]
    assert stamps == sorted(stamps)
    assert questions[2].metadata["abstention"] is True


async def test_fragments_carry_no_evidence_ids_and_nothing_after_the_question_date(
    tmp_path: Path, memory: AsyncMemory
) -> None:
    """LongMemEval's evidence sessions are named ``answer_...``; a later session does not exist yet."""
    record = _longmemeval_record(
        "lme_9",
        "knowledge-update",
        "Where does my dog Pepper live?",
        "Oslo",
        "2023/06/01 (Thu) 12:00",
        [
            _session("answer_4be1b6b4_1", "2023/06/01 (Thu) 12:00", ["My dog Pepper lives in Oslo.", "Nice."], 0),
            _session("sharegpt_a1", "2023/05/01 (Mon) 09:00", ["My dog Pepper likes walks.", "Good."]),
            _session("sharegpt_b2", "2023/06/20 (Tue) 09:00", ["My dog Pepper now lives in Bergen.", "Ok."]),
        ],
    )
    path = tmp_path / "lme9.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    convs = read_longmemeval(path)
    await _ingest(memory, convs)
    (q,) = await prepare_questions(convs, memory=memory, top_k=20)
    shown = " ".join(q.memories)
    assert "answer_" not in shown and "sharegpt" not in shown and "4be1b6b4" not in shown
    assert "Oslo" in shown and "walks" in shown  # at the question time and before it: kept
    assert "Bergen" not in shown and len(q.memories) == 4
    assert ["answer_4be1b6b4_1:0"] in q.metadata["source_ids"]


async def test_prepared_questions_survive_a_save_and_load(tmp_path: Path, memory: AsyncMemory) -> None:
    convs = read_longmemeval(_write_longmemeval(tmp_path / "lme.json"))
    await _ingest(memory, convs)
    questions = await prepare_questions(convs, memory=memory, top_k=TOP_K)
    assert load_questions(save_questions(tmp_path / "questions.jsonl", questions)) == questions


async def test_locomo_conversation_uses_last_session_date_and_category_names(
    shared_data: Path, memory: AsyncMemory
) -> None:
    conv = next(c for c in read_locomo(shared_data / "locomo" / "locomo10_dev.json") if c.id == "conv-30")
    decoy = _decoy_like(conv)
    await _ingest(memory, [conv, decoy])
    questions = await prepare_questions([conv], memory=memory, top_k=TOP_K)
    expected = [q for q in conv.questions if not q.metadata.get("adversarial")]
    assert [q.question_id for q in questions] == [q.id for q in expected]
    last = conv.sessions[-1]
    for q in questions:
        assert 0 < len(q.memories) <= TOP_K
        await _assert_scoped(memory, conv, q)
        assert q.answer.strip()
        assert q.question_date == last.raw_timestamp and q.question_datetime == last.timestamp
        assert q.metadata["question_date_source"] == "last_session"
    assert {q.question_type for q in questions} <= set(LOCOMO_CATEGORIES.values()) - {"adversarial"}
    assert {q.question_type for q in questions if q.metadata["category"] == "2"} == {"temporal"}

    with_adversarial = await prepare_questions([conv], memory=memory, top_k=1, include_adversarial=True)
    assert len(with_adversarial) == len(conv.questions)
    adversarial = [q for q in with_adversarial if q.question_type == "adversarial"]
    assert adversarial and all(q.answer.strip() and q.metadata["abstention"] for q in adversarial)


def _decoy_like(conv: Conversation) -> Conversation:
    """Another user's conversation with the same speakers and words, so a scoping leak would show."""
    source = conv.sessions[0]
    turns = tuple(
        Turn(f"X{t.index}", t.speaker, t.text, "decoy-session", t.index, t.timestamp) for t in source.turns[:10]
    )
    return Conversation("decoy", (Session("decoy-session", turns, source.timestamp),), speakers=conv.speakers)


def _conversation(cid: str, questions: tuple[Question, ...]) -> Conversation:
    when = datetime(2023, 1, 2, 9, 0)
    turn = Turn(f"{cid}:0", "user", "I like tea.", "s", 0, when)
    return Conversation(cid, (Session("s", (turn,), when),), questions)


async def test_conversation_never_ingested_is_an_error(memory: AsyncMemory) -> None:
    conv = _conversation("c1", (Question("c1:q0", "What do I like?", "tea", "4"),))
    with pytest.raises(ConfigError, match="ingest it first"):
        await prepare_questions([conv], memory=memory)


@pytest.mark.parametrize(
    ("questions", "message"),
    [
        ((Question("c1:q0", "What?", "", "4"),), "empty gold answer"),
        ((Question("c1:q0", "What?", "tea", "teatime"),), "unknown question type"),
        ((Question("c1:q0", "What?", "tea", "4"), Question("c1:q0", "Again?", "tea", "4")), "also appears"),
    ],
)
async def test_bad_questions_are_dataset_errors(
    memory: AsyncMemory, questions: tuple[Question, ...], message: str
) -> None:
    conv = _conversation("c1", questions)
    await _ingest(memory, [conv])
    with pytest.raises(DatasetError, match=message):
        await prepare_questions([conv], memory=memory)


async def test_no_session_date_means_no_question_date(memory: AsyncMemory) -> None:
    turn = Turn("t0", "user", "I like tea.", "s", 0)
    conv = Conversation("c2", (Session("s", (turn,)),), (Question("c2:q0", "What do I like?", "tea", "4"),))
    await _ingest(memory, [conv])
    (q,) = await prepare_questions([conv], memory=memory)
    assert q.question_date is None and q.metadata["question_date_source"] is None
    assert q.question_type == "single-hop"


async def test_bad_settings_are_refused(memory: AsyncMemory) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        await prepare_questions([], memory=memory, top_k=0)


async def test_memory_construction_is_concurrent_with_one_embedder(tmp_path: Path) -> None:
    """The reference built memory one question at a time and reloaded models per question."""
    import asyncio
    import time

    class SlowEmbedder(FakeEmbedder):
        loads = 0

        def __init__(self) -> None:
            super().__init__()
            SlowEmbedder.loads += 1

        async def embed(self, texts):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.1)
            return await super().embed(texts)

    memory = AsyncMemory(store=SQLiteStore(tmp_path / "m.db"), embedder=SlowEmbedder())
    questions = tuple(Question(f"c1:q{i}", f"What do I like, {i}?", "tea", "4") for i in range(20))
    conv = _conversation("c1", questions)
    await _ingest(memory, [conv])
    start = time.perf_counter()
    prepared = await prepare_questions([conv], memory=memory)
    took = time.perf_counter() - start
    assert len(prepared) == 20
    assert took < 20 * 0.1 / 2  # one at a time would take 2 s
    assert SlowEmbedder.loads == 1
    await memory.aclose()
