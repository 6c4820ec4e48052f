"""ALFWorld: the split loader, the progress milestones, and real games played through the executor."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.llm.base import ChatRequest
from memwise.tasks.envs.alfworld import (
    MILESTONES,
    EnginePool,
    ProgressTracker,
    Targets,
    _load_engine,
    reached_milestones,
)
from memwise.tasks.suites import grade, load_suite, score_answer
from memwise.tasks.suites.alfworld import TASK_TYPES, load_alfworld
from memwise.tasks.types import Task
from memwise.testing import ScriptedLLM
from memwise.umem.executor import EnvExecutor

# A short game (4-step expert plan, planner well under a second) for the real-engine tests.
LAMP_GAME = "look_at_obj_in_light-AlarmClock-None-DeskLamp-308/trial_T20190908_222917_366542"


# --- the loader, on small splits written here -------------------------------------------------


def _grammar(goal: str) -> str:
    rules = {"intro": [{"rhs": "-= Welcome =-\n\n#task#"}], "task": [{"rhs": goal}]}
    return f'grammar :: """\n{json.dumps(rules, indent=4)}\n""";\n\naction look {{\n    template :: "look";\n}}\n'


def _write_trial(
    split: Path,
    task_dir: str,
    trial: str,
    *,
    goal: str = "Your task is to: put some mug on desk.",
    task_type: str = "pick_and_place_simple",
    solvable: bool = True,
    params: dict[str, Any] | None = None,
    traj: str | None = None,
) -> Path:
    folder = split / task_dir / trial
    folder.mkdir(parents=True)
    game = {"pddl_domain": "(define)", "grammar": _grammar(goal), "pddl_problem": "(define)", "solvable": solvable}
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    if traj is None:
        record = {
            "task_type": task_type,
            "pddl_params": params or {"object_target": "Mug", "parent_target": "Desk", "toggle_target": ""},
            "turk_annotations": {"anns": [{"task_desc": "Put a mug on the desk."}, {"task_desc": " "}]},
        }
        traj = json.dumps(record)
    (folder / "traj_data.json").write_text(traj)
    return folder


@pytest.fixture
def split(tmp_path: Path) -> Path:
    root = tmp_path / "valid_unseen"
    _write_trial(root, "pick_and_place_simple-Mug-None-Desk-1", "trial_B")
    _write_trial(root, "pick_and_place_simple-Mug-None-Desk-1", "trial_A")
    _write_trial(
        root,
        "look_at_obj_in_light-Book-None-DeskLamp-2",
        "trial_C",
        goal="Your task is to: look at book under the desklamp.",
        task_type="look_at_obj_in_light",
        params={"object_target": "Book", "parent_target": "", "toggle_target": "DeskLamp"},
    )
    # What ALFWorld's evaluation skips: unsolvable games, movable/sliced variants, trials without a game.
    _write_trial(root, "pick_and_place_simple-Pen-None-Desk-1", "trial_D", solvable=False)
    _write_trial(root, "pick_and_place_with_movable_recep-Pen-Cup-Desk-1", "trial_E")
    _write_trial(root, "pick_cool_then_place_in_recep-BreadSliced-None-Fridge-1", "trial_F")
    (root / "pick_and_place_simple-Pen-None-Desk-1" / "trial_G").mkdir()
    (tmp_path / "logic").mkdir()
    return root


def test_loader_reads_playable_trials_in_sorted_order(split: Path) -> None:
    tasks = load_alfworld(split)
    assert [t.id for t in tasks] == [
        "look_at_obj_in_light-Book-None-DeskLamp-2/trial_C",
        "pick_and_place_simple-Mug-None-Desk-1/trial_A",
        "pick_and_place_simple-Mug-None-Desk-1/trial_B",
    ]
    lamp, mug = tasks[0], tasks[1]
    assert mug.suite == "alfworld" and mug.answer == "" and mug.choices == ()
    assert mug.prompt == "Your task is to: put some mug on desk."
    assert mug.text == "put some mug on desk"
    assert mug.metadata["gamefile"] == str((split / mug.id / "game.tw-pddl").resolve())
    assert mug.metadata["task_type"] == "pick_and_place_simple"
    assert mug.metadata["targets"] == {"object": "Mug", "parent": "Desk", "toggle": ""}
    assert mug.metadata["human_goals"] == ["Put a mug on the desk."]
    assert mug.metadata["logic_dir"] == str((split.parent / "logic").resolve())
    assert lamp.metadata["targets"]["toggle"] == "DeskLamp"
    assert load_suite("alfworld", split, limit=1) == tasks[:1]
    assert load_alfworld(split, seed=7) == tasks  # the order does not depend on the seed


def test_loader_without_logic_dir_records_none(tmp_path: Path) -> None:
    _write_trial(tmp_path / "split", "pick_and_place_simple-Mug-None-Desk-1", "trial_A")
    assert load_alfworld(tmp_path / "split")[0].metadata["logic_dir"] is None
    with pytest.raises(ConfigError, match="logic directory not found"):
        load_alfworld(tmp_path / "split", logic_dir=tmp_path / "nope")


@pytest.mark.parametrize(
    ("traj", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"task_type": "juggle", "pddl_params": {}}), "task_type"),
        (
            json.dumps({"task_type": "pick_and_place_simple", "pddl_params": {"object_target": "Mug"}}),
            "parent_target",
        ),
        (
            json.dumps(
                {
                    "task_type": "pick_and_place_simple",
                    "pddl_params": {"object_target": "Mug", "parent_target": "Desk"},
                    "turk_annotations": [],
                }
            ),
            "turk_annotations",
        ),
    ],
)
def test_malformed_traj_data_names_the_file(tmp_path: Path, traj: str, message: str) -> None:
    trial = _write_trial(tmp_path, "pick_and_place_simple-Mug-None-Desk-1", "trial_A", traj=traj)
    with pytest.raises(DatasetError, match=message) as info:
        load_alfworld(tmp_path)
    assert info.value.path == str(trial / "traj_data.json")


def test_missing_traj_data_and_bad_game_are_dataset_errors(tmp_path: Path) -> None:
    trial = _write_trial(tmp_path / "a", "pick_and_place_simple-Mug-None-Desk-1", "trial_A")
    (trial / "traj_data.json").unlink()
    with pytest.raises(DatasetError, match="file is missing") as info:
        load_alfworld(tmp_path / "a")
    assert info.value.path == str(trial / "traj_data.json")

    trial = _write_trial(tmp_path / "b", "pick_and_place_simple-Mug-None-Desk-1", "trial_A", goal="Welcome!")
    with pytest.raises(DatasetError, match="not a goal sentence") as info:
        load_alfworld(tmp_path / "b")
    assert info.value.path == str(trial / "game.tw-pddl")

    trial = _write_trial(tmp_path / "c", "pick_and_place_simple-Mug-None-Desk-1", "trial_A")
    (trial / "game.tw-pddl").write_text("{")
    with pytest.raises(DatasetError, match="game.tw-pddl: invalid JSON"):
        load_alfworld(tmp_path / "c")


def test_loader_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_alfworld(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no playable ALFWorld game"):
        load_alfworld(tmp_path)


def test_alfworld_has_no_answer_to_grade(split: Path) -> None:
    task = load_alfworld(split)[0]
    with pytest.raises(ConfigError, match="scored by the environment"):
        grade("alfworld", "Answer: done", task)
    with pytest.raises(ConfigError, match="scored by the environment"):
        score_answer("alfworld", "done", task)


# --- progress milestones, on hand-written facts ------------------------------------------------

_KITCHEN = [
    ("objecttype", ("bowl1", "bowltype")),
    ("objecttype", ("bowl2", "bowltype")),
    ("objecttype", ("lamp1", "desklamptype")),
    ("receptacletype", ("cabinet1", "cabinettype")),
    ("receptacletype", ("sink1", "sinkbasintype")),
]


def test_milestones_follow_the_facts() -> None:
    targets = Targets.from_metadata({"object": "Bowl", "parent": "Cabinet", "toggle": ""})
    assert targets == Targets("bowltype", "cabinettype", "")
    clean = "pick_clean_then_place_in_recep"
    assert reached_milestones(clean, targets, _KITCHEN, won=False) == frozenset()
    holding = [*_KITCHEN, ("holds", ("agent1", "bowl1"))]
    assert reached_milestones(clean, targets, holding, won=False) == {"holding"}
    cleaned = [*holding, ("isclean", ("bowl1",))]
    assert reached_milestones(clean, targets, cleaned, won=False) == {"holding", "transformed"}
    # A hot bowl is no progress on a cleaning task.
    assert reached_milestones(clean, targets, [*holding, ("ishot", ("bowl1",))], won=False) == {"holding"}
    assert reached_milestones(clean, targets, _KITCHEN, won=True) == {"won"}

    two = "pick_two_obj_and_place"
    one_in = [*_KITCHEN, ("inreceptacle", ("bowl1", "cabinet1"))]
    assert reached_milestones(two, targets, one_in, won=False) == {"placed"}
    # Holding the bowl that is already placed is impossible; holding the other one is the third milestone.
    assert reached_milestones(two, targets, [*one_in, ("holds", ("agent1", "bowl2"))], won=False) == {
        "holding",
        "placed",
        "second_held",
    }
    # In the sink is not in a cabinet.
    assert reached_milestones(two, targets, [*_KITCHEN, ("inreceptacle", ("bowl1", "sink1"))], won=False) == set()

    lamp = Targets.from_metadata({"object": "Bowl", "toggle": "DeskLamp"})
    assert reached_milestones("look_at_obj_in_light", lamp, [*_KITCHEN, ("istoggled", ("lamp1",))], won=False) == {
        "lit"
    }
    with pytest.raises(ConfigError, match="unknown ALFWorld task type"):
        reached_milestones("juggle", targets, _KITCHEN, won=False)
    assert set(MILESTONES) == set(TASK_TYPES)


def test_progress_is_best_so_far_and_ignores_what_held_at_the_start() -> None:
    tracker = ProgressTracker("pick_two_obj_and_place", baseline=frozenset())
    assert tracker.update(frozenset({"holding"})) == pytest.approx(1 / 4)
    assert tracker.update(frozenset({"placed"})) == pytest.approx(2 / 4)
    assert tracker.update(frozenset()) == pytest.approx(2 / 4)  # dropping things does not undo progress
    assert tracker.update(frozenset({"won", "placed"})) == 1.0

    # An object already in place when the game starts earns nothing: 1 of the 3 open milestones.
    started = ProgressTracker("pick_two_obj_and_place", baseline=frozenset({"placed"}))
    assert started.update(frozenset({"placed"})) == 0.0
    assert started.update(frozenset({"placed", "holding"})) == pytest.approx(1 / 3)


def test_missing_engine_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "textworld", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'memwise[alfworld]'")):
        _load_engine()


# --- real games (shared data + the alfworld package) ------------------------------------------


@pytest.fixture(scope="module")
def engine() -> None:
    # CI installs alfworld, so its absence is a failure there, never a silent skip.
    try:
        _load_engine()
    except ConfigError as exc:
        pytest.fail(f"the ALFWorld engine is required for these tests: {exc}")


@pytest.fixture(scope="module")
def tasks(shared_data: Path) -> dict[str, Task]:
    return {t.id: t for t in load_alfworld(shared_data / "alfworld" / "valid_unseen")}


def test_valid_unseen_has_the_papers_134_games(tasks: dict[str, Task]) -> None:
    assert len(tasks) == 134
    assert Counter(t.metadata["task_type"] for t in tasks.values()) == {
        "pick_clean_then_place_in_recep": 31,
        "pick_and_place_simple": 24,
        "pick_heat_then_place_in_recep": 23,
        "pick_cool_then_place_in_recep": 21,
        "look_at_obj_in_light": 18,
        "pick_two_obj_and_place": 17,
    }
    assert all(t.prompt.startswith("Your task is to: ") for t in tasks.values())


def test_reset_shows_the_room_goal_and_commands(engine: None, tasks: dict[str, Task]) -> None:
    from memwise.tasks.envs.alfworld import AlfworldEnv

    argv = list(sys.argv)
    pool = EnginePool()
    with AlfworldEnv(pool=pool) as env:
        obs = env.reset(tasks[LAMP_GAME])
        assert sys.argv == argv  # fast-downward's translator rewrites sys.argv; the env puts it back
        assert obs.text.startswith("You are in the middle of a room.")
        assert obs.text.endswith("Your task is to: examine the alarmclock with the desklamp.")
        assert "Welcome" not in obs.text
        assert {"go to desk 1", "go to desk 2", "look", "inventory"} <= set(obs.admissible)
        assert (obs.done, obs.won, obs.progress) == (False, False, 0.0)
        step = env.step("go to desk 2")
        assert "alarmclock 1" in step.text and "take alarmclock 1 from desk 2" in step.admissible
        assert env.step("fly to the moon").text == "Nothing happens."
        with pytest.raises(ConfigError, match="walkthrough=True"):
            _ = env.walkthrough
    with pytest.raises(ConfigError, match="closed"):
        env.reset(tasks[LAMP_GAME])
    with pytest.raises(ConfigError, match="before step"):
        AlfworldEnv(pool=pool).step("look")

    # The engine went back to the pool and serves the next game: no second planner library.
    assert (pool.built, pool.idle) == (1, 1)
    with AlfworldEnv(pool=pool) as again:
        assert again.reset(tasks[LAMP_GAME]).progress == 0.0
    assert (pool.built, pool.idle) == (1, 1)


def _admissible(request: ChatRequest) -> list[str]:
    listing = request.messages[-1].content.split("<actions>\n", 1)[1].split("\n</actions>", 1)[0]
    return [line.split(". ", 1)[1] for line in listing.splitlines()]


async def test_expert_plan_wins_through_the_executor(engine: None, tasks: dict[str, Task]) -> None:
    from memwise.tasks.envs.alfworld import AlfworldEnv

    with AlfworldEnv(walkthrough=True) as env:

        def expert(request: ChatRequest) -> str:
            action = env.walkthrough[llm.calls - 1]
            return str(_admissible(request).index(action) + 1)

        llm = ScriptedLLM(expert)
        result = await EnvExecutor(llm, lambda: env).run(tasks[LAMP_GAME], ["Find the object before the lamp."])
    assert env.walkthrough == ("go to desk 2", "take alarmclock 1 from desk 2", "go to desk 1", "use desklamp 1")
    assert result.success and result.progress == 1.0
    assert result.steps == llm.calls == 4
    assert result.metadata["off_format_replies"] == 0
    assert result.trajectory.startswith("> go to desk 2\n")
    assert "- Find the object before the lamp." in llm.requests[0].messages[-1].content


async def test_wrong_actions_hit_the_step_cap(engine: None, tasks: dict[str, Task]) -> None:
    from memwise.tasks.envs.alfworld import AlfworldEnv

    llm = ScriptedLLM(lambda request: str(_admissible(request).index("look") + 1))
    result = await EnvExecutor(llm, AlfworldEnv, max_steps=30).run(tasks[LAMP_GAME])
    assert (result.success, result.steps, result.progress) == (False, 30, 0.0)
    assert result.trajectory.count("> look\n") == 30
