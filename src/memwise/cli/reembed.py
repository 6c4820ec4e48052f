"""`memwise reembed`: move a memory to the configured embedder after switching models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._options import GlobalOptions, JsonSwitch, progress_bar
from memwise.embed.registry import build_embedder
from memwise.exceptions import ConfigError
from memwise.facts.parts import default_store_path
from memwise.facts.reembed import DEFAULT_BATCH, ReembedReport, reembed_store
from memwise.store.registry import build_store, is_dsn


def reembed(
    ctx: typer.Context,
    db: Annotated[
        Path | None,
        typer.Option(help="memory database (default: the store setting, else $MEMWISE_HOME/memory.sqlite3)"),
    ] = None,
    drop_old: Annotated[
        bool, typer.Option("--drop-old", help="delete the other models' vectors once every memory has its new one")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="memories per embedding call and per write")] = DEFAULT_BATCH,
    as_json: JsonSwitch = False,
) -> None:
    """Re-embed a memory for the configured embedder; resumable, and the old vectors stay unless --drop-old."""
    opts: GlobalOptions = ctx.obj
    settings = opts.settings()
    spec: str | Path = db if db is not None else (settings.store or default_store_path())
    if not is_dsn(spec) and "://" not in str(spec) and not Path(spec).is_file():
        raise ConfigError(f"no memory at {spec}: give the database to re-embed with --db")
    console = Console(stderr=True)

    async def run() -> ReembedReport:
        store = build_store(spec)
        try:
            # Uncached: every text is embedded once here, and a cache would only keep a second copy.
            embedder = build_embedder(settings.embedding)
            try:
                with progress_bar(console=console) as bar:
                    task = bar.add_task(f"re-embed for {embedder.name}", total=None)
                    return await reembed_store(
                        store,
                        embedder,
                        drop_old=drop_old,
                        batch_size=batch_size,
                        on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
            finally:
                await embedder.aclose()
        finally:
            store.close()

    report = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    console.print(_summary(report))


def _summary(report: ReembedReport) -> Table:
    """Records done and vectors per space, before and after: what a user checks before dropping the old ones."""
    table = Table("", "before", "after", title=f"vector space {report.space!r}")
    table.add_row("memories embedded", "", str(report.embedded))
    table.add_row("already present", "", str(report.already_present))
    for space in sorted({*report.spaces_before, *report.spaces_after}):
        note = " (dropped)" if space in report.dropped else ""
        before, after = report.spaces_before.get(space, 0), report.spaces_after.get(space, 0)
        table.add_row(f"vectors in {space}{note}", str(before), str(after))
    return table
