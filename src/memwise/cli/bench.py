"""`memwise bench retrieval|qa`: the factual-memory benchmarks, as commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._options import DatasetFormat, DatasetPath, GlobalOptions, JsonSwitch, OutFile, progress_bar
from memwise.cli._rundirs import open_run
from memwise.exceptions import ConfigError
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import StageStats, retries_line

bench_app = typer.Typer(help="Benchmarks: retrieval recall and question answering.", no_args_is_help=True)


def _write_json(path: Path | None, payload: dict[str, object]) -> None:
    if path is None:
        return
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {path}", err=True)


def _cache_beside(db: Path) -> Path:
    """The embedding cache kept next to a database, so reusing the database reuses its vectors too."""
    return db.with_name(f"{db.stem}.embeddings.sqlite3")


@bench_app.command("retrieval")
def retrieval(
    ctx: typer.Context,
    path: DatasetPath,
    dataset: DatasetFormat = "locomo",
    out: OutFile = None,
    as_json: JsonSwitch = False,
    db: Annotated[
        Path | None, typer.Option(help="keep the ingested turns here; a re-run reuses them (and their embeddings)")
    ] = None,
    loo: Annotated[bool, typer.Option(help="leave-one-conversation-out check of the tuned knobs")] = False,
) -> None:
    """Recall@1/5/10/20 of the hybrid retriever over each conversation's turns, with same-run baselines."""
    if dataset != "locomo":
        raise ConfigError(f"bench retrieval supports --dataset locomo (evidence turn ids); got {dataset!r}")
    from memwise.embed.registry import build_embedder
    from memwise.facts.retrieval_eval import evaluate_retrieval, print_report

    opts: GlobalOptions = ctx.obj

    async def run() -> dict[str, object]:
        cache = _cache_beside(db) if db is not None else None
        embedder = build_embedder(opts.settings().embedding, cache_path=cache)
        try:
            return await evaluate_retrieval(path, embedder, loo=loo, db=db)
        finally:
            await embedder.aclose()

    result = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_report(result)
    _write_json(out, result)


@bench_app.command("qa")
def qa(
    ctx: typer.Context,
    path: DatasetPath,
    dataset: Annotated[str, typer.Option(help="dataset format: locomo or longmemeval")] = "locomo",
    mode: Annotated[str, typer.Option(help="ingest mode: turns or facts")] = "turns",
    run_dir: Annotated[Path, typer.Option(help="run directory: ledger, memory, per-question results")] = Path(
        "runs/qa"
    ),
    db: Annotated[
        Path | None,
        typer.Option(help="memory database (default: <run-dir>/memory.sqlite3); a re-run reuses it, no re-ingest"),
    ] = None,
    top_k: Annotated[int, typer.Option(help="memories given to the answer prompt")] = 20,
    limit: Annotated[int | None, typer.Option(help="answer only the first N questions")] = None,
    judge: Annotated[bool, typer.Option(help="score with the LLM judge as well as F1/EM")] = True,
    out: OutFile = None,
    as_json: JsonSwitch = False,
) -> None:
    """Answer every question from memory; score with the LLM judge and token F1 / exact match."""
    from memwise.facts.qa_bench import qa_items, run_qa_benchmark
    from memwise.facts.readers import read_conversations

    if dataset not in ("locomo", "longmemeval"):
        raise ConfigError(f"--dataset must be locomo or longmemeval, got {dataset!r}")
    if mode not in ("turns", "facts"):
        raise ConfigError(f"--mode must be turns or facts, got {mode!r}")
    opts: GlobalOptions = ctx.obj
    settings = opts.settings()
    conversations = read_conversations(path, dataset)  # type: ignore[arg-type]
    console = Console(stderr=True)
    config = {"dataset": dataset, "path": path, "mode": mode, "top_k": top_k, "limit": limit, "judge": judge}

    async def run() -> dict[str, object]:
        with progress_bar(console=console) as bar:
            ingested = bar.add_task("ingest turns", total=sum(len(c.turns()) for c in conversations))
            answered = bar.add_task("qa", total=len(qa_items(conversations, limit)))
            return await run_qa_benchmark(
                conversations,
                settings=settings,
                run=qa_run,
                store_path=db or run_dir / "memory.sqlite3",
                cache_path=_cache_beside(db) if db is not None else run_dir / "embeddings.sqlite3",
                mode=mode,  # type: ignore[arg-type]
                top_k=top_k,
                limit=limit,
                use_judge=judge,
                on_ingested=lambda n: bar.advance(ingested, n),
                on_answered=lambda _: bar.advance(answered),
            )

    qa_run = open_run(run_dir, f"memwise bench qa --dataset {dataset}", config, settings, warn=console.print)
    try:
        summary = {"dataset": dataset, "path": str(path), **asyncio.run(run())}
    finally:
        qa_run.close()
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        _print_qa(summary)
    _write_json(run_dir / "qa_report.json", summary)
    _write_json(out, summary)


def _print_qa(summary: dict[str, object]) -> None:
    table = Table("category", "judge accuracy", "token F1")
    acc = summary["accuracy_by_category"]
    f1 = summary["f1_by_category"]
    assert isinstance(acc, dict) and isinstance(f1, dict)
    for cat in sorted(set(acc) | set(f1)):
        table.add_row(cat, _fmt(acc.get(cat)), _fmt(f1.get(cat)))
    table.add_row("all", _fmt(summary["accuracy"]), _fmt(summary["f1"]))
    Console().print(table)
    typer.echo(
        f"{summary['questions']} questions, {summary['judged']} judged; answer failures {summary['answer_failures']}, "
        f"judge failures {summary['judge_failures']}; {summary['tokens_per_question']:.0f} tokens per question"
    )
    stages = summary["stages"]
    assert isinstance(stages, dict)
    typer.echo(retries_line({name: StageStats(**st) for name, st in stages.items()}))


def _fmt(value: object) -> str:
    return "-" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]
