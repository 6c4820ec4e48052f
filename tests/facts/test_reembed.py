"""Switching embedder loses nothing: a store re-embedded for the new model opens with it and finds its memories."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memwise.embed.base import Vectors
from memwise.exceptions import ConfigError, EmbeddingError, StoreError
from memwise.facts.memory import Memory
from memwise.facts.reembed import ReembedReport, reembed_store
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder

OLD = "fake-ngram-384"
NEW = "fake-ngram-128"


class NewModel(FakeEmbedder):
    """The model switched to (another name and dimension), which can be made to fail on a given call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__(128)
        self.fail_on_call = fail_on_call

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self.fail_on_call is not None and self.calls + 1 == self.fail_on_call:
            self.calls += 1
            raise EmbeddingError("the embedding server went away")
        return await super().embed(texts)


def _spaces(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT space, COUNT(*) FROM vectors GROUP BY space").fetchall())


def _reembed(db: Path, embedder: FakeEmbedder, **kw: object) -> ReembedReport:
    with SQLiteStore(db) as store:
        return asyncio.run(reembed_store(store, embedder, **kw))  # type: ignore[arg-type]


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A store built with the old model: two users, one memory of alice's superseded (kept as history)."""
    db = tmp_path / "m.db"
    with Memory(store=SQLiteStore(db), embedder=FakeEmbedder()) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
        mem.add("I live in Porto.", user_id="alice")
        mem.add("My sister lives in Lisbon.", user_id="alice")
        mem.add("I play the cello on Sundays.", user_id="bob")
        mem.add("My favourite dish is bacalhau.", user_id="bob")
        porto = mem.search("Porto", user_id="alice", top_k=1)[0].record.id
    with SQLiteStore(db) as store:
        store.invalidate(porto)
    return db


def test_a_reembedded_store_opens_with_the_new_model_and_finds_by_meaning(old_db: Path) -> None:
    with SQLiteStore(old_db) as store, pytest.raises(StoreError, match="memwise reembed"):
        Memory(store=store, embedder=NewModel())
    report = _reembed(old_db, NewModel(), batch_size=2)
    assert (report.space, report.records, report.embedded, report.already_present) == (NEW, 5, 5, 0)
    assert report.spaces_before == {OLD: 5} and report.spaces_after == {OLD: 5, NEW: 5}
    assert _spaces(old_db) == {OLD: 5, NEW: 5}  # the old vectors are kept
    store = SQLiteStore(old_db)
    with Memory(store=store, embedder=NewModel()) as mem:
        assert store.space == NEW
        # "beagles" shares no indexed word with the memory: only the new vectors can find it.
        query = asyncio.run(NewModel().embed(["beagles"]))[0]
        dense = store.search_vector(query, 1, Filters(user_id="alice"))
        assert "beagle called Pepper" in dense[0].record.text
        assert "Porto" not in " ".join(h.record.text for h in mem.search("live Porto", user_id="alice"))
        history = mem.search("live Porto", user_id="alice", include_history=True)
        assert "I live in Porto." in history[0].record.text  # invalidated memories were re-embedded too
        assert "bacalhau" in mem.search("bacalhau dish", user_id="bob")[0].record.text


def test_a_rerun_embeds_nothing(old_db: Path) -> None:
    _reembed(old_db, NewModel())
    again = NewModel()
    report = _reembed(old_db, again)
    assert (report.records, report.embedded, report.already_present, again.calls) == (5, 0, 5, 0)


def test_an_interrupted_run_keeps_whole_batches_and_a_rerun_finishes(old_db: Path) -> None:
    with pytest.raises(EmbeddingError):
        _reembed(old_db, NewModel(fail_on_call=2), batch_size=2, drop_old=True)
    assert _spaces(old_db) == {OLD: 5, NEW: 2}  # the first batch whole, nothing of the second, nothing dropped
    seen: list[tuple[int, int]] = []
    report = _reembed(old_db, NewModel(), batch_size=2, on_progress=lambda done, total: seen.append((done, total)))
    assert (report.embedded, report.already_present) == (3, 2)
    assert seen == [(0, 3), (2, 3), (3, 3)]
    assert _spaces(old_db) == {OLD: 5, NEW: 5}


def test_drop_old_removes_the_old_space_once_every_record_has_its_new_vector(old_db: Path) -> None:
    report = _reembed(old_db, NewModel(), batch_size=2, drop_old=True)
    assert report.dropped == (OLD,) and report.spaces_after == {NEW: 5}
    assert _spaces(old_db) == {NEW: 5}
    with Memory(store=SQLiteStore(old_db), embedder=NewModel()) as mem:
        assert "bacalhau" in mem.search("bacalhau dish", user_id="bob")[0].record.text
    assert _reembed(old_db, NewModel(), drop_old=True).embedded == 0  # still a no-op after the drop


def test_a_legacy_store_is_reembedded_into_the_named_space(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    text = "user: I adopted a beagle called Pepper."
    with SQLiteStore(db) as legacy:  # written before spaces were named: the unnamed space
        legacy.add(
            [Record(text=text, id="r1", kind="turn", user_id="alice")], asyncio.run(FakeEmbedder().embed([text]))
        )
    report = _reembed(db, NewModel(), source_space="default", drop_old=True)
    assert (report.embedded, report.dropped) == (1, ("default",))
    assert _spaces(db) == {NEW: 1}
    store = SQLiteStore(db)
    with Memory(store=store, embedder=NewModel()) as mem:
        assert store.space == NEW
        assert [h.record.id for h in mem.search("beagles Pepper", user_id="alice")] == ["r1"]


def test_records_never_embedded_stay_text_only(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with SQLiteStore(db, space=OLD) as store:
        store.add([Record(text="embedded", id="a")], np.ones((1, 384), dtype=np.float32))
        store.add([Record(text="a receipt", id="b", kind="receipt")])
    assert _reembed(db, NewModel()).embedded == 1
    with SQLiteStore(db) as store:
        assert store.get_vector("b", space=NEW) is None


def test_the_new_space_cannot_be_the_source(old_db: Path) -> None:
    with pytest.raises(ConfigError, match="own space"):
        _reembed(old_db, NewModel(), source_space=NEW)
    assert _spaces(old_db) == {OLD: 5}
