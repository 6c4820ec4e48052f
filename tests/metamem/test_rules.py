"""The meta-memory E: stable ids, accounted edits, bounded size, versions with provenance, safe fallback."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from memwise.metamem.rule_fallback import fallback_subset
from memwise.metamem.rule_history import RuleHistory, diff, render_diff
from memwise.metamem.rules import Operation, RuleSet, render, token_jaccard

TEXTS = [
    "When fragments disagree, prefer the most recent one unless the question asks about history.",
    "Compute day differences from the question date, counting calendar days explicitly.",
    "Say the question is unanswerable when no fragment mentions the asked entity.",
    "List every matching session before counting items across sessions.",
    "Quote the fragment timestamp when answering questions about when something happened.",
]


def add(text: str, *, step: int = 1, qids: tuple[str, ...] = ()) -> Operation:
    return Operation(op="add", text=text, step=step, question_ids=qids)


def update(rule_id: str, text: str, *, step: int = 1, qids: tuple[str, ...] = ()) -> Operation:
    return Operation(op="update", rule_id=rule_id, text=text, step=step, question_ids=qids)


def delete(rule_id: str, *, step: int = 1, qids: tuple[str, ...] = ()) -> Operation:
    return Operation(op="delete", rule_id=rule_id, step=step, question_ids=qids)


def three_rules(**caps: int) -> RuleSet:
    return RuleSet(**caps).apply([add(t) for t in TEXTS[:3]], step=1).new_set


# --------------------------------------------------------------------------------------------
# Ids


def test_ids_are_never_reused_after_deletes() -> None:
    rules = three_rules()
    assert rules.ids == ("R1", "R2", "R3")
    after_delete = rules.apply([delete("R2")], step=2).new_set
    after_add = after_delete.apply([add(TEXTS[3])], step=3).new_set
    assert after_add.ids == ("R1", "R3", "R4")
    assert after_add.next_id == 5
    # Deleting the newest id does not free it either.
    assert after_add.apply([delete("R4")], step=4).new_set.apply([add(TEXTS[4])], step=5).new_set.ids == (
        "R1",
        "R3",
        "R5",
    )


def test_no_renumbering_and_steps_kept() -> None:
    rules = three_rules()
    result = rules.apply([delete("R1"), update("R3", "Check each fragment date against the question date.")], step=7)
    r2, r3 = result.new_set.rules
    assert (r2.id, r2.text, r2.created_step, r2.updated_step) == ("R2", TEXTS[1], 1, 1)
    assert (r3.id, r3.created_step, r3.updated_step) == ("R3", 1, 7)
    assert render(result.new_set).splitlines() == [f"[R2] {TEXTS[1]}", f"[R3] {r3.text}"]


def test_operation_shape_is_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="mints ids"):
        Operation(op="add", rule_id="R1", text="x")
    with pytest.raises(ValueError, match="needs text"):
        Operation(op="update", rule_id="R1")
    with pytest.raises(ValueError, match="rule_id"):
        Operation(op="delete")
    with pytest.raises(ValueError, match="op must be"):
        Operation(op="merge", text="x")  # type: ignore[arg-type]
    assert Operation(op="add", text="x", question_ids=["q1"]).question_ids == ("q1",)  # type: ignore[arg-type]


def test_rule_set_invariants() -> None:
    rules = three_rules()
    with pytest.raises(ValueError, match="re-mint"):
        dataclasses.replace(rules, next_id=3)
    with pytest.raises(ValueError, match="ordered"):
        dataclasses.replace(rules, rules=tuple(reversed(rules.rules)))
    with pytest.raises(ValueError, match="max_rules"):
        dataclasses.replace(rules, max_rules=2)


# --------------------------------------------------------------------------------------------
# Accounting of every edit


def test_missing_ids_are_rejected_and_counted() -> None:
    rules = three_rules()
    result = rules.apply([update("R9", "Something new about dates."), delete("R42"), delete("R1")], step=2)
    assert [(r.op.rule_id, r.reason) for r in result.rejected] == [("R9", "missing"), ("R42", "missing")]
    assert result.rejection_counts() == {"missing": 2}
    assert [a.rule_id for a in result.applied] == ["R1"]
    assert result.new_set.ids == ("R2", "R3")


def test_conflicting_ops_in_one_batch_first_edit_wins() -> None:
    rules = three_rules()
    ops = [
        delete("R1"),
        update("R1", "Resurrected rule text about dates."),
        update("R2", "Count calendar days from the question date, inclusive of neither end."),
        delete("R2"),
        update("R3", "Say unanswerable if no fragment names the entity asked about."),
        update("R3", "A second competing rewrite of the same rule."),
    ]
    result = rules.apply(ops, step=2)
    assert [(r.op.rule_id, r.reason) for r in result.rejected] == [
        ("R1", "deleted"),
        ("R2", "conflict"),
        ("R3", "conflict"),
    ]
    assert [(a.op.op, a.rule_id) for a in result.applied] == [("delete", "R1"), ("update", "R2"), ("update", "R3")]
    assert result.new_set.get("R2").text == ops[2].text  # type: ignore[union-attr]
    assert result.new_set.get("R3").text == ops[4].text  # type: ignore[union-attr]


def test_count_cap_rejects_extra_adds_and_counts_deletes_in_the_same_batch() -> None:
    rules = three_rules(max_rules=4)
    result = rules.apply([add(TEXTS[3]), add(TEXTS[4]), add("Yet another distinct rule about speakers.")], step=2)
    assert len(result.new_set) == 4
    assert [r.reason for r in result.rejected] == ["cap", "cap"]
    assert [r.op.text for r in result.rejected] == [TEXTS[4], "Yet another distinct rule about speakers."]
    # A delete later in the batch still frees its slot before the adds run.
    freed = result.new_set.apply([add("Yet another distinct rule about speakers."), delete("R1")], step=3)
    assert freed.rejected == ()
    assert freed.new_set.ids == ("R2", "R3", "R4", "R5")


def test_word_cap_and_empty_text_are_rejected_not_truncated() -> None:
    rules = RuleSet(max_words=5)
    result = rules.apply(
        [add("one two three four five"), add("one two three four five six"), add("   "), update("R1", "")],
        step=1,
    )
    assert [r.reason for r in result.rejected] == ["too_long", "empty", "missing"]
    assert render(result.new_set) == "[R1] one two three four five"
    # A refused edit does not claim its id: the next acceptable edit of R1 in the batch still applies.
    result = result.new_set.apply([update("R1", "\n "), update("R1", "a b c d e f g"), update("R1", "a b c")], step=2)
    assert [r.reason for r in result.rejected] == ["empty", "too_long"]
    assert render(result.new_set) == "[R1] a b c"


def test_near_duplicate_adds_are_merged() -> None:
    rules = three_rules()
    near = "When fragments disagree prefer the most recent one, unless the question asks about history!"
    twins = [add("Check the speaker of each fragment before attributing a preference."), add(near)]
    twins.append(add("check the speaker of each fragment before attributing a preference"))
    result = rules.apply(twins, step=2)
    assert [(m.op.text, m.into) for m in result.merged] == [(near, "R1"), (twins[2].text, "R4")]
    assert all(m.similarity >= 0.8 for m in result.merged)
    assert result.new_set.ids == ("R1", "R2", "R3", "R4")
    # An embedding-style similarity can be passed in instead of Jaccard.
    strict = rules.apply([add(near)], step=2, similarity=lambda a, b: float(a == b))
    assert strict.merged == () and len(strict.new_set) == 4


def test_updates_that_change_nothing_merge_and_updates_that_copy_another_rule_are_rejected() -> None:
    rules = three_rules()
    result = rules.apply([update("R1", f"  {TEXTS[0]} "), update("R2", TEXTS[2].upper())], step=2)
    assert [(m.into, m.similarity) for m in result.merged] == [("R1", 1.0)]
    assert [(r.op.rule_id, r.reason) for r in result.rejected] == [("R2", "duplicate")]
    assert result.new_set.rules == rules.rules


def test_apply_never_mutates_and_bumps_version() -> None:
    rules = three_rules()
    snapshot = rules.to_dict()
    result = rules.apply([delete("R1"), add(TEXTS[3]), update("R2", "Count days with care.")], step=2)
    assert rules.to_dict() == snapshot
    assert result.new_set.version == rules.version + 1
    empty = rules.apply([], step=3)
    assert empty.new_set.version == rules.version + 1 and empty.new_set.rules == rules.rules
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.version = 9  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Versions, JSON, diff, provenance


def build_history() -> tuple[RuleHistory, list[RuleSet]]:
    start = RuleSet()
    history = RuleHistory.start(start)
    sets = [start]
    batches = [
        [add(TEXTS[0], step=1, qids=("q1",)), add(TEXTS[1], step=1, qids=("q2", "q3"))],
        [add(TEXTS[2], step=2, qids=("q4",)), update("R9", "nothing", step=2, qids=("q5",))],
        [
            Operation(
                op="update",
                rule_id="R1",
                text="Prefer the newest fragment.",
                step=3,
                question_ids=("q6",),
                reason="older facts misled the answer",
            ),
            delete("R2", step=3, qids=("q7",)),
        ],
    ]
    for step, batch in enumerate(batches, start=1):
        result = sets[-1].apply(batch, step=step)
        history = history.record(result, note=f"step {step}")
        sets.append(result.new_set)
    return history, sets


def test_json_round_trip_of_rule_set_and_history() -> None:
    history, sets = build_history()
    for rules in sets:
        assert RuleSet.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules
    again = RuleHistory.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history
    assert [v.version for v in again] == [0, 1, 2, 3]
    assert again.at(2).ops_rejected[0].reason == "missing"
    assert again.latest.rules == sets[-1]


def test_history_is_append_only_and_ordered() -> None:
    history, sets = build_history()
    assert len(history) == 4
    stale = sets[1].apply([add(TEXTS[4])], step=9)  # version 2 again, after version 3
    with pytest.raises(ValueError, match="strictly increase"):
        history.record(stale)
    with pytest.raises(KeyError):
        history.at(17)
    with pytest.raises(LookupError):
        _ = RuleHistory().latest


def test_diff_and_render_diff_show_provenance() -> None:
    history, sets = build_history()
    change = diff(sets[0], sets[-1])
    assert [r.id for r in change.added] == ["R1", "R3"]
    assert change.removed == () and change.changed == ()
    last = diff(sets[2], sets[3])
    assert [r.id for r in last.removed] == ["R2"]
    assert [(old.text, new.text) for old, new in last.changed] == [(TEXTS[0], "Prefer the newest fragment.")]
    assert not diff(sets[3], sets[3])
    text = render_diff(last, history)
    assert text.splitlines() == [
        "v2 -> v3: 0 added, 1 removed, 1 changed",
        f"~ [R1] {TEXTS[0]}",
        "  => Prefer the newest fragment.",
        "    update at step 3 from q6; reason: older facts misled the answer",
        f"- [R2] {TEXTS[1]}",
        "    delete at step 3 from q7",
    ]
    whole = render_diff(change, history)
    assert "add at step 1 from q1" in whole and "add at step 2 from q4" in whole
    assert render(RuleSet()) == ""


# --------------------------------------------------------------------------------------------
# Fallback when consolidation fails


def test_fallback_policy() -> None:
    rules = three_rules()
    proposals = [
        [delete("R1", qids=("a",)), update("R2", "Count days from the question date.", qids=("a",))],
        [update("R1", "Prefer the newest fragment.", qids=("b",)), update("R2", "Count days twice.", qids=("b",))],
        [update("R2", "Count days from the question date!", qids=("c",)), add("Check speakers.", qids=("c",))],
        [add("check speakers", qids=("d",)), add(TEXTS[2].lower(), qids=("d",)), delete("R3", qids=("d",))],
        [update("R7", "Missing target.", qids=("e",)), add("Group facts by session.", qids=("e",))],
    ]
    chosen = fallback_subset(proposals, rules, limit=10)
    assert [(op.op, op.rule_id, op.text, op.question_ids) for op in chosen] == [
        ("update", "R2", "Count days from the question date.", ("a", "c")),  # two questions beat one
        ("update", "R1", "Prefer the newest fragment.", ("b",)),  # update beats the earlier delete
        ("add", None, "Check speakers.", ("c", "d")),  # near-duplicate adds grouped; the copy of R3 dropped
        ("add", None, "Group facts by session.", ("e",)),
        ("delete", "R3", None, ("d",)),
    ]
    assert [op.op for op in fallback_subset(proposals, rules, limit=2)] == ["update", "update"]
    assert fallback_subset(proposals, rules, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        fallback_subset(proposals, rules, limit=-1)
    full = dataclasses.replace(rules, max_rules=4)
    assert [op.op for op in fallback_subset(proposals, full, limit=10)].count("add") == 1


def random_proposals(rng: random.Random, rules: RuleSet, questions: int, per_question: int) -> list[list[Operation]]:
    ids = [*rules.ids, "R40", "R41"]  # some targets do not exist
    words = "fragment date newest session speaker count prefer check quote entity history order".split()
    proposals = []
    for q in range(questions):
        ops = []
        for _ in range(per_question):
            kind = rng.choice(["add", "update", "delete"])
            text = " ".join(rng.choices(words, k=rng.randint(0, 36)))
            qids = (f"q{q}",)
            if kind == "add":
                ops.append(add(text, qids=qids))
            elif kind == "update":
                ops.append(update(rng.choice(ids), text, qids=qids))
            else:
                ops.append(delete(rng.choice(ids), qids=qids))
        proposals.append(ops)
    return proposals


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("limit", [1, 5, 12])
def test_fallback_is_bounded_deconflicted_and_deterministic_on_200_random_ops(seed: int, limit: int) -> None:
    rules = three_rules()
    proposals = random_proposals(random.Random(seed), rules, questions=40, per_question=5)
    assert sum(len(p) for p in proposals) == 200
    chosen = fallback_subset(proposals, rules, limit=limit)
    assert 0 < len(chosen) <= limit
    targets = [op.rule_id for op in chosen if op.rule_id is not None]
    assert len(targets) == len(set(targets))
    assert chosen == fallback_subset(proposals, rules, limit=limit)
    result = rules.apply(chosen, step=2)
    assert {r.reason for r in result.rejected} <= {"duplicate"}  # two picked rewrites may still coincide
    assert len(result.applied) + len(result.merged) + len(result.rejected) == len(chosen)
    assert len(result.new_set) <= rules.max_rules


def test_token_jaccard() -> None:
    assert token_jaccard("Prefer the newest fact.", "prefer the NEWEST fact") == 1.0
    assert token_jaccard("a b", "c d") == 0.0
    assert token_jaccard("", "") == 0.0
    assert token_jaccard("a b c", "a b d") == pytest.approx(0.5)


def test_rules_without_words_are_rejected() -> None:
    result = RuleSet().apply([Operation("add", text="..."), Operation("add", text="1 2 3")], step=1)
    assert len(result.new_set) == 0 and [r.reason for r in result.rejected] == ["empty", "empty"]
