"""ALFWorld as an :class:`~memwise.umem.executor.Environment`, played offline by the TextWorld engine.

The engine is ALFWorld's own text setup (``AlfredTWEnv.init_env``): TextWorld's PDDL backend, the
``AlfredDemangler`` wrapper (object ids become "desk 2", "alarmclock 1"), and the ``won`` and
``admissible_commands`` infos. Two deliberate differences, both about resources rather than play:

- engines are built directly (``PddlEnv`` plus the wrapper) and recycled through an
  :class:`EnginePool`, instead of a ``textworld.gym`` registration: the gym registry is keyed by a
  list of game files and its batch env forks worker processes; the executor needs neither.
- the game is parsed here and handed to the engine as data, and ``AlfredInfos`` (whose only job is
  to echo the game path back as ``extra.gamefile``) is left out: textworld opens a path without
  closing it, a ResourceWarning on every game, and the path is in ``task.metadata`` anyway.

The admissible commands are passed on unfiltered, "look", "inventory" and "examine ..." included, as
ALFWorld's evaluation and the ReAct-style agents built on it do (the engine never offers "help").
The opening banner ("-= Welcome to TextWorld, ALFRED! =-") is dropped from the first observation.

Progress rate. ALFWorld scores only success, so the progress rate here is subgoal-based, in the
spirit of AgentBoard's (fraction of a task's subgoals reached, best so far): each task type has the
milestones of its ALFRED high-level plan, read off the engine's PDDL facts every step::

    pick_and_place_simple            holding an O, an O in an R, won
    look_at_obj_in_light             holding an O, the L switched on, won
    pick_{clean,heat,cool}_then_...  holding an O, an O clean/hot/cool, won
    pick_two_obj_and_place           holding an O, an O in an R, a second O held while one is in an R, won

(O, R, L: the task's object, receptacle and lamp types, from ``task.metadata["targets"]``.) Progress
is the fraction of milestones reached at any step so far, so it never falls; milestones already true
when the game starts count for neither side of the fraction, and a won game is 1.0. Going to places
is not a milestone: it is a means, and crediting it would reward wandering. Computing this costs a
scan of the fact list per step (the planner-distance alternative, one replan a step, takes seconds
to minutes on pick-two games). On all 134 valid_unseen games the planner's expert plan wins, passes
every milestone in order, and no milestone holds at the start.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from memwise.exceptions import ConfigError, DatasetError
from memwise.tasks.envs.base import Observation
from memwise.tasks.types import Task

INSTALL_HINT = "pip install 'memwise[alfworld]' (or pip install alfworld)"
BANNER = "-= Welcome to TextWorld, ALFRED! =-"

Fact = tuple[str, tuple[str, ...]]
"""A PDDL fact as ``(predicate, arguments)``, lower case as the engine reports it."""

_STATE_PREDICATE = {
    "pick_clean_then_place_in_recep": "isclean",
    "pick_heat_then_place_in_recep": "ishot",
    "pick_cool_then_place_in_recep": "iscool",
}

MILESTONES: dict[str, tuple[str, ...]] = {
    "pick_and_place_simple": ("holding", "placed", "won"),
    "look_at_obj_in_light": ("holding", "lit", "won"),
    "pick_clean_then_place_in_recep": ("holding", "transformed", "won"),
    "pick_heat_then_place_in_recep": ("holding", "transformed", "won"),
    "pick_cool_then_place_in_recep": ("holding", "transformed", "won"),
    "pick_two_obj_and_place": ("holding", "placed", "second_held", "won"),
}
"""The progress milestones of each ALFWorld task type, in plan order (see the module docstring)."""


@dataclass(frozen=True)
class Targets:
    """The PDDL type names a task's goal is about (``task.metadata["targets"]`` in engine spelling)."""

    object: str
    parent: str = ""
    toggle: str = ""

    @classmethod
    def from_metadata(cls, targets: Mapping[str, str]) -> Targets:
        """From the loader's ``{"object": "Bowl", "parent": "Cabinet", "toggle": ""}``."""

        def spell(name: str) -> str:
            return f"{name.lower()}type" if name else ""

        return cls(spell(targets.get("object", "")), spell(targets.get("parent", "")), spell(targets.get("toggle", "")))


def reached_milestones(task_type: str, targets: Targets, facts: Iterable[Fact], *, won: bool) -> frozenset[str]:
    """The milestones of ``task_type`` that hold in a state given by its PDDL ``facts``.

    A pure function over facts, so it is tested without the engine.

    Example:
        >>> facts = [("objecttype", ("bowl1", "bowltype")), ("holds", ("agent1", "bowl1"))]
        >>> targets = Targets("bowltype", "cabinettype")
        >>> sorted(reached_milestones("pick_clean_then_place_in_recep", targets, facts, won=False))
        ['holding']
    """
    if task_type not in MILESTONES:
        raise ConfigError(f"unknown ALFWorld task type {task_type!r}; known: {', '.join(MILESTONES)}")
    pairs: dict[str, set[tuple[str, str]]] = {}
    singles: dict[str, set[str]] = {}
    for name, args in facts:
        if len(args) == 2:
            pairs.setdefault(name, set()).add((args[0], args[1]))
        elif len(args) == 1:
            singles.setdefault(name, set()).add(args[0])
    objects = {o for o, t in pairs.get("objecttype", ()) if t == targets.object}
    receptacles = {r for r, t in pairs.get("receptacletype", ()) if t == targets.parent}
    held = {o for _agent, o in pairs.get("holds", ()) if o in objects}
    placed = {o for o, r in pairs.get("inreceptacle", ()) if o in objects and r in receptacles}
    lamps = {o for o, t in pairs.get("objecttype", ()) if targets.toggle and t == targets.toggle}
    predicate = _STATE_PREDICATE.get(task_type, "")
    reached = {
        "holding": bool(held),
        "placed": bool(placed),
        "second_held": bool(placed and held - placed),
        "lit": bool(lamps & singles.get("istoggled", set())),
        "transformed": bool(predicate and objects & singles.get(predicate, set())),
        "won": won,
    }
    return frozenset(name for name in MILESTONES[task_type] if reached[name])


@dataclass
class ProgressTracker:
    """Best-so-far progress over one episode: milestones reached since the start / milestones still open then.

    Example:
        >>> tracker = ProgressTracker("pick_and_place_simple", baseline=frozenset())
        >>> round(tracker.update(frozenset({"holding"})), 3)
        0.333
    """

    task_type: str
    baseline: frozenset[str]
    reached: frozenset[str] = frozenset()

    def update(self, now: frozenset[str]) -> float:
        """Record the milestones holding ``now`` and return the progress rate so far (1.0 once won)."""
        self.reached = self.reached | (now - self.baseline)
        if "won" in now:
            return 1.0
        open_ = set(MILESTONES[self.task_type]) - self.baseline
        return len(self.reached) / len(open_) if open_ else 0.0


@dataclass(frozen=True)
class _EngineModules:
    """The imported engine pieces; importing them costs about a second, so it happens on first use."""

    textworld: Any
    pddl_env: Any
    demangler: Any


def _load_engine() -> _EngineModules:
    try:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from textworld.envs.pddl import PddlEnv
    except ImportError as exc:
        raise ConfigError(f"ALFWorld needs the alfworld package (TextWorld and fast-downward): {INSTALL_HINT}") from exc
    return _EngineModules(textworld, PddlEnv, AlfredDemangler)


class EnginePool:
    """Idle TextWorld engines, handed out again instead of being built anew.

    Every engine loads its own copy of fast-downward's planner library (~34 MB, a copy so that live
    engines do not share the planner's global state), and that library cannot be unloaded: unloading
    it with fast-downward's ``close_lib`` crashes the interpreter at exit. An environment built per
    episode (as ``EnvExecutor``'s factory does) would so leak one library per game; recycling engines
    keeps the count at the most games ever played at once, plus one: textworld's module-level grammar
    parser keeps its last parse failure, whose traceback frames hold the environment that loaded the
    last game, until the next game loads. An engine holds no state between games (each reset loads
    the game afresh). Thread-safe, since environments are given back by finalizers.
    """

    def __init__(self) -> None:
        self._idle: dict[bool, list[Any]] = {False: [], True: []}
        self._built = 0
        self._lock = threading.Lock()

    def _take(self, walkthrough: bool) -> Any | None:
        with self._lock:
            return self._idle[walkthrough].pop() if self._idle[walkthrough] else None

    def acquire(self, *, walkthrough: bool) -> Any:
        """An idle engine, or a new one; ``walkthrough`` engines also compute the expert plan on reset."""
        engine = self._take(walkthrough)
        if engine is not None:
            return engine
        modules = _load_engine()
        extras = ["walkthrough"] if walkthrough else []
        infos = modules.textworld.EnvInfos(won=True, admissible_commands=True, extras=extras)
        engine = modules.demangler(shuffle=False)(modules.pddl_env(infos))
        with self._lock:
            self._built += 1
        return engine

    def release(self, engine: Any, *, walkthrough: bool) -> None:
        """Take an engine back for the next game."""
        with self._lock:
            self._idle[walkthrough].append(engine)

    @property
    def idle(self) -> int:
        """Engines waiting for a game."""
        with self._lock:
            return sum(len(engines) for engines in self._idle.values())

    @property
    def built(self) -> int:
        """Engines this pool has built (each holds one planner library for the life of the process)."""
        return self._built


DEFAULT_POOL = EnginePool()
"""The process's engines. Process-wide on purpose: the planner libraries they hold live as long as
the process does anyway (see :class:`EnginePool`)."""


@contextlib.contextmanager
def _keep_argv() -> Iterator[None]:
    # fast-downward's PDDL translator overwrites sys.argv (for its own option parser) on every
    # game load and reset; put the caller's back.
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def _facts(state: Mapping[str, Any]) -> list[Fact]:
    return [(p.name, tuple(v.name for v in p.arguments)) for p in state["_facts"]]


def _read_game(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"ALFWorld game file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (line {exc.lineno})", path=str(path)) from exc
    if not isinstance(data, dict) or not {"pddl_domain", "grammar", "pddl_problem"} <= data.keys():
        raise DatasetError("not a TextWorld PDDL game (needs pddl_domain, grammar, pddl_problem)", path=str(path))
    return data


class AlfworldEnv:
    """One ALFWorld game at a time, through the TextWorld engine; ``reset(task)`` loads ``task``'s game.

    An instance plays many games in turn (each reset loads the next), but not two at once: give each
    concurrent episode its own instance, as ``EnvExecutor``'s factory does. Building one is cheap:
    the engine comes from a pool (:class:`EnginePool`) on the first reset and goes back on
    ``close()``, at the end of a ``with`` block, or when the instance is garbage-collected.

    Args:
        walkthrough: also compute the planner's expert plan at each reset (:attr:`walkthrough`); it
            costs one planner call, about a second on most games and up to minutes on pick-two games.
        pool: where engines come from; by default the process's :data:`DEFAULT_POOL`.

    Raises:
        ConfigError: the ``alfworld`` package is not installed.

    Example:
        >>> tasks = load_alfworld("../shared/data/alfworld/valid_unseen")  # doctest: +SKIP
        >>> with AlfworldEnv() as env:  # doctest: +SKIP
        ...     obs = env.reset(tasks[0])
        ...     obs = env.step(obs.admissible[0])
    """

    def __init__(self, *, walkthrough: bool = False, pool: EnginePool | None = None) -> None:
        _load_engine()  # fail here, with the install hint, rather than at the first reset
        self._want_walkthrough = walkthrough
        self._pool = pool if pool is not None else DEFAULT_POOL
        self._env: Any = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._tracker: ProgressTracker | None = None
        self._task_type = ""
        self._targets = Targets("")
        self._walkthrough: tuple[str, ...] = ()
        self._closed = False

    @property
    def walkthrough(self) -> tuple[str, ...]:
        """The planner's expert plan for the current game (needs ``walkthrough=True``)."""
        if not self._want_walkthrough:
            raise ConfigError("build AlfworldEnv(walkthrough=True) to get the expert plan")
        return self._walkthrough

    def _engine(self) -> Any:
        if self._closed:
            raise ConfigError("this AlfworldEnv is closed")
        if self._env is None:
            self._env = self._pool.acquire(walkthrough=self._want_walkthrough)
            self._finalizer = weakref.finalize(self, self._pool.release, self._env, walkthrough=self._want_walkthrough)
        return self._env

    def reset(self, task: Task) -> Observation:
        """Load ``task``'s game (``metadata["gamefile"]``) and return its opening observation."""
        gamefile = task.metadata.get("gamefile")
        task_type = task.metadata.get("task_type")
        targets = task.metadata.get("targets")
        if not isinstance(gamefile, str) or not isinstance(task_type, str) or not isinstance(targets, Mapping):
            raise ConfigError(f"task {task.id!r} is not an ALFWorld task (load it with load_alfworld)")
        game = _read_game(Path(gamefile))
        env = self._engine()
        with _keep_argv():
            env.load(game)
            state = env.reset()
        self._task_type = task_type
        self._targets = Targets.from_metadata(targets)
        self._walkthrough = tuple(state.get("extra.walkthrough") or ())
        won = bool(state["won"])
        baseline = reached_milestones(task_type, self._targets, _facts(state), won=won)
        self._tracker = ProgressTracker(task_type, baseline=baseline - {"won"})
        text = str(state.feedback).replace(BANNER, "").strip()
        return self._observation(state, text, won=won, now=baseline)

    def step(self, action: str) -> Observation:
        """Take one action (an admissible command; anything else is answered "Nothing happens.")."""
        if self._tracker is None:
            raise ConfigError("call reset(task) before step()")
        with _keep_argv():
            state, _score, _done = self._engine().step(action)
        won = bool(state["won"])
        now = reached_milestones(self._task_type, self._targets, _facts(state), won=won)
        return self._observation(state, str(state.feedback).strip(), won=won, now=now)

    def _observation(self, state: Mapping[str, Any], text: str, *, won: bool, now: frozenset[str]) -> Observation:
        assert self._tracker is not None
        progress = self._tracker.update(now)
        return Observation(
            text=text,
            admissible=tuple(state["admissible_commands"]),
            done=won or bool(state.get("lost", False)),
            won=won,
            progress=progress,
        )

    def close(self) -> None:
        """Give the engine back to the pool; idempotent. A closed environment cannot be reset."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()
        self._env = None

    def __enter__(self) -> AlfworldEnv:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
