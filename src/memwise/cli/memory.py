"""`memwise ingest`, `memwise search`, `memwise answer`: the factual memory from the shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from memwise.cli._options import GlobalOptions, parse_when
from memwise.cli.app import app
from memwise.exceptions import ConfigError
from memwise.facts.memory import AsyncMemory, Mode, default_store_path
from memwise.facts.readers import iter_conversations
from memwise.facts.units import render_for_prompt

DbOption = Annotated[Path | None, typer.Option(help="memory database (default: $MEMWISE_HOME/memory.sqlite3)")]
RunDirOption = Annotated[Path | None, typer.Option(help="run directory: model calls recorded and replayed")]


@app.command()
def ingest(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="LoCoMo JSON, LongMemEval JSON, or JSONL of sessions")],
    dataset: Annotated[str, typer.Option("--format", help="auto, locomo, longmemeval or jsonl")] = "auto",
    mode: Annotated[str, typer.Option(help="turns (no model) or facts (model extracts facts)")] = "turns",
    user_id: Annotated[
        str | None, typer.Option(help="store everything for this user (default: one user per conversation)")
    ] = None,
    errors: Annotated[
        str, typer.Option(help="raise: stop at the first malformed record; collect: skip and count")
    ] = "raise",
    db: DbOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Remember conversations from a dataset file; each conversation is written atomically."""
    if mode not in ("turns", "facts"):
        raise ConfigError(f"--mode must be 'turns' or 'facts', got {mode!r}")
    opts: GlobalOptions = ctx.obj
    asyncio.run(_ingest(opts, path, dataset, mode, user_id, errors, db, run_dir))  # type: ignore[arg-type]


async def _ingest(
    opts: GlobalOptions,
    path: Path,
    dataset: str,
    mode: Mode,
    user_id: str | None,
    errors: str,
    db: Path | None,
    run_dir: Path | None,
) -> None:
    console = Console(stderr=True)
    written = present = failures = fallbacks = turns = 0
    # The input is checked (path, format, first record) before the memory is opened, so a wrong path or
    # a binary file fails with the reader's one-line error and leaves no new database behind; errors
    # reach `main`, which prints MemwiseError as one line and exits 1.
    with iter_conversations(path, dataset, errors=errors) as stream:
        mem = AsyncMemory.from_settings(opts.settings(), db or default_store_path(), mode=mode, run_dir=run_dir)
        try:
            with Progress(
                TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as bar:
                task = bar.add_task("ingest", total=None)
                for conv in stream:
                    owner = user_id or str(conv.metadata.get("user_id") or conv.id)
                    report = await mem.add_conversation(conv, user_id=owner)
                    written += report.units_written
                    present += report.units_present
                    failures += report.extraction_failures
                    fallbacks += report.fallbacks
                    turns += report.turns
                    bar.advance(task)
                skipped = len(stream.errors)
        finally:
            await mem.aclose()
    console.print(
        f"{turns} turns -> {written} units written, {present} already present; "
        f"extraction failures {failures}, fallbacks to raw turns {fallbacks}; malformed records skipped {skipped}"
    )
    for err in stream.errors:
        console.print(f"[yellow]skipped:[/] {err}")


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument()],
    user_id: Annotated[str, typer.Option(help="whose memory")],
    top_k: Annotated[int, typer.Option()] = 10,
    since: Annotated[str | None, typer.Option(help="only memories from this date on")] = None,
    until: Annotated[str | None, typer.Option(help="only memories before this date")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search one user's memory (dense + lexical, fused)."""
    opts: GlobalOptions = ctx.obj

    async def run() -> list[dict[str, object]]:
        mem = AsyncMemory.from_settings(opts.settings(), db or default_store_path(), mode="turns", with_llm=False)
        try:
            hits = await mem.search(
                query,
                user_id=user_id,
                top_k=top_k,
                since=parse_when(since, "--since"),
                until=parse_when(until, "--until"),
            )
        finally:
            await mem.aclose()
        return [{"id": h.record.id, "score": round(h.score, 4), "memory": render_for_prompt(h.record)} for h in hits]

    results = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(results, ensure_ascii=False))
        return
    for i, hit in enumerate(results, 1):
        typer.echo(f"{i:2d}. {hit['score']:7.4f}  {hit['memory']}")


@app.command()
def answer(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument()],
    user_id: Annotated[str, typer.Option(help="whose memory")],
    question_date: Annotated[
        str | None,
        typer.Option(help="'today' for the question, e.g. 2023-07-01; memories dated after it are left out"),
    ] = None,
    top_k: Annotated[int, typer.Option()] = 20,
    db: DbOption = None,
    run_dir: RunDirOption = None,
    show_memories: Annotated[bool, typer.Option(help="print the retrieved memories too")] = False,
) -> None:
    """Answer a question from one user's memory, with the question date in the prompt."""
    opts: GlobalOptions = ctx.obj
    when = parse_when(question_date, "--question-date")

    async def run() -> None:
        mem = AsyncMemory.from_settings(opts.settings(), db or default_store_path(), mode="turns", run_dir=run_dir)
        try:
            result = await mem.answer(question, user_id=user_id, question_date=when, top_k=top_k)
        finally:
            await mem.aclose()
        if show_memories:
            for hit in result.memories:
                typer.secho(f"  {render_for_prompt(hit.record)}", dim=True)
        typer.echo(result.text)
        typer.secho(
            f"[{len(result.memories)} memories, {result.usage.prompt_tokens}+{result.usage.completion_tokens} tokens]",
            dim=True,
            err=True,
        )

    asyncio.run(run())


@app.command()
def consolidate(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Option(help="whose memory")],
    threshold: Annotated[float, typer.Option(help="cosine an earlier unit needs to be compared")] = 0.7,
    db: DbOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Offline consolidation of one user's memory: superseded units are closed, never erased."""
    opts: GlobalOptions = ctx.obj

    async def run() -> None:
        mem = AsyncMemory.from_settings(opts.settings(), db or default_store_path(), mode="turns", run_dir=run_dir)
        try:
            report = await mem.consolidate(user_id=user_id, threshold=threshold)
        finally:
            await mem.aclose()
        typer.echo(json.dumps(report.to_dict()))

    asyncio.run(run())
