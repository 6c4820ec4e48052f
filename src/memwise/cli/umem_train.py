"""`memwise umem train` and `memwise umem export-verl`: train a Mem-Optimizer, or hand its data to verl.

Both open the same workspace (:mod:`memwise.umem.workspace`: tasks, neighbourhoods, executor, bank).
``train`` then runs GRPO on a Hugging Face causal LM (a path or hub id already in the local cache)
with the bank evolving as it trains; ``export-verl`` writes the same tasks as a verl parquet file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._config_options import ConfigOptions, with_config_options
from memwise.cli._options import GlobalOptions, spinner
from memwise.cli._rundirs import model_changes, model_identity
from memwise.exceptions import ConfigError
from memwise.umem.executors import KNOWN_SUITES, check_suite
from memwise.umem.grpo_settings import GRPOSettings, LoRASettings
from memwise.umem.workspace import TrainSource, train_session

Suite = Annotated[str, typer.Option(help=f"task suite: {', '.join(KNOWN_SUITES)}")]
DataPath = Annotated[Path, typer.Option(help="the suite's data file or directory")]
RunDirOpt = Annotated[Path, typer.Option(help="run directory: trainset, bank, ledger, step log, model")]
SOURCE_FIELDS = ("limit", "seed", "neighbours", "top_k", "floor", "max_tokens")
"""The workspace settings both commands take; the command itself gives the suite, data path and run directory."""
SUPPLIED = ("suite", "path", "run_dir")
GRPO_FIELDS = (
    "group_size",
    "batch_tasks",
    "micro_batch_size",
    "beta",
    "learning_rate",
    "epochs",
    "max_steps",
    "max_completion_length",
    "model_dtype",
    "save_steps",
)


@with_config_options(
    source=ConfigOptions(TrainSource, (*SOURCE_FIELDS, "near_duplicate"), supplied=SUPPLIED),
    grpo=ConfigOptions(GRPOSettings, GRPO_FIELDS),
)
def train_command(
    ctx: typer.Context,
    suite: Suite,
    path: DataPath,
    optimizer_model: Annotated[str, typer.Option(help="Hugging Face causal LM path (or cached id) to train")],
    run_dir: RunDirOpt = Path("runs/umem-train"),
    form: Annotated[str, typer.Option(help="reward form: paper (vs. current bank) or released (vs. no memory)")] = (
        "paper"
    ),
    snm: Annotated[
        bool, typer.Option("--snm/--no-snm", help="judge on semantic neighbours; --no-snm: on the task itself")
    ] = True,
    lora_r: Annotated[int, typer.Option(help="train a LoRA adapter of this rank (0: full fine-tuning)")] = 0,
    *,
    source: Callable[..., TrainSource],
    grpo: GRPOSettings,
) -> None:
    """GRPO-train a Mem-Optimizer on a suite, rewarded by marginal utility on neighbouring tasks.

    Re-running the command on the same run directory resumes from its latest checkpoint, bank included.
    """
    from memwise.umem.grpo import train_mem_optimizer
    from memwise.umem.grpo_checkpoints import latest_checkpoint

    opts: GlobalOptions = ctx.obj
    key = check_suite(suite)
    if form not in ("paper", "released"):
        raise ConfigError(f"--form must be 'paper' or 'released', got {form!r}")
    # Settings raise ConfigError themselves; a ValueError from trl or torch is a bug, not a config error.
    src = source(suite=key, path=path, run_dir=run_dir)
    lora = LoRASettings(r=lora_r, alpha=2 * lora_r) if lora_r > 0 else None
    settings = replace(grpo, seed=src.seed, lora=lora)  # one --seed for the tasks and trl
    console = Console()
    checkpoint = latest_checkpoint(run_dir / "grpo")
    if checkpoint is not None:
        console.print(f"resuming from {checkpoint} (model, optimizer state and bank of that step)", soft_wrap=True)
    configured = opts.settings()
    for line in model_changes(run_dir, configured):
        console.print(f"warning: {run_dir} was run with other models; recorded calls will be replayed. {line}")
    with train_session(configured, src, checkpoint) as (bridge, parts):
        parts.run.write_manifest(
            f"memwise umem train --suite {key}",
            {
                "grpo": settings,
                "form": form,
                "snm": snm,
                "path": path,
                "tasks": len(parts.trainset),
                "models": model_identity(configured),
            },
        )
        console.print(
            f"{key}: {len(parts.trainset)} tasks, "
            f"{f'N={src.neighbours}' if snm else 'no SNM (judged on the task itself)'}, "
            f"{parts.trainset.duplicates_excluded} near-duplicate pairs never judge each other; "
            f"executor {parts.models.get('policy').describe()}; "
            f"training {optimizer_model}"
        )
        result = train_mem_optimizer(
            optimizer_model,
            parts.trainset,
            parts.trainset.scorer(parts.bank, parts.executor, form=form, snm=snm),  # type: ignore[arg-type]
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


@with_config_options(source=ConfigOptions(TrainSource, SOURCE_FIELDS, supplied=SUPPLIED))
def export_verl_command(
    ctx: typer.Context,
    suite: Suite,
    path: DataPath,
    out: Annotated[Path, typer.Option(help="the parquet file to write")],
    run_dir: RunDirOpt = Path("runs/umem-train"),
    split: Annotated[str, typer.Option(help="the split name stored in extra_info")] = "train",
    *,
    source: Callable[..., TrainSource],
) -> None:
    """Write the suite as verl parquet: Mem-Optimizer prompt, gold answer, neighbours in extra_info."""
    from memwise.umem.verl_export import export_verl

    opts: GlobalOptions = ctx.obj
    key = check_suite(suite)
    src = source(suite=key, path=path, run_dir=run_dir)
    with train_session(opts.settings(), src) as (bridge, parts):
        with spinner(f"exporting {len(parts.trainset)} tasks"):
            written = bridge.run(export_verl(parts.trainset, parts.bank, parts.executor, out, split=split))
    typer.echo(f"wrote {len(parts.trainset)} rows to {written}")
