"""The LLM judge: grades a response against the gold with the rubric for its question type.

Three parts, as every LLM step in memwise: :func:`build_judge_messages` (pure), one model call, and
:func:`parse_verdict` (pure). :class:`LLMJudge` adds what the public reference setup lacked:

- the question date reaches the judge, so relative times ("last Tuesday") can be checked;
- reasoning blocks are removed before the verdict is read (a ``<think>`` block that says "no" on its
  first line used to be taken as the verdict), and a reply without one clear verdict is an error,
  never a silent "wrong";
- a reply without a verdict is retried with a new seed, each miss is counted in the run ledger, and a
  question that never gets a verdict raises :class:`JudgeError` for the caller to count as a judge
  failure;
- calls are plain coroutines, so many questions are judged at once (:meth:`LLMJudge.score_many`).

The verdict vocabulary is one word, ``yes`` (correct) or ``no`` (wrong).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from memwise._aio import gather_or_cancel
from memwise.exceptions import ParseError
from memwise.llm.base import ChatModel, ChatRequest, Message
from memwise.llm.structured import strip_reasoning
from memwise.llm.untrusted import data_notice, fence, neutralize, one_line
from memwise.runs.ledger import Ledger
from memwise.tasks.metrics import Score
from memwise.tasks.question_types import is_abstention
from memwise.tasks.rubrics import select_rubric

_SYSTEM = (
    "You grade the replies of a chat assistant that remembers its earlier conversations with a user. "
    "You get the question the assistant was asked, a reference to grade against, and the assistant's "
    "response. Decide only whether the response is correct under the grading rule you are given: do not "
    "reward style or length, and do not let your own knowledge overrule the reference. "
    + data_notice("question", "reference", "response")
)
_ASK = "Is the response correct under the rule above? Reply with one word: yes or no."

# Light formatting a model may put around its verdict: markdown, quotes, brackets, XML-ish tags.
_DECORATION = re.compile(r"</?[A-Za-z_][\w-]*>|[*_`#>\"'\u201c\u201d\u2018\u2019\[\]()]")
_LABEL = r"(?:(?:final|my)\s+)?(?:verdict|answer|judge?ment|decision|grade|result)"
_TRAILING_LABEL = r"(?:verdict|final\s+answer|judge?ment|decision)"
_EXACT = re.compile(rf"^(?:{_LABEL}\s*(?:is\s*)?[:=\-]?\s*)?(yes|no)\s*[.!]?$")
_LEADING = re.compile(rf"^(?:{_LABEL}\s*(?:is\s*)?[:=\-]?\s*)?(yes|no)\s*[,.;:!\-\u2013\u2014]\s*\S")
_TRAILING = re.compile(rf"\b{_TRAILING_LABEL}\s*(?:is\s*)?[:=\-]?\s*(yes|no)\s*[.!]?$")
_NOTE_CHARS = 400


# --------------------------------------------------------------------------------------------
# Prompt


def build_judge_messages(
    question: str,
    gold: str,
    response: str,
    *,
    question_type: str | int,
    question_date: str | None = None,
    abstention: bool = False,
) -> list[Message]:
    """The judge's messages: a system prompt, then the rubric, the case and the yes/no question.

    Raises:
        ValueError: an unknown question type, or an empty gold for an answerable question (a gold lost
            in preprocessing must stop the run, not turn every answer wrong).

    Example:
        >>> msgs = build_judge_messages("Where do I work?", "Acme", "At Acme.", question_type="single-session-user",
        ...                             question_date="2023/05/30 (Tue) 23:40")
        >>> [m.role for m in msgs]
        ['system', 'user']
        >>> "2023/05/30 (Tue) 23:40" in msgs[1].content and msgs[1].content.endswith("yes or no.")
        True
    """
    rubric = select_rubric(question_type, abstention=abstention)
    gold = gold.strip()
    if not gold and rubric.name != "abstention":
        raise ValueError(f"empty gold answer for a {rubric.name} question: {question!r}")
    # The response is another model's reply and the question and gold come from a dataset: each is fenced
    # so that none can close its block and forge a verdict, a rule or another case.
    parts = [f"Grading rule ({rubric.name}): {rubric.instructions}", fence("question", question, one_line_text=False)]
    if question_date:
        parts.append(
            f"The question was asked on {neutralize(one_line(question_date))}; read relative times in the "
            "reference and the response against this date."
        )
    parts.append(f"{rubric.gold_label}:\n{fence('reference', gold or '(none given)', one_line_text=False)}")
    parts.append(fence("response", response, one_line_text=False))
    parts.append(_ASK)
    return [Message("system", _SYSTEM), Message("user", "\n\n".join(parts))]


# --------------------------------------------------------------------------------------------
# Verdict


def _clean(line: str) -> str:
    return _DECORATION.sub("", line).strip().lstrip("-\u2022").strip().lower()


def _agreed(found: list[str], tier: str) -> tuple[bool | None, str]:
    if len(set(found)) > 1:
        return None, f"conflicting verdicts ({tier}): {', '.join(found)}"
    return found[0] == "yes", ""


def read_verdict(text: str) -> tuple[bool | None, str]:
    """The verdict in a judge reply, or None and the reason there is none.

    Looks, after removing reasoning blocks, first for lines that are nothing but a verdict (``yes``,
    ``**No.**``, ``Verdict: yes``), then for lines that open with one (``Yes, it names...``) or a last
    line that ends with a labelled one (``... Verdict: no``). The verdicts of the first tier that has
    any must agree.
    """
    if not text.strip():
        return None, "empty reply"
    visible = strip_reasoning(text)
    if not visible:
        return None, "reply holds nothing but reasoning (cut off while thinking?)"
    lines = [c for c in (_clean(line) for line in visible.splitlines()) if c]
    exact = [m.group(1) for m in map(_EXACT.match, lines) if m]
    if exact:
        return _agreed(exact, "verdict lines")
    loose = [m.group(1) for m in map(_LEADING.match, lines) if m]
    if lines and (tail := _TRAILING.search(lines[-1])):
        loose.append(tail.group(1))
    if loose:
        return _agreed(loose, "verdicts within lines")
    return None, "no yes/no verdict found"


def parse_verdict(text: str) -> bool:
    r"""True for a ``yes`` verdict, False for ``no``.

    Raises:
        ParseError: no verdict, or both (``raw`` keeps the reply).

    Example:
        >>> parse_verdict("<think>At first glance no, but the date matches.</think>\n**Yes**")
        True
        >>> parse_verdict("Verdict: no.")
        False
    """
    verdict, reason = read_verdict(text)
    if verdict is None:
        raise ParseError(reason, raw=text)
    return verdict


# --------------------------------------------------------------------------------------------
# Judge


@dataclass(frozen=True)
class Judgement(Score):
    """A judge's ruling; as a :class:`Score` it is worth 1.0 when correct and 0.0 when not.

    ``feedback`` carries any note the judge wrote beside its verdict, for reflection.
    """

    value: float = field(init=False)
    feedback: str = field(init=False)
    correct: bool
    raw: str
    attempts: int = 1

    def __post_init__(self) -> None:
        ruling = "The judge ruled the response correct." if self.correct else "The judge ruled the response wrong."
        visible = strip_reasoning(self.raw)
        lines = [c for c in (_clean(line) for line in visible.splitlines()) if c]
        if lines and not all(_EXACT.match(line) for line in lines):
            note = visible if len(visible) <= _NOTE_CHARS else visible[:_NOTE_CHARS] + "..."
            ruling += f" Its note: {note}"
        object.__setattr__(self, "value", 1.0 if self.correct else 0.0)
        object.__setattr__(self, "feedback", ruling)


class JudgeError(ParseError):
    """The judge gave no usable verdict after every attempt: a judge failure, never a wrong answer."""

    def __init__(self, message: str, *, raw: str, attempts: int, question_id: str | None = None) -> None:
        self.attempts = attempts
        self.question_id = question_id
        super().__init__(message, raw=raw)


@dataclass(frozen=True, slots=True)
class JudgeCase:
    """One response to grade, for :meth:`LLMJudge.score_many`."""

    question: str
    gold: str
    response: str
    question_type: str | int
    question_id: str | None = None
    question_date: str | None = None
    abstention: bool = False


@dataclass(frozen=True)
class LLMJudge:
    """Grades responses with a chat model; a :class:`~memwise.tasks.metrics.Metric`.

    The first call runs at temperature 0. A reply without a verdict is asked again with the next seed
    at ``retry_temperature``: at temperature 0 a deterministic server would repeat the same reply, so
    a retry would be wasted. Each miss is recorded in ``ledger`` (stage ``judge``, kind ``verdict``).

    Example:
        >>> from memwise.testing import ScriptedLLM
        >>> judge = LLMJudge(ScriptedLLM(["<think>hmm, no... wait</think>yes"]))
        >>> import asyncio
        >>> j = asyncio.run(judge.score("Where?", "Paris", "Paris", question_type="single-hop"))
        >>> (j.correct, j.value, j.attempts)
        (True, 1.0, 1)
    """

    llm: ChatModel
    ledger: Ledger | None = None
    max_attempts: int = 3
    max_tokens: int = 4096
    seed: int = 0
    retry_temperature: float = 0.3
    stage: str = "judge"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.retry_temperature < 0:
            raise ValueError(f"retry_temperature must be >= 0, got {self.retry_temperature}")

    def request(self, messages: Sequence[Message], attempt: int) -> ChatRequest:
        """The request for attempt ``attempt`` (0-based): greedy first, then new seeds."""
        return ChatRequest(
            messages=tuple(messages),
            temperature=0.0 if attempt == 0 else self.retry_temperature,
            max_tokens=self.max_tokens,
            seed=self.seed + attempt,
        )

    async def score(
        self,
        question: str,
        gold: str,
        response: str,
        *,
        question_type: str | int,
        question_id: str | None = None,
        question_date: str | None = None,
        abstention: bool = False,
    ) -> Judgement:
        """Grade one response; abstention applies when flagged, for ids ending in ``_abs`` and LoCoMo category 5.

        Raises:
            JudgeError: no verdict after ``max_attempts`` replies.
            ValueError: an unknown question type or an empty gold (see :func:`build_judge_messages`).
            LLMError: the backend failed.
        """
        unanswerable = is_abstention(question_id, question_type=question_type, flag=abstention)
        messages = build_judge_messages(
            question, gold, response, question_type=question_type, question_date=question_date, abstention=unanswerable
        )
        raw, reason = "", ""
        for attempt in range(self.max_attempts):
            sample = (await self.llm.complete(self.request(messages, attempt))).samples[0]
            raw = sample.text
            verdict, reason = read_verdict(raw)
            if verdict is not None:
                return Judgement(correct=verdict, raw=raw, attempts=attempt + 1)
            if sample.finish_reason == "length":
                reason += f" (cut off at max_tokens={self.max_tokens})"
            if self.ledger is not None:
                where = question_id or question[:80]
                detail = f"{where}: attempt {attempt + 1}/{self.max_attempts}: {reason}"
                self.ledger.record_failure(stage=self.stage, kind="verdict", detail=detail, raw=raw)
        raise JudgeError(
            f"no verdict after {self.max_attempts} attempts: {reason}",
            raw=raw,
            attempts=self.max_attempts,
            question_id=question_id,
        )

    async def score_many(self, cases: Sequence[JudgeCase]) -> list[Judgement | JudgeError]:
        """Grade many responses at once; results in input order.

        The judge's backend bounds the calls in flight (the judge role's ``max_concurrency``).

        A case without a verdict yields its :class:`JudgeError` in its place, so one stubborn reply
        does not sink the batch; a backend failure cancels the rest and propagates.
        """

        async def one(case: JudgeCase) -> Judgement | JudgeError:
            try:
                return await self.score(
                    case.question,
                    case.gold,
                    case.response,
                    question_type=case.question_type,
                    question_id=case.question_id,
                    question_date=case.question_date,
                    abstention=case.abstention,
                )
            except JudgeError as exc:
                return exc

        return await gather_or_cancel(*(one(case) for case in cases))
