"""The question types of the memory benchmarks, resolved in one place.

LongMemEval names its types with strings (``temporal-reasoning``); LoCoMo numbers its categories
(``1`` to ``5``) and papers name them in words. The judge picks a rubric and the token metrics pick
their multi-answer handling from the type, so both must agree on one spelling: a typo must fail loudly
instead of quietly falling back to a default rubric that grades the wrong thing.
"""

from __future__ import annotations

LONGMEMEVAL_TYPES: tuple[str, ...] = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "temporal-reasoning",
    "knowledge-update",
)
# The numbering of the official LoCoMo file (category 5 holds the unanswerable, adversarial questions).
LOCOMO_CATEGORIES: dict[int, str] = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}
GENERIC = "generic"
KNOWN_TYPES: tuple[str, ...] = (*LONGMEMEVAL_TYPES, *LOCOMO_CATEGORIES.values(), GENERIC)

ABSTENTION_SUFFIX = "_abs"


def canonical_question_type(question_type: str | int) -> str:
    """The canonical name of a question type: LongMemEval names, LoCoMo names, or ``generic``.

    LoCoMo categories may be given as numbers (``2`` or ``"2"``). Case, surrounding space and
    underscores are forgiven, since dataset files and command lines spell them differently.

    Raises:
        ValueError: an unknown type; the message lists the known ones.

    Example:
        >>> canonical_question_type(1)
        'multi-hop'
        >>> canonical_question_type(" Temporal_Reasoning ")
        'temporal-reasoning'
        >>> canonical_question_type("4")
        'single-hop'
    """
    if isinstance(question_type, int) and not isinstance(question_type, bool):
        name = LOCOMO_CATEGORIES.get(question_type)
        if name is None:
            raise ValueError(f"unknown LoCoMo category {question_type}; known: {sorted(LOCOMO_CATEGORIES)}")
        return name
    if not isinstance(question_type, str):
        raise ValueError(f"a question type is a name or a LoCoMo category number, not {question_type!r}")
    text = question_type.strip().lower().replace("_", "-").replace(" ", "-")
    if text.isdigit():
        return canonical_question_type(int(text))
    if text in KNOWN_TYPES:
        return text
    raise ValueError(f"unknown question type {question_type!r}; known: {', '.join(KNOWN_TYPES)} or LoCoMo 1-5")


def is_abstention(
    question_id: str | None = None, *, question_type: str | int | None = None, flag: bool = False
) -> bool:
    """Whether a question is meant to be unanswerable.

    LongMemEval marks these by an id ending in ``_abs``; LoCoMo puts them in category 5.

    Example:
        >>> is_abstention("gpt4_2655b836_abs")
        True
        >>> is_abstention("q1", question_type=5)
        True
        >>> is_abstention("q1", question_type="multi-session")
        False
    """
    if flag or (question_id is not None and question_id.endswith(ABSTENTION_SUFFIX)):
        return True
    return question_type is not None and canonical_question_type(question_type) == "adversarial"
