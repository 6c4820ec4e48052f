"""`memwise reproduce metamem|umem`: one command per paper, running its protocol end to end.

Each command is thin: the protocol, the cost estimate and the report live in the library
(``memwise.metamem.reproduce``, ``memwise.umem.reproduce``) so they are tested without the shell.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memwise.cli._options import DatasetFormat, DatasetPath, GlobalOptions, config_option, dataset_format
from memwise.cli.reproduce_umem import reproduce_umem_command
from memwise.metamem.reproduce import ReproduceConfig
from memwise.metamem.train_config import StageBudgets, TrainConfig

reproduce_app = typer.Typer(help="Reproduce a paper's tables end to end on your model servers.", no_args_is_help=True)


@reproduce_app.command("metamem")
def metamem(
    ctx: typer.Context,
    path: DatasetPath,
    out: Annotated[Path, typer.Option("--out", help="run root: one folder per fold, the report at the top")] = Path(
        "runs/reproduce-metamem"
    ),
    dataset: DatasetFormat = "auto",
    folds: int = config_option(ReproduceConfig, "folds"),
    val_frac: float = config_option(ReproduceConfig, "val_frac"),
    memory: str = config_option(ReproduceConfig, "memory"),
    top_k: int = config_option(ReproduceConfig, "top_k"),
    metric: str = config_option(ReproduceConfig, "metric"),
    epochs: int = config_option(TrainConfig, "epochs"),
    batch_size: int = config_option(TrainConfig, "batch_size"),
    samples: int = config_option(TrainConfig, "samples"),
    temperature: float = config_option(TrainConfig, "temperature"),
    max_tokens: int = config_option(TrainConfig, "max_tokens"),
    answer_style: str = config_option(TrainConfig, "answer_style"),
    rollout_tokens: int | None = config_option(StageBudgets, "rollout", "--rollout-tokens"),
    judge_tokens: int | None = config_option(StageBudgets, "judge", "--judge-tokens"),
    reflection_tokens: int | None = config_option(StageBudgets, "reflection", "--reflection-tokens"),
    proposal_tokens: int | None = config_option(StageBudgets, "proposal", "--proposal-tokens"),
    consolidation_tokens: int | None = config_option(StageBudgets, "consolidation", "--consolidation-tokens"),
    seed: int = config_option(TrainConfig, "seed"),
    conversations: Annotated[int | None, typer.Option(help="use only the first N conversations")] = None,
    estimate_only: Annotated[bool, typer.Option(help="print the cost estimate and stop before any call")] = False,
) -> None:
    """Run MetaMem's protocol on all folds; write report.md and results.json under --out."""
    from memwise.metamem.reproduce import reproduce_metamem

    opts: GlobalOptions = ctx.obj
    config = ReproduceConfig(folds=folds, val_frac=val_frac, seed=seed, memory=memory, top_k=top_k, metric=metric)
    budgets = StageBudgets(
        rollout=rollout_tokens,
        judge=judge_tokens,
        reflection=reflection_tokens,
        proposal=proposal_tokens,
        consolidation=consolidation_tokens,
    )
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        samples=samples,
        temperature=temperature,
        max_tokens=max_tokens,
        answer_style=answer_style,
        budgets=budgets,
        seed=seed,
    )
    console = Console()
    report = asyncio.run(
        reproduce_metamem(
            path,
            out,
            settings=opts.settings(),
            dataset=dataset_format(dataset),
            config=config,
            train=train,
            conversations=conversations,
            estimate_only=estimate_only,
            echo=console.print,
        )
    )
    if report is not None:
        console.print(f"report: {report}")


reproduce_app.command("umem")(reproduce_umem_command)
