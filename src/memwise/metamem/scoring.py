"""How MetaMem grades an answer: the LLM judge with each question type's rubric, or a token metric."""

from __future__ import annotations

from typing import Protocol

from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel
from memwise.metamem.data import MetaQuestion
from memwise.runs.ledger import Ledger
from memwise.tasks.judge import LLMJudge
from memwise.tasks.metrics import ExactMatchMetric, Metric, Score, TokenF1Metric

METRICS = ("judge", "f1", "em")


class Scorer(Protocol):
    """Grades one answer to one question: a value in [0, 1] and words on why.

    Raises ParseError or LLMError when no grade could be had; callers count that, never as "wrong".
    """

    async def score(self, question: MetaQuestion, response: str) -> Score:
        """The grade of ``response``; raise ParseError or LLMError when none could be had, never guess."""
        ...


class MetricScorer:
    """A :class:`~memwise.tasks.metrics.Metric` (judge, F1, EM) applied to a :class:`MetaQuestion`."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    async def score(self, question: MetaQuestion, response: str) -> Score:
        """The metric's grade, given the question's type, id and date (what judge prompts use)."""
        return await self.metric.score(
            question.question,
            question.answer,
            response,
            question_type=question.question_type,
            question_id=question.question_id,
            question_date=question.question_date,
        )


def make_scorer(metric: str, judge: ChatModel, ledger: Ledger | None, *, max_tokens: int | None = None) -> Scorer:
    """The scorer for a metric name; the judge model (and its ``max_tokens`` budget) is used only by ``"judge"``."""
    if metric == "judge":
        if max_tokens is None:
            return MetricScorer(LLMJudge(judge, ledger=ledger))
        return MetricScorer(LLMJudge(judge, ledger=ledger, max_tokens=max_tokens))
    if metric == "f1":
        return MetricScorer(TokenF1Metric())
    if metric == "em":
        return MetricScorer(ExactMatchMetric())
    raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
