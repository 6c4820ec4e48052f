"""Multi-turn environments for :class:`~memwise.umem.executor.EnvExecutor`.

- :class:`~memwise.tasks.envs.alfworld.AlfworldEnv`: ALFWorld's text games, played offline by the
  TextWorld engine (needs the ``alfworld`` package: ``pip install 'memwise[alfworld]'``).

The engine is imported only when an environment is built, so ``import memwise.tasks.envs`` works on
installs without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memwise.tasks.envs.alfworld import AlfworldEnv

__all__ = ["AlfworldEnv"]


def __getattr__(name: str) -> Any:
    if name == "AlfworldEnv":
        from memwise.tasks.envs.alfworld import AlfworldEnv

        return AlfworldEnv
    raise AttributeError(name)
