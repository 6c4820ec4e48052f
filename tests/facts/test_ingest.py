"""Ingest: all of a conversation or none of it, exactly once, with every extraction failure counted."""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
import re
import signal
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memwise.exceptions import ConfigError, EmbeddingError, LLMError, StoreError
from memwise.facts import ingest
from memwise.facts.ingest import RECEIPT, IngestSummary, ingest_conversation, ingest_many, receipt_id
from memwise.facts.types import Conversation
from memwise.facts.units import render_for_prompt
from memwise.llm.base import ChatRequest
from memwise.runs.ledger import Ledger
from memwise.store.base import Filters
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder, ScriptedLLM

SPAWN = multiprocessing.get_context("spawn")
EVERYTHING = Filters(include_invalid=True)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("_ingest_workers")


@pytest.fixture
def conv(workers: types.ModuleType) -> Conversation:
    return workers.conversation()


_PROMPT_TURN = re.compile(r'^<turn id="(T\d+)">(\w+): session (\d+) remark (\d+) ', flags=re.MULTILINE)


def prompt_turns(request: ChatRequest) -> list[tuple[str, str, str]]:
    """(dataset turn id, speaker, prompt label) of each turn in an extraction prompt.

    The prompt shows only per-prompt labels (T1..), never dataset ids, so the id is read back from the
    turn's text (``session s remark i`` is turn ``D{s+1}:{i+1}`` of ``_ingest_workers.conversation``).
    """
    found = _PROMPT_TURN.findall(request.messages[1].content)
    return [(f"D{int(s) + 1}:{int(i) + 1}", who, label) for label, who, s, i in found]


def segment_ids(request: ChatRequest) -> list[tuple[str, str]]:
    """(dataset turn id, speaker) of each turn in an extraction prompt."""
    return [(tid, who) for tid, who, _ in prompt_turns(request)]


def one_fact_per_turn(request: ChatRequest) -> str:
    facts = [
        {"text": f"{who} made remark {tid}.", "speaker": who, "source_ids": [label]}
        for tid, who, label in prompt_turns(request)
    ]
    return json.dumps({"facts": facts})


# -- mode turns ---------------------------------------------------------------------------------


async def test_turns_mode_stores_every_turn_with_speaker_time_and_source(
    store: SQLiteStore, conv: Conversation
) -> None:
    report = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u1")
    assert (report.turns, report.units_written, report.units_present, report.skipped) == (12, 12, 0, False)
    units = store.list_records(Filters(user_id="u1"))
    assert len(units) == 12 and {u.kind for u in units} == {"turn"}
    first = units[0]
    assert first.text == "Caroline: session 0 remark 0 about topic 0 of conv-1"
    assert first.index_text == "[8 May 2023] Caroline: session 0 remark 0 about topic 0 of conv-1"
    assert first.metadata["source_ids"] == ["D1:1"] and first.metadata["speaker"] == "Caroline"
    assert first.metadata["context_after"] == [units[1].id, units[2].id]  # links for the retriever
    assert render_for_prompt(first) == "2023-05-08 13:56 Monday Caroline: session 0 remark 0 about topic 0 of conv-1"
    assert store.get_vector(first.id) is not None
    # The receipt is bookkeeping: no user, no vector, only found by its own kind.
    receipts = [store.get(receipt_id(s, conv.id, "turns", user_id="u1")) for s in conv.sessions]
    assert all(r is not None and r.user_id is None and r.kind == RECEIPT for r in receipts)
    assert sorted(i for r in receipts if r for i in r.metadata["unit_ids"]) == sorted(u.id for u in units)


async def test_reingest_is_a_no_op(store: SQLiteStore, conv: Conversation) -> None:
    embedder = FakeEmbedder()
    await ingest_conversation(conv, store=store, embedder=embedder, user_id="u1")
    calls = embedder.calls
    again = await ingest_conversation(conv, store=store, embedder=embedder, user_id="u1")
    assert again.skipped and again.units_present == 12 and again.units_written == 0
    assert embedder.calls == calls  # nothing recomputed
    assert store.count(EVERYTHING) == 14  # 12 units + 1 receipt per session


async def test_users_are_kept_apart(store: SQLiteStore, conv: Conversation) -> None:
    await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u1")
    second = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u2")
    assert second.units_written == 12 and not second.skipped
    ids1 = {u.id for u in store.list_records(Filters(user_id="u1"))}
    ids2 = {u.id for u in store.list_records(Filters(user_id="u2"))}
    assert len(ids1) == len(ids2) == 12 and not ids1 & ids2


async def test_bad_arguments_are_config_errors(store: SQLiteStore, conv: Conversation) -> None:
    with pytest.raises(ConfigError, match="llm="):
        await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u", mode="facts")
    assert store.count(EVERYTHING) == 0


# -- atomicity ----------------------------------------------------------------------------------


class TopicEmbedder(FakeEmbedder):
    """Turns about "topic N" all get the same vector, one per N, so segments are known in advance.

    Remarks 0-2 of a session form one segment and remarks 3-5 another. Other texts hash as usual.
    """

    async def embed(self, texts: Sequence[str]) -> Any:
        vectors = np.array(await super().embed(texts))
        for row, text in enumerate(texts):
            found = re.search(r"topic (\d+)", text)
            if found:
                vectors[row] = 0.0
                vectors[row, int(found.group(1))] = 1.0
        return vectors


class FailingStore(SQLiteStore):
    """Raises on the n-th ``add`` (after the earlier ones wrote inside the transaction)."""

    def __init__(self, path: Path, fail_on: int) -> None:
        super().__init__(path)
        self.fail_on = fail_on
        self.adds = 0

    def add(self, records: Any, vectors: Any = None, *, space: str | None = None) -> list[str]:
        self.adds += 1
        if self.adds == self.fail_on:
            raise StoreError("injected failure mid-write")
        return super().add(records, vectors, space=space)


class FailingEmbedder(FakeEmbedder):
    async def embed(self, texts: Any) -> Any:
        if any("session 1" in t for t in texts):
            raise EmbeddingError("injected embedding failure")
        return await super().embed(texts)


@pytest.mark.parametrize("fail_on", [2, 4])  # after one chunk of units; at the receipt, after all units
async def test_failure_mid_write_leaves_nothing_then_reingest_writes_once(
    tmp_path: Path, conv: Conversation, monkeypatch: pytest.MonkeyPatch, fail_on: int
) -> None:
    monkeypatch.setattr(ingest, "_WRITE_BATCH", 5)  # 12 units: adds of 5, 5, 2, then the receipt
    failing = FailingStore(tmp_path / "mem.db", fail_on=fail_on)
    with pytest.raises(StoreError, match="injected"):
        await ingest_conversation(conv, store=failing, embedder=FakeEmbedder(), user_id="u1")
    assert failing.adds == fail_on
    assert failing.count(EVERYTHING) == 0
    failing.close()

    store = SQLiteStore(tmp_path / "mem.db")
    report = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u1")
    assert report.units_written == 12 and report.units_present == 0
    units = store.list_records(Filters(user_id="u1"))
    assert len(units) == len({u.id for u in units}) == 12
    store.close()


async def test_embedding_failure_leaves_nothing(store: SQLiteStore, conv: Conversation) -> None:
    with pytest.raises(EmbeddingError):
        await ingest_conversation(conv, store=store, embedder=FailingEmbedder(), user_id="u1")
    assert store.count(EVERYTHING) == 0


def test_sigkill_during_the_transaction_leaves_nothing(tmp_path: Path, workers: types.ModuleType) -> None:
    path = tmp_path / "killed.db"
    SQLiteStore(path).close()
    proc = SPAWN.Process(target=workers.ingest_then_die, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    store = SQLiteStore(path)
    assert store.count(EVERYTHING) == 0
    report = asyncio.run(
        ingest_conversation(workers.conversation(), store=store, embedder=FakeEmbedder(), user_id="u1")
    )
    assert report.units_written == 12
    assert store.count(Filters(user_id="u1")) == 12 and store.count(EVERYTHING) == 14
    store.close()


# -- mode facts ---------------------------------------------------------------------------------


async def test_facts_mode_stores_sourced_dated_facts(store: SQLiteStore, conv: Conversation) -> None:
    llm = ScriptedLLM(one_fact_per_turn, latency_s=0.01)
    report = await ingest_conversation(conv, store=store, embedder=TopicEmbedder(), user_id="u1", mode="facts", llm=llm)
    # all segments at once; the backend bounds calls
    assert report.segments == 4 and llm.calls == 4 and llm.peak_in_flight == 4
    assert sorted(tid for tid, _ in segment_ids(llm.requests[0])) in (
        ["D1:1", "D1:2", "D1:3"],
        ["D1:4", "D1:5", "D1:6"],
    )
    assert (report.facts, report.units_written, report.fallbacks, report.extraction_failures) == (12, 12, 0, 0)
    facts = store.list_records(Filters(user_id="u1", kind="fact"))
    assert len(facts) == 12
    by_source = {f.metadata["source_ids"][0]: f for f in facts}
    assert render_for_prompt(by_source["D2:3"]) == "2023-05-15 13:56 Monday Caroline made remark D2:3."
    assert by_source["D2:4"].metadata["speaker"] == "Melanie"
    assert all(store.get_vector(f.id) is not None for f in facts)
    # Every fact cites only turns of the segment it was extracted from.
    for request in llm.requests:
        segment = {tid for tid, _ in segment_ids(request)}
        cited = [f for f in facts if set(f.metadata["source_ids"]) & segment]
        assert all(set(f.metadata["source_ids"]) <= segment for f in cited)


async def test_malformed_extraction_is_repaired_or_falls_back_counted(
    store: SQLiteStore, workers: types.ModuleType, tmp_path: Path
) -> None:
    def handler(request: ChatRequest) -> str:
        first = segment_ids(request)[0][0]
        repairing = len(request.messages) > 2
        if first == "D1:1":  # garbage, then fixed on repair
            return one_fact_per_turn(request) if repairing else "Sure! Facts: Caroline, Melanie"
        if first == "D2:1":  # garbage twice: the segment falls back to its turns
            return "{'facts': [{'text': "
        if first == "D2:4":
            raise LLMError("backend down", backend="scripted")
        if first == "D3:1":  # parses, but nothing usable in it
            return '{"facts": [{"text": "T1", "speaker": "Melanie", "source_ids": ["T1"]}]}'
        return one_fact_per_turn(request)

    ledger = Ledger(tmp_path / "ledger.db")
    conv = workers.conversation(n_sessions=3)
    report = await ingest_conversation(
        conv, store=store, embedder=TopicEmbedder(), user_id="u1", mode="facts", llm=ScriptedLLM(handler), ledger=ledger
    )
    assert report.segments == 6
    assert (report.extraction_failures, report.fallbacks, report.rejected_facts) == (2, 3, 1)
    assert len(report.failures) == 3
    kinds = sorted(f["kind"] for f in ledger.failures("extract"))
    assert kinds == ["llm_error", "parse", "parse_repaired"]
    turns = store.list_records(Filters(user_id="u1", kind="turn"))
    fallen_back = ["D2:1", "D2:2", "D2:3", "D2:4", "D2:5", "D2:6", "D3:1", "D3:2", "D3:3"]
    assert sorted(t.metadata["source_ids"][0] for t in turns) == fallen_back
    facts = store.list_records(Filters(user_id="u1", kind="fact"))
    assert len(facts) == 9 and report.units_written == 18  # nothing said was dropped
    ledger.close()


async def test_facts_reingest_asks_no_model_even_if_it_would_answer_differently(
    store: SQLiteStore, conv: Conversation
) -> None:
    await ingest_conversation(
        conv, store=store, embedder=FakeEmbedder(), user_id="u1", mode="facts", llm=ScriptedLLM(one_fact_per_turn)
    )
    before = store.count(EVERYTHING)
    other = ScriptedLLM(lambda r: '{"facts": [{"text": "Something else entirely.", "speaker": "x", "source_ids": []}]}')
    again = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u1", mode="facts", llm=other)
    assert again.skipped and other.calls == 0 and store.count(EVERYTHING) == before


# -- many conversations -------------------------------------------------------------------------


async def test_ingest_many_streams_in_order_and_resumes(store: SQLiteStore, workers: types.ModuleType) -> None:
    convs = [workers.conversation(n_sessions=1, per_session=3, conv_id=f"c{i}") for i in range(5)]
    pulled: list[str] = []

    def stream() -> Iterator[Conversation]:
        for c in convs:
            pulled.append(c.id)
            yield c

    seen: list[str] = []
    reports = await ingest_many(
        stream(), store=store, embedder=FakeEmbedder(), user_id=lambda c: f"user-{c.id}", parallel=2,
        on_report=lambda r: seen.append(r.conversation_id),
    )  # fmt: skip
    assert [r.conversation_id for r in reports] == ["c0", "c1", "c2", "c3", "c4"]
    assert sorted(seen) == sorted(pulled) == ["c0", "c1", "c2", "c3", "c4"]
    assert store.count(Filters(user_id="user-c3")) == 3
    total = IngestSummary.of(reports)
    assert (total.conversations, total.turns, total.units_written, total.skipped) == (5, 15, 15, 0)

    again = await ingest_many(convs, store=store, embedder=FakeEmbedder(), user_id=lambda c: f"user-{c.id}")
    assert IngestSummary.of(again).skipped == 5 and IngestSummary.of(again).units_present == 15


async def test_ingest_many_raises_the_error_itself_and_keeps_finished_ones(
    tmp_path: Path, workers: types.ModuleType
) -> None:
    convs = [workers.conversation(n_sessions=1, per_session=3, conv_id=f"c{i}") for i in range(3)]
    failing = FailingStore(tmp_path / "mem.db", fail_on=3)  # c0 writes units + receipt; c1's first add fails
    with pytest.raises(StoreError, match="injected"):
        await ingest_many(convs, store=failing, embedder=FakeEmbedder(), user_id="u", parallel=1)
    assert failing.count(Filters(user_id="u")) == 3  # c0 only, whole
    failing.close()
    store = SQLiteStore(tmp_path / "mem.db")
    reports = await ingest_many(convs, store=store, embedder=FakeEmbedder(), user_id="u", parallel=3)
    assert [r.skipped for r in reports] == [True, False, False]
    assert store.count(Filters(user_id="u")) == 9
    store.close()


async def test_ingest_many_stores_what_one_by_one_stores(tmp_path: Path, workers: types.ModuleType) -> None:
    """Conversations ingested together, several at a time, give the very units, links and vectors of one at a time."""
    convs = [workers.conversation(n_sessions=2, per_session=4 + i, conv_id=f"c{i}") for i in range(4)]
    together, alone = SQLiteStore(tmp_path / "together.db"), SQLiteStore(tmp_path / "alone.db")
    reports = await ingest_many(convs, store=together, embedder=FakeEmbedder(), user_id=lambda c: f"u-{c.id}")
    for conv in convs:
        await ingest_conversation(conv, store=alone, embedder=FakeEmbedder(), user_id=f"u-{conv.id}")
    assert IngestSummary.of(reports).units_written == sum(len(c.turns()) for c in convs)

    def contents(store: SQLiteStore) -> dict[str, tuple[str, dict[str, Any], list[float] | None]]:
        out = {}
        for record in store.list_records(EVERYTHING):
            vector = store.get_vector(record.id)
            out[record.id] = (record.text, record.metadata, None if vector is None else vector.tolist())
        return out

    assert contents(together) == contents(alone)
    together.close()
    alone.close()


async def test_a_turn_deleted_by_its_user_is_stored_again_under_a_new_id(
    store: SQLiteStore, workers: types.ModuleType
) -> None:
    conv = workers.conversation(n_sessions=1, per_session=3, conv_id="c")
    report = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u")
    gone = store.get(report.unit_ids[1])
    assert gone is not None
    with store.transaction():  # what Memory.delete does
        store.update(gone.id, metadata={**gone.metadata, ingest.DELETED: True})
        store.invalidate(gone.id, at=time.time())
    again = await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u")
    assert (again.units_written, again.units_present) == (1, 2)
    assert gone.id not in again.unit_ids and report.unit_ids[0] in again.unit_ids
    current = [r.text for r in store.list_records(Filters(user_id="u"))]
    assert len(current) == 3 and gone.text in current  # said again, so current again
    assert store.get(gone.id) is not None  # the deleted version stays in history
    assert (await ingest_conversation(conv, store=store, embedder=FakeEmbedder(), user_id="u")).skipped


# -- the real embedded model --------------------------------------------------------------------


async def test_facts_mode_with_the_embedded_model(
    store: SQLiteStore, workers: types.ModuleType, tmp_path: Path
) -> None:
    from memwise.llm.local import LocalLLM

    conv = workers.conversation(n_sessions=1, per_session=4, conv_id="real")
    # One thread: on a busy machine llama.cpp's threads wait on each other and run several times slower.
    llm = LocalLLM(seed=0, n_threads=1)
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        report = await ingest_conversation(
            conv, store=store, embedder=FakeEmbedder(), user_id="u1", mode="facts", llm=llm, ledger=ledger
        )
    finally:
        await llm.aclose()
    # A 135M model may well answer nonsense: the pipeline must still finish and account for everything.
    assert report.segments >= 1 and report.units_written >= 1
    assert report.fallbacks >= report.extraction_failures
    assert report.extraction_failures == sum(1 for f in ledger.failures("extract") if f["kind"] != "parse_repaired")
    turn_ids = {t.id for t in conv.turns()}
    units = store.list_records(Filters(user_id="u1"))
    assert units and all(set(u.metadata["source_ids"]) <= turn_ids for u in units)
    covered = {sid for u in units if u.kind == "turn" for sid in u.metadata["source_ids"]}
    assert report.fallbacks > 0 or not covered  # raw turns appear only as counted fallbacks
    ledger.close()


class SizeRecordingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def embed(self, texts: Any) -> Any:
        self.sizes.append(len(texts))
        return await super().embed(texts)


async def test_a_long_conversation_is_embedded_in_one_call(store: SQLiteStore, workers: types.ModuleType) -> None:
    """The embedder sees the whole conversation at once.

    So its own batching (MiniLM's length-sorted passes, the remote embedder's concurrent requests)
    covers all of it, instead of fixed slices one after another.
    """
    conv = workers.conversation(n_sessions=3, per_session=120)
    embedder = SizeRecordingEmbedder()
    report = await ingest_conversation(conv, store=store, embedder=embedder, user_id="u1")
    assert embedder.sizes == [360] and report.units_written == 360
