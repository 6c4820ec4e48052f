"""ALFWorld games as tasks: one :class:`Task` per trial directory of a split such as ``valid_unseen``.

A split holds ``<task-dir>/<trial>/{game.tw-pddl, traj_data.json, ...}``. The game file is what the
text engine plays (:class:`memwise.tasks.envs.alfworld.AlfworldEnv`); ``traj_data.json`` names the
task type and the targets that the environment's progress rate needs.

Which trials count follows ALFWorld's own evaluation loader (``AlfredTWEnv.collect_game_files``):
trials without a game file, games not marked ``solvable``, and the ``movable`` / ``Sliced`` variants
(which the text engine does not support) are left out. On ``valid_unseen`` that leaves the 134 games
the UMEM paper (and ALFWorld's ``eval_out_of_distribution`` split) reports on.

The goal is taken from the game itself (its grammar's ``task`` rule, e.g. "Your task is to: put a
clean bowl in cabinet."), because that is the sentence the game prints: ALFWorld evaluates with
templated goals, not the crowd-sourced ones. The human descriptions stay in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memwise._datafile import existing_dir
from memwise.exceptions import ConfigError, DatasetError
from memwise.tasks.suites._io import read_json_file
from memwise.tasks.types import Task

SUITE = "alfworld"

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""The six ALFWorld task types (ALFWorld's ``TASK_TYPES``, ids 1-6 in that order)."""

NEEDED_TARGETS = {
    "pick_and_place_simple": ("object", "parent"),
    "look_at_obj_in_light": ("object", "toggle"),
    "pick_clean_then_place_in_recep": ("object", "parent"),
    "pick_heat_then_place_in_recep": ("object", "parent"),
    "pick_cool_then_place_in_recep": ("object", "parent"),
    "pick_two_obj_and_place": ("object", "parent"),
}
"""The ``pddl_params`` targets each task type's goal names (the environment's progress rate reads them)."""

GOAL_PREFIX = "Your task is to:"
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
_UNSUPPORTED = ("movable", "Sliced")


def _read_json_object(path: Path) -> dict[str, Any]:
    # Inside a split, a missing or misplaced trial file is a defect of the dataset, not a user's typo.
    if not path.is_file():
        raise DatasetError("is a directory, not a file" if path.is_dir() else "file is missing", path=str(path))
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise DatasetError(f"expected a JSON object, got {type(data).__name__}", path=str(path))
    return data


def game_goal(game: dict[str, Any], *, path: Path) -> str:
    """The goal sentence a game prints ("Your task is to: ..."), read from its grammar's ``task`` rule.

    The grammar text opens with ``grammar :: \"\"\" {JSON rules} \"\"\";`` (action templates follow);
    reading it here, rather than starting the engine, keeps loading a split cheap and free of the
    ``alfworld`` dependency.
    """
    grammar = game.get("grammar")
    if not isinstance(grammar, str) or grammar.count('"""') < 2:
        raise DatasetError("field 'grammar' must be a text-engine grammar string", path=str(path))
    start = grammar.index('"""') + 3
    body = grammar[start : grammar.index('"""', start)]
    try:
        rules = json.loads(body)
        goal = rules["task"][0]["rhs"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise DatasetError(f"the grammar has no readable 'task' rule ({exc!r})", path=str(path)) from exc
    if not isinstance(goal, str) or not goal.strip().startswith(GOAL_PREFIX):
        raise DatasetError(f"the grammar's 'task' rule is not a goal sentence: {goal!r}", path=str(path))
    return goal.strip()


def _human_goals(traj: dict[str, Any], path: Path) -> list[str]:
    anns = traj.get("turk_annotations", {})
    items = anns.get("anns") if isinstance(anns, dict) else None
    if not isinstance(items, list):
        raise DatasetError("field 'turk_annotations.anns' must be a list", path=str(path))
    goals = [a.get("task_desc", "") for a in items if isinstance(a, dict)]
    return [g.strip() for g in goals if isinstance(g, str) and g.strip()]


def _targets(traj: dict[str, Any], task_type: str, path: Path) -> dict[str, str]:
    params = traj.get("pddl_params")
    if not isinstance(params, dict):
        raise DatasetError("field 'pddl_params' must be an object", path=str(path))
    targets: dict[str, str] = {}
    for key in ("object_target", "parent_target", "toggle_target"):
        value = params.get(key, "")
        if not isinstance(value, str):
            raise DatasetError(f"field 'pddl_params.{key}' must be a string, got {value!r}", path=str(path))
        targets[key.removesuffix("_target")] = value
    for key in NEEDED_TARGETS[task_type]:
        if not targets[key]:
            raise DatasetError(f"field 'pddl_params.{key}_target' is empty for a {task_type} task", path=str(path))
    return targets


def parse_trial(trial: Path, *, split: Path, logic_dir: Path | None) -> Task | None:
    """The task of one trial directory, or ``None`` when ALFWorld's evaluation would skip it.

    Raises:
        DatasetError: ``traj_data.json`` or the game file is missing or malformed (the error names it).
    """
    game_path = trial / GAME_FILE
    if any(word in str(trial.relative_to(split)) for word in _UNSUPPORTED) or not game_path.is_file():
        return None
    game = _read_json_object(game_path)
    if game.get("solvable") is not True:
        return None
    traj_path = trial / TRAJ_FILE
    traj = _read_json_object(traj_path)
    task_type = traj.get("task_type")
    if task_type not in TASK_TYPES:
        raise DatasetError(
            f"field 'task_type' must be one of {', '.join(TASK_TYPES)}, got {task_type!r}", path=str(traj_path)
        )
    goal = game_goal(game, path=game_path)
    return Task(
        id=f"{trial.parent.name}/{trial.name}",
        suite=SUITE,
        prompt=goal,
        answer="",
        text=goal.removeprefix(GOAL_PREFIX).strip().rstrip("."),
        metadata={
            "gamefile": str(game_path.resolve()),
            "task_type": task_type,
            "targets": _targets(traj, task_type, traj_path),
            "human_goals": _human_goals(traj, traj_path),
            "logic_dir": str(logic_dir.resolve()) if logic_dir is not None else None,
        },
    )


def load_alfworld(path: str | Path, *, seed: int = 0, logic_dir: str | Path | None = None) -> list[Task]:
    """The playable games of an ALFWorld split directory, sorted by ``<task-dir>/<trial>`` id.

    ``seed`` is unused: the order is the sorted directory order, so ids and order are stable across
    machines. ``logic_dir`` (ALFWorld's ``alfred.pddl`` / ``alfred.twl2``) defaults to a ``logic``
    folder beside the split and is only recorded: every game file embeds its own domain and grammar.

    Raises:
        ConfigError: ``path`` is missing or is a file rather than a split directory, or holds no
            playable game.
        DatasetError: a trial's ``traj_data.json`` or game file is missing or malformed.

    Example:
        >>> tasks = load_alfworld("../shared/data/alfworld/valid_unseen")  # doctest: +SKIP
        >>> len(tasks), tasks[0].prompt  # doctest: +SKIP
        (134, 'Your task is to: examine the alarmclock with the desklamp.')
    """
    del seed
    split = existing_dir(path, "ALFWorld split directory")
    logic = Path(logic_dir) if logic_dir is not None else split.parent / "logic"
    if logic_dir is not None:
        existing_dir(logic, "ALFWorld logic directory")
    recorded = logic if logic.is_dir() else None
    trials = sorted(p for d in split.iterdir() if d.is_dir() for p in d.iterdir() if p.is_dir())
    parsed = (parse_trial(p, split=split, logic_dir=recorded) for p in trials)
    tasks = [task for task in parsed if task is not None]
    if not tasks:
        raise ConfigError(f"no playable ALFWorld game (solvable {GAME_FILE}) under {split}")
    return tasks
