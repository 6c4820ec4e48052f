"""`memwise reproduce umem`: UMEM's protocol (baselines, UMEM, ablations) on every suite, one report.

The protocol, its cost estimate and the report live in :mod:`memwise.umem.reproduce`; this module only
turns flags into its arguments and prints.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memwise.cli._config_options import ConfigOptions, with_config_options
from memwise.cli._option_blocks import EVOLVE_FIELDS, FLOOR
from memwise.cli._options import GlobalOptions
from memwise.exceptions import ConfigError
from memwise.umem.reproduce import ABLATIONS, ReproduceUMEMConfig


def _pairs(values: list[str], flag: str, what: str) -> dict[str, str]:
    """``KEY=VALUE`` flags as a dict, or a ConfigError naming the flag and the expected form."""
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise ConfigError(f"{flag} takes {what}, got {value!r}")
        if key.strip() in out:
            raise ConfigError(f"{flag} names {key.strip()!r} twice")
        out[key.strip().lower()] = rest.strip()
    return out


@with_config_options(
    config=ConfigOptions(ReproduceUMEMConfig, (*EVOLVE_FIELDS, "prompt_style", "seed", "limit"), FLOOR)
)
def reproduce_umem_command(
    ctx: typer.Context,
    suite: Annotated[
        list[str], typer.Option("--suite", help="NAME=PATH, repeatable: mmlu, aime, gpqa, hotpotqa, hle, alfworld")
    ],
    out: Annotated[Path, typer.Option("--out", help="run root: one folder per suite and method, the report on top")] = (
        Path("runs/reproduce-umem")
    ),
    ablation: Annotated[
        list[str] | None,
        typer.Option(
            "--ablation",
            help=f"KEY=SERVED_MODEL, repeatable: a Mem-Optimizer trained for an ablation ({', '.join(ABLATIONS)}), "
            "served at the optimizer role's server",
        ),
    ] = None,
    baseline_optimizer_model: Annotated[
        str | None, typer.Option(help="the untrained base model for No-Train (default: the policy model)")
    ] = None,
    baseline_optimizer_base_url: Annotated[
        str | None, typer.Option(help="its server (default: the optimizer role's)")
    ] = None,
    estimate_only: Annotated[bool, typer.Option(help="print the cost estimate and stop before any call")] = False,
    *,
    config: ReproduceUMEMConfig,
) -> None:
    """Run every baseline, UMEM and each served ablation on the same streams; write report.md under --out.

    Re-running on the same --out resumes each sub-run; finished ones cost nothing again.
    """
    from memwise.umem.reproduce import reproduce_umem

    opts: GlobalOptions = ctx.obj
    suites = {name: Path(path) for name, path in _pairs(suite, "--suite", "NAME=PATH").items()}
    ablations = _pairs(ablation or [], "--ablation", "KEY=SERVED_MODEL")
    settings = opts.settings()
    baseline = None
    if baseline_optimizer_model or baseline_optimizer_base_url:
        base = settings.model("optimizer")
        baseline = replace(
            base,
            model=baseline_optimizer_model or base.model,
            base_url=baseline_optimizer_base_url or base.base_url,
        )
    console = Console()
    report = asyncio.run(
        reproduce_umem(
            suites,
            out,
            settings=settings,
            config=config,
            ablations=ablations,
            baseline_optimizer=baseline,
            estimate_only=estimate_only,
            echo=lambda line: console.print(line, soft_wrap=True, markup=False),
        )
    )
    if report is not None:
        console.print(f"report: {report}", soft_wrap=True)
