"""Mem-Optimizer prompt, strict parser and apply_action."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder
from memwise.umem.bank import BankEntry, InsightBank
from memwise.umem.optimizer import (
    FORMAT_FAILURE_REASONS,
    OptimizerAction,
    OptimizerParseError,
    apply_action,
    build_optimizer_messages,
    parse_optimizer_output,
    try_parse_optimizer_output,
)

ENTRIES = [
    BankEntry("id-a", "key a", ["Check units.", "Draw a diagram."]),
    BankEntry("id-b", "key b", ["Re-read the question."]),
]


def reply(op: str, *values: str, analysis: str = "The agent forgot a sign.") -> str:
    body = "".join(f"<value>{v}</value>" for v in values)
    return f"{analysis}\n<experience>{body}<operation>{op}</operation></experience>"


# -- prompt -------------------------------------------------------------------------------------


def test_prompt_numbers_entries_and_shows_status() -> None:
    messages = build_optimizer_messages("What is 2+3?", ENTRIES, "I computed 6.", success=False)
    assert [m.role for m in messages] == ["system", "user"]
    user = messages[1].content
    assert "Entry 0:\n  - Check units.\n  - Draw a diagram." in user
    assert "Entry 1:\n  - Re-read the question." in user
    assert "Entry 2" not in user
    assert "key a" not in user  # keys are never shown
    assert "INCORRECT" in user and "I computed 6." in user and "What is 2+3?" in user
    system = messages[0].content
    for needle in ("<experience>", "<value>", "<operation>", "UPDATE", "ADD", "answer", "variables", "root cause"):
        assert needle in system
    ok = build_optimizer_messages("t", [], "traj", success=True)[1].content
    assert "CORRECT" in ok and "INCORRECT" not in ok and "only ADD" in ok


def test_prompt_is_pure() -> None:
    a = build_optimizer_messages("t", ENTRIES, "x", True)
    b = build_optimizer_messages("t", ENTRIES, "x", True)
    assert a == b


# -- parser: accepted ---------------------------------------------------------------------------


def test_parse_add() -> None:
    action = parse_optimizer_output(reply("ADD", "Track signs.", "Verify by substitution."), 2)
    assert action == OptimizerAction("ADD", None, ["Track signs.", "Verify by substitution."])


@pytest.mark.parametrize("op", ["UPDATE 1", "update 1", "UPDATE  1", " Update\n1 ", "uPdAtE\t1"])
def test_parse_update_tolerates_case_and_whitespace(op: str) -> None:
    action = parse_optimizer_output(reply(op, "Lesson."), 2)
    assert (action.op, action.target) == ("UPDATE", 1)


@pytest.mark.parametrize("op", ["add", " Add ", "ADD\n"])
def test_parse_lower_case_add(op: str) -> None:
    assert parse_optimizer_output(reply(op, "Lesson."), 0).op == "ADD"


def test_parse_ignores_think_blocks() -> None:
    decoy = reply("UPDATE 9", "decoy")
    text = f"<think>maybe {decoy}</think>" + reply("ADD", "Real lesson.")
    assert parse_optimizer_output(text, 2).values == ["Real lesson."]
    # opening tag in the prompt: the reply starts with bare reasoning and a lone </think>
    bare = f"reasoning {decoy} </think>" + reply("UPDATE 0", "After.")
    assert parse_optimizer_output(bare, 2) == OptimizerAction("UPDATE", 0, ["After."])


def test_parse_extra_whitespace_and_tag_spacing() -> None:
    text = (
        "analysis\n< experience >\n  <value>\n  Lesson one.\n</value>\n\n"
        "<VALUE> Two </ value>\n<operation>  ADD  </operation>\n</Experience>"
    )
    assert parse_optimizer_output(text, 0).values == ["Lesson one.", "Two"]


def test_parse_keeps_other_tags_inside_values_and_drops_blank_or_repeated() -> None:
    text = reply("ADD", "Compare <b>units</b> first.", "  ", "Compare <b>units</b> first.")
    assert parse_optimizer_output(text, 0).values == ["Compare <b>units</b> first."]


# -- parser: rejected ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n_entries", "reason"),
    [
        ("I think the agent did fine.", 2, "no experience block"),
        ("", 2, "no experience block"),
        (reply("ADD", "a") + reply("ADD", "b"), 2, "several experience blocks"),
        (
            "<experience><experience><value>a</value><operation>ADD</operation></experience>",
            2,
            "several experience blocks",
        ),
        ("<experience><value>a</value><operation>ADD</operation>", 2, "unclosed experience block"),
        ("</experience><experience><value>a</value><operation>ADD</operation>", 2, "unclosed experience block"),
        (reply("ADD", "   "), 2, "no value"),
        ("<experience><operation>ADD</operation></experience>", 2, "no value"),
        (
            "<experience><value>a <value>b</value></value><operation>ADD</operation></experience>",
            2,
            "malformed value tags",
        ),
        ("<experience><value>a<operation>ADD</operation></experience>", 2, "malformed value tags"),
        ("<experience><value>a</value></experience>", 2, "no operation"),
        (reply("ADD</operation><operation>UPDATE 0", "a"), 2, "several operations"),
        (reply("DELETE 0", "a"), 2, "unknown operation"),
        (reply("ADD 1", "a"), 2, "unknown operation"),
        (reply("ADD or UPDATE", "a"), 2, "unknown operation"),
        (reply("UPDATE 2", "a"), 2, "invalid target"),
        (reply("UPDATE 0", "a"), 0, "invalid target"),
        (reply("UPDATE -1", "a"), 2, "invalid target"),
        (reply("UPDATE", "a"), 2, "invalid target"),
        (reply("UPDATE i", "a"), 2, "invalid target"),
        (f"<think>{reply('ADD', 'hidden')}</think> no block outside", 2, "no experience block"),
    ],
)
def test_parse_failures(text: str, n_entries: int, reason: str) -> None:
    with pytest.raises(OptimizerParseError) as info:
        parse_optimizer_output(text, n_entries)
    assert info.value.reason == reason
    assert reason in str(info.value)
    assert info.value.raw == text
    assert reason in FORMAT_FAILURE_REASONS
    assert try_parse_optimizer_output(text, n_entries) == reason


def test_update_out_of_range_is_never_add() -> None:
    result = try_parse_optimizer_output(reply("UPDATE 5", "lesson"), 3)
    assert result == "invalid target"
    assert not isinstance(result, OptimizerAction)


def test_try_parse_returns_action_on_success() -> None:
    assert try_parse_optimizer_output(reply("UPDATE 0", "x"), 1) == OptimizerAction("UPDATE", 0, ["x"])


# -- apply_action -------------------------------------------------------------------------------


@pytest.fixture
async def bank(tmp_path: Path) -> AsyncIterator[InsightBank]:
    store = SQLiteStore(tmp_path / "opt.db")
    yield InsightBank(store, FakeEmbedder(dim=128), agent_id="umem", similarity_floor=-1.0)
    store.close()


async def test_apply_update_targets_the_ith_entry(bank: InsightBank) -> None:
    # Entries with several values each: numbering values instead of entries would pick the wrong one.
    await bank.add("solve the linear equation", ["v0", "v1", "v2"])
    await bank.add("solve the quadratic equation", ["w0", "w1"])
    await bank.add("translate the poem", ["p0"])
    entries = (await bank.retrieve("solve the quadratic equation")).entries
    assert len(entries) == 3
    action = parse_optimizer_output(reply("UPDATE 1", "rewritten"), len(entries))
    updated = await apply_action(bank, "new task text", entries, action)
    assert updated.id == entries[1].id
    assert bank.get(entries[1].id).values == ["rewritten"]
    assert bank.get(entries[0].id).values == entries[0].values
    assert bank.get(entries[2].id).values == entries[2].values
    assert bank.count() == 3  # no ADD happened


async def test_apply_add_keys_by_task(bank: InsightBank) -> None:
    entry = await apply_action(bank, "estimate the area", [], OptimizerAction("ADD", None, ["Split into shapes."]))
    assert entry.key == "estimate the area" and bank.get(entry.id).values == ["Split into shapes."]


async def test_apply_rejects_target_outside_entries(bank: InsightBank) -> None:
    with pytest.raises(ConfigError, match="UPDATE 3"):
        await apply_action(bank, "t", ENTRIES, OptimizerAction("UPDATE", 3, ["x"]))
    assert bank.count() == 0


def test_repair_replies_parse_strictly() -> None:
    from memwise.umem.optimizer import OptimizerAction, parse_repair, repair_schema

    assert parse_repair('{"lessons": ["Check units."], "operation": "add"}', 0) == OptimizerAction(
        "ADD", None, ["Check units."]
    )
    assert parse_repair('```json\n{"lessons": "One lesson", "operation": "UPDATE 1"}\n```', 2) == OptimizerAction(
        "UPDATE", 1, ["One lesson"]
    )
    out_of_range = parse_repair('{"lessons": ["x"], "operation": "UPDATE 3"}', 2)
    assert out_of_range == "repair failed: UPDATE 3 names no shown entry"
    assert parse_repair('{"lessons": ["  "], "operation": "ADD"}', 0) == "repair failed: no lesson"
    assert parse_repair('{"lessons": [1], "operation": "ADD"}', 0) == "repair failed: lessons is not a list of strings"
    assert parse_repair("I cannot.", 0) == "repair failed: no JSON"
    assert parse_repair('{"lessons": ["x"], "operation": "DELETE"}', 0) == "repair failed: unknown operation 'DELETE'"
    schema = repair_schema(2)
    assert schema["properties"]["operation"]["enum"] == ["ADD", "UPDATE 0", "UPDATE 1"]
    assert schema["properties"]["lessons"]["items"]["maxLength"] == 200


def test_lessons_that_only_restate_the_answer_or_an_option_are_screened_out() -> None:
    from memwise.umem.optimizer import OptimizerAction, screen_lessons

    choices = ("amnion", "Allantois", "Chorion")
    action = OptimizerAction("UPDATE", 0, ["(B)", "2. Allantois", "Name the membrane's function before its name."])
    assert screen_lessons(action, "B", choices) == OptimizerAction(
        "UPDATE", 0, ["Name the membrane's function before its name."]
    )
    assert screen_lessons(OptimizerAction("ADD", None, ["the amnion!", "b"]), "B", choices) == "answer leak"
    # AIME-style: the gold integer alone is a leak; a sentence that uses numbers is not
    assert screen_lessons(OptimizerAction("ADD", None, ["204"]), "204") == "answer leak"
    kept = OptimizerAction("ADD", None, ["Reduce modulo 1000 at the end."])
    assert screen_lessons(kept, "204") is kept
    # a token loop or a lone word is no lesson
    assert screen_lessons(OptimizerAction("ADD", None, ["1.1.1.1.1.1", "Think"]), "204") == "not a lesson"
