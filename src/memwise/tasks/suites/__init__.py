"""Benchmark suites as lists of :class:`~memwise.tasks.types.Task`: loading and scoring by suite name.

- :func:`load_suite` reads a suite's file in its official format ("mmlu", "aime": JSONL; "gpqa":
  the GPQA CSV; "hotpotqa": the HotpotQA JSON; "hle": the HLE parquet, JSON or JSONL, text-only
  records; "alfworld": a split directory of games) and checks
  every record, so a malformed file fails at load time with a
  :class:`~memwise.exceptions.DatasetError` naming the file and record.
- :mod:`memwise.tasks.suites.answers` pulls the final answer out of an executor's free text.
- :func:`score_answer` compares such an extracted answer with a task's gold answer. ALFWorld has no
  answer to compare: its games are scored by the environment (:mod:`memwise.tasks.envs`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from memwise.exceptions import ConfigError
from memwise.tasks.suites.aime import load_aime, normalize_integer_answer
from memwise.tasks.suites.alfworld import load_alfworld
from memwise.tasks.suites.answers import extract_answer, extract_choice, extract_integer, extract_span
from memwise.tasks.suites.gpqa import load_gpqa
from memwise.tasks.suites.hle import hle_kind, load_hle, read_hle
from memwise.tasks.suites.hotpotqa import load_hotpotqa, score_hotpotqa
from memwise.tasks.suites.mmlu import load_mmlu
from memwise.tasks.types import Task

__all__ = [
    "ENV_SUITES",
    "SUITES",
    "answer_kind",
    "extract_answer",
    "extract_choice",
    "extract_integer",
    "extract_span",
    "grade",
    "load_aime",
    "load_alfworld",
    "load_gpqa",
    "load_hle",
    "load_hotpotqa",
    "load_mmlu",
    "load_suite",
    "normalize_integer_answer",
    "read_hle",
    "score_answer",
]

SUITES: dict[str, Callable[..., list[Task]]] = {
    "mmlu": load_mmlu,
    "aime": load_aime,
    "gpqa": load_gpqa,
    "hotpotqa": load_hotpotqa,
    "hle": load_hle,
    "alfworld": load_alfworld,
}

ENV_SUITES = frozenset({"alfworld"})
"""Suites whose tasks are games, scored by the environment (won, progress) rather than an answer."""


def _suite_name(name: str) -> str:
    key = name.strip().lower()
    if key not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; known: {', '.join(sorted(SUITES))}")
    return key


def _answer_suite(name: str) -> str:
    key = _suite_name(name)
    if key in ENV_SUITES:
        raise ConfigError(
            f"suite {key!r} has no final answer to grade: its games are scored by the environment "
            "(won and progress from memwise.tasks.envs), through an EnvExecutor"
        )
    return key


def load_suite(name: str, path: str | Path, *, seed: int = 0, limit: int | None = None) -> list[Task]:
    """The tasks of suite ``name`` read from ``path``, in file order.

    ``seed`` fixes GPQA's option order (other suites ignore it). ``limit`` keeps the first ``limit``
    tasks; the whole file is still checked, so a small smoke run does not hide a broken file.
    """
    loader = SUITES[_suite_name(name)]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    tasks = loader(path, seed=seed)
    return tasks if limit is None else tasks[:limit]


def answer_kind(suite: str, task: Task) -> str:
    """How ``task`` is answered: ``"choice"`` (an option letter), ``"integer"`` (AIME) or ``"span"`` (text).

    HLE mixes kinds, so it is decided per task; every other suite has one kind.
    """
    key = _answer_suite(suite)
    if key in ("mmlu", "gpqa"):
        return "choice"
    if key == "aime":
        return "integer"
    if key == "hle":
        return hle_kind(task)
    return "span"


def _n_choices(task: Task) -> int:
    if task.choices:
        return max(len(task.choices), 1)
    return 10 if task.suite == "hle" else 4  # HLE questions without parsable options: any letter A..J


def score_answer(suite: str, prediction: str | None, task: Task) -> bool:
    """Whether an extracted final answer (see :func:`extract_answer`) matches ``task``'s gold.

    Choices compare as letters, AIME answers as integers, HotpotQA and HLE exact-match answers by
    SQuAD-normalised exact match. ``None`` (no answer found) is always wrong.
    """
    kind = answer_kind(suite, task)
    if prediction is None:
        return False
    if kind == "choice":
        return prediction.strip().strip("()[]*.").strip().upper() == task.answer
    if kind == "integer":
        return normalize_integer_answer(prediction) == task.answer
    return score_hotpotqa(prediction, task.answer)


def grade(suite: str, response: str, task: Task) -> tuple[str | None, bool]:
    """Extract the final answer from a raw ``response`` and score it: ``(answer or None, correct)``."""
    kind = answer_kind(suite, task)
    if kind == "choice":
        answer = extract_choice(response, _n_choices(task))
    elif kind == "integer":
        answer = extract_integer(response)
    else:
        answer = extract_span(response)
    return answer, score_answer(suite, answer, task)
