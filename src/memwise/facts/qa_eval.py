"""Question answering over the factual memory, scored by an LLM judge and by token F1 / exact match.

Each finished question is appended to a JSONL file at once, so a killed evaluation keeps what it had
and a re-run skips the questions already answered (with the run ledger replaying any model call that
was paid for but not yet written down). Nothing is scored silently: a question whose answer call
failed, or whose judge never gave a verdict, is counted as such in the report, never as "wrong".
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from memwise.exceptions import LLMError, ParseError
from memwise.facts.answer import format_question_date
from memwise.facts.memory import AsyncMemory
from memwise.facts.types import Conversation, Question
from memwise.tasks.judge import LLMJudge
from memwise.tasks.metrics import ExactMatchMetric, TokenF1Metric


@dataclass(frozen=True)
class QAOutcome:
    """One question's answer and scores, as written to the results JSONL."""

    question_id: str
    user_id: str
    category: str
    question: str
    gold: str
    prediction: str | None
    judge_correct: bool | None
    f1: float | None
    exact_match: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    memory_ids: list[str] = field(default_factory=list)
    answer_error: str | None = None
    judge_error: str | None = None


@dataclass(frozen=True)
class QAReport:
    """Aggregates over outcomes; accuracy counts only judged questions and says how many were not."""

    questions: int
    judged: int
    accuracy: float | None
    accuracy_by_category: dict[str, float]
    f1: float | None
    f1_by_category: dict[str, float]
    exact_match: float | None
    answer_failures: int
    judge_failures: int
    tokens_per_question: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written next to the per-question results."""
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(outcomes: Sequence[QAOutcome]) -> QAReport:
    """The report over a set of outcomes (pure)."""
    judged = [o for o in outcomes if o.judge_correct is not None]
    by_cat: dict[str, list[QAOutcome]] = defaultdict(list)
    for o in outcomes:
        by_cat[o.category].append(o)
    acc_by_cat = {
        cat: statistics.fmean(1.0 if o.judge_correct else 0.0 for o in items if o.judge_correct is not None)
        for cat, items in sorted(by_cat.items())
        if any(o.judge_correct is not None for o in items)
    }
    f1_by_cat = {
        cat: statistics.fmean(o.f1 for o in items if o.f1 is not None)
        for cat, items in sorted(by_cat.items())
        if any(o.f1 is not None for o in items)
    }
    return QAReport(
        questions=len(outcomes),
        judged=len(judged),
        accuracy=_mean([1.0 if o.judge_correct else 0.0 for o in judged]),
        accuracy_by_category=acc_by_cat,
        f1=_mean([o.f1 for o in outcomes if o.f1 is not None]),
        f1_by_category=f1_by_cat,
        exact_match=_mean([o.exact_match for o in outcomes if o.exact_match is not None]),
        answer_failures=sum(1 for o in outcomes if o.answer_error),
        judge_failures=sum(1 for o in outcomes if o.judge_error),
        tokens_per_question=_mean([o.prompt_tokens + o.completion_tokens for o in outcomes]) or 0.0,
    )


def load_outcomes(path: Path) -> dict[str, QAOutcome]:
    """Outcomes already written by an earlier (possibly killed) run; a torn last line is ignored."""
    done: dict[str, QAOutcome] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            outcome = QAOutcome(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # only the line being written when the process died can be torn
        done[outcome.question_id] = outcome
    return done


def questions_of(conv: Conversation, *, include_adversarial: bool = False) -> list[Question]:
    """The questions to evaluate: LoCoMo's adversarial category 5 only when asked for."""
    return [q for q in conv.questions if include_adversarial or not q.metadata.get("adversarial")]


async def evaluate_qa(
    items: Sequence[tuple[str, Question]],
    *,
    memory: AsyncMemory,
    judge: LLMJudge | None,
    results_path: Path,
    top_k: int = 20,
    on_done: Callable[[QAOutcome], None] | None = None,
) -> list[QAOutcome]:
    """Answer and score ``(user_id, question)`` pairs; returns every outcome, earlier runs' included.

    All questions start at once; the answering and judging backends bound the calls in flight (their
    role's ``max_concurrency``), so one setting limits a role however many callers share it.
    """
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = load_outcomes(results_path)
    f1_metric, em_metric = TokenF1Metric(), ExactMatchMetric()
    write_lock = asyncio.Lock()
    outcomes: list[QAOutcome] = [done[q.id] for _, q in items if q.id in done]
    for o in outcomes:
        if on_done:
            on_done(o)

    async def one(user_id: str, q: Question, out: Any) -> None:
        outcome = await _answer_and_score(user_id, q, memory, judge, f1_metric, em_metric, top_k)
        async with write_lock:
            out.write(json.dumps(asdict(outcome), ensure_ascii=False) + "\n")
            out.flush()
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)

    with results_path.open("a") as out:
        await asyncio.gather(*(one(u, q, out) for u, q in items if q.id not in done))
    order = {q.id: i for i, (_, q) in enumerate(items)}
    return sorted(outcomes, key=lambda o: order.get(o.question_id, len(order)))


async def _answer_and_score(
    user_id: str,
    q: Question,
    memory: AsyncMemory,
    judge: LLMJudge | None,
    f1_metric: TokenF1Metric,
    em_metric: ExactMatchMetric,
    top_k: int,
) -> QAOutcome:
    # The question's fields, nothing answered yet: both the failure and the success fill it in.
    unanswered = QAOutcome(
        question_id=q.id,
        user_id=user_id,
        category=q.category,
        question=q.question,
        gold=q.answer,
        prediction=None,
        judge_correct=None,
        f1=None,
        exact_match=None,
    )
    try:
        answer = await memory.answer(q.question, user_id=user_id, question_date=q.question_date, top_k=top_k)
    except LLMError as exc:
        return replace(unanswered, answer_error=str(exc))
    when = format_question_date(q.question_date)
    f1 = await f1_metric.score(q.question, q.answer, answer.text, question_type=q.category)
    em = await em_metric.score(q.question, q.answer, answer.text, question_type=q.category)
    verdict: bool | None = None
    judge_error: str | None = None
    if judge is not None:
        try:
            judgement = await judge.score(
                q.question,
                q.answer,
                answer.text,
                question_type=q.category,
                question_id=q.id,
                question_date=when,
                abstention=bool(q.metadata.get("abstention") or q.metadata.get("adversarial")),
            )
            verdict = judgement.correct
        except (ParseError, LLMError) as exc:
            judge_error = str(exc)
    return replace(
        unanswered,
        prediction=answer.text,
        judge_correct=verdict,
        f1=f1.value,
        exact_match=em.value,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=answer.usage.completion_tokens,
        memory_ids=[h.record.id for h in answer.memories],
        judge_error=judge_error,
    )
