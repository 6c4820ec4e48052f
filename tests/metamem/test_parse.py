"""MetaMem reply parsing: tolerant of how models write JSON, strict about what an edit means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memwise.exceptions import ParseError
from memwise.llm.structured import try_parse_model
from memwise.metamem.parse import (
    Consolidation,
    Proposal,
    ProposedOp,
    Reflection,
    consolidation_schema,
    normalize_rule_id,
    parse_consolidation,
    parse_proposal,
    parse_reflection,
    proposal_schema,
    reflection_schema,
)

# --------------------------------------------------------------------------------------------
# Rule ids


@pytest.mark.parametrize("raw", ["R3", "r3", "3", 3, "[R3]", "[3]", " R03 ", "Rule 3", "rule-3", "R#3"])
def test_rule_ids_normalise_to_r_and_number(raw: str | int) -> None:
    assert normalize_rule_id(raw) == "R3"


@pytest.mark.parametrize("raw", ["", "R", "foo", "R3a", "R3, R4", "0", "R0", True, 3.0])
def test_non_ids_are_refused(raw: Any) -> None:
    with pytest.raises(ValueError):
        normalize_rule_id(raw)


# --------------------------------------------------------------------------------------------
# Proposal


def test_fenced_json_with_prose_and_think_block() -> None:
    reply = (
        '<think>The failed attempts ignored the date. Maybe {"op": "delete"}?</think>\n'
        "Here are my edits:\n```json\n"
        '{"operations": [{"op": "ADD", "text": "Anchor relative times to the question date.", "reason": "dates"},\n'
        '  {"op": "Update", "rule_id": "[r2]", "text": "Prefer  the newest\\nfragment.",},]}\n'
        "```\nHope this helps."
    )
    ops = parse_proposal(reply)
    assert ops == [
        ProposedOp(op="add", text="Anchor relative times to the question date.", reason="dates"),
        ProposedOp(op="update", rule_id="R2", text="Prefer the newest fragment."),
    ]


def test_bare_list_other_keys_and_synonyms() -> None:
    reply = '[{"action": "remove", "id": 4, "why": "misleads"}, {"type": "Modify", "target": "R1", "content": "x y"}]'
    assert parse_proposal(reply) == [
        ProposedOp(op="delete", rule_id="R4", reason="misleads"),
        ProposedOp(op="update", rule_id="R1", text="x y"),
    ]


def test_python_literal_and_single_op_object() -> None:
    assert parse_proposal("{'op': 'add', 'text': 'Count every session.'}") == [
        ProposedOp(op="add", text="Count every session.")
    ]


def test_rule_key_is_an_id_or_a_text_by_op() -> None:
    ops = parse_proposal(
        '{"edits": [{"op": "delete", "rule": "R5"}, {"op": "add", "rule": "Say when nothing matches."},'
        ' {"op": "update", "rule": "R2", "text": "t"}]}'
    )
    assert [(o.op, o.rule_id, o.text) for o in ops] == [
        ("delete", "R5", None),
        ("add", None, "Say when nothing matches."),
        ("update", "R2", "t"),
    ]


def test_add_never_keeps_a_model_chosen_id() -> None:
    (op,) = parse_proposal('[{"op": "add", "rule_id": "R9", "text": "New rule."}]')
    assert op.rule_id is None


def test_empty_list_and_explicit_no_ops_mean_no_change() -> None:
    assert parse_proposal('{"operations": []}') == []
    assert parse_proposal('[{"op": "keep", "rule_id": "R1"}, {"op": "none"}]') == []


def test_delete_keeps_an_echoed_text_as_a_note() -> None:
    (op,) = parse_proposal('[{"op": "delete", "rule_id": "R1", "text": "old rule"}]')
    assert (op.op, op.rule_id, op.text) == ("delete", "R1", "old rule")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('[{"op": "update", "text": "x"}]', "update needs the rule_id"),
        ('[{"op": "delete", "rule_id": "none"}]', "delete needs the rule_id"),
        ('[{"op": "add"}]', "add needs the rule text"),
        ('[{"op": "update", "rule_id": "R2", "text": "   "}]', "update needs the rule text"),
        ('[{"op": "merge", "text": "x"}]', "unknown op 'merge'"),
        ('[{"op": "delete", "rule_id": "the date rule"}]', "is not a rule id"),
        ('[{"text": "x"}]', "op"),
        ("I would add a rule about dates.", "no JSON"),
        ("<think>still thinking about [R3] and", "nothing but reasoning"),
        ("", "empty reply"),
    ],
)
def test_bad_proposals_raise_with_reason_and_raw(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_proposal(reply)
    assert info.value.raw == reply


def test_structured_completion_reads_replies_the_same_way() -> None:
    """complete_structured validates with the model class, so the tolerance must live in the models."""
    attempt = try_parse_model('see [R1]. ```\n[{"op": "DELETE", "rule_id": "1"}]\n```', Proposal)
    assert isinstance(attempt.value, Proposal) and attempt.value.operations[0].rule_id == "R1"
    bad = try_parse_model('[{"op": "update", "text": "x"}]', Proposal)
    assert bad.value is None and bad.reason is not None and "rule_id" in bad.reason


# --------------------------------------------------------------------------------------------
# Consolidation


def test_consolidation_merges_exact_repeats_and_keeps_question_ids() -> None:
    reply = json.dumps(
        [
            {"op": "update", "rule_id": "3", "text": "Prefer newer.", "question_ids": ["q1"]},
            {"op": "update", "rule_id": "R3", "text": "prefer  newer.", "from": ["q2", "q1"]},
            {"op": "add", "text": "Count sessions.", "questions": "q4"},
        ]
    )
    ops = parse_consolidation(reply)
    assert ops == [
        ProposedOp(op="update", rule_id="R3", text="Prefer newer.", question_ids=("q1", "q2")),
        ProposedOp(op="add", text="Count sessions.", question_ids=("q4",)),
    ]


def test_consolidation_refuses_two_edits_of_one_rule() -> None:
    reply = '[{"op": "update", "rule_id": "R3", "text": "a"}, {"op": "delete", "rule_id": "3"}]'
    with pytest.raises(ParseError, match="two different edits of R3") as info:
        parse_consolidation(reply)
    assert info.value.raw == reply
    # A single question's proposal may carry both: consolidation is where they get resolved.
    assert len(parse_proposal(reply)) == 2


# --------------------------------------------------------------------------------------------
# Reflection


def test_reflection_tolerates_key_spellings_and_number_formats() -> None:
    reply = (
        "<think>ok</think>```json\n"
        '{"Used fragments": ["F1", "[3]", 3], "ignored": "none", "Reasoning": ["Took", "fragment 1."],'
        ' "Decisive point": "missed the later move", "lesson": "  Compare  dates of conflicting fragments. "}\n```'
    )
    r = parse_reflection(reply)
    assert r == Reflection(
        used=[1, 3],
        ignored=[],
        reasoning="Took fragment 1.",
        decisive_point="missed the later move",
        lesson="Compare dates of conflicting fragments.",
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('{"used": [1], "reasoning": "x"}', "lesson"),
        ('{"lesson": "  "}', "lesson is empty"),
        ('{"used": ["the Paris one"], "lesson": "x"}', "not a fragment number"),
        ('{"used": [0], "lesson": "x"}', "start at 1"),
    ],
)
def test_bad_reflections_raise(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_reflection(reply)
    assert info.value.raw == reply


# --------------------------------------------------------------------------------------------
# Schemas


def _variants(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = schema["properties"]["operations"]["items"]["anyOf"]
    return {v["properties"]["op"]["enum"][0]: v for v in items}


def test_proposal_schema_limits_targets_to_existing_rules() -> None:
    variants = _variants(proposal_schema(["R1", "4"], max_ops=3))
    assert set(variants) == {"add", "update", "delete"}
    assert variants["update"]["properties"]["rule_id"]["enum"] == ["R1", "R4"]
    assert variants["delete"]["required"] == ["op", "rule_id", "reason"]
    assert "rule_id" not in variants["add"]["properties"]
    assert proposal_schema(max_ops=3)["properties"]["operations"]["maxItems"] == 3
    assert set(_variants(proposal_schema([]))) == {"add"}  # nothing to update or delete yet
    assert _variants(proposal_schema())["update"]["properties"]["rule_id"]["pattern"] == "^R[0-9]+$"


def test_consolidation_schema_names_the_proposing_questions() -> None:
    variants = _variants(consolidation_schema(["R2"], ["q1", "q2"]))
    assert variants["add"]["properties"]["question_ids"]["items"]["enum"] == ["q1", "q2"]
    assert "question_ids" in variants["delete"]["required"]


def test_reflection_schema_limits_fragment_numbers() -> None:
    schema = reflection_schema(3)
    assert schema["properties"]["used"]["items"]["enum"] == [1, 2, 3]
    assert schema["properties"]["lesson"]["minLength"] == 1
    assert reflection_schema(0)["properties"]["ignored"]["maxItems"] == 0


@pytest.mark.parametrize(
    "schema",
    [
        proposal_schema(),
        proposal_schema(["R1", "R2"], max_ops=4),
        proposal_schema([]),
        consolidation_schema(["R1"], ["q1"]),
        reflection_schema(),
        reflection_schema(5),
        reflection_schema(0),
    ],
)
def test_schemas_compile_to_a_grammar(schema: dict[str, Any]) -> None:
    """The local backend (llama.cpp, an optional extra) turns schemas into GBNF; it must accept ours."""
    assert "$ref" not in json.dumps(schema)
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    assert grammar.json_schema_to_gbnf(json.dumps(schema))


def test_schema_keys_are_model_fields() -> None:
    for model, schema in (
        (Consolidation, consolidation_schema()),
        (Proposal, proposal_schema()),
    ):
        assert set(schema["properties"]) == set(model.model_fields)
        for variant in _variants(schema).values():
            assert set(variant["properties"]) <= set(ProposedOp.model_fields)
    assert set(reflection_schema()["properties"]) == set(Reflection.model_fields)
