"""InsightBank: floor counting, top-K, scope isolation, merging, eviction and usage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError, StoreError
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder
from memwise.umem.bank import BankEntry, InsightBank, render_for_executor

NEAR = "solve the quadratic equation for x in the algebra problem"
NEAR_2 = "solve the quadratic equation for y in the algebra problem"
FAR = "translate the french poem about autumn leaves into english"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "bank.db") as s:
        yield s


def make_bank(store: SQLiteStore, **kwargs: object) -> InsightBank:
    kwargs.setdefault("agent_id", "umem")
    return InsightBank(store, FakeEmbedder(dim=256), **kwargs)  # type: ignore[arg-type]


async def test_floor_drops_are_counted(store: SQLiteStore) -> None:
    bank = make_bank(store, top_k=3, similarity_floor=0.5)
    await bank.add(NEAR, ["Isolate the variable first."])
    await bank.add(FAR, ["Keep the metre of the original."])
    result = await bank.retrieve(NEAR_2)
    assert [e.key for e in result.entries] == [NEAR]
    assert result.dropped_by_floor == 1
    assert result.similarities[0] >= 0.5
    assert (bank.stats.retrievals, bank.stats.hits, bank.stats.dropped_by_floor) == (1, 1, 1)


async def test_top_k_limits_and_orders(store: SQLiteStore) -> None:
    bank = make_bank(store, top_k=2, similarity_floor=-1.0)
    for i, task in enumerate([FAR, NEAR, NEAR_2, "solve a quadratic equation"]):
        await bank.add(task, [f"insight {i}"])
    result = await bank.retrieve(NEAR)
    assert len(result.entries) == 2
    assert result.entries[0].key == NEAR
    assert result.similarities == sorted(result.similarities, reverse=True)
    assert result.dropped_by_floor == 0


async def test_empty_bank_retrieves_nothing(store: SQLiteStore) -> None:
    result = await make_bank(store).retrieve(NEAR)
    assert result.entries == [] and result.dropped_by_floor == 0


async def test_scope_isolation(store: SQLiteStore) -> None:
    a = make_bank(store, agent_id="a", similarity_floor=-1.0)
    b = make_bank(store, agent_id="b", similarity_floor=-1.0)
    nested = make_bank(store, agent_id="a", run_id="r1", similarity_floor=-1.0)
    await a.add(NEAR, ["from a"])
    await b.add(NEAR, ["from b"])
    await nested.add(NEAR, ["from nested"])
    await nested.add(NEAR_2, ["from nested 2"])
    for bank, expected in ((a, ["from a"]), (b, ["from b"]), (nested, ["from nested"])):
        got = await bank.retrieve(NEAR)
        assert got.entries[0].values == expected
    # a's filter (agent_id="a") also matches the nested bank's records; they must not leak in.
    assert [e.values for e in (await a.retrieve(NEAR)).entries] == [["from a"]]
    assert a.count() == 1 and nested.count() == 2
    with pytest.raises(StoreError):
        await a.update(b.entries()[0].id, ["hijack"])


def test_bank_needs_a_scope(store: SQLiteStore) -> None:
    with pytest.raises(ConfigError, match="scope"):
        InsightBank(store, FakeEmbedder())


async def test_duplicate_keys_merge(store: SQLiteStore) -> None:
    bank = make_bank(store)
    first = await bank.add(NEAR, ["Isolate x.", "Check the discriminant."])
    second = await bank.add(f"  {NEAR}\n", ["Check the discriminant.", " Factor when possible. ", ""])
    assert second.id == first.id
    assert second.values == ["Isolate x.", "Check the discriminant.", "Factor when possible."]
    assert bank.count() == 1
    assert bank.stats.merged == 1


async def test_update_replaces_values_keeps_usage(store: SQLiteStore) -> None:
    bank = make_bank(store)
    entry = await bank.add(NEAR, ["old"])
    await bank.retrieve(NEAR)
    updated = await bank.update(entry.id, ["new", "new"])
    assert updated.values == ["new"] and updated.usage == 1 and updated.key == NEAR
    with pytest.raises(StoreError):
        await bank.update("missing", ["x"])
    with pytest.raises(ConfigError):
        await bank.update(entry.id, ["  "])


async def test_usage_increments_on_retrieval(store: SQLiteStore) -> None:
    bank = make_bank(store)
    entry = await bank.add(NEAR, ["x"])
    await bank.add(FAR, ["y"])
    assert (await bank.retrieve(NEAR)).entries[0].usage == 1
    assert (await bank.retrieve(NEAR_2)).entries[0].usage == 2
    assert bank.get(entry.id).usage == 2
    assert {e.key: e.usage for e in bank.entries()}[FAR] == 0


async def test_cap_evicts_least_used_then_oldest(store: SQLiteStore) -> None:
    bank = make_bank(store, max_entries=2)
    used = await bank.add(NEAR, ["used"])
    await bank.add(FAR, ["old unused"])
    await bank.retrieve(NEAR)  # `used` now has usage 1
    await bank.add("count the red marbles in the bag", ["newest"])
    assert {e.values[0] for e in bank.entries()} == {"used", "newest"}
    assert bank.stats.evicted == 1
    await bank.add("estimate the boiling point of water at altitude", ["newer still"])
    # both remaining unused entries tie at usage 0 except `used`; the older unused one goes
    assert {e.values[0] for e in bank.entries()} == {"used", "newer still"}
    assert bank.get(used.id).usage == 1


async def test_set_score(store: SQLiteStore) -> None:
    bank = make_bank(store)
    entry = await bank.add(NEAR, ["x"])
    assert (await bank.set_score(entry.id, 0.75)).score == 0.75
    assert bank.get(entry.id).score == 0.75


def test_render_for_executor_shows_values_only() -> None:
    entries = [BankEntry("1", "secret key task", ["A.", "B."]), BankEntry("2", "other", ["B.", "C\nline"])]
    text = render_for_executor(entries)
    assert text == "- A.\n- B.\n- C\n  line"
    assert "secret" not in text
    assert render_for_executor([]) == ""


def named(name: str) -> FakeEmbedder:
    embedder = FakeEmbedder(dim=256)
    embedder.name = name
    return embedder


async def test_a_bank_written_under_minilm_s_former_bf16_space_keeps_its_entries(tmp_path: Path) -> None:
    # Before one space served both precisions, bfloat16 MiniLM wrote to "all-MiniLM-L6-v2-bf16".
    with SQLiteStore(tmp_path / "bank.db") as store:
        old = InsightBank(store, named("all-MiniLM-L6-v2-bf16"), agent_id="umem", similarity_floor=-1.0)
        await old.add(NEAR, ["Isolate the variable first."])
    with SQLiteStore(tmp_path / "bank.db") as store:
        bank = InsightBank(store, named("all-MiniLM-L6-v2"), agent_id="umem", similarity_floor=-1.0)
        assert [e.key for e in (await bank.retrieve(NEAR_2)).entries] == [NEAR]
        await bank.add(FAR, ["Keep the metre."])
        assert store.vector_spaces() == {"all-MiniLM-L6-v2-bf16": 2}


async def test_a_bank_of_another_model_is_refused_not_searched_in_vain(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "bank.db") as store:
        await InsightBank(store, named("other-model"), agent_id="umem").add(NEAR, ["Isolate the variable first."])
        with pytest.raises(StoreError, match="other-model"):
            InsightBank(store, named("all-MiniLM-L6-v2"), agent_id="umem")
