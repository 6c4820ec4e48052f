"""Fact extraction for one topic segment: the prompt, the reply's shape, and its checks against the segment.

The prompt is short on purpose: the embedded model (SmolLM2-135M, 4k context) loses the thread in long
instructions, so the rules fit in a few lines and the JSON schema does the rest. The schema is built per
segment: ``source_ids`` may only be one of the segment's turn labels and ``speaker`` one of its speakers,
so a backend that constrains decoding cannot cite a turn that is not there, and the fact count is capped
so a model stuck in a loop stops early.

Turns are shown under per-prompt labels ``T1..Tn`` (:func:`turn_labels`), never under their dataset ids:
LongMemEval names its evidence sessions ``answer_...``, and a model that reads that learns which turns
are the gold evidence. :func:`check_facts` maps the labels a reply cites back to the turn ids. Each turn
is fenced (``<turn id="T1">...</turn>``) so its text cannot forge other turns or instructions.

Relative dates are resolved by the model, but it is handed the arithmetic ("yesterday = ...") because a
135M model cannot subtract days; it only has to copy.

Checks after parsing never discard a fact silently: every repair is counted in :class:`FactCheck`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from memwise.facts.types import Turn
from memwise.llm.base import ChatModel, ChatRequest, Message
from memwise.llm.structured import complete_structured, parse_model
from memwise.llm.untrusted import data_notice, fence
from memwise.runs.ledger import Ledger

STAGE = "extract"
MAX_TURN_CHARS = 600
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters

SYSTEM = (
    "You turn a conversation into memory facts. Each fact is one short standalone sentence about one thing. "
    "Use people's names, never pronouns. Write dates as absolute dates, worked out from the session date. "
    "Skip greetings and small talk. Cite the ids (T1, T2, ...) of the turns each fact comes from. "
    "Reply with JSON only. " + data_notice("turn")
)


class ExtractedFact(BaseModel):
    """One fact as the model states it; checked against the segment by :func:`check_facts`."""

    text: str
    speaker: str = ""
    source_ids: list[str] = Field(default_factory=list)


class Extraction(BaseModel):
    """The model's whole reply for one segment."""

    facts: list[ExtractedFact]


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact that passed the checks: non-empty text, a segment speaker, sources within the segment."""

    text: str
    speaker: str
    source_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FactCheck:
    """The usable facts of one reply and a count of every repair made to get them."""

    facts: tuple[Fact, ...]
    rejected: int = 0
    dropped_source_ids: int = 0
    unsourced: int = 0
    speaker_fixed: int = 0
    duplicates: int = 0


# --------------------------------------------------------------------------------------------
# Prompt


def _day(when: datetime) -> str:
    return f"{when:%A} {when.day} {when:%B %Y}"


def date_line(session_time: datetime | None) -> str:
    """The session date and the relative dates a conversation most often uses, already worked out.

    Example:
        >>> date_line(datetime(2023, 5, 8, 13, 56))
        'Session date: Monday 8 May 2023 (yesterday = Sunday 7 May 2023; last week = the week of 1 May 2023).'
    """
    if session_time is None:
        return "Session date: unknown (keep relative dates as they are)."
    yesterday = session_time - timedelta(days=1)
    last_week = session_time - timedelta(days=session_time.weekday() + 7)
    return (
        f"Session date: {_day(session_time)} (yesterday = {_day(yesterday)}; "
        f"last week = the week of {last_week.day} {last_week:%B %Y})."
    )


def turn_labels(turns: Sequence[Turn]) -> dict[str, str]:
    """Per-prompt label -> turn id, ``T1`` for the first distinct id of the segment and so on.

    Example:
        >>> turn_labels([Turn("answer_x:1", "Ann", "hi", "s1", 0), Turn("answer_x:2", "Bo", "yo", "s1", 1)])
        {'T1': 'answer_x:1', 'T2': 'answer_x:2'}
    """
    return {f"T{i}": turn_id for i, turn_id in enumerate(dict.fromkeys(t.id for t in turns), start=1)}


def render_turn(turn: Turn, label: str, max_chars: int = MAX_TURN_CHARS) -> str:
    """``<turn id="T1">Speaker: text</turn>``, long turns cut so one pasted essay cannot fill the context."""
    text = " ".join(turn.text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return fence("turn", f"{turn.speaker}: {text}", attrs={"id": label})


def build_extraction_messages(
    turns: Sequence[Turn], *, session_time: datetime | None, max_turn_chars: int = MAX_TURN_CHARS
) -> list[Message]:
    """The extraction prompt for one segment (pure: the date comes in as an argument)."""
    if not turns:
        raise ValueError("build_extraction_messages needs at least one turn")
    label_of = {turn_id: label for label, turn_id in turn_labels(turns).items()}
    lines = [date_line(session_time), "", "Conversation:"]
    lines.extend(render_turn(turn, label_of[turn.id], max_turn_chars) for turn in turns)
    lines.append("")
    lines.append('Reply as {"facts": [{"text": "...", "speaker": "...", "source_ids": ["T1"]}]}')
    return [Message("system", SYSTEM), Message("user", "\n".join(lines))]


def extraction_schema(turns: Sequence[Turn], *, max_facts: int | None = None) -> dict[str, Any]:
    """A JSON schema for this segment's reply: turn labels and speakers limited to the segment's own.

    Inlined (no ``$defs``) and fully ``required`` so grammar-constrained decoders handle it and every
    fact carries its sources. ``max_facts`` defaults to two per turn.
    """
    ids = list(turn_labels(turns))
    speakers = list(dict.fromkeys(turn.speaker for turn in turns))
    fact = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "speaker": {"type": "string", "enum": speakers},
            "source_ids": {"type": "array", "items": {"type": "string", "enum": ids}, "minItems": 1},
        },
        "required": ["text", "speaker", "source_ids"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"facts": {"type": "array", "items": fact, "maxItems": max_facts or 2 * len(turns)}},
        "required": ["facts"],
        "additionalProperties": False,
    }


def build_extraction_request(
    turns: Sequence[Turn], *, session_time: datetime | None, max_tokens: int = 512, seed: int | None = 0
) -> ChatRequest:
    """The whole request: prompt, segment schema, greedy decoding."""
    return ChatRequest(
        messages=tuple(build_extraction_messages(turns, session_time=session_time)),
        max_tokens=max_tokens,
        temperature=0.0,
        seed=seed,
        json_schema=extraction_schema(turns),
        schema_name="Extraction",
    )


# --------------------------------------------------------------------------------------------
# Parsing and checks


def parse_extraction(text: str) -> Extraction:
    """The reply as an :class:`Extraction`; raises ParseError(raw=text) when it is not one."""
    return parse_model(text, Extraction)


def check_facts(extraction: Extraction, turns: Sequence[Turn]) -> FactCheck:
    """Hold each fact to the segment it came from, repairing what can be repaired and counting it.

    The reply cites the prompt's labels (``T1``...); they are mapped back to the turns' own ids here, so
    a :class:`Fact` carries dataset ids while the model never saw them. A cited dataset id counts as
    outside the segment, since the prompt never showed one.

    - empty text, or not a statement (fewer than two words of letters: a bare turn id such as
      ``"T1"``, which the small model likes to copy): dropped and counted in ``rejected``;
    - source labels outside the segment: removed from the fact and counted in ``dropped_source_ids``;
    - no valid source left: the fact is kept and attributed to every turn of the segment, counted in
      ``unsourced``. It was said somewhere in these turns, so segment-level provenance is still true,
      and dropping it would lose what a weak model did get right;
    - a speaker who is not in the segment: replaced by the speaker of the fact's first source turn
      (``speaker_fixed``);
    - the same text twice: merged, sources united (``duplicates``).

    Example:
        >>> t = [Turn("D1:1", "Ann", "I moved to Oslo.", "s1", 0)]
        >>> raw = Extraction(facts=[ExtractedFact(text="Ann moved to Oslo.", speaker="ann", source_ids=["T9"])])
        >>> check = check_facts(raw, t)
        >>> check.facts[0], check.dropped_source_ids, check.unsourced
        (Fact(text='Ann moved to Oslo.', speaker='Ann', source_ids=('D1:1',)), 1, 1)
    """
    turn_of = turn_labels(turns)
    order = {turn.id: i for i, turn in enumerate(turns)}
    speaker_of = {turn.id: turn.speaker for turn in turns}
    speakers = {turn.speaker.casefold(): turn.speaker for turn in turns}
    all_ids = tuple(order)
    merged: dict[str, Fact] = {}
    rejected = dropped = unsourced = fixed = duplicates = 0
    for item in extraction.facts:
        text = " ".join(item.text.split())
        if len(_WORD.findall(text)) < 2:
            rejected += 1
            continue
        cited = list(dict.fromkeys(label.strip().upper() for label in item.source_ids))
        valid = sorted({turn_of[label] for label in cited if label in turn_of}, key=order.__getitem__)
        dropped += sum(1 for label in cited if label not in turn_of)
        if not valid:
            unsourced += 1
            valid = list(all_ids)
        speaker = speakers.get(item.speaker.strip().casefold())
        if speaker is None:
            speaker = speaker_of[valid[0]]
            fixed += 1
        key = text.casefold()
        if key in merged:
            duplicates += 1
            both = set(merged[key].source_ids) | set(valid)
            merged[key] = Fact(merged[key].text, merged[key].speaker, tuple(sorted(both, key=order.__getitem__)))
        else:
            merged[key] = Fact(text, speaker, tuple(valid))
    return FactCheck(tuple(merged.values()), rejected, dropped, unsourced, fixed, duplicates)


async def extract_facts(
    llm: ChatModel,
    turns: Sequence[Turn],
    *,
    session_time: datetime | None,
    ledger: Ledger | None = None,
    max_tokens: int = 512,
) -> FactCheck:
    """Ask ``llm`` for the segment's facts (one repair round on a bad reply) and check them.

    Raises:
        ParseError: the reply and its repair did not parse (already counted in ``ledger``).
        LLMError: the backend failed.
    """
    request = build_extraction_request(turns, session_time=session_time, max_tokens=max_tokens)
    extraction = await complete_structured(llm, request, Extraction, ledger=ledger, stage=STAGE)
    return check_facts(extraction, turns)
