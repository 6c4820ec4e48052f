"""Grading rubrics for the LLM judge, one per question type.

Each rubric says what "correct" means for its kind of question, in our own words, following the
LongMemEval grading conventions (contains-the-answer, off-by-one tolerance for counted durations,
latest value wins for updated facts, rubric-style golds for preference questions, "cannot answer"
for unanswerable questions) and mapping LoCoMo's categories onto the closest of them. The rubric
also names what the gold field *is* (an answer, a rubric, a note on what is missing), because a judge
that reads a preference rubric or an abstention note as "the answer" grades the wrong thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from memwise.tasks.question_types import canonical_question_type


@dataclass(frozen=True, slots=True)
class Rubric:
    """What the judge is told: the rule for this kind of question and how the gold is labelled."""

    name: str
    instructions: str
    gold_label: str


_CONTAINS = (
    "Count the response as correct when it states the reference answer or something equivalent to it: "
    "the same fact in other words, units or formats. Working shown along the way and extra context are "
    "fine as long as the answer it arrives at matches. Count it as wrong when it arrives at a different "
    "answer, or gives only part of the reference (for example some of the items of a list, or one of "
    "several facts the reference combines)."
)
_OFF_BY_ONE = (
    "Dates, durations and orderings are compared by meaning, not by wording. When the question asks how "
    "many days, weeks, months or years passed, a count that differs from the reference by one is still "
    "correct (say 13 or 15 where the reference says 14), since whether both ends are counted is a matter "
    "of convention."
)
_UNANSWERABLE = (
    "This question cannot be answered from the conversation history: what it asks for was never said, "
    "or the question mixes up details that were. Count the response as correct only when it declines: it "
    "says it does not know, that the information is missing or was never mentioned, or that the question "
    "does not match what was said (it may point out related information that does exist). Count it as "
    "wrong when it commits to an answer to the question as asked."
)

_RUBRICS: dict[str, Rubric] = {
    "single-session-user": Rubric("single-session-user", _CONTAINS, "Reference answer"),
    "single-session-assistant": Rubric("single-session-assistant", _CONTAINS, "Reference answer"),
    "multi-session": Rubric(
        "multi-session",
        "The answer draws on information spread over several past conversations. " + _CONTAINS,
        "Reference answer",
    ),
    "temporal-reasoning": Rubric("temporal-reasoning", _CONTAINS + " " + _OFF_BY_ONE, "Reference answer"),
    "knowledge-update": Rubric(
        "knowledge-update",
        "Some of the user's information changed over time, and the reference is the most recent value. "
        "Count the response as correct when the answer it gives is this most recent value, even if it "
        "also mentions what was true before. Count it as wrong when it answers with an outdated value, or "
        "leaves it unclear which value is current.",
        "Reference answer (the latest value)",
    ),
    "single-session-preference": Rubric(
        "single-session-preference",
        "The question asks for a suggestion or advice, and a good reply makes use of what the user has "
        "said about their own tastes and circumstances. Instead of an answer, the reference is a rubric "
        "describing such a reply. Count the response as correct when it meets the rubric: it draws on the "
        "user's personal information accurately and fits their stated preferences. It does not need to "
        "touch every point of the rubric. Count it as wrong when it ignores or contradicts those "
        "preferences, or offers generic advice that could be given to anyone.",
        "Rubric for a good response",
    ),
    "multi-hop": Rubric(
        "multi-hop",
        "The answer combines several pieces of information from different parts of the conversation, and "
        "the reference may be a list. Count the response as correct when it covers every part of the "
        "reference, in any order and wording; further compatible details do not hurt. Count it as wrong "
        "when it leaves out a part of the reference or contradicts it.",
        "Reference answer",
    ),
    "temporal": Rubric(
        "temporal",
        "The question is about when something happened, how long it lasted, or what came first. Count "
        "the response as correct when it points to the same time as the reference, at the reference's "
        "level of detail, in any format ('7 May 2023', 'May 7th, 2023' and '2023-05-07' are the same). A "
        "relative phrase is fine when it pins down the same time (such as 'the week before 9 June 2023'). "
        + _OFF_BY_ONE
        + " Count it as wrong when it points to a different time, or is too vague to identify the "
        "reference time.",
        "Reference answer",
    ),
    "open-domain": Rubric(
        "open-domain",
        "Answering takes inference or common-sense knowledge beyond what was said outright. The reference "
        "states the expected conclusion, sometimes followed by a reason after a semicolon. Count the "
        "response as correct when it reaches the same conclusion (the same yes or no, the same choice, "
        "the same kind of trait); its reasoning may differ, and hedging such as 'probably' is fine. "
        "Count it as wrong when it reaches a different conclusion, or none.",
        "Reference answer",
    ),
    "single-hop": Rubric("single-hop", _CONTAINS, "Reference answer"),
    "generic": Rubric("generic", _CONTAINS, "Reference answer"),
}
_ABSTENTION = Rubric("abstention", _UNANSWERABLE, "Note on what is missing")


def select_rubric(question_type: str | int, *, abstention: bool = False) -> Rubric:
    """The rubric for a question type; unanswerable questions (and LoCoMo category 5) get the abstention one.

    Raises:
        ValueError: an unknown question type.

    Example:
        >>> select_rubric("knowledge-update").name
        'knowledge-update'
        >>> select_rubric("knowledge-update", abstention=True).name
        'abstention'
        >>> select_rubric(5).name
        'abstention'
    """
    kind = canonical_question_type(question_type)
    if abstention or kind == "adversarial":
        return _ABSTENTION
    return _RUBRICS[kind]
