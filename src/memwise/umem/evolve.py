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

Pure parts (:func:`build_record`, :func:`summarise`, :func:`cumulative_accuracy`,
:func:`build_markdown`) are kept apart from the I/O (:func:`evolve`, :func:`write_report`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, StoreError
from memwise.llm.base import ChatModel, ChatRequest, Sample
from memwise.llm.structured import Rejected, complete_with_repair
from memwise.runs.files import (
    append_jsonl,
    read_jsonl,
    remove_sqlite,
    restore_sqlite,
    snapshot_sqlite,
    write_text_atomic,
)
from memwise.runs.ledger import Ledger
from memwise.runs.rundir import RunDir
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.umem.bank import BankEntry, BankStats, InsightBank
from memwise.umem.baselines import MODES, OPTIMIZER_MODES, Mode, no_memory_step, raw_trajectory_step
from memwise.umem.evolve_report import (
    WRITE_COUNTERS,
    EpochSummary,
    EvolveSummary,
    ReportFiles,
    build_markdown,
    cumulative_accuracy,
    summarise,
    write_report,
)
from memwise.umem.executor import PROMPT_STYLES, PromptStyle
from memwise.umem.loop import Attempt, Executor, attempt
from memwise.umem.optimizer import (
    OptimizerAction,
    apply_action,
    build_repair_messages,
    parse_repair,
    repair_schema,
    screen_lessons,
    try_parse_optimizer_output,
)

REPAIR_MAX_TOKENS = 320
"""Budget of the schema-constrained repair reply: two lessons of 200 characters fit even in math text."""

__all__ = [
    "AGENT_ID",
    "EXECUTOR_STAGE",
    "OPTIMIZER_STAGE",
    "EpochSummary",
    "EvolveConfig",
    "EvolvePaths",
    "EvolveProgress",
    "EvolveResult",
    "EvolveSummary",
    "ReportFiles",
    "TaskRecord",
    "append_record",
    "baseline_step",
    "build_markdown",
    "build_record",
    "chance_level",
    "cumulative_accuracy",
    "evolve",
    "evolve_step",
    "read_records",
    "summarise",
    "write_report",
]

AGENT_ID = "umem-evolve"
EXECUTOR_STAGE = "executor"
OPTIMIZER_STAGE = "optimizer"


@dataclass(frozen=True)
class EvolveConfig:
    """Settings of one online evolution run (defaults from the paper and its released code)."""

    suite: str = field(metadata={"help": "suite name, used for labels and the resume check"})
    epochs: int = field(default=1, metadata={"help": "passes over the task stream; the bank carries over"})
    top_k: int = field(default=3, metadata={"help": "entries retrieved per task (paper: 3)"})
    similarity_floor: float = field(default=0.5, metadata={"help": "drop hits below this cosine (released: 0.5)"})
    max_entries: int = field(default=10_000, metadata={"help": "bank cap, least used evicted (released: 10,000)"})
    max_tokens: int = field(default=1024, metadata={"help": "executor completion budget (QA suites)"})
    optimizer_max_tokens: int = field(default=1024, metadata={"help": "Mem-Optimizer completion budget"})
    repair: bool = field(
        default=True,
        metadata={
            "help": "after a malformed reply, ask once more for the decision as schema-constrained JSON; the "
            "first reply's failure is still recorded (small models rarely hold the tag format)"
        },
    )
    mode: Mode = field(
        default="umem",
        metadata={
            "help": "umem (the Mem-Optimizer), no-memory (executor alone), no-train (the untrained base model "
            "as Mem-Optimizer), raw-trajectory (store and retrieve raw past attempts)"
        },
    )
    prompt_style: PromptStyle = field(
        default="generic",
        metadata={"help": "executor prompt: generic (an Answer: line) or paper (\\boxed{} / option letter)"},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"EvolveConfig: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(
                f"EvolveConfig: prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}"
            )
        if self.epochs < 1:
            raise ConfigError(f"EvolveConfig: epochs must be at least 1, got {self.epochs}")
        if self.top_k < 1:
            raise ConfigError(f"EvolveConfig: top_k must be at least 1, got {self.top_k}")
        if not -1.0 <= self.similarity_floor <= 1.0:
            raise ConfigError(f"EvolveConfig: similarity_floor is a cosine, so in [-1, 1]; got {self.similarity_floor}")
        if self.max_entries < 1:
            raise ConfigError(f"EvolveConfig: max_entries must be at least 1, got {self.max_entries}")
        if self.max_tokens < 1 or self.optimizer_max_tokens < 1:
            raise ConfigError("EvolveConfig: max_tokens and optimizer_max_tokens must be at least 1")

    def fixed(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (all but ``epochs``)."""
        return {k: v for k, v in asdict(self).items() if k != "epochs"}


_ADDED_SETTINGS = {"mode": "umem", "prompt_style": "generic"}
"""Settings added after runs were first recorded: a state file without them was run with these values."""


@dataclass(frozen=True)
class TaskRecord:
    """What happened on one task of the stream: one line of ``records.jsonl``.

    ``epoch`` counts from 1, ``index`` is the task's place in the file (from 0) and ``position``
    its place in the whole stream (from 0). ``tokens`` are the executor's completion tokens,
    ``optimizer_tokens`` the Mem-Optimizer's. ``action`` is ``"ADD"`` or ``"UPDATE i"`` when the
    reply was well formed, else None with the reason in ``format_failure``. ``repaired`` is True when
    the first reply was malformed (its reason stays in ``format_failure``) and the schema-constrained
    second request gave the action that was applied. ``bank_changes`` counts
    the bank writes the task caused (added, merged, updated, evicted) and ``bank_size`` is the size
    after it. ``progress`` is set for environment tasks only.
    """

    epoch: int
    index: int
    position: int
    task_id: str
    success: bool
    answer: str | None
    gold: str
    tokens: int
    steps: int
    progress: float | None
    retrieved: int
    retrieved_ids: tuple[str, ...]
    similarities: tuple[float, ...]
    dropped_by_floor: int
    optimizer_tokens: int
    action: str | None
    format_failure: str | None
    written_id: str | None
    bank_size: int
    bank_changes: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, one line of ``records.jsonl``."""
        out = asdict(self)
        out["retrieved_ids"] = list(self.retrieved_ids)
        out["similarities"] = list(self.similarities)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["retrieved_ids"] = tuple(values.get("retrieved_ids", ()))
        values["similarities"] = tuple(values.get("similarities", ()))
        return cls(**values)


# -- pure: one record ---------------------------------------------------------------------------


def bank_changes(before: BankStats, after: BankStats) -> dict[str, int]:
    """The bank writes between two snapshots of :attr:`InsightBank.stats`."""
    return {name: getattr(after, name) - getattr(before, name) for name in WRITE_COUNTERS}


def describe_action(action: OptimizerAction) -> str:
    """``"ADD"`` or ``"UPDATE i"``, as the Mem-Optimizer wrote it."""
    return "ADD" if action.op == "ADD" else f"UPDATE {action.target}"


def build_record(
    tried: Attempt,
    parsed: OptimizerAction | str | None,
    written: BankEntry | None,
    *,
    epoch: int,
    index: int,
    position: int,
    optimizer_tokens: int,
    bank_size: int,
    changes: Mapping[str, int],
    first_failure: str | None = None,
) -> TaskRecord:
    """The record of one task from its attempt and the parsed optimizer reply (a str is a failure reason).

    ``parsed`` is None when the mode asks no Mem-Optimizer and writes nothing (``"no-memory"``).
    ``first_failure`` is the reason the first reply was malformed when ``parsed`` comes from the repair
    request; it is what ``format_failure`` keeps, so repairs never hide a format failure.
    """
    result = tried.result
    if parsed is None:
        action, failure = None, None
    elif isinstance(parsed, str):
        action, failure = None, parsed
    else:
        action, failure = describe_action(parsed), None
    if first_failure is not None:
        failure = first_failure
    return TaskRecord(
        epoch=epoch,
        index=index,
        position=position,
        task_id=tried.task.id,
        success=result.success,
        answer=result.answer,
        gold=tried.task.answer,
        tokens=result.length,
        steps=result.steps,
        progress=result.progress,
        retrieved=len(tried.entries),
        retrieved_ids=tuple(e.id for e in tried.entries),
        similarities=tuple(round(s, 6) for s in tried.retrieval.similarities),
        dropped_by_floor=tried.retrieval.dropped_by_floor,
        optimizer_tokens=optimizer_tokens,
        action=action,
        format_failure=failure,
        written_id=None if written is None else written.id,
        bank_size=bank_size,
        bank_changes=dict(changes),
        metadata=dict(result.metadata),
        repaired=first_failure is not None and action is not None,
    )


# -- I/O: records, state, bank checkpoints ------------------------------------------------------


@dataclass(frozen=True)
class EvolvePaths:
    """Where a run directory keeps each part of an evolution run."""

    root: Path

    @property
    def state(self) -> Path:
        """The run's fixed settings and task stream digest; a resume with other settings is refused."""
        return self.root / "evolve.json"

    @property
    def records(self) -> Path:
        """One JSON line per finished task, in order."""
        return self.root / "records.jsonl"

    @property
    def bank(self) -> Path:
        """The live insight bank."""
        return self.root / "bank.sqlite3"

    def checkpoint(self, done: int) -> Path:
        """The bank's snapshot after ``done`` records, which a resumed run restores."""
        return self.root / f"bank.ckpt-{done:06d}.sqlite3"

    def checkpoints(self) -> list[Path]:
        """Every snapshot on disk, oldest first (the zero-padded count sorts by name)."""
        return sorted(self.root.glob("bank.ckpt-*.sqlite3"))


def append_record(path: Path, record: TaskRecord) -> None:
    """Append one record as a JSON line, flushed to disk before returning: this is the task's commit."""
    append_jsonl(path, record.to_dict())


def read_records(path: Path) -> list[TaskRecord]:
    """The complete records of ``records.jsonl``; a torn last line (a write cut short) is removed.

    A line that is not a task record means the file was edited, which is refused rather than guessed around.
    """
    records: list[TaskRecord] = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            records.append(TaskRecord.from_dict(row))
        except (TypeError, AttributeError) as exc:
            raise StoreError(f"{path}: line {number} is not a task record ({exc}); use a fresh --run-dir") from exc
    return records


def _stream_digest(tasks: Sequence[Task]) -> str:
    blob = json.dumps([[t.id, t.prompt, t.answer] for t in tasks], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _check_state(paths: EvolvePaths, config: EvolveConfig, tasks: Sequence[Task]) -> None:
    """Write the run's fixed settings on first use; refuse to continue a run started differently."""
    expected = {**config.fixed(), "tasks": len(tasks), "stream": _stream_digest(tasks)}
    if not paths.state.exists():
        write_text_atomic(paths.state, json.dumps(expected, indent=2) + "\n")
        return
    found = json.loads(paths.state.read_text(encoding="utf-8"))
    found = {**_ADDED_SETTINGS, **found}
    changed = [f"{k} was {found.get(k)!r}, now {v!r}" for k, v in expected.items() if found.get(k) != v]
    if changed:
        raise ConfigError(
            f"run directory {paths.root} holds an evolution run started differently ({'; '.join(changed)}): "
            "resume with the same settings and tasks, or use a fresh --run-dir"
        )


def _check_records(records: Sequence[TaskRecord], tasks: Sequence[Task], total: int, root: Path) -> None:
    if len(records) > total:
        raise ConfigError(
            f"run directory {root} already holds {len(records)} task records, more than the {total} asked for: "
            "raise --epochs or use a fresh --run-dir"
        )
    for position, record in enumerate(records):
        epoch, index = divmod(position, len(tasks))
        if (record.epoch, record.index, record.task_id) != (epoch + 1, index, tasks[index].id):
            raise ConfigError(
                f"{root}: record {position} is task {record.task_id!r} (epoch {record.epoch}, index {record.index}), "
                f"expected {tasks[index].id!r} (epoch {epoch + 1}, index {index}): use a fresh --run-dir"
            )


def _checkpoint(paths: EvolvePaths, done: int) -> None:
    """Snapshot the bank as it is after ``done`` records, then drop older snapshots."""
    keep = paths.checkpoint(done)
    snapshot_sqlite(paths.bank, keep)
    for old in paths.checkpoints():
        if old != keep:
            old.unlink(missing_ok=True)


def _restore_bank(paths: EvolvePaths, done: int) -> None:
    """Bring the live bank to its state after ``done`` records (see the module docstring)."""
    if done == 0:
        remove_sqlite(paths.bank)  # whatever a killed first task wrote
        for old in paths.checkpoints():
            old.unlink(missing_ok=True)
        return
    saved = paths.checkpoint(done)
    if saved.exists():
        restore_sqlite(saved, paths.bank)
        return
    # No snapshot for the last record: the run stopped between writing that record and the snapshot,
    # and the live bank has not been touched since. Anything else means files were removed by hand.
    if not paths.bank.exists():
        raise StoreError(f"{paths.root}: {done} task records but neither a bank nor its checkpoint; use a fresh run")
    _checkpoint(paths, done)


# -- the loop -----------------------------------------------------------------------------------


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


def _rejected(parsed: OptimizerAction | str) -> OptimizerAction | Rejected:
    """The optimizer parsers' "reason string" convention in the shared repair flow's terms."""
    return Rejected(parsed) if isinstance(parsed, str) else parsed


async def evolve_step(
    bank: InsightBank,
    executor: Executor,
    optimizer: ChatModel,
    task: Task,
    *,
    epoch: int,
    index: int,
    position: int,
    optimizer_max_tokens: int = 1024,
    ledger: Ledger | None = None,
    repair: bool = False,
) -> TaskRecord:
    """One task of the stream: attempt, Mem-Optimizer (greedy), apply a well-formed action, record it.

    A malformed reply leaves the bank as it was; with ``ledger`` it is also logged as a failure of the
    optimizer stage, raw reply included, so a report can show what the model wrote. With ``repair``
    the optimizer gets one more request whose output a JSON schema constrains; its action is applied
    if valid, and the record still carries the first reply's failure. Lessons that merely restate the
    answer or an option are dropped (:func:`screen_lessons`); an action left with none is recorded as an
    "answer leak" and not applied.
    """
    before = replace(bank.stats)
    tried = await attempt(bank, executor, task)
    n = len(tried.entries)
    request = ChatRequest(messages=tuple(tried.messages), temperature=0.0, max_tokens=optimizer_max_tokens, seed=0)
    detail = f"task {task.id} (epoch {epoch}, index {index}), {n} entries shown"

    def log_failure(kind: str, raw: str) -> None:
        if ledger is not None:
            ledger.record_failure(stage=OPTIMIZER_STAGE, kind=kind, detail=detail, raw=raw)

    def ask_for_json(_: ChatRequest, __: Sample, ___: str) -> ChatRequest:
        # The malformed reply is not shown back (see build_repair_messages); the schema bounds the answer.
        return ChatRequest(
            messages=tuple(build_repair_messages(tried.messages, n)),
            temperature=0.0,
            max_tokens=REPAIR_MAX_TOKENS,
            seed=0,
            json_schema=repair_schema(n),
            schema_name="MemoryDecision",
        )

    out = await complete_with_repair(
        optimizer,
        request,
        lambda text: _rejected(try_parse_optimizer_output(text, n)),
        repair=ask_for_json if repair else None,
        parse_repair=lambda text: _rejected(parse_repair(text, n)),
    )
    tokens = sum(sample.usage.completion_tokens for sample in out.samples)
    source = out.samples[-1].text  # the reply the action (or its failure) came from
    first_failure = out.first_failure
    if first_failure is not None:
        log_failure(first_failure, out.samples[0].text)
    if out.value is None and len(out.samples) > 1 and out.failure is not None:
        log_failure(out.failure, source)
    parsed: OptimizerAction | str = out.value if out.value is not None else (out.failure or "unparseable reply")
    if not isinstance(parsed, str):
        parsed = screen_lessons(parsed, task.answer, task.choices)
        if isinstance(parsed, str):
            log_failure(parsed, source)
    written: BankEntry | None = None
    if not isinstance(parsed, str):
        written = await apply_action(bank, task.key(), tried.entries, parsed)
    return build_record(
        tried,
        parsed,
        written,
        epoch=epoch,
        index=index,
        position=position,
        optimizer_tokens=tokens,
        bank_size=bank.count(),
        changes=bank_changes(before, bank.stats),
        first_failure=first_failure,
    )


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


async def baseline_step(
    mode: Mode, bank: InsightBank, executor: Executor, task: Task, *, epoch: int, index: int, position: int
) -> TaskRecord:
    """One task of a baseline mode (``"no-memory"`` or ``"raw-trajectory"``, see :mod:`memwise.umem.baselines`)."""
    before = replace(bank.stats)
    parsed: OptimizerAction | None = None
    written: BankEntry | None = None
    if mode == "no-memory":
        tried = await no_memory_step(executor, task)
    elif mode == "raw-trajectory":
        tried, parsed, written = await raw_trajectory_step(bank, executor, task)
    else:
        raise ConfigError(f"baseline_step: {mode!r} is not a baseline mode (no-memory, raw-trajectory)")
    return build_record(
        tried,
        parsed,
        written,
        epoch=epoch,
        index=index,
        position=position,
        optimizer_tokens=0,
        bank_size=bank.count(),
        changes=bank_changes(before, bank.stats),
    )


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
    _check_state(paths, config, tasks)
    records = read_records(paths.records)
    total = config.epochs * len(tasks)
    _check_records(records, tasks, total, paths.root)
    resumed_from = len(records)
    _restore_bank(paths, resumed_from)
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
            _checkpoint(paths, position + 1)
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
