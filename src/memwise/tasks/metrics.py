"""Lexical answer metrics (exact match, token F1) and the metric protocol every scorer follows.

The normalisation is SQuAD's (lowercase, no punctuation, no articles, single spaces) plus a little
care for numbers, because memory questions are full of dates, counts and amounts: ``1,000`` stays
one number, ``3.5`` keeps its decimal point, ``7th`` reads as ``7`` (so "May 7th" matches "7 May"),
and number words up to ninety-nine become digits ("two weeks" matches "2 weeks").

Multi-answer golds (LoCoMo's multi-hop lists, "pottery, camping, painting") follow LoCoMo's own
scorer: both sides are split on commas, each gold item takes the F1 of its best-matching predicted
item, and the item scores are averaged. Missing items cost recall; extra predicted items cost
nothing beyond each item's own precision. Unlike LoCoMo we do not stem words (no Porter stemmer),
so "camped" and "camping" do not match and scores are slightly stricter.

A :class:`Metric` returns a :class:`Score` with textual feedback (GEPA's score-with-feedback), so an
optimiser can reflect on *why* an answer scored as it did, not only on the number.
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from memwise.tasks.question_types import canonical_question_type

_ARTICLES = frozenset({"a", "an", "the"})
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_THOUSANDS_SEP = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_APOSTROPHES = re.compile(r"['\u2018\u2019`]")
_STRAY_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCT = re.compile(r"[^\w\s.]|_")
_LIST_SPLIT = re.compile(r"(?<!\d),|,(?!\d)")
_LIST_JOINER = re.compile(r"^(?:and|or)\s+", re.IGNORECASE)
_FEEDBACK_TOKENS = 12


def _number_words(tokens: list[str]) -> list[str]:
    """Replace number words (0 to 99, "twenty five" included) with digits."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word in _TENS:
            value = _TENS[word]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if 0 < _UNITS.get(nxt, 0) < 10:
                value += _UNITS[nxt]
                i += 1
            out.append(str(value))
        elif word in _UNITS:
            out.append(str(_UNITS[word]))
        else:
            out.append(word)
        i += 1
    return out


def answer_tokens(text: str) -> list[str]:
    """The normalised tokens of an answer (see the module docstring for the rules).

    Example:
        >>> answer_tokens("The Twenty-five  apples, on May 7th!")
        ['25', 'apples', 'on', 'may', '7']
        >>> answer_tokens("It cost $1,250.50 at Café Ren\u00e9's")
        ['it', 'cost', '1250.50', 'at', 'cafe', 'renes']
    """
    decomposed = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    text = _THOUSANDS_SEP.sub("", text)
    text = _ORDINAL.sub(r"\1", text)
    text = _APOSTROPHES.sub("", text)
    text = _PUNCT.sub(" ", _STRAY_DOT.sub(" ", text))
    return _number_words([t for t in text.split() if t not in _ARTICLES])


def normalize_answer(text: str) -> str:
    """An answer reduced to the form that exact match compares.

    Example:
        >>> normalize_answer("  The Eiffel   Tower. ")
        'eiffel tower'
        >>> normalize_answer("two weeks") == normalize_answer("2 Weeks")
        True
    """
    return " ".join(answer_tokens(text))


def split_answers(text: str) -> list[str]:
    """The items of a comma-separated answer; commas inside numbers ("1,000") do not split.

    Example:
        >>> split_answers("pottery, camping, and painting")
        ['pottery', 'camping', 'painting']
        >>> split_answers("1,000 dollars")
        ['1,000 dollars']
    """
    parts = (_LIST_JOINER.sub("", p.strip()) for p in _LIST_SPLIT.split(text))
    return [p for p in parts if p]


def exact_match(pred: str, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold, else 0.0.

    Example:
        >>> exact_match("Paris.", "paris")
        1.0
        >>> exact_match("Paris, France", "Paris")
        0.0
    """
    return float(normalize_answer(pred) == normalize_answer(gold))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # Two empty answers agree; an empty answer to a non-empty gold (or the reverse) shares nothing.
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, gold: str, *, multi_answer: bool = False) -> float:
    """Token-overlap F1 between a prediction and a gold answer.

    With ``multi_answer`` both are split into comma-separated items; each gold item scores the F1 of
    its best-matching predicted item and the result is the mean over gold items (LoCoMo's rule for
    its multi-hop lists).

    Example:
        >>> round(token_f1("a red car", "the red bicycle"), 2)
        0.5
        >>> round(token_f1("pottery", "pottery, camping"), 2)
        0.67
        >>> token_f1("pottery", "pottery, camping", multi_answer=True)
        0.5
        >>> token_f1("hiking, camping, pottery", "pottery, camping", multi_answer=True)
        1.0
    """
    if not multi_answer:
        return _f1(answer_tokens(pred), answer_tokens(gold))
    gold_items = [answer_tokens(g) for g in split_answers(gold)] or [[]]
    pred_items = [answer_tokens(p) for p in split_answers(pred)] or [[]]
    return sum(max(_f1(p, g) for p in pred_items) for g in gold_items) / len(gold_items)


# --------------------------------------------------------------------------------------------
# The metric protocol


@dataclass(frozen=True)
class Score:
    """A score in [0, 1] and the words that explain it, for reflection by an optimiser."""

    value: float
    feedback: str = ""


@runtime_checkable
class Metric(Protocol):
    """Scores one response against its gold answer.

    Async so that LLM judges and lexical metrics share one call path and can be gathered alike.
    ``question_type`` is a LongMemEval type, a LoCoMo category (number or name) or ``generic``.
    """

    async def score(
        self,
        question: str,
        gold: str,
        response: str,
        *,
        question_type: str | int,
        question_id: str | None = None,
        question_date: str | None = None,
    ) -> Score:
        """Grade ``response`` against ``gold`` in [0, 1], with feedback a reflection step can use."""
        ...


class _LexicalMetric(ABC):
    """A :class:`Metric` computed from the words alone: no model call, so grading itself is synchronous."""

    async def score(
        self, question: str, gold: str, response: str, *, question_type: str | int, **_ids_and_dates: str | None
    ) -> Score:
        """Grade with :meth:`grade`; an unknown question type is rejected here, as every metric does.

        The question's id and date (``question_id``, ``question_date``) are accepted and ignored: the
        words alone decide.
        """
        return self.grade(gold, response, canonical_question_type(question_type))

    @abstractmethod
    def grade(self, gold: str, response: str, kind: str) -> Score:
        """Grade ``response`` against ``gold`` for a question of canonical type ``kind``."""


def _listing(tokens: list[str]) -> str:
    shown = ", ".join(tokens[:_FEEDBACK_TOKENS])
    return shown + (f" (+{len(tokens) - _FEEDBACK_TOKENS} more)" if len(tokens) > _FEEDBACK_TOKENS else "")


def _token_feedback(value: float, response: str, gold: str) -> str:
    pred_tokens, gold_tokens = answer_tokens(response), answer_tokens(gold)
    missing = list(dict.fromkeys(t for t in gold_tokens if t not in pred_tokens))
    extra = list(dict.fromkeys(t for t in pred_tokens if t not in gold_tokens))
    parts = [f"token F1 {value:.2f} against the gold answer {gold!r}"]
    if missing:
        parts.append(f"gold words missing from the response: {_listing(missing)}")
    if extra:
        parts.append(f"response words not in the gold: {_listing(extra)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class TokenF1Metric(_LexicalMetric):
    """Token F1 as a :class:`Metric`.

    ``multi_answer=None`` follows LoCoMo: comma-separated items for multi-hop questions only. For
    LoCoMo's open-domain questions the gold's conclusion (before a ``;``) is compared and the reason
    after it is ignored, again as LoCoMo's scorer does.

    Example:
        >>> import asyncio
        >>> s = asyncio.run(TokenF1Metric().score("Where?", "Paris", "paris", question_type="single-hop"))
        >>> s.value
        1.0
    """

    multi_answer: bool | None = None

    def grade(self, gold: str, response: str, kind: str) -> Score:
        """Token F1 against the gold answer (open-domain golds: the part before ``;``)."""
        multi = kind == "multi-hop" if self.multi_answer is None else self.multi_answer
        if kind == "open-domain":
            gold = gold.split(";", 1)[0]
        value = token_f1(response, gold, multi_answer=multi)
        return Score(value, _token_feedback(value, response, gold))


@dataclass(frozen=True)
class ExactMatchMetric(_LexicalMetric):
    """Exact match after normalisation, as a :class:`Metric`.

    Example:
        >>> import asyncio
        >>> asyncio.run(ExactMatchMetric().score("Where?", "Paris", "Rome", question_type="generic")).value
        0.0
    """

    def grade(self, gold: str, response: str, kind: str) -> Score:
        """1.0 when the normalised response equals the normalised gold, else 0.0, with both shown."""
        value = exact_match(response, gold)
        if value:
            return Score(value, f"the response matches the gold answer {gold!r}")
        shown = normalize_answer(response)
        return Score(value, f"normalised response {shown!r} differs from normalised gold {normalize_answer(gold)!r}")
