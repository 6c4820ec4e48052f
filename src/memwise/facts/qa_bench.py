"""The question-answering benchmark as one call: ingest a dataset, answer every question, score, summarise.

``memwise bench qa`` is a thin shell over :func:`run_qa_benchmark`; a script can run the same
benchmark with its own run directory and progress display. Re-running on the same run directory
(or the same ``store_path``) re-ingests nothing (conversations already stored are no-ops), re-embeds
nothing (the embedding cache) and re-answers nothing (the results JSONL and the run's ledger).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.facts.ingest import ingest_many
from memwise.facts.memory import AsyncMemory, Mode
from memwise.facts.ownership import owner_of
from memwise.facts.qa_eval import QAOutcome, evaluate_qa, questions_of, summarise
from memwise.facts.report import IngestSummary
from memwise.facts.types import Conversation
from memwise.runs.rundir import RunDir


def qa_items(conversations: Sequence[Conversation], limit: int | None = None) -> list[tuple[str, Any]]:
    """The (owner, question) pairs the benchmark answers, in dataset order, the first ``limit`` of them."""
    items = [(owner_of(conv), q) for conv in conversations for q in questions_of(conv)]
    return items[:limit] if limit is not None else items


async def run_qa_benchmark(
    conversations: Sequence[Conversation],
    *,
    settings: Settings,
    run: RunDir,
    store_path: Path,
    cache_path: Path,
    mode: Mode = "turns",
    top_k: int = 20,
    limit: int | None = None,
    use_judge: bool = True,
    on_ingested: Callable[[int], None] | None = None,
    on_answered: Callable[[QAOutcome], None] | None = None,
) -> dict[str, Any]:
    """Ingest ``conversations`` under their owners, answer their questions from memory, and score them.

    ``run`` (opened and locked by the caller) records every model call; per-question results go to
    ``<run>/qa_results.jsonl``. ``on_ingested`` gets each conversation's turn count as it is stored,
    ``on_answered`` each finished question. Returns the summary (accuracy and F1 overall and per
    category, failures, tokens, ingest totals, per-stage call statistics).

    Raises:
        ConfigError: an unknown ``mode``.
    """
    from memwise.embed.registry import build_embedder
    from memwise.facts.spaces import bind_space
    from memwise.llm.registry import ModelSet
    from memwise.store.sqlite import SQLiteStore
    from memwise.tasks.judge import LLMJudge

    if mode not in ("turns", "facts"):
        raise ConfigError(f"mode must be turns or facts, got {mode!r}")
    models = ModelSet(settings)
    try:
        store = SQLiteStore(store_path)
        try:
            embedder = build_embedder(settings.embedding, cache_path=cache_path)
            try:
                bind_space(store, embedder.name)  # a kept --db made with another embedder is refused, not mixed
                policy = models.get("policy")
                reports = await ingest_many(
                    conversations,
                    store=store,
                    embedder=embedder,
                    user_id=owner_of,
                    mode=mode,
                    llm=run.record(policy, "extract") if mode == "facts" else None,
                    ledger=run.ledger,
                    on_report=(lambda report: on_ingested(report.turns)) if on_ingested is not None else None,
                )
                memory = AsyncMemory(
                    store=store, embedder=embedder, llm=run.record(policy, "answer"), ledger=run.ledger
                )
                grader = LLMJudge(run.record(models.get("judge"), "judge"), ledger=run.ledger) if use_judge else None
                outcomes = await evaluate_qa(
                    qa_items(conversations, limit),
                    memory=memory,
                    judge=grader,
                    results_path=run.path / "qa_results.jsonl",
                    top_k=top_k,
                    on_done=on_answered,
                )
            finally:
                await embedder.aclose()
        finally:
            store.close()
    finally:
        await models.aclose()
    return {
        "mode": mode,
        "top_k": top_k,
        **summarise(outcomes).to_dict(),
        "ingest": IngestSummary.of(reports).to_dict(),
        "stages": {name: asdict(stats) for name, stats in run.ledger.stats().items()},
        "results": str(run.path / "qa_results.jsonl"),
    }
