"""`memwise ingest`, `memwise search`, `memwise answer`: the factual memory from the shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memwise.cli._options import (
    DatasetFormat,
    GlobalOptions,
    JsonSwitch,
    dataset_format,
    error_mode,
    parse_when,
    progress_bar,
    spinner,
)
from memwise.exceptions import ConfigError
from memwise.facts.memory import AsyncMemory, Mode
from memwise.facts.ownership import owner_of
from memwise.facts.parts import default_store_path
from memwise.facts.readers import iter_conversations
from memwise.facts.units import render_for_prompt

DATASET_HELP = "the dataset file: LoCoMo JSON, LongMemEval JSON, or JSONL of sessions"
DbOption = Annotated[Path | None, typer.Option(help="memory database (default: $MEMWISE_HOME/memory.sqlite3)")]
RunDirOption = Annotated[Path | None, typer.Option(help="run directory: model calls recorded and replayed")]


def ingest(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Option("--path", help=DATASET_HELP)] = None,
    dataset: DatasetFormat = "auto",
    mode: Annotated[str, typer.Option(help="turns (no model) or facts (model extracts facts)")] = "turns",
    user_id: Annotated[
        str | None, typer.Option(help="store everything for this user (default: one user per conversation)")
    ] = None,
    errors: Annotated[
        str, typer.Option(help="raise: stop at the first malformed record; collect: skip and count")
    ] = "raise",
    db: DbOption = None,
    run_dir: RunDirOption = None,
    positional_path: Annotated[
        Path | None, typer.Argument(hidden=True, metavar="[PATH]", help="deprecated: use --path")
    ] = None,
    format_alias: Annotated[str | None, typer.Option("--format", hidden=True, help="deprecated: use --dataset")] = None,
) -> None:
    """Remember conversations from a dataset file (--path); each conversation is written atomically."""
    if mode not in ("turns", "facts"):
        raise ConfigError(f"--mode must be 'turns' or 'facts', got {mode!r}")
    if path is not None and positional_path is not None:
        raise ConfigError("give the dataset file once: --path FILE (the positional form is deprecated)")
    source = path or positional_path
    if source is None:
        raise ConfigError("no dataset file: pass --path FILE (LoCoMo JSON, LongMemEval JSON, or JSONL of sessions)")
    opts: GlobalOptions = ctx.obj
    fmt = format_alias if format_alias is not None and dataset == "auto" else dataset
    asyncio.run(_ingest(opts, source, fmt, mode, user_id, errors, db, run_dir))  # type: ignore[arg-type]


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
    with iter_conversations(path, dataset_format(dataset), errors=error_mode(errors)) as stream:
        mem = AsyncMemory.from_settings(opts.settings(), db or default_store_path(), mode=mode, run_dir=run_dir)
        try:
            # The reader streams, so the file's turn count is unknown up front: the total grows by each
            # conversation's turns as it is read, and the bar fills as they are written.
            with progress_bar(console=console) as bar:
                task = bar.add_task("ingest turns", total=0)
                for conv in stream:
                    bar.update(task, total=(bar.tasks[0].total or 0) + len(conv.turns()))
                    report = await mem.add_conversation(conv, user_id=owner_of(conv, user_id))
                    written += report.units_written
                    present += report.units_present
                    failures += report.extraction_failures
                    fallbacks += report.fallbacks
                    turns += report.turns
                    bar.advance(task, report.turns)
                skipped = len(stream.errors)
        finally:
            await mem.aclose()
    console.print(
        f"{turns} turns -> {written} units written, {present} already present; "
        f"extraction failures {failures}, fallbacks to raw turns {fallbacks}; malformed records skipped {skipped}"
    )
    for err in stream.errors:
        console.print(f"[yellow]skipped:[/] {err}")


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument()],
    user_id: Annotated[str, typer.Option(help="whose memory")],
    top_k: Annotated[int, typer.Option(help="memories returned")] = 10,
    since: Annotated[str | None, typer.Option(help="only memories from this date on")] = None,
    until: Annotated[str | None, typer.Option(help="only memories before this date")] = None,
    db: DbOption = None,
    as_json: JsonSwitch = False,
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


def answer(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument()],
    user_id: Annotated[str, typer.Option(help="whose memory")],
    question_date: Annotated[
        str | None,
        typer.Option(help="'today' for the question, e.g. 2023-07-01; memories dated after it are left out"),
    ] = None,
    top_k: Annotated[int, typer.Option(help="memories given to the answer prompt")] = 20,
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
            with spinner("answering"):
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
            with progress_bar() as bar:
                task = bar.add_task("consolidate units", total=None)
                report = await mem.consolidate(
                    user_id=user_id,
                    threshold=threshold,
                    on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        finally:
            await mem.aclose()
        typer.echo(json.dumps(report.to_dict()))

    asyncio.run(run())
