"""`memwise bench retrieval|qa`: the factual-memory benchmarks, as commands."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memwise.cli._options import GlobalOptions
from memwise.cli.app import app
from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import StageStats, retries_line

bench_app = typer.Typer(help="Benchmarks: retrieval recall and question answering.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _write_json(path: Path | None, payload: dict[str, object]) -> None:
    if path is None:
        return
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {path}")


@bench_app.command("retrieval")
def retrieval(
    ctx: typer.Context,
    path: Annotated[Path, typer.Option(help="the dataset file")],
    dataset: Annotated[str, typer.Option(help="locomo")] = "locomo",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    loo: Annotated[bool, typer.Option(help="leave-one-conversation-out check of the tuned knobs")] = False,
) -> None:
    """Recall@1/5/10/20 of the hybrid retriever over each conversation's turns, with same-run baselines."""
    if dataset != "locomo":
        raise ConfigError(f"bench retrieval supports --dataset locomo (evidence turn ids); got {dataset!r}")
    from memwise.embed.registry import build_embedder
    from memwise.facts.retrieval_eval import evaluate_retrieval, print_report

    opts: GlobalOptions = ctx.obj

    async def run() -> dict[str, object]:
        embedder = build_embedder(opts.settings().embedding)
        try:
            return await evaluate_retrieval(path, embedder, loo=loo)
        finally:
            await embedder.aclose()

    result = asyncio.run(run())
    print_report(result)
    _write_json(json_out, result)


@bench_app.command("qa")
def qa(
    ctx: typer.Context,
    path: Annotated[Path, typer.Option(help="the dataset file")],
    dataset: Annotated[str, typer.Option(help="locomo or longmemeval")] = "locomo",
    mode: Annotated[str, typer.Option(help="ingest mode: turns or facts")] = "turns",
    run_dir: Annotated[Path, typer.Option(help="run directory: ledger, memory, per-question results")] = Path(
        "runs/qa"
    ),
    top_k: Annotated[int, typer.Option(help="memories given to the answer prompt")] = 20,
    limit: Annotated[int | None, typer.Option(help="answer only the first N questions")] = None,
    concurrency: Annotated[int, typer.Option(help="questions in flight")] = 16,
    judge: Annotated[bool, typer.Option(help="score with the LLM judge as well as F1/EM")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the summary here")] = None,
) -> None:
    """Answer every question from memory; score with the LLM judge and token F1 / exact match."""
    if dataset not in ("locomo", "longmemeval"):
        raise ConfigError(f"--dataset must be locomo or longmemeval, got {dataset!r}")
    if mode not in ("turns", "facts"):
        raise ConfigError(f"--mode must be turns or facts, got {mode!r}")
    opts: GlobalOptions = ctx.obj
    summary = asyncio.run(_qa(opts.settings(), path, dataset, mode, run_dir, top_k, limit, concurrency, judge))
    _print_qa(summary)
    _write_json(run_dir / "qa_report.json", summary)
    _write_json(json_out, summary)


async def _qa(
    settings: Settings,
    path: Path,
    dataset: str,
    mode: str,
    run_dir: Path,
    top_k: int,
    limit: int | None,
    concurrency: int,
    use_judge: bool,
) -> dict[str, object]:
    from memwise.embed.registry import build_embedder
    from memwise.facts.ingest import ingest_many
    from memwise.facts.memory import AsyncMemory
    from memwise.facts.qa_eval import evaluate_qa, questions_of, summarise
    from memwise.facts.readers import read_conversations
    from memwise.facts.report import IngestSummary
    from memwise.llm.registry import ModelSet
    from memwise.runs.rundir import RunDir
    from memwise.store.sqlite import SQLiteStore
    from memwise.tasks.judge import LLMJudge

    console = Console(stderr=True)
    conversations = read_conversations(path, dataset)
    run = RunDir(run_dir, command=f"memwise bench qa --dataset {dataset}")
    try:
        run.write_manifest(f"memwise bench qa --dataset {dataset} --mode {mode}", settings)
        models = ModelSet(settings)
        store = SQLiteStore(run_dir / "memory.sqlite3")
        embedder = build_embedder(settings.embedding, cache_path=run_dir / "embeddings.sqlite3")
    except BaseException:
        run.close()
        raise
    policy = models.get("policy")
    try:
        reports = await ingest_many(
            conversations,
            store=store,
            embedder=embedder,
            user_id=lambda conv: conv.id,
            mode=mode,  # type: ignore[arg-type]
            llm=run.record(policy, "extract") if mode == "facts" else None,
            ledger=run.ledger,
        )
        ingest = IngestSummary.of(reports)
        memory = AsyncMemory(store=store, embedder=embedder, llm=run.record(policy, "answer"), ledger=run.ledger)
        grader = LLMJudge(run.record(models.get("judge"), "judge"), ledger=run.ledger) if use_judge else None
        items = [(conv.id, q) for conv in conversations for q in questions_of(conv)]
        items = items[:limit] if limit is not None else items
        with Progress(TextColumn("qa"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
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
