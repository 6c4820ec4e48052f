"""Benchmark suites as lists of :class:`~memwise.tasks.types.Task`: loading and scoring by suite name.

- :func:`load_suite` reads a suite's file in its official format ("mmlu", "aime": JSONL; "gpqa":
  the GPQA CSV; "hotpotqa": the HotpotQA JSON; "alfworld": a split directory of games) and checks
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
from memwise.tasks.suites.hotpotqa import load_hotpotqa, score_hotpotqa
from memwise.tasks.suites.mmlu import load_mmlu
from memwise.tasks.types import Task

__all__ = [
    "ENV_SUITES",
    "SUITES",
    "extract_answer",
    "extract_choice",
    "extract_integer",
    "extract_span",
    "grade",
    "load_aime",
    "load_alfworld",
    "load_gpqa",
    "load_hotpotqa",
    "load_mmlu",
    "load_suite",
    "normalize_integer_answer",
    "score_answer",
]

SUITES: dict[str, Callable[..., list[Task]]] = {
    "mmlu": load_mmlu,
    "aime": load_aime,
    "gpqa": load_gpqa,
    "hotpotqa": load_hotpotqa,
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


def score_answer(suite: str, prediction: str | None, task: Task) -> bool:
    """Whether an extracted final answer (see :func:`extract_answer`) matches ``task``'s gold.

    Choices compare as letters, AIME answers as integers, HotpotQA spans by SQuAD-normalised exact
    match. ``None`` (no answer found) is always wrong.
    """
    key = _answer_suite(suite)
    if prediction is None:
        return False
    if key in ("mmlu", "gpqa"):
        return prediction.strip().strip("()[]*.").strip().upper() == task.answer
    if key == "aime":
        return normalize_integer_answer(prediction) == task.answer
    return score_hotpotqa(prediction, task.answer)


def grade(suite: str, response: str, task: Task) -> tuple[str | None, bool]:
    """Extract the final answer from a raw ``response`` and score it: ``(answer or None, correct)``."""
    key = _answer_suite(suite)
    answer = extract_answer(key, response, n_choices=max(len(task.choices), 1) if task.choices else 4)
    return answer, score_answer(key, answer, task)
