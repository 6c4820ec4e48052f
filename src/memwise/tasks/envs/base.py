"""The environment protocol and what an environment shows, in the task layer where environments live.

Environments (ALFWorld here) and the executors that play them (:mod:`memwise.umem.executor`) both need
these types; keeping them beside the environments lets the task layer stay below ``umem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from memwise.tasks.types import Task

__all__ = ["Environment", "Observation"]


@dataclass(frozen=True)
class Observation:
    """What an environment shows after a reset or a step."""

    text: str
    admissible: tuple[str, ...]
    done: bool = False
    won: bool = False
    progress: float | None = None


class Environment(Protocol):
    """A multi-turn environment, as small as an executor needs."""

    def reset(self, task: Task) -> Observation:
        """Start ``task`` afresh and return the first observation."""
        ...

    def step(self, action: str) -> Observation:
        """Apply one action and return what the agent sees next, including whether the episode ended."""
        ...
