"""Answering from retrieved memory: a pure prompt builder and the answer record.

The question date always reaches the prompt: temporal questions ("how long ago...", "last week")
cannot be answered without knowing when "now" is, and dropping it was a defect of the reference setup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from memwise.facts.units import render_for_prompt
from memwise.llm.base import Message, Usage
from memwise.store.base import Record, ScoredRecord

_SYSTEM = (
    "You answer questions about a user's past conversations using only the memory fragments given. "
    "Each fragment starts with its date and weekday. Fragments may overlap, be out of order or be "
    "outdated; when they disagree, trust the most recent one unless the question asks about the past. "
    "If the fragments do not contain the answer, say that you do not know."
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
    lines = [f"{i + 1}. {render_for_prompt(r)}" for i, r in enumerate(ordered)] or ["(no memories found)"]
    parts = []
    when = format_question_date(question_date)
    if when:
        parts.append(f"Today is {when}.")
    parts.append("Memory fragments (oldest first):\n" + "\n".join(lines))
    if rules:
        parts.append("How to use the fragments:\n" + "\n".join(f"- {rule}" for rule in rules))
    parts.append(f"Question: {question}\nAnswer briefly.")
    return [Message("system", _SYSTEM), Message("user", "\n\n".join(parts))]
