"""Online memory evolution (UMEM at test time): stream tasks, apply the Mem-Optimizer's action at once.

For each task, in file order, for K epochs, with one bank that is never reset:

1. :func:`~memwise.umem.loop.attempt`: retrieve the top-K entries, run the executor greedily with
   their values as past experiences;
2. the Mem-Optimizer, greedily (temperature 0), reads the task, the numbered entries, the trajectory
   and CORRECT/INCORRECT;
3. its reply is parsed strictly; a well-formed ADD or UPDATE i is applied to the bank immediately. A
   malformed reply (including ``UPDATE i`` naming no retrieved entry) changes nothing and is counted
   by its reason in the task's record: it is never turned into an ADD.

Everything lives in the run directory::

    evolve.json              settings and task stream the run was started with (checked on resume)
    records.jsonl            one TaskRecord per finished task, appended as each finishes
    bank.sqlite3             the live insight bank
    bank.ckpt-<n>.sqlite3    the bank as it was after the first n records
    ledger.sqlite3           every model call (RunDir), replayed on resume

**Resuming.** Running again on the same directory continues after the last complete record. A
task killed part-way may already have touched the live bank (retrieval counts usage; the action may
have been applied before its record was written), so the bank is first restored from the checkpoint
taken after the last record, and the task is run again from the start. Its model calls that did
finish are in the ledger, so they are replayed rather than paid for again, and with greedy decoding
the resumed stream, records and bank equal an uninterrupted run's. The only trace of the killed
attempt is a duplicate optimizer format failure in the ledger's ``failures`` table, if it had logged
one; the summary counts failures from the records, so it is not affected. A torn last line of
``records.jsonl`` is an unfinished record and is dropped. Epochs may be raised on a later run to
continue a finished stream; any other changed setting or task stream is refused.

**Modes.** ``EvolveConfig.mode`` runs the paper's baselines on the same stream with the same
records: ``"no-memory"``, ``"no-train"`` (the untrained base model as Mem-Optimizer) and
``"raw-trajectory"`` (see :mod:`memwise.umem.baselines`); ``"umem"`` is the method itself.

Where the parts live: settings in :mod:`~memwise.umem.evolve_config`, one task's step in
:mod:`~memwise.umem.evolve_steps`, its record in :mod:`~memwise.umem.evolve_records`, the run
directory's files and resume checks in :mod:`~memwise.umem.evolve_state`, and the summary and report
in :mod:`~memwise.umem.evolve_report`; this module is the loop that ties them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel
from memwise.runs.rundir import RunDir
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.umem.bank import InsightBank
from memwise.umem.baselines import OPTIMIZER_MODES
from memwise.umem.evolve_config import AGENT_ID, EvolveConfig
from memwise.umem.evolve_records import TaskRecord, append_record, read_records
from memwise.umem.evolve_report import EvolveSummary, summarise
from memwise.umem.evolve_state import EvolvePaths, check_records, check_state, rewind_bank, snapshot_bank
from memwise.umem.evolve_steps import baseline_step, evolve_step
from memwise.umem.loop import Executor

__all__ = ["EvolveProgress", "EvolveResult", "chance_level", "evolve"]


@dataclass(frozen=True)
class EvolveProgress:
    """Reported before the first task and after each one: for progress bars."""

    done: int
    total: int
    epoch: int
    epoch_accuracy: float | None
    stream_accuracy: float | None
    record: TaskRecord | None = None


@dataclass(frozen=True)
class EvolveResult:
    """Every record of the run (resumed ones included), its summary, and where the files are."""

    records: list[TaskRecord]
    summary: EvolveSummary
    resumed_from: int
    paths: EvolvePaths


def chance_level(tasks: Sequence[Task]) -> float | None:
    """The expected accuracy of guessing: mean 1/options when every task is multiple choice, else None.

    Example:
        >>> two, four = ("x", "y"), ("w", "x", "y", "z")
        >>> chance_level([Task("a", "mmlu", "?", "A", choices=two), Task("b", "mmlu", "?", "B", choices=four)])
        0.375
    """
    if not tasks or not all(task.choices for task in tasks):
        return None
    return sum(1 / len(task.choices) for task in tasks) / len(tasks)


def _progress(records: Sequence[TaskRecord], total: int) -> EvolveProgress:
    done = len(records)
    epoch = records[-1].epoch if records else 1
    current = [r for r in records if r.epoch == epoch]
    return EvolveProgress(
        done=done,
        total=total,
        epoch=epoch,
        epoch_accuracy=sum(r.success for r in current) / len(current) if current else None,
        stream_accuracy=sum(r.success for r in records) / done if done else None,
        record=records[-1] if records else None,
    )


async def evolve(
    tasks: Sequence[Task],
    *,
    executor: Executor,
    optimizer: ChatModel | None,
    embedder: Embedder,
    run: RunDir,
    config: EvolveConfig,
    on_progress: Callable[[EvolveProgress], None] | None = None,
) -> EvolveResult:
    r"""Run (or resume) online memory evolution over ``tasks`` for ``config.epochs`` epochs.

    Args:
        tasks: the stream, in order; every epoch replays it.
        executor: solves a task with insights (its model should be recorded: ``run.record(m, "executor")``).
        optimizer: the Mem-Optimizer model (``run.record(m, "optimizer")``), called at temperature 0; for
            ``mode="no-train"`` the untrained base model. Modes without an optimizer call ignore it (None).
        embedder: embeds bank keys and tasks.
        run: the run directory; the bank, records and checkpoints live there beside the ledger.
        config: run settings.
        on_progress: called before the first task and after each one.

    Raises:
        ConfigError: no tasks, no optimizer for a mode that needs one, or a run directory started with
            other settings or tasks.

    Example:
        >>> import asyncio, tempfile
        >>> from memwise.testing import FakeEmbedder, ScriptedLLM
        >>> from memwise.umem.executors import make_executor
        >>> reply = lambda req: "<experience><value>Eliminate options.</value><operation>ADD</operation></experience>"
        >>> llm = ScriptedLLM(lambda req: reply(req) if "<experience>" in req.messages[0].content else "Answer: B")
        >>> task = Task("q0", "mmlu", "2+2?\nA) 3\nB) 4", "B", text="2+2?")
        >>> run = RunDir(tempfile.mkdtemp())
        >>> result = asyncio.run(evolve([task], executor=make_executor("mmlu", llm), optimizer=llm,
        ...     embedder=FakeEmbedder(), run=run, config=EvolveConfig(suite="mmlu", epochs=2)))
        >>> run.close()
        >>> [e.accuracy for e in result.summary.epochs], result.summary.bank_size
        ([1.0, 1.0], 1)
    """
    if not tasks:
        raise ConfigError("online evolution needs at least one task")
    if optimizer is None and config.mode in OPTIMIZER_MODES:
        raise ConfigError(f"evolve: mode {config.mode!r} calls a Mem-Optimizer; pass its model as optimizer")
    paths = EvolvePaths(run.path)
    check_state(paths, config, tasks)
    records = read_records(paths.records)
    total = config.epochs * len(tasks)
    check_records(records, tasks, total, paths.root)
    resumed_from = len(records)
    rewind_bank(paths, resumed_from)
    store = SQLiteStore(paths.bank, space=embedder.name)
    try:
        bank = InsightBank(
            store,
            embedder,
            agent_id=AGENT_ID,
            top_k=config.top_k,
            similarity_floor=config.similarity_floor,
            max_entries=config.max_entries,
        )
        if on_progress is not None:
            on_progress(_progress(records, total))
        for position in range(resumed_from, total):
            epoch, index = divmod(position, len(tasks))
            where = {"epoch": epoch + 1, "index": index, "position": position}
            if config.mode in OPTIMIZER_MODES:
                assert optimizer is not None  # checked above
                record = await evolve_step(
                    bank,
                    executor,
                    optimizer,
                    tasks[index],
                    **where,
                    optimizer_max_tokens=config.optimizer_max_tokens,
                    ledger=run.ledger,
                    repair=config.repair,
                )
            else:
                record = await baseline_step(config.mode, bank, executor, tasks[index], **where)
            append_record(paths.records, record)
            snapshot_bank(paths, position + 1)
            records.append(record)
            if on_progress is not None:
                on_progress(_progress(records, total))
    finally:
        store.close()
    summary = summarise(
        records,
        suite=config.suite,
        tasks_per_epoch=len(tasks),
        epochs=config.epochs,
        stages=run.ledger.stats(),
        mode=config.mode,
        chance=chance_level(tasks),
    )
    return EvolveResult(records=records, summary=summary, resumed_from=resumed_from, paths=paths)
