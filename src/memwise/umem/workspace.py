"""What `umem train` and `umem export-verl` both stand on: tasks, neighbourhoods, executor and bank, built once.

A training workspace is a run directory holding ``trainset.json`` (every task embedded once with
its N nearest neighbours, reused by later runs on the same tasks), the insight bank ``bank.db``,
the ledger that records the frozen executor's calls (the ``policy`` model role), and the embedding
cache. Everything async is built on one :class:`~memwise.umem.bridge.AsyncBridge` loop and closed on it, because
trl calls the reward synchronously from its own thread.

Example:
    >>> source = TrainSource("mmlu", Path("mmlu.jsonl"), Path("runs/umem"))  # doctest: +SKIP
    >>> with train_session(settings, source) as (loop, parts):  # doctest: +SKIP
    ...     scorer = parts.trainset.scorer(parts.bank, parts.executor, form="paper")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from memwise.config import Settings
from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError
from memwise.llm.registry import ModelSet
from memwise.runs.rundir import RunDir
from memwise.tasks.types import Task
from memwise.umem.bank import InsightBank
from memwise.umem.bridge import AsyncBridge
from memwise.umem.evolve_config import EvolveConfig
from memwise.umem.grpo_checkpoints import restore_bank
from memwise.umem.loop import Executor
from memwise.umem.trainset import DEFAULT_NEAR_DUPLICATE, TrainSet

EXECUTOR_STAGE = "umem-train-executor"
BANK_SCOPE = "umem-train"


def _as_in_evolve(name: str) -> Any:
    """The evolution setting's default and help: a bank trained here is used by `umem evolve` the same way."""
    setting = {f.name: f for f in fields(EvolveConfig)}[name]
    return field(default=setting.default, metadata=setting.metadata)


@dataclass(frozen=True)
class TrainSource:
    """Where the tasks come from and how the bank and executor are set up."""

    suite: str
    path: Path
    run_dir: Path
    limit: int | None = field(default=None, metadata={"help": "use only the first N tasks"})
    seed: int = field(default=0, metadata={"help": "GPQA's option order (umem train: also seeds trl and sampling)"})
    neighbours: int = field(default=3, metadata={"help": "neighbours each memory is judged on (N)"})
    top_k: int = _as_in_evolve("top_k")
    floor: float = _as_in_evolve("similarity_floor")
    max_tokens: int = _as_in_evolve("max_tokens")
    near_duplicate: float | None = field(
        default=DEFAULT_NEAR_DUPLICATE, metadata={"help": "tasks closer than this cosine are copies, never neighbours"}
    )


@dataclass
class TrainParts:
    """The workspace's open parts; :func:`train_session` closes them on the loop they were built on."""

    run: RunDir
    models: ModelSet
    embedder: Embedder
    executor: Executor
    trainset: TrainSet
    bank: InsightBank

    async def aclose(self) -> None:
        """Close the embedder and every model built."""
        await self.embedder.aclose()
        await self.models.aclose()


async def build_parts(settings: Settings, src: TrainSource, bank_from: Path | None = None) -> TrainParts:
    """Open the workspace: load the tasks, lock the run directory, reuse or build the neighbourhoods.

    ``bank_from`` is a checkpoint whose bank snapshot replaces ``bank.db`` first (a resumed training).

    Raises:
        ConfigError: too few tasks for the neighbourhoods, or a ``trainset.json`` built from other tasks.
    """
    from memwise.tasks.suites import load_suite

    tasks = load_suite(src.suite, src.path, seed=src.seed, limit=src.limit)
    if len(tasks) <= src.neighbours:
        raise ConfigError(
            f"{src.path} gives {len(tasks)} {src.suite} tasks; neighbourhoods of {src.neighbours} need more"
        )
    run = RunDir(src.run_dir, command=f"memwise umem train --suite {src.suite}")
    try:
        return await _build_in(run, settings, src, tasks, bank_from)
    except BaseException:
        run.close()  # the parts that exist are closed by their owner, the lock here
        raise


async def _build_in(
    run: RunDir, settings: Settings, src: TrainSource, tasks: list[Task], bank_from: Path | None
) -> TrainParts:
    from memwise.embed.registry import build_embedder
    from memwise.store.sqlite import SQLiteStore
    from memwise.umem.executors import make_executor
    from memwise.umem.trainset import build_trainset

    models = ModelSet(settings)
    embedder = build_embedder(settings.embedding, cache_path=src.run_dir / "embeddings.sqlite3")
    stored = src.run_dir / "trainset.json"
    if stored.exists():
        trainset = TrainSet.load(stored)
        if [t.id for t in trainset.tasks] != [t.id for t in tasks]:
            raise ConfigError(f"{stored} was built from other tasks; use a new --run-dir or delete it")
        built = (trainset.neighbours, trainset.near_duplicate)
        if built != (src.neighbours, src.near_duplicate):
            # An ablation over N run in the same folder would otherwise silently reuse the old judges.
            raise ConfigError(
                f"{stored} was built with N={built[0]} and near-duplicate cosine {built[1]}, not N={src.neighbours} "
                f"and {src.near_duplicate}; use a new --run-dir for each neighbourhood setting"
            )
    else:
        trainset = await build_trainset(tasks, embedder, neighbours=src.neighbours, near_duplicate=src.near_duplicate)
        trainset.save(stored)
    llm = run.record(models.get("policy"), EXECUTOR_STAGE)
    executor = make_executor(src.suite, llm, max_tokens=src.max_tokens)
    if bank_from is not None:
        restore_bank(bank_from, src.run_dir / "bank.db")  # before the store opens it
    bank = InsightBank(
        SQLiteStore(src.run_dir / "bank.db"), embedder, agent_id=BANK_SCOPE, top_k=src.top_k,
        similarity_floor=src.floor,
    )  # fmt: skip
    return TrainParts(run, models, embedder, executor, trainset, bank)


@contextmanager
def train_session(
    settings: Settings, src: TrainSource, bank_from: Path | None = None
) -> Iterator[tuple[AsyncBridge, TrainParts]]:
    """One event loop for the whole command, the parts built on it, and everything closed on the way out."""
    bridge = AsyncBridge()
    with bridge:
        parts = bridge.run(build_parts(settings, src, bank_from))
        try:
            yield bridge, parts
        finally:
            bridge.run(parts.aclose())
            parts.bank.store.close()
            parts.run.close()
