"""Answering from retrieved memory: a pure prompt builder and the answer record.

The question date always reaches the prompt: temporal questions ("how long ago...", "last week")
cannot be answered without knowing when "now" is, and dropping it was a defect of the reference setup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from memwise.exceptions import ConfigError
from memwise.facts.readers import parse_datetime
from memwise.facts.units import render_for_prompt, to_epoch
from memwise.llm.base import Message, Usage
from memwise.llm.untrusted import data_notice, fence, neutralize, one_line
from memwise.store.base import Record, ScoredRecord

_SYSTEM = (
    "You answer questions about a user's past conversations using only the memory fragments given. "
    "Each fragment is one numbered <memory> block that starts with its date and weekday. Fragments may "
    "overlap, be out of order or be outdated; when they disagree, trust the most recent one unless the "
    "question asks about the past. If the fragments do not contain the answer, say that you do not know. "
    + data_notice("memory", "question")
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What :meth:`Memory.answer` returns: the reply and the memories it was given."""

    text: str
    memories: tuple[ScoredRecord, ...]
    usage: Usage = field(default_factory=Usage)
    question_date: str | None = None


def format_question_date(when: datetime | str | None) -> str | None:
    """A question date as the prompt shows it, e.g. ``2023-07-01 (Saturday)``; strings pass through."""
    if when is None:
        return None
    if isinstance(when, str):
        return when
    return when.strftime("%Y-%m-%d (%A)")


def question_time_bound(question_date: datetime | str | None) -> float | None:
    """The exclusive upper bound on memory event times (epoch seconds) for a question asked at ``question_date``.

    A memory at exactly the question time is kept, so the bound is the next float after it; ``None``
    (no question date, as in LoCoMo) means no bound. A string is read as a LoCoMo, LongMemEval or ISO
    date, because a date that cannot be read cannot be honoured and must not silently let later
    memories through.

    Raises:
        ConfigError: a string that does not read as a date.

    Example:
        >>> bound = question_time_bound("2023/05/30 (Tue) 23:40")
        >>> bound > to_epoch(datetime(2023, 5, 30, 23, 40)) and bound == math.nextafter(1685490000.0, math.inf)
        True
        >>> question_time_bound(None) is None
        True
    """
    if question_date is None:
        return None
    when = question_date
    if isinstance(when, str):
        try:
            when = parse_datetime(when)
        except ValueError as exc:
            raise ConfigError(
                f"question date {question_date!r} is not a date ({exc}); pass a datetime or a LoCoMo, "
                "LongMemEval or ISO date so that memories after it can be left out"
            ) from None
    epoch = to_epoch(when)
    assert epoch is not None
    return math.nextafter(epoch, math.inf)


def build_answer_messages(
    question: str,
    memories: Sequence[Record],
    *,
    question_date: datetime | str | None = None,
    rules: Sequence[str] = (),
) -> list[Message]:
    """The chat messages for answering ``question`` from ``memories`` (oldest first).

    ``rules`` is where a learned meta-memory (MetaMem) enters: guidance on how to use the fragments.

    Example:
        >>> msgs = build_answer_messages("Where does Bob live?", [Record(text="Bob: I moved to Lisbon.")],
        ...                              question_date="2023-07-01")
        >>> "Today is 2023-07-01." in msgs[-1].content
        True
    """
    ordered = sorted(memories, key=lambda r: (r.ts is None, r.ts or 0.0))
    return build_fragment_answer_messages(
        question,
        [render_for_prompt(r) for r in ordered],
        question_date=question_date,
        rule_lines=[f"- {rule}" for rule in rules],
        oldest_first=True,
    )


def build_fragment_answer_messages(
    question: str,
    fragments: Sequence[str],
    *,
    question_date: datetime | str | None,
    rule_lines: Sequence[str] = (),
    oldest_first: bool = False,
) -> list[Message]:
    """The answer prompt over fragments already rendered as text, shown in the order given.

    Every fragment and the question are fenced (:func:`~memwise.llm.untrusted.fence`): a stored memory
    cannot close its block, so it cannot forge a section, a rule or a second question. Rule lines are
    flattened to one line each and cannot open a fence either. Fragments are numbered per prompt
    (``<memory n="1">``); callers keep the mapping from numbers to store ids.

    Shared by :func:`build_answer_messages` (records) and MetaMem rollouts (fragments stored as
    strings), so that rules learned on rollouts are tried on exactly the prompt they will serve in.
    ``rule_lines`` are shown verbatim: the caller decides whether they carry ids. ``oldest_first``
    only labels the list; say it when it is true, because a model leans on order for "latest" questions.

    Example:
        >>> msgs = build_fragment_answer_messages("Where?", ["2023-05-01 Monday Bob moved to Lisbon."],
        ...                                       question_date=None, rule_lines=["[R1] Prefer newer fragments."])
        >>> '<memory n="1">2023-05-01 Monday Bob moved to Lisbon.</memory>' in msgs[-1].content
        True
        >>> "[R1] Prefer newer fragments." in msgs[-1].content
        True
    """
    lines = [fence("memory", text, attrs={"n": i}) for i, text in enumerate(fragments, start=1)]
    lines = lines or ["(no memories found)"]
    parts = []
    when = format_question_date(question_date)
    if when:
        parts.append(f"Today is {neutralize(one_line(when))}.")
    heading = "Memory fragments (oldest first):" if oldest_first else "Memory fragments:"
    parts.append(heading + "\n" + "\n".join(lines))
    if rule_lines:
        parts.append("How to use the fragments:\n" + "\n".join(neutralize(one_line(r)) for r in rule_lines))
    parts.append(f"Question: {fence('question', question)}\nAnswer briefly.")
    return [Message("system", _SYSTEM), Message("user", "\n\n".join(parts))]
