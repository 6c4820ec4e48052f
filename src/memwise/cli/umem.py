"""`memwise umem evolve`: UMEM's online memory evolution over a benchmark stream, from the shell."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memwise.cli._config_options import ConfigOptions, with_config_options
from memwise.cli._option_blocks import EVOLVE_FIELDS, FLOOR
from memwise.cli._options import GlobalOptions
from memwise.cli._rundirs import open_run
from memwise.cli.umem_train import export_verl_command, train_command
from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.tasks.types import Task
from memwise.umem.baselines import OPTIMIZER_MODES
from memwise.umem.evolve import EvolveProgress, EvolveResult
from memwise.umem.evolve_config import EvolveConfig
from memwise.umem.evolve_report import EvolveSummary, ReportFiles, failures_text, repairs_text
from memwise.umem.executors import KNOWN_SUITES, check_suite

umem_app = typer.Typer(
    help="UMEM: a self-evolving bank of insights distilled from task attempts.", no_args_is_help=True
)


@with_config_options(
    evolve_options=ConfigOptions(EvolveConfig, (*EVOLVE_FIELDS, "mode", "prompt_style"), FLOOR, supplied=("suite",))
)
def evolve_command(
    ctx: typer.Context,
    suite: Annotated[str, typer.Option(help=f"benchmark suite: {', '.join(KNOWN_SUITES)}")],
    path: Annotated[Path, typer.Option(help="the suite's data file")],
    run_dir: Annotated[Path, typer.Option(help="run directory: bank, records, ledger, report")] = Path(
        "runs/umem-evolve"
    ),
    limit: Annotated[int | None, typer.Option(help="use only the first N tasks")] = None,
    seed: Annotated[int, typer.Option(help="fixes GPQA's option order (other suites keep the file's)")] = 0,
    *,
    evolve_options: Callable[..., EvolveConfig],
) -> None:
    """Stream the tasks for K epochs: retrieve, execute, let the Mem-Optimizer ADD or UPDATE; resumes a run dir."""
    # The executor is the policy model, the Mem-Optimizer the optimizer model (the policy model when no
    # optimizer is configured); both run greedily and every call is kept in the run's ledger.
    from memwise.tasks.suites import load_suite

    opts: GlobalOptions = ctx.obj
    key = check_suite(suite)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    config = evolve_options(suite=key)
    tasks = load_suite(key, path, seed=seed, limit=limit)
    if not tasks:
        raise ConfigError(f"{path} holds no {key} tasks")
    console = Console()
    started = time.monotonic()
    result, files = asyncio.run(_evolve(opts.settings(), tasks, run_dir, config, console, str(path)))
    _print_summary(console, result, files, time.monotonic() - started)


async def _evolve(
    settings: Settings, tasks: list[Task], run_dir: Path, config: EvolveConfig, console: Console, source: str
) -> tuple[EvolveResult, ReportFiles]:
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import ModelSet
    from memwise.umem.evolve import evolve
    from memwise.umem.evolve_config import EXECUTOR_STAGE, OPTIMIZER_STAGE
    from memwise.umem.evolve_report import write_report
    from memwise.umem.executors import make_executor

    command = f"memwise umem evolve --suite {config.suite}"
    # Refused if another run holds the folder; warns when the models differ from the recorded ones.
    config_record = {"evolve": config, "path": source, "tasks": len(tasks)}
    run = open_run(run_dir, command, config_record, settings, warn=console.print)
    try:
        models = ModelSet(settings)
        embedder = build_embedder(settings.embedding, cache_path=run_dir / "embeddings.sqlite3")
    except BaseException:
        run.close()
        raise
    console.print(
        f"{config.suite}: {len(tasks)} tasks x {config.epochs} epoch(s); executor {models.get('policy').describe()}, "
        f"Mem-Optimizer {models.get('optimizer').describe()}"
    )
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[accuracy]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bar_id = bar.add_task("epoch 1", total=config.epochs * len(tasks), accuracy="")

    def progress(event: EvolveProgress) -> None:
        epoch_acc = "-" if event.epoch_accuracy is None else f"{event.epoch_accuracy:.3f}"
        stream_acc = "-" if event.stream_accuracy is None else f"{event.stream_accuracy:.3f}"
        bar.update(
            bar_id,
            completed=event.done,
            description=f"epoch {event.epoch}/{config.epochs}",
            accuracy=f"acc {epoch_acc} (epoch) {stream_acc} (all)",
        )

    try:
        executor = make_executor(
            config.suite,
            run.record(models.get("policy"), EXECUTOR_STAGE),
            max_tokens=config.max_tokens,
            prompt_style=config.prompt_style,
        )
        optimizer = run.record(models.get("optimizer"), OPTIMIZER_STAGE) if config.mode in OPTIMIZER_MODES else None
        with bar:
            result = await evolve(
                tasks,
                executor=executor,
                optimizer=optimizer,
                embedder=embedder,
                run=run,
                config=config,
                on_progress=progress,
            )
    finally:
        await embedder.aclose()
        await models.aclose()
        run.close()
    return result, write_report(run_dir, result.summary)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_summary(console: Console, result: EvolveResult, files: ReportFiles, wall_s: float) -> None:
    summary: EvolveSummary = result.summary
    if result.resumed_from:
        console.print(f"resumed after {result.resumed_from} recorded tasks (their model calls come from the ledger)")
    env = any(e.mean_progress is not None for e in summary.epochs)
    table = Table(
        "epoch", "tasks", "accuracy", *(["progress"] if env else []), "steps", "ADD", "UPDATE", "malformed", "bank"
    )
    for e in summary.epochs:
        table.add_row(
            str(e.epoch) if e.complete else f"{e.epoch} (partial)",
            str(e.tasks),
            _acc(e.accuracy),
            *([_acc(e.mean_progress)] if env else []),
            f"{e.mean_steps:.1f}",
            str(e.adds),
            str(e.updates),
            str(e.format_failures),
            str(e.bank_size),
        )
    console.print(table)
    console.print(
        f"stream accuracy {_acc(summary.accuracy)} over {summary.completed}/{summary.total} tasks; "
        f"bank: {summary.bank_size} entries ({summary.bank.added} added, {summary.bank.merged} merged, "
        f"{summary.bank.updated} updated, {summary.bank.evicted} evicted)"
    )
    if summary.mode not in OPTIMIZER_MODES:
        console.print(f"mode {summary.mode}: no Mem-Optimizer called")
    elif summary.format_failures:
        # The report's wording, so the two never disagree on what a repaired reply did to the bank.
        console.print(f"[yellow]{failures_text(summary)}[/]")
        repaired = repairs_text(summary)
        if repaired:
            console.print(repaired)
    else:
        console.print("Mem-Optimizer format failures: none")
    calls = Table("stage", "calls", "tokens (prompt+completion)", "latency s", "errors", "retries")
    for name, st in summary.stages.items():
        calls.add_row(
            name,
            str(st.calls),
            f"{st.prompt_tokens}+{st.completion_tokens}",
            f"{st.latency_s:.1f}",
            str(st.errors),
            st.retries_text(),
        )
    console.print(calls)
    console.print(f"wall time {wall_s:.1f}s")
    console.print(f"records: {result.paths.records}")
    console.print(f"summary: {files.summary_json}")
    console.print(f"report:  {files.report_md}")
    for plot in files.plots:
        console.print(f"plot:    {plot}")
    if files.plot_note:
        console.print(f"[yellow]{files.plot_note}[/]")


# The group's commands, in `memwise umem --help` order (train and export-verl live in umem_train.py).
umem_app.command("evolve")(evolve_command)
umem_app.command("train")(train_command)
umem_app.command("export-verl")(export_verl_command)
