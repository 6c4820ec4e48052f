"""The store contract, run against SQLiteStore and PostgresStore alike (the ``backend`` fixture)."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable

import numpy as np
import pytest

from memwise.exceptions import StoreError
from memwise.store.aio import AsyncStore
from memwise.store.base import Filters, Record, Store
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore

DIM = 8
Make = Callable[..., Store]


def vec(key: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def rec(rid: str, text: str | None = None, **kw: object) -> Record:
    return Record(text=text or f"memory {rid}", id=rid, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [Store, SQLiteStore, PostgresStore, AsyncStore])
def test_no_store_method_shadows_a_builtin(cls: type) -> None:
    """A method named ``list`` hides the builtin inside the class body, so ``-> list[Record]`` stops type-checking."""
    public = {name for name in vars(cls) if not name.startswith("_")}
    assert not public & set(dir(builtins)), f"{cls.__name__} shadows builtins"


def test_the_protocol_is_satisfied(any_store: Store) -> None:
    assert isinstance(any_store, Store)


def test_add_get_list_and_readd(any_store: Store) -> None:
    s = any_store
    records = [rec(f"r{i}", created_at=100.0 + i, user_id="u", metadata={"i": i}) for i in range(5)]
    assert s.add(records, np.stack([vec(r.id) for r in records])) == [r.id for r in records]
    assert s.get("r3") == records[3]
    assert s.get("nope") is None
    assert [r.id for r in s.get_many(["r4", "missing", "r1"])] == ["r4", "r1"]
    assert [r.id for r in s.list_records()] == [f"r{i}" for i in range(5)]
    assert [r.id for r in s.list_records(limit=2, offset=1)] == ["r1", "r2"]
    assert s.count(Filters(user_id="u")) == 5
    s.add(records[:2], np.stack([vec("r0"), vec("r1")]))  # a retried add: a no-op
    assert s.count() == 5
    stored = s.get_vector("r2")
    assert stored is not None and np.allclose(stored, vec("r2") / np.linalg.norm(vec("r2")), atol=1e-6)


def test_conflicting_readd_raises_and_writes_nothing(any_store: Store) -> None:
    s = any_store
    s.add([rec("a")])
    with pytest.raises(StoreError, match="different content"):
        s.add([rec("b"), rec("a", "another text")])
    assert s.get("b") is None and s.get("a").text == "memory a"  # type: ignore[union-attr]


def test_vector_dimension_is_fixed_by_the_first_add(any_store: Store) -> None:
    s = any_store
    s.add([rec("a")], vec("a")[None, :])
    with pytest.raises(StoreError, match="8-d"):
        s.add([rec("b")], vec("b", 5)[None, :])
    assert s.get("b") is None
    s.add([rec("c")], vec("c", 5)[None, :], space="other")  # another space has its own dimension
    assert s.search_vector(vec("c", 5), 1, space="other")[0].record.id == "c"
    with pytest.raises(StoreError):
        s.search_vector(vec("q", 3), 1)


def test_update_invalidate_delete_and_history(any_store: Store) -> None:
    s = any_store
    s.add([rec("a", "I adopted a beagle", user_id="u", index_text="pets beagle")], vec("a")[None, :])
    new = s.update("a", text="I adopted a cat", metadata={"k": 1})
    assert new.text == "I adopted a cat" and new.metadata == {"k": 1} and new.index_text is None
    assert s.get_vector("a") is None  # a stale vector would rank it by old words
    assert [h.record.id for h in s.search_text("cat")] == ["a"]
    assert s.search_text("beagle") == []
    s.update("a", vector=vec("a2"))
    assert s.search_vector(vec("a2"), 1)[0].record.id == "a"
    gone = s.invalidate("a", at=50.0)
    assert gone.valid_to == 50.0
    assert s.list_records() == [] and s.search_text("cat") == [] and s.search_vector(vec("a2"), 1) == []
    assert [r.id for r in s.list_records(Filters(include_invalid=True))] == ["a"]
    with pytest.raises(StoreError, match="no record"):
        s.update("zzz", text="x")
    with pytest.raises(StoreError, match="no record"):
        s.invalidate("zzz")
    assert s.delete("a") is True and s.delete("a") is False
    assert s.get("a") is None and s.list_records(Filters(include_invalid=True)) == []


def test_transaction_rolls_back_and_nests(any_store: Store) -> None:
    s = any_store
    with pytest.raises(RuntimeError), s.transaction():
        s.add([rec("x")], vec("x")[None, :])
        raise RuntimeError("boom")
    assert s.get("x") is None
    with s.transaction():
        s.add([rec("y")])
        with pytest.raises(StoreError), s.transaction():
            s.add([rec("z")])
            s.add([rec("y", "different")])  # fails: the inner block is undone, the outer goes on
        s.add([rec("w")])
    assert {r.id for r in s.list_records()} == {"y", "w"}


def test_scope_isolation_on_every_channel(any_store: Store) -> None:
    s = any_store
    mine = [rec(f"a{i}", f"beagle walk {i}", user_id="alice", metadata={"tag": "pets"}) for i in range(4)]
    theirs = [rec(f"b{i}", f"beagle walk {i}", user_id="bob", metadata={"tag": "pets"}) for i in range(4)]
    both = mine + theirs
    s.add(both, np.stack([vec(r.id) for r in both]))
    alice = Filters(user_id="alice", metadata={"tag": "pets"})
    for b in theirs:  # even the exact vector of bob's record finds only alice's
        assert all(h.record.user_id == "alice" for h in s.search_vector(vec(b.id), 10, alice))
    assert {h.record.id for h in s.search_text("beagle walk", 20, alice)} == {r.id for r in mine}
    assert {r.id for r in s.list_records(alice)} == {r.id for r in mine}
    fetched = s.get_many(r.id for r in theirs)
    assert [r for r in fetched if alice.matches(r, 0.0)] == []
    assert s.search_vector(vec("b1"), 10, Filters(user_id="carol")) == []


def test_metadata_filters_on_every_channel(any_store: Store) -> None:
    s = any_store
    metas = [
        {"category": "pets", "year": 2021, "tag": "a"},
        {"category": "pets", "year": 2024, "tag": "b"},
        {"category": "work", "year": 2022.5, "tag": "c"},
        {"category": "pets", "year": "2022", "flag": True},
        {"year": 1, "flag": 1},
        {},
    ]
    records = [rec(f"m{i}", f"note number {i}", metadata=m) for i, m in enumerate(metas)]
    s.add(records, np.stack([vec(r.id) for r in records]))
    cases = {
        '{"category": "pets"}': ({"category": "pets"}, {"m0", "m1", "m3"}),
        "range": ({"year": {"gte": 2020, "lt": 2024}}, {"m0", "m2"}),
        "in": ({"tag": {"in": ["a", "c", "z"]}}, {"m0", "m2"}),
        "ne keeps missing keys": ({"category": {"ne": "pets"}}, {"m2", "m4", "m5"}),
        "bool is not 1": ({"flag": True}, {"m3"}),
        "OR/NOT": ({"OR": [{"tag": "b"}, {"NOT": {"year": {"gt": 0}}}]}, {"m1", "m3", "m5"}),
        "string range": ({"year": {"gte": "2021"}}, {"m3"}),
    }
    for name, (spec, expected) in cases.items():
        f = Filters(metadata=spec)
        assert {r.id for r in s.list_records(f)} == expected, name
        assert s.count(f) == len(expected), name
        assert {h.record.id for h in s.search_vector(vec("q"), 10, f)} == expected, name
        assert {h.record.id for h in s.search_text("note number", 10, f)} == expected, name
        assert {r.id for r in records if f.matches(r, 0.0)} == expected, name


def test_text_search_is_safe_and_uses_index_text(any_store: Store) -> None:
    s = any_store
    s.add([rec("a", "Caroline went to the LGBTQ support group", index_text="7 May 2023 Caroline support group")])
    s.add([rec("b", "Melanie painted a sunrise")])
    assert [h.record.id for h in s.search_text("May support")] == ["a"]
    for nasty in ['"unbalanced', "NEAR(a b)", "a AND OR NOT", "col:val*", "'; DROP TABLE records; --", "!&|<->"]:
        s.search_text(nasty)  # never a syntax error
    assert s.search_text("the a of") == [] or all(h.score >= 0 for h in s.search_text("the a of"))
    hits = s.search_text("sunrise painted caroline", 5)
    assert {h.record.id for h in hits} == {"a", "b"} and hits[0].score >= hits[1].score


def test_search_vector_orders_by_cosine(any_store: Store) -> None:
    s = any_store
    records = [rec(f"v{i}") for i in range(40)]
    mat = np.stack([vec(r.id) for r in records])
    s.add(records, mat)
    q = vec("query")
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    want = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5]
    hits = s.search_vector(q, 5)
    assert [h.record.id for h in hits] == [f"v{i}" for i in want]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(float(unit[want[0]] @ (q / np.linalg.norm(q))), abs=1e-5)


def test_ids_without_vector_pages_what_another_space_holds(any_store: Store) -> None:
    s = any_store
    records = [rec(f"r{i}", user_id=f"u{i % 2}") for i in range(5)]
    s.add(records, np.stack([vec(r.id) for r in records]), space="old")
    s.add([rec("receipt")])  # never embedded: nothing to re-embed
    s.invalidate("r3")  # history counts too
    s.add([records[1]], vec("r1", 5)[None, :], space="new")  # a re-add gains the new space's vector
    assert s.ids_without_vector("new") == ["r0", "r2", "r3", "r4"]
    assert s.ids_without_vector("new", limit=2) == ["r0", "r2"]
    assert s.ids_without_vector("new", after="r2", limit=2) == ["r3", "r4"]
    assert s.ids_without_vector("new", source="old") == ["r0", "r2", "r3", "r4"]
    assert s.ids_without_vector("new", source="absent") == []
    assert s.ids_without_vector("old") == []


def test_drop_space_removes_only_that_space(any_store: Store) -> None:
    s = any_store
    records = [rec(f"r{i}") for i in range(3)]
    s.add(records, np.stack([vec(r.id) for r in records]), space="old")
    s.add(records, np.stack([vec(r.id, 5) for r in records]), space="new")
    assert s.search_vector(vec("r0"), 1, space="old")[0].record.id == "r0"  # the old space is cached, if at all
    assert s.drop_space("old") == 3
    assert s.vector_spaces() == {"new": 3}
    assert s.count() == 3 and s.get_vector("r0", space="old") is None
    assert s.search_vector(vec("r0"), 3, space="old") == []
    assert s.search_vector(vec("r0", 5), 1, space="new")[0].record.id == "r0"
    assert s.drop_space("old") == 0
    s.add([rec("x")], vec("x", 3)[None, :], space="old")  # a dropped space starts afresh, any dimension
    assert s.search_vector(vec("x", 3), 1, space="old")[0].record.id == "x"
