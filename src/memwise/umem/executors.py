"""The executor for a suite, by name: what `memwise umem evolve` (and any caller) runs tasks with.

QA suites answer in one turn and are scored by the suite's own final-answer check
(:func:`memwise.tasks.suites.grade`); ALFWorld is played turn by turn through an
:class:`~memwise.umem.executor.Environment` with the paper's 30-step cap. The ALFWorld environment
is imported only when an episode starts, so the QA suites work on installs (and checkouts) without it.
"""

from __future__ import annotations

from collections.abc import Callable

from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel
from memwise.tasks import suites
from memwise.tasks.suites import grade
from memwise.tasks.types import Task
from memwise.umem.executor import EnvExecutor, Environment, PromptStyle, QAExecutor, Scorer
from memwise.umem.loop import Executor

__all__ = ["ENV_SUITES", "KNOWN_SUITES", "QA_SUITES", "check_suite", "is_env_suite", "make_executor"]

# Derived from the suite registry, so a suite added there gets an executor (or a clear error) here.
QA_SUITES = tuple(sorted(name for name in suites.SUITES if name not in suites.ENV_SUITES))
ENV_SUITES = tuple(sorted(suites.ENV_SUITES))
KNOWN_SUITES = QA_SUITES + ENV_SUITES

ALFWORLD_MAX_STEPS = 30
"""The paper's step cap for an ALFWorld game."""


def check_suite(suite: str) -> str:
    """The suite's canonical (lower-case) name, or ConfigError naming the suites an executor exists for."""
    key = suite.strip().lower()
    if key not in KNOWN_SUITES:
        raise ConfigError(f"no executor for suite {suite!r}; known suites: {', '.join(KNOWN_SUITES)}")
    return key


def is_env_suite(suite: str) -> bool:
    """Whether ``suite`` is played as a multi-turn environment (success *and* progress rate, steps)."""
    return check_suite(suite) in ENV_SUITES


def suite_scorer(suite: str) -> Scorer:
    """A QA executor's scorer for ``suite``: the suite's answer extraction and gold comparison."""
    key = check_suite(suite)
    if key not in QA_SUITES:
        raise ConfigError(f"suite {suite!r} is an environment, scored by the game itself, not by an answer")

    def score(task: Task, text: str) -> tuple[str | None, bool]:
        return grade(key, text, task)

    return score


def alfworld_env() -> Environment:
    """A fresh ALFWorld environment; imported on first use so nothing else depends on ALFWorld being installed."""
    try:
        from memwise.tasks.envs.alfworld import AlfworldEnv
    except ImportError as exc:
        raise ConfigError(
            f"the ALFWorld environment cannot be loaded ({exc}); install it with `pip install 'memwise[alfworld]'`"
        ) from exc
    return AlfworldEnv()


def make_executor(
    suite: str,
    llm: ChatModel,
    *,
    max_tokens: int = 1024,
    env_factory: Callable[[], Environment] | None = None,
    prompt_style: PromptStyle = "generic",
) -> Executor:
    """The executor that solves ``suite``'s tasks with ``llm``, greedily, as the paper's frozen executor.

    Args:
        suite: ``mmlu``, ``aime``, ``gpqa``, ``hotpotqa``, ``hle`` (one answer, scored by the suite) or
            ``alfworld`` (a game of at most 30 steps, scored by the game).
        llm: the executor model (the ``policy`` role); wrap it with ``RunDir.record`` to have its
            calls recorded and replayed.
        max_tokens: completion budget of a QA answer. Environment turns pick an action number, so
            they keep the environment executor's own small budget.
        env_factory: builds one environment per episode (tests pass a toy game); defaults to ALFWorld.
        prompt_style: ``"generic"`` (an ``Answer:`` line for every suite) or ``"paper"`` (the paper's
            per-domain formats: ``boxed{}`` for math, the option letter for multiple choice).

    Raises:
        ConfigError: an unknown suite.

    Example:
        >>> from memwise.testing import ScriptedLLM
        >>> type(make_executor("mmlu", ScriptedLLM(["Answer: B"]))).__name__
        'QAExecutor'
    """
    key = check_suite(suite)
    if key in ENV_SUITES:
        return EnvExecutor(llm, env_factory or alfworld_env, max_steps=ALFWORLD_MAX_STEPS)
    return QAExecutor(
        llm,
        suite_scorer(key),
        max_tokens=max_tokens,
        prompt_style=prompt_style,
        kind_of=lambda task: suites.answer_kind(key, task),
    )
