"""The hybrid retriever: its pure scoring pieces, and one end-to-end run proving filters stay hard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from memwise.exceptions import ConfigError
from memwise.facts._text import asks_for_many, day_label, mentioned_names, without_names
from memwise.facts.entities import ENTITIES
from memwise.facts.retrieval_eval import Item, loo_sweep
from memwise.facts.retrieval_links import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    SESSION,
    context_links,
    index_records,
    link_context,
    render_turn_for_index,
)
from memwise.facts.retrieval_rank import Candidates, RetrieverConfig, rank
from memwise.facts.retrieval_scores import (
    context_scores,
    entity_weights,
    fuse,
    length_score,
    neighbours_to_fetch,
    normalise_scores,
    reciprocal_rank_fusion,
    session_scores,
    speaker_bonus,
    spread_order,
)
from memwise.facts.retrieve import HybridRetriever
from memwise.facts.temporal import DateRange
from memwise.facts.types import Conversation, Session, Turn
from memwise.facts.units import to_epoch
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
    with pytest.raises(ConfigError):
        RetrieverConfig(entity_weight=-0.1)
    with pytest.raises(ConfigError):
        RetrieverConfig(session_top=0)
    with pytest.raises(ConfigError):
        RetrieverConfig(length_weight=-0.1)
    with pytest.raises(ConfigError):
        RetrieverConfig(spread_weight=-0.1)
    with pytest.raises(ConfigError):
        RetrieverConfig(length_words=0)
    with pytest.raises(ConfigError):
        RetrieverConfig(spread_depth=0)


# -- session, entity and time steps ----------------------------------------------------------------


def _records(rows: list[tuple[str, str, str]], day: datetime = DAY) -> dict[str, Record]:
    """(id, session, text) rows as linked turn records of one scope."""
    out: dict[str, Record] = {}
    for session in dict.fromkeys(row[1] for row in rows):
        members = [
            Record(id=i, text=text, index_text=f"[{day_label(day)}] {text}", ts=to_epoch(day), metadata={SESSION: s})
            for i, s, text in rows
            if s == session
        ]
        out.update((r.id, r) for r in link_context(members, 2))
    return out


def test_link_context_stores_entity_keys() -> None:
    linked = link_context([Record(id="a", text="Ann: We flew to Paris with Door Dash money.")], 2)
    assert {"paris", "door dash"} <= set(linked[0].metadata[ENTITIES])


def test_session_scores_spread_evidence_beats_one_stray_match() -> None:
    base = {"s1a": 0.6, "s1b": 0.6, "s1c": 0.6, "s2a": 1.0}
    sessions = {"s1a": "s1", "s1b": "s1", "s1c": "s1", "s2a": "s2", "lone": None}
    strength = session_scores(base, sessions, top=3)
    assert strength["s1a"] == strength["s1c"] == 1.0
    assert strength["s2a"] == pytest.approx(1.0 / 1.8)
    assert strength["lone"] == 0.0
    with pytest.raises(ConfigError):
        session_scores(base, sessions, top=0)


def test_entity_weights_favour_rare_entities() -> None:
    weights = entity_weights({"paris": 1, "max": 40, "ghost": 0})
    assert set(weights) == {"paris", "max"}
    assert weights["paris"] > weights["max"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert entity_weights({}) == {}


def test_rank_entity_channel_brings_in_the_unit_that_names_the_entity() -> None:
    rows = [("hit", "s1", "Ann: I love travelling."), ("filler", "s2", "Ben: Nice."), ("paris", "s3", "Ann: Paris!")]
    records = _records(rows)
    dense = {"hit": 0.9, "filler": 0.1}
    cands = Candidates(records, dense=dense, lexical={}, entities={"paris": 1.0}, linked=("paris",))
    off = RetrieverConfig(entity_weight=0.0, session_weight=0.0, speaker_boost=0.0)
    assert "paris" not in [h.record.id for h in rank("What about Paris?", cands, off, 10)]
    on = [h.record.id for h in rank("What about Paris?", cands, replace(off, entity_weight=0.5), 10)]
    assert on.index("paris") < on.index("filler")


def test_rank_when_questions_prefer_the_turn_that_says_a_time() -> None:
    records = _records(
        [
            ("fun", "s1", "Ann: I ran a race, it was fun."),
            ("when", "s2", "Ann: I ran a race last Sunday."),
            ("filler", "s3", "Ben: Nice."),
        ]
    )
    dense = {"fun": 0.9, "when": 0.89, "filler": 0.1}
    cands = Candidates(records, dense=dense, lexical={"fun": 2.0, "when": 1.95})
    config = RetrieverConfig(session_weight=0.0, speaker_boost=0.0)
    assert [h.record.id for h in rank("When did Ann run a race?", cands, config, 2)] == ["when", "fun"]
    assert [h.record.id for h in rank("What race did Ann run?", cands, config, 2)] == ["fun", "when"]
    no_cue = replace(config, time_cue_weight=0.0)
    assert [h.record.id for h in rank("When did Ann run a race?", cands, no_cue, 2)] == ["fun", "when"]


def test_rank_time_window_lifts_turns_of_that_time() -> None:
    records = _records([("may", "s1", "Ann: I baked bread.")], DAY)
    records |= _records([("july", "s2", "Ann: I baked a cake."), ("filler", "s3", "Ben: Nice.")], datetime(2023, 7, 12))
    cands = Candidates(records, dense={"may": 0.9, "july": 0.85, "filler": 0.1}, lexical={})
    config = RetrieverConfig(session_weight=0.0, speaker_boost=0.0, time_cue_weight=0.0)
    assert [h.record.id for h in rank("What did Ann bake?", cands, config, 2)] == ["may", "july"]
    july = replace(cands, window=DateRange(date(2023, 7, 1), date(2023, 8, 1)))
    assert [h.record.id for h in rank("What did Ann bake in July 2023?", july, config, 2)] == ["july", "may"]


async def test_search_places_relative_time_with_the_question_date(tmp_path: Path) -> None:
    asked = datetime(2023, 6, 20, 12, 0)
    sessions = []
    for s, weeks in enumerate((6, 3, 1), start=1):
        when = asked - timedelta(weeks=weeks)
        said = Turn(f"D{s}:1", "Ann", "I went to the market and bought fruit.", f"session_{s}", 0, when)
        reply = Turn(f"D{s}:2", "Ben", "That sounds lovely, well done.", f"session_{s}", 1, when)
        sessions.append(Session(f"session_{s}", (said, reply), when))
    records = index_records(Conversation("c1", tuple(sessions), speakers=("Ann", "Ben")), user_id="u1")
    with SQLiteStore(tmp_path / "store.db") as store:
        retriever = HybridRetriever(store, FakeEmbedder())
        await retriever.index(records)
        question = "What did I buy at the market 3 weeks ago?"

        async def first(**kwargs: object) -> str:
            hits = await retriever.search(question, top_k=3, **kwargs)  # type: ignore[arg-type]
            return str(hits[0].record.metadata["source_ids"][0])

        assert await first(filters=Filters(user_id="u1"), question_date=asked) == "D2:1"
        # answer() bounds event times by the question date; that bound stands for the date.
        assert await first(filters=Filters(user_id="u1", until=asked.timestamp(), time_field="ts")) == "D2:1"
        assert await first(filters=Filters(user_id="u1"), question_date=asked + timedelta(weeks=2)) == "D3:1"


def test_loo_sweep_scores_each_point_as_rank_does() -> None:
    items: list[Item] = []
    gathered: list[Candidates] = []
    for conv in ("c1", "c2"):
        records = _records(
            [
                (f"{conv}-q", "s1", "Ann: I painted last week."),
                (f"{conv}-a", "s1", "Ben: What did you paint?"),
                (f"{conv}-b", "s1", "Ann: A sunset over the lake."),
                (f"{conv}-x", "s2", "Ben: I went hiking in Rome."),
            ]
        )
        records = {k: replace(r, metadata={**r.metadata, "source_ids": [k]}) for k, r in records.items()}
        cands = Candidates(records, dense={f"{conv}-q": 0.9, f"{conv}-x": 0.5}, lexical={f"{conv}-x": 3.0})
        for question, evidence in (("When did Ann paint?", (f"{conv}-q",)), ("What did Ann paint?", (f"{conv}-b",))):
            items.append(Item(conv, question, "1", evidence))
            gathered.append(cands)
    config = RetrieverConfig()
    by_rank = [
        len({h.record.id for h in rank(i.question, c, config, 10)} & set(i.evidence)) / len(i.evidence)
        for i, c in zip(items, gathered, strict=True)
    ]
    result = loo_sweep(items, gathered, config)
    assert result["default_in_sample_recall@10"] == pytest.approx(sum(by_rank) / len(by_rank))
    assert len(result["folds"]) == 2


# -- length prior and spread over sessions ---------------------------------------------------------


def test_length_score_counts_words_up_to_the_cap() -> None:
    assert length_score("Ann: Bye!", 4) == 0.5
    assert length_score("one two three four five six", 4) == 1.0
    with pytest.raises(ConfigError):
        length_score("text", 0)


def test_rank_length_prior_prefers_the_turn_that_says_something() -> None:
    records = _records(
        [("short", "s1", "Ann: Nice paint!"), ("long", "s2", "Ann: I paint sunsets by the lake on Sundays.")]
    )
    cands = Candidates(records, dense={"short": 0.5, "long": 0.5}, lexical={"short": 2.0, "long": 2.0})
    config = RetrieverConfig(speaker_boost=0.0, session_weight=0.0, length_weight=0.0)
    assert [h.record.id for h in rank("paint?", cands, config, 2)] == ["short", "long"]  # a tie: first seen
    assert [h.record.id for h in rank("paint?", cands, replace(config, length_weight=0.2), 2)] == ["long", "short"]


def test_asks_for_many_perfect_aspect_counts_and_both() -> None:
    assert asks_for_many("What has Melanie painted?")
    assert asks_for_many("How many times has John won?")
    assert asks_for_many("What do Jon and Gina both like?")
    assert not asks_for_many("What did Melanie paint last week?")
    assert not asks_for_many("Has Ann moved since May?")


def test_spread_order_weight_zero_is_the_plain_stable_order() -> None:
    final = np.array([[0.5, 0.9, 0.5, 0.7], [0.5, 0.9, 0.5, 0.7]])
    sessions = np.array([0, 0, 1, 0])
    got = spread_order(final, sessions, np.array([0.0, 0.3]), top=4, depth=4)
    assert got[0].tolist() == [1, 3, 0, 2]  # ties keep pool order
    # Row 2: 0.9 (s0), then 0.7 - 0.3 = 0.4 loses to the other session's 0.5.
    assert got[1].tolist() == [1, 2, 3, 0]
    # Below the depth the plain order follows: record 2 (pool position 4) is not moved up.
    assert spread_order(final[1:], sessions, np.array([0.3]), top=4, depth=3)[0].tolist() == [1, 3, 0, 2]


def test_rank_spreads_only_questions_that_gather_several_things() -> None:
    rows = [(f"a{i}", "s1", f"Ann: I painted picture {i}.") for i in range(4)]
    records = _records([*rows, ("b", "s2", "Ann: I painted a horse.")])
    dense = {"a0": 0.9, "a1": 0.85, "a2": 0.8, "a3": 0.75, "b": 0.6}
    cands = Candidates(records, dense=dense, lexical={})
    config = RetrieverConfig(speaker_boost=0.0, session_weight=0.0, length_weight=0.0, spread_weight=0.5)
    many = [h.record.id for h in rank("What has Ann painted?", cands, config, 3)]
    one = [h.record.id for h in rank("What did Ann paint?", cands, config, 3)]
    assert "b" in many and "b" not in one
    assert [h.record.id for h in rank("What has Ann painted?", cands, replace(config, spread_weight=0.0), 3)] == one


def test_loo_sweep_spreads_as_rank_does() -> None:
    items: list[Item] = []
    gathered: list[Candidates] = []
    for conv in ("c1", "c2"):
        rows = [(f"{conv}-a{i}", "s1", f"Ann: I painted picture {i} today.") for i in range(12)]
        records = _records([*rows, (f"{conv}-b", "s2", "Ann: I painted a horse.")])
        records = {k: replace(r, metadata={**r.metadata, "source_ids": [k]}) for k, r in records.items()}
        dense = {key: 0.9 - 0.01 * i for i, key in enumerate(records)}
        cands = Candidates(records, dense=dense, lexical={})
        for question in ("What has Ann painted?", "What did Ann paint?"):
            items.append(Item(conv, question, "1", (f"{conv}-b",)))
            gathered.append(cands)
    config = RetrieverConfig(spread_weight=0.3)
    by_rank = [
        len({h.record.id for h in rank(i.question, c, config, 10)} & set(i.evidence)) / len(i.evidence)
        for i, c in zip(items, gathered, strict=True)
    ]
    assert by_rank == [1.0, 0.0, 1.0, 0.0]
    result = loo_sweep(items, gathered, config)
    assert result["default_in_sample_recall@10"] == pytest.approx(sum(by_rank) / len(by_rank))


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
