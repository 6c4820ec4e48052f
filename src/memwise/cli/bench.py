"""`memwise bench retrieval|qa`: the factual-memory benchmarks, as commands."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memwise.cli._options import DatasetFormat, DatasetPath, GlobalOptions, JsonSwitch, OutFile, progress_bar
from memwise.cli._rundirs import open_run
from memwise.config import Settings
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
    concurrency: Annotated[int, typer.Option(help="questions in flight")] = 16,
    judge: Annotated[bool, typer.Option(help="score with the LLM judge as well as F1/EM")] = True,
    out: OutFile = None,
    as_json: JsonSwitch = False,
) -> None:
    """Answer every question from memory; score with the LLM judge and token F1 / exact match."""
    if dataset not in ("locomo", "longmemeval"):
        raise ConfigError(f"--dataset must be locomo or longmemeval, got {dataset!r}")
    if mode not in ("turns", "facts"):
        raise ConfigError(f"--mode must be turns or facts, got {mode!r}")
    opts: GlobalOptions = ctx.obj
    summary = asyncio.run(
        _qa(opts.settings(), path, dataset, mode, run_dir, db, top_k, limit, concurrency, judge)
    )
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        _print_qa(summary)
    _write_json(run_dir / "qa_report.json", summary)
    _write_json(out, summary)


async def _qa(
    settings: Settings,
    path: Path,
    dataset: str,
    mode: str,
    run_dir: Path,
    db: Path | None,
    top_k: int,
    limit: int | None,
    concurrency: int,
    use_judge: bool,
) -> dict[str, object]:
    from memwise.embed.registry import build_embedder
    from memwise.facts.ingest import ingest_many
    from memwise.facts.memory import AsyncMemory
    from memwise.facts.ownership import owner_of
    from memwise.facts.qa_eval import evaluate_qa, questions_of, summarise
    from memwise.facts.readers import read_conversations
    from memwise.facts.report import IngestSummary
    from memwise.llm.registry import ModelSet
    from memwise.store.sqlite import SQLiteStore
    from memwise.tasks.judge import LLMJudge

    console = Console(stderr=True)
    conversations = read_conversations(path, dataset)
    command = f"memwise bench qa --dataset {dataset}"
    config = {"dataset": dataset, "path": path, "mode": mode, "top_k": top_k, "limit": limit, "judge": use_judge}
    run = open_run(run_dir, command, config, settings, warn=console.print)
    try:
        models = ModelSet(settings)
        store = SQLiteStore(db or run_dir / "memory.sqlite3")
        cache = _cache_beside(db) if db is not None else run_dir / "embeddings.sqlite3"
        embedder = build_embedder(settings.embedding, cache_path=cache)
    except BaseException:
        run.close()
        raise
    policy = models.get("policy")
    try:
        with progress_bar(console=console) as bar:
            task = bar.add_task("ingest turns", total=sum(len(c.turns()) for c in conversations))
            reports = await ingest_many(
                conversations,
                store=store,
                embedder=embedder,
                user_id=owner_of,
                mode=mode,  # type: ignore[arg-type]
                llm=run.record(policy, "extract") if mode == "facts" else None,
                ledger=run.ledger,
                on_report=lambda report: bar.advance(task, report.turns),
            )
        ingest = IngestSummary.of(reports)
        memory = AsyncMemory(store=store, embedder=embedder, llm=run.record(policy, "answer"), ledger=run.ledger)
        grader = LLMJudge(run.record(models.get("judge"), "judge"), ledger=run.ledger) if use_judge else None
        items = [(owner_of(conv), q) for conv in conversations for q in questions_of(conv)]
        items = items[:limit] if limit is not None else items
        with progress_bar(console=console) as bar:
            task = bar.add_task("qa", total=len(items))
            outcomes = await evaluate_qa(
                items,
                memory=memory,
                judge=grader,
                results_path=run_dir / "qa_results.jsonl",
                top_k=top_k,
                concurrency=concurrency,
                on_done=lambda _: bar.advance(task),
            )
        report = summarise(outcomes).to_dict()
        stages = {name: asdict(stats) for name, stats in run.ledger.stats().items()}
    finally:
        store.close()
        await embedder.aclose()
        await models.aclose()
        run.close()
    return {
        "dataset": dataset,
        "path": str(path),
        "mode": mode,
        "top_k": top_k,
        **report,
        "ingest": ingest.to_dict(),
        "stages": stages,
        "results": str(run_dir / "qa_results.jsonl"),
    }


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
