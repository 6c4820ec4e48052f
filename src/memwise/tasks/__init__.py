"""Scoring answers to memory questions: lexical metrics and an LLM judge with per-type rubrics.

- :mod:`memwise.tasks.metrics`: normalisation, :func:`exact_match`, :func:`token_f1`, and the
  :class:`Metric` protocol (a :class:`Score` with textual feedback).
- :mod:`memwise.tasks.judge`: :class:`LLMJudge`, with pure prompt building and verdict parsing.
- :mod:`memwise.tasks.rubrics` and :mod:`memwise.tasks.question_types`: which rubric a LongMemEval
  type or LoCoMo category gets, and how their spellings resolve.
"""

from __future__ import annotations

from memwise.tasks.judge import (
    JudgeCase,
    JudgeError,
    Judgement,
    LLMJudge,
    build_judge_messages,
    parse_verdict,
    read_verdict,
)
from memwise.tasks.metrics import (
    ExactMatchMetric,
    Metric,
    Score,
    TokenF1Metric,
    answer_tokens,
    exact_match,
    normalize_answer,
    split_answers,
    token_f1,
)
from memwise.tasks.question_types import (
    LOCOMO_CATEGORIES,
    LONGMEMEVAL_TYPES,
    canonical_question_type,
    is_abstention,
)
from memwise.tasks.rubrics import Rubric, select_rubric

__all__ = [
    "LOCOMO_CATEGORIES",
    "LONGMEMEVAL_TYPES",
    "ExactMatchMetric",
    "JudgeCase",
    "JudgeError",
    "Judgement",
    "LLMJudge",
    "Metric",
    "Rubric",
    "Score",
    "TokenF1Metric",
    "answer_tokens",
    "build_judge_messages",
    "canonical_question_type",
    "exact_match",
    "is_abstention",
    "normalize_answer",
    "parse_verdict",
    "read_verdict",
    "select_rubric",
    "split_answers",
    "token_f1",
]
