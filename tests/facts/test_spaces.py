"""A memory's vectors live in the space named after the model that made them, and are never compared with another's."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from memwise.exceptions import StoreError
from memwise.facts.memory import Memory
from memwise.facts.spaces import SPACE_ALIASES, choose_space
from memwise.store.base import Record
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder


class OtherModel(FakeEmbedder):
    """Another 384-d model: same dimension, different vectors (the dimension check cannot tell)."""

    def __init__(self) -> None:
        super().__init__(384)
        self.name = "other-384"


def _spaces(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT space, COUNT(*) FROM vectors GROUP BY space").fetchall())


def test_a_new_store_names_its_vectors_after_the_embedder(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(store=SQLiteStore(db), embedder=FakeEmbedder()) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
    assert _spaces(db) == {"fake-ngram-384": 1}


def test_another_model_of_the_same_dimension_is_refused_instead_of_mixed(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(store=SQLiteStore(db), embedder=FakeEmbedder()) as mem:
        mem.add("I adopted a beagle called Pepper.", user_id="alice")
    store = SQLiteStore(db)
    try:
        with pytest.raises(StoreError, match="embedded by fake-ngram-384, not by the configured embedder 'other-384'"):
            Memory(store=store, embedder=OtherModel())
    finally:
        store.close()
    assert _spaces(db) == {"fake-ngram-384": 1}  # nothing written by the refused opener


def test_vectors_from_before_named_spaces_are_still_searched(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    embedder = FakeEmbedder()
    text = "user: I adopted a beagle called Pepper."
    vector = np.asarray(asyncio.run(embedder.embed([text])))
    with SQLiteStore(db) as old:  # as every store was written before: the unnamed space
        old.add([Record(text=text, id="r1", kind="turn", user_id="alice")], vector)
    with Memory(store=SQLiteStore(db), embedder=embedder) as mem:
        hits = mem.search("beagle Pepper", user_id="alice", limit=3)
        mem.add("My sister lives in Lisbon.", user_id="alice")
    assert [h.record.id for h in hits] == ["r1"]
    assert _spaces(db) == {"default": 2}  # new vectors join the old ones, which stay usable


class MiniLMStandIn(FakeEmbedder):
    """Named as the real MiniLM: what matters to spaces is the name, not how the vectors are made."""

    def __init__(self) -> None:
        super().__init__(384)
        self.name = "all-MiniLM-L6-v2"


def test_minilm_takes_its_former_bfloat16_space_as_its_own(tmp_path: Path) -> None:
    """A store an earlier version filled under ``all-MiniLM-L6-v2-bf16`` keeps working, without re-embedding."""
    db = tmp_path / "m.db"
    embedder = MiniLMStandIn()
    text = "user: I adopted a beagle called Pepper."
    vector = np.asarray(asyncio.run(embedder.embed([text])))
    with SQLiteStore(db) as old:  # as an opt-in bfloat16 user's store was written
        old.add([Record(text=text, id="r1", kind="turn", user_id="alice")], vector, space="all-MiniLM-L6-v2-bf16")
    with Memory(store=SQLiteStore(db), embedder=embedder) as mem:  # not refused
        hits = mem.search("beagle Pepper", user_id="alice", limit=3)
        mem.add("My sister lives in Lisbon.", user_id="alice")
        lisbon = mem.search("sister Lisbon", user_id="alice", limit=1)
    assert [h.record.id for h in hits] == ["r1"]
    assert "Lisbon" in lisbon[0].record.text
    assert _spaces(db) == {"all-MiniLM-L6-v2-bf16": 2}  # new vectors join the old ones: one space, not two


def test_the_alias_is_only_the_same_model_s() -> None:
    held = {"all-MiniLM-L6-v2-bf16": 5}
    with pytest.raises(StoreError, match="embedded by all-MiniLM-L6-v2-bf16"):
        choose_space(held, "other-384")
    assert SPACE_ALIASES == {"all-MiniLM-L6-v2": ("all-MiniLM-L6-v2-bf16",)}


def test_between_the_model_s_own_space_and_its_alias_the_fuller_one_wins() -> None:
    """After a re-embed between the two names with the old vectors kept, later memories are only in the newer one."""
    own, alias = "all-MiniLM-L6-v2", "all-MiniLM-L6-v2-bf16"
    assert choose_space({own: 10, alias: 14}, own) == alias
    assert choose_space({own: 14, alias: 10}, own) == own
    assert choose_space({own: 10, alias: 10}, own) == own  # a tie keeps the embedder's own name
    assert choose_space({own: 0, alias: 3, "default": 7}, own) == alias
    assert choose_space({}, own) == own
