"""Answering from retrieved memory: a pure prompt builder and the answer record.

The question date always reaches the prompt: temporal questions ("how long ago...", "last week")
cannot be answered without knowing when "now" is, and dropping it was a defect of the reference setup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, cast

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
_DIRECT = "Answer briefly."
_REASONING = (
    "Think step by step: say which fragments matter (by number) and their dates, work out the answer from "
    "them, then end with one final line of the form\nAnswer: <the answer, briefly>"
)

AnswerStyle = Literal["direct", "reasoning"]
"""How the model is asked to answer: briefly, or reasoning step by step before a final ``Answer:`` line."""
ANSWER_STYLES: tuple[AnswerStyle, ...] = ("direct", "reasoning")


@dataclass(frozen=True, slots=True)
class Answer:
    """What :meth:`Memory.answer` returns: the answer and the memories it was given.

    With the ``"reasoning"`` style, ``text`` is the final answer alone and ``reasoning`` the whole reply
    (kept so a wrong answer can be traced); with ``"direct"``, ``reasoning`` is ``None``.
    """

    text: str
    memories: tuple[ScoredRecord, ...]
    usage: Usage = field(default_factory=Usage)
    question_date: str | None = None
    reasoning: str | None = None


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


def check_answer_style(style: str) -> AnswerStyle:
    """``style`` if it is an :data:`AnswerStyle`, else a ConfigError naming the styles.

    Checked where a style enters (config, CLI, API), because a misspelt style would otherwise silently
    fall back to one prompt while the run record claims the other.
    """
    if style not in ANSWER_STYLES:
        raise ConfigError(f"answer style must be one of {', '.join(ANSWER_STYLES)}, got {style!r}")
    return cast(AnswerStyle, style)


_RULE_ID = re.compile(r"^\s*\[?\s*(?:r(?:ule)?)?\s*[-_#:]?\s*(\d+)\s*\]?\s*$", re.IGNORECASE)


def normalize_rule_id(value: str | int) -> str:
    """A rule id in the one spelling the rule set uses: ``R`` and the number.

    Models copy ids back as ``R3``, ``r3``, ``3``, ``[R3]``, ``R-03`` or ``Rule 3``; all mean rule 3.

    Raises:
        ValueError: nothing in ``value`` reads as a rule number.

    Example:
        >>> [normalize_rule_id(v) for v in ("R3", "[r3]", "3", 3, "Rule 03")]
        ['R3', 'R3', 'R3', 'R3', 'R3']
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a rule id must be text or a number, got {type(value).__name__}")
    match = _RULE_ID.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a rule id (expected R<number>, e.g. R3)")
    number = int(match.group(1))
    if number < 1:
        raise ValueError(f"{value!r} is not a rule id: rule numbers start at 1")
    return f"R{number}"


def render_rules(rules: Mapping[str, str] | Sequence[str]) -> list[str]:
    """Rules as the answer prompt shows them: ``[R3] text``, one line each, in the order given.

    A mapping keeps its ids (a trained rule set's ``R3`` stays ``R3``, so what a proposal named is what
    the model reads); a plain list of texts is numbered ``R1..Rn``. Either way the prompt looks the same
    whether it serves a rollout, a validation answer or ``Memory.answer``.

    Raises:
        ValueError: a mapping key that is not a rule id.

    Example:
        >>> render_rules({"R3": "Use the  question date."})
        ['[R3] Use the question date.']
        >>> render_rules(["Prefer newer fragments."])
        ['[R1] Prefer newer fragments.']
    """
    pairs = rules.items() if isinstance(rules, Mapping) else ((f"R{i}", text) for i, text in enumerate(rules, 1))
    return [f"[{normalize_rule_id(rule_id)}] {neutralize(' '.join(text.split()))}" for rule_id, text in pairs]


def build_answer_messages(
    question: str,
    memories: Sequence[Record],
    *,
    question_date: datetime | str | None = None,
    rules: Mapping[str, str] | Sequence[str] = (),
    style: AnswerStyle = "direct",
) -> list[Message]:
    """The answer prompt over stored records: rendered oldest first, then :func:`build_fragment_answer_messages`.

    ``rules`` is where a learned meta-memory (MetaMem) enters: guidance on how to use the fragments.
    MetaMem's question sets render and order their fragments the same way, so a rule set answers here
    on the prompt it was selected on.

    Example:
        >>> msgs = build_answer_messages("Where does Bob live?", [Record(text="Bob: I moved to Lisbon.")],
        ...                              question_date="2023-07-01")
        >>> "Today is 2023-07-01." in msgs[-1].content
        True
    """
    ordered = sorted(memories, key=lambda r: (r.ts is None, r.ts or 0.0))
    return build_fragment_answer_messages(
        question, [render_for_prompt(r) for r in ordered], question_date=question_date, rules=rules, style=style
    )


def build_fragment_answer_messages(
    question: str,
    fragments: Sequence[str],
    *,
    question_date: datetime | str | None,
    rules: Mapping[str, str] | Sequence[str] = (),
    style: AnswerStyle = "direct",
) -> list[Message]:
    """The one answer prompt: MetaMem rollouts, validation, test, ``metamem answer`` and ``Memory.answer``.

    Rules are selected on the prompt they will serve in only if every path builds it here; a second
    builder had drifted (rules as ``- text``, another heading), so rules were tried on one prompt and
    served on another.

    Every fragment and the question are fenced (:func:`~memwise.llm.untrusted.fence`): a stored memory
    cannot close its block, so it cannot forge a section, a rule or a second question. Rules are shown
    by :func:`render_rules`, one line each, and cannot open a fence either. Fragments are shown in the
    order given and numbered per prompt (``<memory n="1">``); callers keep the mapping from numbers to
    store ids. ``style`` ``"reasoning"`` asks for step-by-step reasoning ending in an ``Answer:`` line
    (read back by :func:`final_answer`); ``"direct"`` asks for a brief answer.

    Raises:
        ConfigError: an unknown ``style``.

    Example:
        >>> msgs = build_fragment_answer_messages("Where?", ["2023-05-01 Monday Bob moved to Lisbon."],
        ...                                       question_date=None, rules={"R1": "Prefer newer fragments."})
        >>> '<memory n="1">2023-05-01 Monday Bob moved to Lisbon.</memory>' in msgs[-1].content
        True
        >>> "[R1] Prefer newer fragments." in msgs[-1].content
        True
    """
    check_answer_style(style)
    lines = [fence("memory", text, attrs={"n": i}) for i, text in enumerate(fragments, start=1)]
    lines = lines or ["(no memories found)"]
    parts = []
    when = format_question_date(question_date)
    if when:
        parts.append(f"Today is {neutralize(one_line(when))}.")
    parts.append("Memory fragments:\n" + "\n".join(lines))
    if rule_lines := render_rules(rules):
        parts.append("How to use the fragments:\n" + "\n".join(neutralize(one_line(r)) for r in rule_lines))
    parts.append(f"Question: {fence('question', question)}\n{_REASONING if style == 'reasoning' else _DIRECT}")
    return [Message("system", _SYSTEM), Message("user", "\n\n".join(parts))]


_ANSWER_LINE = re.compile(r"^[\s*_#>-]*(?:final\s+)?answer\s*[:\uff1a][\s*_]*", re.IGNORECASE | re.MULTILINE)


def final_answer(reply: str, style: AnswerStyle = "direct") -> str:
    r"""The answer a judge should see: the whole reply (direct), or what follows the last ``Answer:`` line.

    The judge grades the answer, not the reasoning: a long chain of thought that mentions the gold
    answer on the way to a wrong one must not pass. A reasoning reply without an ``Answer:`` line
    (a small model that ran out of tokens or forgot the format) gives its last non-empty line, the
    closest thing to a conclusion it wrote. Pure.

    Example:
        >>> final_answer("Fragment 2 is newer (2023-06-01).\n**Answer:** Lisbon", "reasoning")
        'Lisbon'
        >>> final_answer("Fragments 1 and 3 matter.\nSo it was 3 days.", "reasoning")
        'So it was 3 days.'
        >>> final_answer("  Lisbon. ")
        'Lisbon.'
    """
    text = reply.strip()
    if style == "direct":
        return text
    marks = list(_ANSWER_LINE.finditer(text))
    if marks:
        answer = text[marks[-1].end() :].strip().strip("*_").strip()
        if answer:
            return answer
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
