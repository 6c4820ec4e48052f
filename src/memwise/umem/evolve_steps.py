"""One task of an evolution stream: the UMEM step (attempt, Mem-Optimizer, apply) and the baselines' steps.

Each step returns the task's :class:`~memwise.umem.evolve_records.TaskRecord`; the loop around them,
resuming and checkpoints are :mod:`memwise.umem.evolve`'s.
"""

from __future__ import annotations

from dataclasses import replace

from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel, ChatRequest, Sample
from memwise.llm.structured import Rejected, complete_with_repair
from memwise.runs.ledger import Ledger
from memwise.tasks.types import Task
from memwise.umem.bank import BankEntry, BankStats, InsightBank
from memwise.umem.baselines import Mode, no_memory_step, raw_trajectory_step
from memwise.umem.evolve_config import OPTIMIZER_STAGE
from memwise.umem.evolve_records import TaskRecord, bank_changes, build_record
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

__all__ = ["REPAIR_MAX_TOKENS", "baseline_step", "evolve_step"]

REPAIR_MAX_TOKENS = 320
"""Budget of the schema-constrained repair reply: two lessons of 200 characters fit even in math text."""


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
    place = (epoch, index, position)
    return _record(bank, before, tried, parsed, written, place, optimizer_tokens=tokens, first_failure=first_failure)


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
    return _record(bank, before, tried, parsed, written, (epoch, index, position))


def _record(
    bank: InsightBank,
    before: BankStats,
    tried: Attempt,
    parsed: OptimizerAction | str | None,
    written: BankEntry | None,
    place: tuple[int, int, int],
    *,
    optimizer_tokens: int = 0,
    first_failure: str | None = None,
) -> TaskRecord:
    """The task's record at ``place`` (epoch, index, position), with the bank as the task left it."""
    epoch, index, position = place
    return build_record(
        tried,
        parsed,
        written,
        epoch=epoch,
        index=index,
        position=position,
        optimizer_tokens=optimizer_tokens,
        bank_size=bank.count(),
        changes=bank_changes(before, bank.stats),
        first_failure=first_failure,
    )
