"""Fact extraction: a pure prompt, a per-segment schema, tolerant parsing, and counted repairs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from memwise.exceptions import ParseError
from memwise.facts.extract import (
    ExtractedFact,
    Extraction,
    build_extraction_messages,
    build_extraction_request,
    check_facts,
    date_line,
    extract_facts,
    extraction_schema,
    parse_extraction,
)
from memwise.facts.types import Turn
from memwise.runs.ledger import Ledger
from memwise.testing import ScriptedLLM

WHEN = datetime(2023, 5, 8, 13, 56)  # a Monday


def turn(i: int, speaker: str, text: str) -> Turn:
    return Turn(f"D1:{i}", speaker, text, "s1", i - 1, WHEN)


TURNS = [
    turn(1, "Caroline", "I went to a support group yesterday."),
    turn(2, "Melanie", "That's great! I painted a lake sunrise last week."),
    turn(3, "Caroline", "Nice. I want to study counseling."),
]


def fact(text: str, speaker: str = "Caroline", *ids: str) -> ExtractedFact:
    return ExtractedFact(text=text, speaker=speaker, source_ids=list(ids))


# -- prompt -------------------------------------------------------------------------------------


def test_prompt_is_pure_and_carries_date_weekday_ids_and_speakers() -> None:
    first = build_extraction_messages(TURNS, session_time=WHEN)
    assert first == build_extraction_messages(TURNS, session_time=WHEN)
    assert [m.role for m in first] == ["system", "user"]
    user = first[1].content
    assert "Monday 8 May 2023" in user and "yesterday = Sunday 7 May 2023" in user
    assert "last week = the week of 1 May 2023" in user
    for label, t in zip(("T1", "T2", "T3"), TURNS, strict=True):
        assert f'<turn id="{label}">{t.speaker}: {t.text}</turn>' in user
    assert "pronouns" in first[0].content and "absolute dates" in first[0].content
    assert "<turn>" in first[0].content and "never instructions" in first[0].content


def test_prompt_and_schema_never_show_dataset_turn_ids_and_replies_map_back() -> None:
    """LongMemEval names evidence sessions ``answer_...``: a prompt that shows it marks the gold turns."""
    turns = [
        Turn("answer_4be1b6b4_1:0", "user", "I adopted a beagle named Max.", "answer_4be1b6b4_1", 0, WHEN),
        Turn("sharegpt_yhP4J_0:1", "assistant", "Congratulations on Max!", "sharegpt_yhP4J_0", 1, WHEN),
    ]
    request = build_extraction_request(turns, session_time=WHEN)
    shown = " ".join(m.content for m in request.messages) + str(request.json_schema)
    assert "answer_" not in shown and "sharegpt" not in shown and "4be1b6b4" not in shown
    item = request.json_schema["properties"]["facts"]["items"]
    assert item["properties"]["source_ids"]["items"]["enum"] == ["T1", "T2"]
    check = check_facts(Extraction(facts=[fact("The user adopted a beagle named Max.", "user", "T1")]), turns)
    assert check.facts[0].source_ids == ("answer_4be1b6b4_1:0",) and check.dropped_source_ids == 0
    # A dataset id was never shown, so citing one is citing something outside the segment.
    check = check_facts(Extraction(facts=[fact("The user adopted a dog.", "user", "answer_4be1b6b4_1:0")]), turns)
    assert check.dropped_source_ids == 1 and check.unsourced == 1


def test_prompt_without_a_date_says_so() -> None:
    assert "unknown" in date_line(None)
    assert "unknown" in build_extraction_messages(TURNS, session_time=None)[1].content


def test_long_turns_are_cut_and_empty_segments_refused() -> None:
    long = turn(4, "Melanie", "word " * 1000)
    user = build_extraction_messages([long], session_time=WHEN, max_turn_chars=100)[1].content
    assert "…" in user and len(user) < 600
    with pytest.raises(ValueError):
        build_extraction_messages([], session_time=WHEN)


def test_schema_limits_ids_and_speakers_to_the_segment() -> None:
    schema = extraction_schema(TURNS)
    item = schema["properties"]["facts"]["items"]
    assert item["properties"]["source_ids"]["items"]["enum"] == ["T1", "T2", "T3"]
    assert item["properties"]["speaker"]["enum"] == ["Caroline", "Melanie"]
    assert item["required"] == ["text", "speaker", "source_ids"]
    assert schema["properties"]["facts"]["maxItems"] == 6
    assert "$defs" not in schema and "$ref" not in str(schema)
    request = build_extraction_request(TURNS, session_time=WHEN)
    assert request.json_schema == schema and request.temperature == 0.0


# -- parsing and checks -------------------------------------------------------------------------


def test_parse_tolerates_fences_and_trailing_commas() -> None:
    reply = (
        'Here:\n```json\n{"facts": [{"text": "Caroline went to a support group.", "speaker": "Caroline",'
        ' "source_ids": ["D1:1"],},]}\n```'
    )
    parsed = parse_extraction(reply)
    assert parsed.facts[0].source_ids == ["D1:1"]


@pytest.mark.parametrize("garbage", ["", "I cannot do that.", '{"facts": "none"}', '{"facts": [{"speaker": 1}]}'])
def test_parse_raises_with_the_raw_reply(garbage: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_extraction(garbage)
    assert info.value.raw == garbage


def test_check_drops_foreign_ids_and_counts_them() -> None:
    raw = Extraction(facts=[fact("Caroline went to a support group on 7 May 2023.", "Caroline", "T1", "T7", "x")])
    check = check_facts(raw, TURNS)
    assert check.facts[0].source_ids == ("D1:1",)
    assert check.dropped_source_ids == 2 and check.unsourced == 0


def test_check_attributes_unsourced_facts_to_the_whole_segment() -> None:
    check = check_facts(Extraction(facts=[fact("Melanie painted a lake sunrise.", "Melanie", "T9")]), TURNS)
    assert check.facts[0].source_ids == ("D1:1", "D1:2", "D1:3")
    assert check.unsourced == 1 and check.dropped_source_ids == 1


def test_check_rejects_empty_and_id_only_texts() -> None:
    raw = Extraction(facts=[fact("   "), fact("T1", "Caroline", "T1"), fact("Caroline studies counseling.")])
    check = check_facts(raw, TURNS)
    assert [f.text for f in check.facts] == ["Caroline studies counseling."]
    assert check.rejected == 2


def test_check_fixes_speakers_and_merges_duplicates() -> None:
    raw = Extraction(
        facts=[
            fact("Caroline  wants to study counseling.", "caroline", "T3"),
            fact("caroline wants to study counseling.", "Bob", "T1"),
            fact("Melanie painted a sunrise.", "", "T2"),
        ]
    )
    check = check_facts(raw, TURNS)
    assert check.facts[0].text == "Caroline wants to study counseling."
    assert check.facts[0].speaker == "Caroline" and check.facts[0].source_ids == ("D1:1", "D1:3")
    assert check.facts[1].speaker == "Melanie"
    assert check.duplicates == 1 and check.speaker_fixed == 2


# -- the model call -----------------------------------------------------------------------------

GOOD = (
    '{"facts": [{"text": "Caroline went to a support group on 7 May 2023.", "speaker": "Caroline", '
    '"source_ids": ["T1"]}]}'
)


async def test_extract_sends_the_segment_schema_and_checks_the_reply() -> None:
    llm = ScriptedLLM([GOOD])
    check = await extract_facts(llm, TURNS, session_time=WHEN)
    assert [f.text for f in check.facts] == ["Caroline went to a support group on 7 May 2023."]
    assert check.facts[0].source_ids == ("D1:1",)
    assert llm.requests[0].json_schema == extraction_schema(TURNS)


async def test_malformed_reply_is_repaired_and_counted(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    llm = ScriptedLLM(["facts: Caroline went somewhere", GOOD])
    check = await extract_facts(llm, TURNS, session_time=WHEN, ledger=ledger)
    assert len(check.facts) == 1 and llm.calls == 2
    assert [f["kind"] for f in ledger.failures("extract")] == ["parse_repaired"]
    ledger.close()


async def test_reply_that_stays_malformed_raises_and_is_counted(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    llm = ScriptedLLM(["nonsense", '{"facts": [{"oops": true}]}'])
    with pytest.raises(ParseError):
        await extract_facts(llm, TURNS, session_time=WHEN, ledger=ledger)
    assert [f["kind"] for f in ledger.failures("extract")] == ["parse"]
    ledger.close()
