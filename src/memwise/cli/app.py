"""Entry point: builds the Typer app from one visible list of commands, and maps memwise errors to one line.

Command modules define plain functions (and sub-apps for command groups) and never touch ``app``:
every command is added below, so reading this file tells you every command there is.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from memwise import __version__
from memwise.cli import bench, chat, demo, doctor, memory, metamem, reembed, reproduce, serve, tour, umem
from memwise.cli._options import GlobalOptions
from memwise.exceptions import MemwiseError

LOG_LEVELS = ("debug", "info", "warning", "error")

app = typer.Typer(
    name="memwise",
    help="Memory for LLM agents that learns how it should be used.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"memwise {__version__}")
        raise typer.Exit()


class _MemwiseLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler the CLI installs (marked by its class, so configuring again adds no second one).

    It writes to whatever ``sys.stderr`` is when a record arrives, not the stream of the moment it was
    installed: a caller that swaps stderr (a test runner, a notebook) would otherwise leave it writing
    to a closed stream.
    """

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler assigns one in __init__ and setStream; this handler always follows sys.stderr


def configure_logging(level: str) -> None:
    """Send memwise's log records at ``level`` and above to stderr, once per process.

    Only the ``memwise`` logger is configured (libraries keep their own levels); a second call (the
    tests invoke the app many times in one process) changes the level without stacking handlers.
    """
    name = level.lower()
    if name not in LOG_LEVELS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}", param_hint="--log-level")
    logger = logging.getLogger("memwise")
    logger.setLevel(name.upper())
    if not any(isinstance(h, _MemwiseLogHandler) for h in logger.handlers):
        handler = _MemwiseLogHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


@app.callback()
def _global(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
    log_level: Annotated[str, typer.Option(help=f"log level: {', '.join(LOG_LEVELS)}")] = "warning",
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
    embed_precision: Annotated[
        str | None,
        typer.Option(
            help="MiniLM precision: auto (default: bfloat16 on CPUs with native bf16, else float32), float32, bfloat16"
        ),
    ] = None,
) -> None:
    configure_logging(log_level)
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
        embed_precision=embed_precision,
    )


# Every command, in the order `memwise --help` lists them.
COMMANDS = (
    doctor.doctor,
    chat.chat,
    tour.tour,
    demo.demo,
    memory.ingest,
    memory.search,
    memory.answer,
    memory.consolidate,
    reembed.reembed,
    serve.serve,
    serve.mcp,
)
GROUPS = (
    ("bench", bench.bench_app),
    ("metamem", metamem.metamem_app),
    ("umem", umem.umem_app),
    ("reproduce", reproduce.reproduce_app),
    ("keys", serve.keys_app),
)
for _command in COMMANDS:
    app.command()(_command)
for _name, _group in GROUPS:
    app.add_typer(_group, name=_name)


def main() -> None:
    """Console entry point: memwise errors print as one clear line and exit 1."""
    try:
        app()
    except MemwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
