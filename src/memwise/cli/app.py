"""Entry point: builds the Typer app and maps memwise errors to clean one-line failures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from memwise.cli._options import GlobalOptions
from memwise.exceptions import MemwiseError

app = typer.Typer(
    name="memwise",
    help="Memory for LLM agents that learns how it should be used.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (default: $MEMWISE_CONFIG or ./memwise.toml)")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="policy model backend: local or openai")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for the policy model")] = None,
    model: Annotated[str | None, typer.Option(help="policy model name")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="environment variable holding the API key")] = None,
    concurrency: Annotated[int | None, typer.Option(help="model calls in flight at once")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="base URL for the judge model")] = None,
    judge_model: Annotated[str | None, typer.Option(help="judge model name")] = None,
    optimizer_base_url: Annotated[
        str | None, typer.Option(help="base URL for the UMEM Mem-Optimizer served by a model server")
    ] = None,
    optimizer_model: Annotated[str | None, typer.Option(help="Mem-Optimizer model name (served)")] = None,
    embed_backend: Annotated[str | None, typer.Option(help="embedding backend: minilm or openai")] = None,
    embed_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for /embeddings")] = None,
    embed_model: Annotated[str | None, typer.Option(help="embedding model name")] = None,
) -> None:
    ctx.obj = GlobalOptions(
        config=config,
        backend=backend,
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        concurrency=concurrency,
        judge_base_url=judge_base_url,
        judge_model=judge_model,
        optimizer_base_url=optimizer_base_url,
        optimizer_model=optimizer_model,
        embed_backend=embed_backend,
        embed_base_url=embed_base_url,
        embed_model=embed_model,
    )


def _register() -> None:
    # Command modules attach themselves to `app`; imported here so the app object exists first.
    from memwise.cli import bench, chat, demo, doctor, memory, metamem, serve, umem, umem_train  # noqa: F401


_register()


def main() -> None:
    """Console entry point: memwise errors print as one clear line and exit 1."""
    try:
        app()
    except MemwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
