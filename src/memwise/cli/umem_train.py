"""`memwise umem train` and `memwise umem export-verl`: train a Mem-Optimizer, or hand its data to verl.

Both open the same workspace (:mod:`memwise.umem.workspace`: tasks, neighbourhoods, executor, bank).
``train`` then runs GRPO on a Hugging Face causal LM (a path or hub id already in the local cache)
with the bank evolving as it trains; ``export-verl`` writes the same tasks as a verl parquet file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._options import GlobalOptions, config_option, lazy_config_option, spinner
from memwise.cli._rundirs import model_changes, model_identity
from memwise.exceptions import ConfigError
from memwise.umem.evolve_config import EvolveConfig
from memwise.umem.executors import KNOWN_SUITES, check_suite
from memwise.umem.workspace import TrainSource, train_session


def _grpo(name: str, *, help: str) -> Any:  # noqa: A002
    return lazy_config_option("memwise.umem.grpo_settings", "GRPOSettings", name, help=help)


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
    snm: Annotated[
        bool, typer.Option("--snm/--no-snm", help="judge on semantic neighbours; --no-snm: on the task itself")
    ] = True,
    near_duplicate: Annotated[
        float, typer.Option(help="tasks closer than this cosine are copies, never neighbours")
    ] = 0.95,
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
    from memwise.umem.grpo import train_mem_optimizer
    from memwise.umem.grpo_checkpoints import latest_checkpoint
    from memwise.umem.grpo_settings import GRPOSettings, LoRASettings

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
    src = TrainSource(key, path, run_dir, limit, seed, neighbours, top_k, floor, max_tokens, near_duplicate)
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
            f"{f'N={neighbours}' if snm else 'no SNM (judged on the task itself)'}, "
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
    src = TrainSource(key, path, run_dir, limit, seed, neighbours, top_k, floor, max_tokens)
    with train_session(opts.settings(), src) as (bridge, parts):
        with spinner(f"exporting {len(parts.trainset)} tasks"):
            written = bridge.run(export_verl(parts.trainset, parts.bank, parts.executor, out, split=split))
    typer.echo(f"wrote {len(parts.trainset)} rows to {written}")
