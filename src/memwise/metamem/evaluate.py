"""Evaluating rule sets: accuracy of greedy answers with a given rule set, and choosing the best step.

Every version the trainer produced is scored on the validation split at temperature 0; the best one
wins, ties going to the earlier step (fewer edits for the same accuracy). The test split is then
answered with and without the chosen rules, so the report shows what the rules bought.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from memwise.exceptions import LLMError, ParseError
from memwise.facts.answer import AnswerStyle, final_answer
from memwise.llm.base import ChatModel, ChatRequest
from memwise.metamem.data import MetaQuestion
from memwise.metamem.prompts import build_rollout_messages
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.rules import RuleSet
from memwise.metamem.scoring import Scorer


@dataclass(frozen=True)
class EvalOutcome:
    """One question answered greedily with one rule set."""

    question_id: str
    question_type: str
    response: str | None
    score: float | None
    error: str | None = None
    reasoning: str | None = None  # the whole reply of a reasoning answer; ``response`` is its final answer


@dataclass(frozen=True)
class EvalResult:
    """Accuracy over the questions that got a score; failures are counted, never scored as wrong."""

    accuracy: float | None
    by_type: dict[str, float]
    scored: int
    failures: int
    outcomes: tuple[EvalOutcome, ...]

    def to_dict(self, *, with_outcomes: bool = False) -> dict[str, Any]:
        """JSON-ready form; per-question outcomes only on request, as they dominate the size."""
        out = asdict(self)
        if not with_outcomes:
            out.pop("outcomes")
        return out


def summarise(outcomes: Sequence[EvalOutcome]) -> EvalResult:
    """Accuracy overall and per question type (pure)."""
    scored = [o for o in outcomes if o.score is not None]
    by_type: dict[str, list[float]] = defaultdict(list)
    for o in scored:
        by_type[o.question_type].append(o.score or 0.0)
    return EvalResult(
        accuracy=statistics.fmean(o.score or 0.0 for o in scored) if scored else None,
        by_type={t: statistics.fmean(v) for t, v in sorted(by_type.items())},
        scored=len(scored),
        failures=len(outcomes) - len(scored),
        outcomes=tuple(outcomes),
    )


async def evaluate_rules(
    questions: Sequence[MetaQuestion],
    rules: RuleSet,
    *,
    policy: ChatModel,
    scorer: Scorer,
    max_tokens: int = 1024,
    style: AnswerStyle = "direct",
) -> EvalResult:
    """Answer each question at temperature 0 with ``rules`` and score it.

    The prompt is the rollouts' (same builder, same ``style``), so a rule set is validated and tested
    on the prompt it was trained on. With ``style="reasoning"`` the scorer sees the final answer only,
    and the outcome keeps the whole reply. Concurrency is the caller's: pass models that share one
    bound (as the trainer's do).
    """
    rule_map = {r.id: r.text for r in rules.rules}

    async def one(q: MetaQuestion) -> EvalOutcome:
        messages = build_rollout_messages(
            q.question, q.memories, question_date=q.question_date, rules=rule_map, style=style
        )
        request = ChatRequest(messages=tuple(messages), temperature=0.0, max_tokens=max_tokens, seed=0)
        try:
            text = (await policy.complete(request)).text.strip()
        except LLMError as exc:
            return EvalOutcome(q.question_id, q.question_type, None, None, f"answer: {exc}")
        answer = final_answer(text, style)
        reasoning = text if style == "reasoning" else None
        try:
            score = await scorer.score(q, answer)
        except (ParseError, LLMError) as exc:
            return EvalOutcome(q.question_id, q.question_type, answer, None, f"score: {exc}", reasoning)
        return EvalOutcome(q.question_id, q.question_type, answer, score.value, reasoning=reasoning)

    return summarise(await asyncio.gather(*(one(q) for q in questions)))


def select_best(accuracy_by_step: Mapping[int, float | None]) -> int:
    """The step with the highest accuracy; ties go to the earlier step; unscored steps never win.

    Example:
        >>> select_best({0: 0.5, 1: 0.7, 2: 0.7, 3: None})
        1
    """
    scored = [(step, acc) for step, acc in accuracy_by_step.items() if acc is not None]
    if not scored:
        return min(accuracy_by_step, default=0)
    best = max(acc for _, acc in scored)
    return min(step for step, acc in scored if acc == best)


async def validate_history(
    history: RuleHistory,
    valset: Sequence[MetaQuestion],
    *,
    policy: ChatModel,
    scorer: Scorer,
    max_tokens: int = 1024,
    style: AnswerStyle = "direct",
) -> dict[int, EvalResult]:
    """Each version's validation result, by step; versions are evaluated concurrently."""
    versions = list(history.versions)
    results = await asyncio.gather(
        *(
            evaluate_rules(valset, v.rules, policy=policy, scorer=scorer, max_tokens=max_tokens, style=style)
            for v in versions
        )
    )
    return {v.step: r for v, r in zip(versions, results, strict=True)}
