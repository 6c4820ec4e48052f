"""`memwise reproduce metamem|umem`: one command per paper, running its protocol end to end.

Each command is thin: the protocol, the cost estimate and the report live in the library
(``memwise.metamem.reproduce``, ``memwise.umem.reproduce``) so they are tested without the shell.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memwise.cli._config_options import ConfigOptions, with_config_options
from memwise.cli._option_blocks import train_options
from memwise.cli._options import DatasetFormat, DatasetPath, GlobalOptions, dataset_format
from memwise.cli.reproduce_umem import reproduce_umem_command
from memwise.metamem.reproduce import ReproduceConfig
from memwise.metamem.train_config import TrainConfig

reproduce_app = typer.Typer(help="Reproduce a paper's tables end to end on your model servers.", no_args_is_help=True)


@reproduce_app.command("metamem")
@with_config_options(
    protocol=ConfigOptions(ReproduceConfig, ("folds", "val_frac", "memory", "top_k", "metric")),
    train=train_options(),
)
def metamem(
    ctx: typer.Context,
    path: DatasetPath,
    out: Annotated[Path, typer.Option("--out", help="run root: one folder per fold, the report at the top")] = Path(
        "runs/reproduce-metamem"
    ),
    dataset: DatasetFormat = "auto",
    conversations: Annotated[int | None, typer.Option(help="use only the first N conversations")] = None,
    estimate_only: Annotated[bool, typer.Option(help="print the cost estimate and stop before any call")] = False,
    *,
    protocol: ReproduceConfig,
    train: TrainConfig,
) -> None:
    """Run MetaMem's protocol on all folds; write report.md and results.json under --out."""
    from memwise.metamem.reproduce import reproduce_metamem

    opts: GlobalOptions = ctx.obj
    config = replace(protocol, seed=train.seed)  # one --seed for the folds and the training
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
