"""The hybrid retriever: its pure scoring pieces, and one end-to-end run proving filters stay hard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError
from memwise.facts._text import day_label, mentioned_names, without_names
from memwise.facts.retrieve import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    Candidates,
    HybridRetriever,
    RetrieverConfig,
    context_links,
    context_scores,
    fuse,
    index_records,
    link_context,
    neighbours_to_fetch,
    normalise_scores,
    rank,
    reciprocal_rank_fusion,
    render_turn_for_index,
    speaker_bonus,
)
from memwise.facts.types import Conversation, Session, Turn
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder

DAY = datetime(2023, 5, 8, 13, 56)


def _conversation(cid: str, sessions: list[list[tuple[str, str]]]) -> Conversation:
    built = []
    for s, turns in enumerate(sessions, start=1):
        sid = f"session_{s}"
        built.append(
            Session(
                sid,
                tuple(Turn(f"D{s}:{i + 1}", who, text, sid, i, DAY) for i, (who, text) in enumerate(turns)),
                DAY,
            )
        )
    return Conversation(cid, tuple(built), speakers=("Ann", "Ben"))


def _linked(ids: list[str], window: int = 2) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    records = link_context([Record(text=i, id=i) for i in ids], window)
    return {r.id: context_links(r, window) for r in records}


# -- text rules ------------------------------------------------------------------------------------


def test_day_label_is_locale_free_and_unpadded() -> None:
    assert day_label(DAY) == "8 May 2023"
    assert day_label(datetime(2022, 12, 25)) == "25 December 2022"


def test_mentioned_names_whole_words_any_case_possessive() -> None:
    names = ["Caroline", "Melanie"]
    assert mentioned_names("What is caroline's identity?", names) == ("Caroline",)
    assert mentioned_names("What do Melanie and Caroline share?", names) == ("Caroline", "Melanie")
    assert mentioned_names("Did Mel go? Carolines?", names) == ()
    assert mentioned_names("anything", ["", "  "]) == ()


def test_without_names_blanks_only_whole_names() -> None:
    out = without_names("What did Caroline's friend Carolina paint?", ["Caroline"])
    assert "Caroline" not in out
    assert "Carolina" in out and "paint" in out


def test_render_turn_for_index_has_day_and_speaker() -> None:
    turn = Turn("D1:3", "Caroline", "I went to a support group.", "session_1", 2, DAY)
    assert render_turn_for_index(turn) == "[8 May 2023] Caroline: I went to a support group."
    assert render_turn_for_index(replace(turn, timestamp=None)) == "Caroline: I went to a support group."


# -- index-time links ------------------------------------------------------------------------------


def test_link_context_nearest_first_and_cut_at_window() -> None:
    links = _linked(["a", "b", "c", "d", "e"])
    assert links["c"] == (("b", "a"), ("d", "e"))
    assert links["a"] == ((), ("b", "c"))
    assert _linked(["a", "b", "c"], window=1)["b"] == (("a",), ("c",))
    with pytest.raises(ConfigError):
        link_context([], window=-1)


def test_index_records_links_stay_inside_a_session() -> None:
    conv = _conversation("c1", [[("Ann", "one"), ("Ben", "two")], [("Ann", "three")]])
    records = index_records(conv, user_id="u1")
    assert [r.metadata["source_ids"] for r in records] == [["D1:1"], ["D1:2"], ["D2:1"]]
    assert (records[0].text, records[0].index_text) == ("Ann: one", "[8 May 2023] Ann: one")
    assert records[1].metadata[CONTEXT_BEFORE] == [records[0].id]
    assert records[1].metadata[CONTEXT_AFTER] == []
    assert records[2].metadata[CONTEXT_BEFORE] == []
    assert all(r.user_id == "u1" for r in records)
    assert [r.id for r in index_records(conv, user_id="u1")] == [r.id for r in records]  # stable ids


# -- scoring ---------------------------------------------------------------------------------------


def test_normalise_scores_floor_and_degenerate_cases() -> None:
    assert normalise_scores({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert normalise_scores({"a": 4.0, "b": 2.0}, floor=0.0) == {"a": 1.0, "b": 0.5}
    assert normalise_scores({"a": 0.3, "b": 0.3}) == {"a": 1.0, "b": 1.0}
    assert normalise_scores({}) == {}


def test_fuse_weights_and_missing_scores() -> None:
    fused = fuse({"a": 1.0, "b": 0.5}, {"b": 1.0, "c": 1.0}, dense_weight=0.4)
    assert fused == pytest.approx({"a": 0.4, "b": 0.8, "c": 0.6})


def test_context_scores_best_neighbour_lends_with_decay() -> None:
    links = _linked(["a", "b", "c", "d"])
    scores = context_scores({"b": 1.0, "d": 0.4}, links, weight=0.5, decay=0.5)
    assert scores["a"] == pytest.approx(0.5 * 1.0)  # b at distance 1
    assert scores["c"] == pytest.approx(0.5 * 1.0)  # max(b, d) at distance 1; nothing at distance 2
    assert scores["b"] == pytest.approx(1.0 + 0.25 * 0.4)  # d at distance 2
    assert scores["d"] == pytest.approx(0.4 + 0.25 * 1.0)  # c (0) at 1, b at 2


def test_neighbours_to_fetch_only_unscored_neighbours_of_the_best() -> None:
    links = {"b": (("a",), ("c",)), "x": (("w",), ("y",))}
    assert neighbours_to_fetch({"b": 1.0, "c": 0.2, "x": 0.1}, links, top=1) == ["a"]
    assert neighbours_to_fetch({"b": 1.0, "c": 0.2, "x": 0.1}, links, top=2) == ["a", "w", "y"]


def test_speaker_bonus_needs_exactly_one_named_speaker() -> None:
    speakers = {"1": "Ann", "2": "Ben", "3": "Ann", "4": None}
    assert speaker_bonus("What did Ann paint?", speakers, 0.5) == {"1": 0.5, "3": 0.5}
    assert speaker_bonus("What do Ann and Ben share?", speakers, 0.5) == {}
    assert speaker_bonus("What was painted?", speakers, 0.5) == {}
    assert speaker_bonus("What did Ann paint?", speakers, 0.0) == {}


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=1)
    assert fused == pytest.approx({"a": 1 / 2, "b": 1 / 3 + 1 / 2, "c": 1 / 3})


def test_rank_lifts_the_neighbour_and_ignores_records_outside_the_pool() -> None:
    ids = ["q", "answer", "far1", "far2", "far3", "stray"]
    records = {r.id: r for r in link_context([Record(text=i, id=i) for i in ids[:5]], 2)}
    records["stray"] = Record(text="stray", id="stray")  # fetched but linked from nothing
    cands = Candidates(records, dense={"q": 0.9, "far3": 0.1}, lexical={"q": 5.0})
    config = RetrieverConfig(speaker_boost=0.0)
    got = [hit.record.id for hit in rank("question", cands, config, top_k=10)]
    assert got[:2] == ["q", "answer"]
    assert "stray" not in got
    no_context = [hit.record.id for hit in rank("question", cands, replace(config, context_weight=0.0), 10)]
    assert no_context == ["q", "far3"]
    assert rank("question", cands, config, top_k=0) == []


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        RetrieverConfig(dense_weight=1.5)
    with pytest.raises(ConfigError):
        RetrieverConfig(candidate_k=0)
    with pytest.raises(ConfigError):
        RetrieverConfig(speaker_boost=-1)


# -- end to end ------------------------------------------------------------------------------------


async def test_filters_are_hard_across_users_and_links(tmp_path: Path) -> None:
    talk = [
        [
            ("Ann", "I painted something new last week."),
            ("Ben", "What did you paint?"),
            ("Ann", "A sunset over the lake, with purple clouds."),
            ("Ben", "Lovely. I went hiking."),
        ]
    ]
    alice = index_records(_conversation("c-alice", talk), user_id="alice")
    bob = index_records(_conversation("c-bob", talk), user_id="bob")
    # A corrupt link from one of alice's turns into bob's: following it must not leak bob's turn.
    alice[0] = replace(alice[0], metadata={**alice[0].metadata, CONTEXT_BEFORE: [bob[2].id]})
    with SQLiteStore(tmp_path / "store.db") as store:
        retriever = HybridRetriever(store, FakeEmbedder(), RetrieverConfig(candidate_k=2, expand_top=4))
        await retriever.index([*alice, *bob])
        asked: list[str] = []
        get_many = store.get_many

        def recording_get_many(ids: Iterable[str]) -> list[Record]:
            wanted = list(ids)
            asked.extend(wanted)
            return get_many(wanted)

        store.get_many = recording_get_many  # type: ignore[method-assign]
        for user, own in (("alice", alice), ("bob", bob)):
            hits = await retriever.search("What did Ann paint?", filters=Filters(user_id=user), top_k=10)
            assert hits, user
            assert {hit.record.user_id for hit in hits} == {user}
            assert {hit.record.id for hit in hits} <= {r.id for r in own}
        assert bob[2].id in asked  # the corrupt link was followed, and its target dropped by the filter
        hits = await retriever.search("What did Ann paint?", filters=Filters(user_id="alice"), top_k=3)
        assert alice[2].id in {hit.record.id for hit in hits}  # the answer sits next to the question
        assert await retriever.search("anything", filters=Filters(user_id="nobody"), top_k=5) == []
        assert await retriever.search("   ", filters=Filters(user_id="alice")) == []
