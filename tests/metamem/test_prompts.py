"""MetaMem prompt builders: pure, carrying the question date, rule ids and the gold answer."""

from __future__ import annotations

from datetime import datetime

import pytest

from memwise.facts.answer import build_answer_messages
from memwise.metamem.parse import ProposedOp, Reflection
from memwise.metamem.prompts import (
    build_consolidation_messages,
    build_proposal_messages,
    build_reflection_messages,
    build_rollout_messages,
    format_rules,
    question_labels,
    render_reflection,
    unlabel_questions,
)
from memwise.store.base import Record

FRAGMENTS = ["2023-05-01 13:00 Monday I moved to Oslo.", "2023-06-10 09:00 Saturday I adopted a cat."]
RULES = {"R3": "Use the question date to resolve relative times.", "R7": "Prefer the newest fragment."}
LESSON = Reflection(used=[1], decisive_point="counted from the wrong month", lesson="Subtract from the question date.")


# --------------------------------------------------------------------------------------------
# Rollout


def test_rollout_shows_question_date_fragments_and_rules_with_ids() -> None:
    system, user = build_rollout_messages(
        "How long ago did I move?", FRAGMENTS, question_date=datetime(2023, 7, 1), rules=RULES
    )
    assert system.role == "system" and user.role == "user"
    assert "Today is 2023-07-01 (Saturday)." in user.content
    assert '<memory n="1">2023-05-01 13:00 Monday I moved to Oslo.</memory>' in user.content
    assert '<memory n="2">2023-06-10 09:00 Saturday I adopted a cat.</memory>' in user.content
    assert "[R3] Use the question date to resolve relative times.\n[R7] Prefer the newest fragment." in user.content
    assert user.content.rstrip().endswith("Question: <question>How long ago did I move?</question>\nAnswer briefly.")


def test_rollout_passes_a_string_date_through_and_omits_only_an_unknown_one() -> None:
    dated = build_rollout_messages("q?", FRAGMENTS, question_date="2023/07/01 (Sat) 10:00", rules={})
    assert "Today is 2023/07/01 (Sat) 10:00." in dated[-1].content
    undated = build_rollout_messages("q?", FRAGMENTS, question_date=None, rules={})
    assert "Today is" not in undated[-1].content
    assert "How to use the fragments" not in undated[-1].content  # no rules, no empty section


def test_rollout_requires_the_date_argument() -> None:
    with pytest.raises(TypeError):
        build_rollout_messages("q?", FRAGMENTS, rules=RULES)  # type: ignore[call-arg]


def test_rollout_shares_the_answer_prompt() -> None:
    """Rules are learned on the prompt inference uses: same system prompt, same sections."""
    rollout = build_rollout_messages("q?", ["a fact"], question_date="2023-07-01", rules={})
    answer = build_answer_messages("q?", [Record(text="a fact")], question_date="2023-07-01")
    assert rollout[0] == answer[0]
    assert rollout[1].content == answer[1].content.replace(" (oldest first)", "")


def test_rules_render_with_normalised_ids_and_refuse_a_plain_list() -> None:
    assert format_rules({"3": "a  b", "[r12]": "c"}) == ["[R3] a b", "[R12] c"]
    with pytest.raises(TypeError, match="map rule id to text"):
        format_rules(["Prefer the newest fragment."])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a rule id"):
        build_rollout_messages("q?", FRAGMENTS, question_date=None, rules={"dates": "x"})


def test_builders_are_pure() -> None:
    first = build_rollout_messages("q?", FRAGMENTS, question_date="2023-07-01", rules=RULES)
    assert first == build_rollout_messages("q?", FRAGMENTS, question_date="2023-07-01", rules=RULES)


# --------------------------------------------------------------------------------------------
# Reflection


def test_reflection_shows_gold_response_verdict_date_and_numbered_fragments() -> None:
    _, user = build_reflection_messages(
        "How long ago did I move?",
        FRAGMENTS,
        gold="About two months",
        response="One month ago.",
        correct=False,
        question_date="2023-07-01",
        feedback="off by one month",
    )
    gold_line = next(line for line in user.content.splitlines() if line.startswith("Reference answer:"))
    assert gold_line.removeprefix("Reference answer:").strip() == "<reference>About two months</reference>"
    assert "Response: <response>\nOne month ago.\n</response>" in user.content
    assert "Judged: wrong" in user.content and "Judge's note: <note>off by one month</note>" in user.content
    assert "2023-07-01" in user.content
    assert '<memory n="1">2023-05-01 13:00 Monday I moved to Oslo.</memory>' in user.content
    for key in ("used", "ignored", "reasoning", "decisive_point", "lesson"):
        assert f'"{key}"' in user.content


def test_reflection_marks_a_correct_attempt() -> None:
    _, user = build_reflection_messages("q?", FRAGMENTS, gold="Oslo", response="Oslo", correct=True)
    assert "Judged: correct" in user.content and "Judge's note" not in user.content


@pytest.mark.parametrize("gold", ["", "   ", "\n\t"])
def test_reflection_refuses_an_empty_gold(gold: str) -> None:
    with pytest.raises(ValueError, match="empty gold"):
        build_reflection_messages("q?", FRAGMENTS, gold=gold, response="x", correct=False)


# --------------------------------------------------------------------------------------------
# Proposal


def test_proposal_shows_rules_question_and_both_kinds_of_attempt() -> None:
    good = Reflection(used=[2], lesson="Check the latest fragment.")
    _, user = build_proposal_messages("Where do I live?", rules=RULES, successes=[good], failures=[LESSON])
    text = user.content
    assert '<rule id="R3">Use the question date to resolve relative times.</rule>' in text and 'id="R7"' in text
    assert "Question: <question>Where do I live?</question>" in text
    correct, wrong = text.index("Attempts judged correct"), text.index("Attempts judged wrong")
    assert correct < text.index("Check the latest fragment.") < wrong < text.index("Subtract from the question date.")
    assert '"update"' in text and '"delete"' in text and "at most 30 words" in text
    assert '"rule_id": "R3"' in text  # the example names a rule that exists


def test_proposal_without_rules_offers_only_adds() -> None:
    _, user = build_proposal_messages("q?", rules={}, successes=[], failures=[LESSON], max_words=20)
    assert "(no rules yet)" in user.content and "Attempts judged correct:\n(none)" in user.content
    assert '"update"' not in user.content and "at most 20 words" in user.content


def test_proposal_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_proposal_messages("q?", rules=RULES, successes=[], failures=[])


def test_reflection_renders_compactly() -> None:
    line = render_reflection(Reflection(used=[1, 2], ignored=[4], reasoning="r " * 300, lesson="L."))
    assert line.startswith("used fragments 1, 2; missed fragments 4; reasoning: r r")
    assert line.endswith("lesson: L.") and len(line) < 320


# --------------------------------------------------------------------------------------------
# Consolidation


def test_consolidation_groups_edits_by_rule_and_merges_repeats() -> None:
    proposals = {
        "q1": [ProposedOp(op="add", text="Count all sessions."), ProposedOp(op="update", rule_id="R7", text="A.")],
        "q2": [ProposedOp(op="delete", rule_id="R3", reason="too vague")],
        "q3": [ProposedOp(op="update", rule_id="R3", text="Dates.")],
        "q4": [ProposedOp(op="add", text="count all  sessions.")],
        "q5": [],
    }
    _, user = build_consolidation_messages(RULES, proposals, max_rules=30)
    lines = [line for line in user.content.splitlines() if line.startswith("- [")]
    # Questions show as per-prompt labels in proposal order (q1 -> Q1, q2 -> Q2, ...), never by id.
    assert lines == [
        "- [Q2] delete R3 reason: <note>too vague</note>",
        "- [Q3] update R3: <edit>Dates.</edit>",
        "- [Q1] update R7: <edit>A.</edit>",
        "- [Q1, Q4] add: <edit>Count all sessions.</edit>",
    ]
    assert '<rule id="R3">Use the question date' in user.content
    assert "holds 2 rules and may hold at most 30" in user.content
    assert "prefer updating" in user.content.lower() and "delete rarely" in user.content.lower()
    assert '"question_ids": ["Q1"]' in user.content


def test_consolidation_never_shows_question_ids_and_labels_map_back() -> None:
    """LongMemEval ids carry labels (``_abs`` marks abstention); the prompt numbers questions instead."""
    proposals = {
        "gpt4_2655b836_abs": [ProposedOp(op="add", text="Say when nothing fits.")],
        "e47becba": [ProposedOp(op="delete", rule_id="R3")],
    }
    system, user = build_consolidation_messages(RULES, proposals)
    shown = system.content + user.content
    assert "gpt4" not in shown and "_abs" not in shown and "e47becba" not in shown
    labels = question_labels(proposals)
    assert labels == {"Q1": "gpt4_2655b836_abs", "Q2": "e47becba"}
    reply = [ProposedOp(op="add", text="Say when nothing fits.", question_ids=["Q1", "Q9"])]
    assert unlabel_questions(reply, labels)[0].question_ids == ("gpt4_2655b836_abs",)


def test_consolidation_without_proposals_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing|no proposed"):
        build_consolidation_messages(RULES, {"q1": [], "q2": []})
