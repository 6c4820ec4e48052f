"""`memwise umem train` and `memwise umem export-verl`: train a Mem-Optimizer, or hand its data to verl.

Both start the same way: load a suite, embed every task once and store its N nearest neighbours
(`trainset.json` in the run directory, reused by later runs), and build the frozen executor from
the ``policy`` model role with every call kept in the run's ledger. ``train`` then runs GRPO on a
Hugging Face causal LM (a path or hub id already in the local cache) with the bank evolving as it
trains; ``export-verl`` writes the same tasks as a verl parquet file for cluster training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._options import GlobalOptions, config_option, lazy_config_option, spinner
from memwise.cli._rundirs import model_changes, model_identity
from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.umem.evolve import EvolveConfig
from memwise.umem.executors import KNOWN_SUITES, check_suite

if TYPE_CHECKING:
    from memwise.embed.base import Embedder
    from memwise.llm.registry import ModelSet
    from memwise.runs.rundir import RunDir
    from memwise.tasks.types import Task
    from memwise.umem.bank import InsightBank
    from memwise.umem.bridge import AsyncBridge
    from memwise.umem.loop import Executor
    from memwise.umem.trainset import TrainSet

EXECUTOR_STAGE = "umem-train-executor"
BANK_SCOPE = "umem-train"


@dataclass
class _Parts:
    """What both commands build on the bridge's loop, and must close on it."""

    run: RunDir
    models: ModelSet
    embedder: Embedder
    executor: Executor
    trainset: TrainSet
    bank: InsightBank

    async def aclose(self) -> None:
        await self.embedder.aclose()
        await self.models.aclose()


@dataclass(frozen=True)
class _Source:
    """Where the tasks come from and how the bank and executor are set up (shared by both commands)."""

    suite: str
    path: Path
    run_dir: Path
    limit: int | None
    seed: int
    neighbours: int
    top_k: int
    floor: float
    max_tokens: int


async def _build(settings: Settings, src: _Source, bank_from: Path | None = None) -> _Parts:
    from memwise.runs.rundir import RunDir
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
    run: RunDir, settings: Settings, src: _Source, tasks: list[Task], bank_from: Path | None
) -> _Parts:
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import ModelSet
    from memwise.store.sqlite import SQLiteStore
    from memwise.umem.bank import InsightBank
    from memwise.umem.executors import make_executor
    from memwise.umem.trainset import TrainSet, build_trainset

    models = ModelSet(settings)
    embedder = build_embedder(settings.embedding, cache_path=src.run_dir / "embeddings.sqlite3")
    stored = src.run_dir / "trainset.json"
    if stored.exists():
        trainset = TrainSet.load(stored)
        if [t.id for t in trainset.tasks] != [t.id for t in tasks]:
            raise ConfigError(f"{stored} was built from other tasks; use a new --run-dir or delete it")
    else:
        trainset = await build_trainset(tasks, embedder, neighbours=src.neighbours)
        trainset.save(stored)
    llm = run.record(models.get("policy"), EXECUTOR_STAGE)
    executor = make_executor(src.suite, llm, max_tokens=src.max_tokens)
    if bank_from is not None:
        from memwise.umem.grpo import restore_bank

        restore_bank(bank_from, src.run_dir / "bank.db")  # before the store opens it
    bank = InsightBank(
        SQLiteStore(src.run_dir / "bank.db"), embedder, agent_id=BANK_SCOPE, top_k=src.top_k,
        similarity_floor=src.floor,
    )  # fmt: skip
    return _Parts(run, models, embedder, executor, trainset, bank)


@contextmanager
def _session(settings: Settings, src: _Source, bank_from: Path | None = None) -> Iterator[tuple[AsyncBridge, _Parts]]:
    """One event loop for the whole command, the parts built on it, and everything closed on the way out."""
    from memwise.umem.bridge import AsyncBridge

    with AsyncBridge() as bridge:
        parts = bridge.run(_build(settings, src, bank_from))
        try:
            yield bridge, parts
        finally:
            bridge.run(parts.aclose())
            parts.bank.store.close()
            parts.run.close()


def _grpo(name: str, *, help: str) -> Any:  # noqa: A002
    return lazy_config_option("memwise.umem.grpo", "GRPOSettings", name, help=help)


Suite = Annotated[str, typer.Option(help=f"task suite: {', '.join(KNOWN_SUITES)}")]
DataPath = Annotated[Path, typer.Option(help="the suite's data file or directory")]
RunDirOpt = Annotated[Path, typer.Option(help="run directory: trainset, bank, ledger, step log, model")]


def train_command(
    ctx: typer.Context,
    suite: Suite,
    path: DataPath,
    optimizer_model: Annotated[str, typer.Option(help="Hugging Face causal LM path (or cached id) to train")],
    run_dir: RunDirOpt = Path("runs/umem-train"),
    limit: Annotated[int | None, typer.Option(help="use only the first N tasks")] = None,
    seed: Annotated[int, typer.Option(help="seeds trl, sampling and GPQA's option order")] = 0,
    form: Annotated[str, typer.Option(help="reward form: paper (vs. current bank) or released (vs. no memory)")] = (
        "paper"
    ),
    neighbours: Annotated[int, typer.Option(help="neighbours each memory is judged on (N)")] = 3,
    group_size: int = _grpo("group_size", help="completions per task (G)"),
    batch_tasks: int = _grpo("batch_tasks", help="tasks per GRPO step"),
    micro_batch_size: int = _grpo("micro_batch_size", help="completions per forward/backward pass"),
    beta: float = _grpo("beta", help="KL coefficient"),
    learning_rate: float = _grpo("learning_rate", help="constant learning rate"),
    epochs: float = _grpo("epochs", help="passes over the tasks"),
    max_steps: int = _grpo("max_steps", help="stop after N steps (-1: all epochs)"),
    max_completion_length: int = _grpo("max_completion_length", help="token cap of one Mem-Optimizer output"),
    lora_r: Annotated[int, typer.Option(help="train a LoRA adapter of this rank (0: full fine-tuning)")] = 0,
    model_dtype: str | None = _grpo("model_dtype", help="load dtype, e.g. bfloat16"),
    top_k: int = config_option(EvolveConfig, "top_k"),
    floor: float = config_option(EvolveConfig, "similarity_floor", "--floor"),
    max_tokens: int = config_option(EvolveConfig, "max_tokens"),
    save_steps: int = _grpo("save_steps", help="checkpoint (model, optimizer, bank) every N steps; 0: never"),
) -> None:
    """GRPO-train a Mem-Optimizer on a suite, rewarded by marginal utility on neighbouring tasks.

    Re-running the command on the same run directory resumes from its latest checkpoint, bank included.
    """
    from memwise.umem.grpo import GRPOSettings, LoRASettings, latest_checkpoint, train_mem_optimizer

    opts: GlobalOptions = ctx.obj
    key = check_suite(suite)
    if form not in ("paper", "released"):
        raise ConfigError(f"--form must be 'paper' or 'released', got {form!r}")
    # Settings raise ConfigError themselves; a ValueError from trl or torch is a bug, not a config error.
    settings = GRPOSettings(
        group_size=group_size,
        batch_tasks=batch_tasks,
        micro_batch_size=micro_batch_size,
        beta=beta,
        learning_rate=learning_rate,
        epochs=epochs,
        max_steps=max_steps,
        max_completion_length=max_completion_length,
        model_dtype=model_dtype,
        seed=seed,
        lora=LoRASettings(r=lora_r, alpha=2 * lora_r) if lora_r > 0 else None,
        save_steps=save_steps,
    )
    console = Console()
    src = _Source(key, path, run_dir, limit, seed, neighbours, top_k, floor, max_tokens)
    checkpoint = latest_checkpoint(run_dir / "grpo")
    if checkpoint is not None:
        console.print(f"resuming from {checkpoint} (model, optimizer state and bank of that step)", soft_wrap=True)
    configured = opts.settings()
    for line in model_changes(run_dir, configured):
        console.print(f"warning: {run_dir} was run with other models; recorded calls will be replayed. {line}")
    with _session(configured, src, checkpoint) as (bridge, parts):
        parts.run.write_manifest(
            f"memwise umem train --suite {key}",
            {
                "grpo": settings,
                "form": form,
                "path": path,
                "tasks": len(parts.trainset),
                "models": model_identity(configured),
            },
        )
        console.print(
            f"{key}: {len(parts.trainset)} tasks, N={neighbours}; "
            f"executor {parts.models.get('policy').describe()}; "
            f"training {optimizer_model}"
        )
        result = train_mem_optimizer(
            optimizer_model,
            parts.trainset,
            parts.trainset.scorer(parts.bank, parts.executor, form=form),  # type: ignore[arg-type]
            output_dir=run_dir / "grpo",
            settings=settings,
            bridge=bridge,
            resume_from=checkpoint,
        )
    table = Table(title=f"UMEM GRPO: {result.steps} steps")
    for column in ("step", "reward", "format ok", "utility", "executor runs", "commits", "bank"):
        table.add_column(column, justify="right")
    for r in result.records:
        utility = "-" if r.utility_mean is None else f"{r.utility_mean:.3f}"
        table.add_row(
            str(r.step), f"{r.reward_mean:.3f}", f"{r.format_ok_rate:.2f}", utility,
            str(r.executor_runs), str(r.commits), str(r.bank_size),
        )  # fmt: skip
    console.print(table)
    console.print(f"reward executor cost: {json.dumps(result.cost)}")
    console.print(f"step log: {result.output_dir / 'umem_steps.jsonl'}; model: {result.model_dir}")


def export_verl_command(
    ctx: typer.Context,
    suite: Suite,
    path: DataPath,
    out: Annotated[Path, typer.Option(help="the parquet file to write")],
    run_dir: RunDirOpt = Path("runs/umem-train"),
    limit: Annotated[int | None, typer.Option(help="use only the first N tasks")] = None,
    seed: Annotated[int, typer.Option(help="GPQA's option order")] = 0,
    split: Annotated[str, typer.Option(help="the split name stored in extra_info")] = "train",
    neighbours: Annotated[int, typer.Option(help="neighbours per task (N)")] = 3,
    top_k: int = config_option(EvolveConfig, "top_k"),
    floor: float = config_option(EvolveConfig, "similarity_floor", "--floor"),
    max_tokens: int = config_option(EvolveConfig, "max_tokens"),
) -> None:
    """Write the suite as verl parquet: Mem-Optimizer prompt, gold answer, neighbours in extra_info."""
    from memwise.umem.verl_export import export_verl

    opts: GlobalOptions = ctx.obj
    key = check_suite(suite)
    src = _Source(key, path, run_dir, limit, seed, neighbours, top_k, floor, max_tokens)
    with _session(opts.settings(), src) as (bridge, parts):
        with spinner(f"exporting {len(parts.trainset)} tasks"):
            written = bridge.run(export_verl(parts.trainset, parts.bank, parts.executor, out, split=split))
    typer.echo(f"wrote {len(parts.trainset)} rows to {written}")
