"""Small text rules the retriever applies to queries and to turns before indexing.

Kept apart from the scoring code so each rule can be read and tested on its own. Nothing here calls
a model: these are the cheap cues (names, dates) that a question and its evidence tend to share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

# Fixed English names: strftime("%B") follows the process locale, and index text must not change
# with the machine that built it.
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def day_label(when: datetime) -> str:
    """``8 May 2023``: the date as people write it, so words like "May" or "2023" in a question match it."""
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def mentioned_names(text: str, names: Iterable[str]) -> tuple[str, ...]:
    """The names (whole words, any case) that ``text`` mentions, in the order given, each once.

    "Caroline's" mentions Caroline; "Carolines" and "Mel" (for Melanie) do not: a near-miss costs less
    here than a false hit, since a mention turns into a boost for that speaker's turns.
    """
    found: list[str] = []
    for name in dict.fromkeys(names):
        if not name or not name.strip():
            continue
        if re.search(rf"(?<!\w){re.escape(name.strip())}(?!\w)", text, re.IGNORECASE):
            found.append(name)
    return tuple(found)


def without_names(text: str, names: Iterable[str]) -> str:
    """``text`` with every whole-word mention of ``names`` blanked out (possessive ``'s`` left behind).

    The lexical channel uses this for speaker names: index text starts with the speaker, and FTS5
    statistics span all users, so a speaker's name is a rare, heavily weighted word that would
    rank every turn of that speaker above a turn that shares the question's content words. Who
    spoke is the speaker boost's business; bm25 should match what was said.
    """
    for name in dict.fromkeys(names):
        if name and name.strip():
            text = re.sub(rf"(?<!\w){re.escape(name.strip())}(?!\w)", " ", text, flags=re.IGNORECASE)
    return text


# "has/have" asks about what built up over time ("What has Melanie painted?", "Which cities has John
# been to?"); followed by "ago", "since" or "when" ("Has Ann moved since May?") it asks about one time.
_PERFECT = re.compile(r"\b(?:has|have)\b(?!.*\b(?:ago|since|when)\b)", re.IGNORECASE)
_MANY = re.compile(r"\bhow many\b|\bboth\b|\bin common\b", re.IGNORECASE)


def asks_for_many(question: str) -> bool:
    """Whether ``question`` likely gathers several things said at different times.

    Such questions ("What has Melanie painted?", "How many games has John won?", "What do Jon and
    Gina both like?") have their evidence spread over sessions, while the session and context steps
    pull the top of the ranking into one session; the retriever spreads those questions' results
    over sessions instead (:func:`~memwise.facts.retrieval_scores.spread_order`).

    Example:
        >>> asks_for_many("Which cities has John been to?"), asks_for_many("Has Ann moved since May?")
        (True, False)
    """
    return bool(_PERFECT.search(question) or _MANY.search(question))
