"""`memwise tour`: a short tour of the foundation layers on the configured (default: embedded) models.

It stores a small two-session conversation in a SQLite memory with embeddings, searches it densely and
lexically, extracts one structured fact with a JSON schema, answers a question from retrieved
fragments with the question date in the prompt, and shows the run ledger: run it twice and the second
run replays every model call instead of paying for it again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.console import Console

from memwise.cli._options import GlobalOptions
from memwise.cli._rundirs import open_run
from memwise.config import Settings
from memwise.embed.base import Embedder
from memwise.embed.registry import build_embedder
from memwise.exceptions import ParseError
from memwise.llm.base import ChatRequest
from memwise.llm.registry import ModelSet
from memwise.llm.structured import complete_structured
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore

# (session date, speaker, text): a small conversation to remember.
CONVERSATION: tuple[tuple[str, str, str], ...] = (
    ("2023-05-08", "Alice", "I finally adopted a dog last weekend, a beagle called Pepper."),
    ("2023-05-08", "Bob", "Congratulations! I have been training for the Berlin marathon in September."),
    ("2023-05-08", "Alice", "Pepper hates the rain, so our walks are short this month."),
    ("2023-05-08", "Bob", "My sister Carla is moving to Lisbon for a job at a bakery."),
    ("2023-06-19", "Alice", "I started pottery classes on Tuesday evenings."),
    ("2023-06-19", "Bob", "I hurt my knee, so I switched from the Berlin marathon to the Lisbon half marathon."),
    ("2023-06-19", "Alice", "Pepper learned to sit and roll over, she is so clever."),
    ("2023-06-19", "Bob", "Carla says the bakery in Lisbon sells the best pastel de nata."),
)
QUESTION = "Which race is Bob training for now?"
QUESTION_DATE = "2023-07-01"


class Fact(BaseModel):
    """The schema the demo asks the model to fill."""

    speaker: str
    fact: str


def _epoch(day: str) -> float:
    return time.mktime(time.strptime(day, "%Y-%m-%d"))


async def run_tour(settings: Settings, run_dir: Path, console: Console) -> None:
    """Show the building blocks on a small example (models, store, retrieval, structured output, answers, ledger)."""
    run = open_run(run_dir, "memwise tour", {}, settings, warn=console.print)
    try:
        models = ModelSet(settings)
        store = SQLiteStore(run_dir / "memory.sqlite3")
    except BaseException:
        run.close()
        raise
    embedder: Embedder | None = None
    try:
        console.rule("1. models")
        policy = models.get("policy")
        console.print(f"policy model: {policy.describe()}")
        embedder = build_embedder(settings.embedding, cache_path=run_dir / "embeddings.sqlite3")
        console.print(f"embedder: {embedder.describe()}")

        console.rule("2. remember: SQLite store, embeddings, per-user scope")
        records = [
            Record(
                id=f"demo-{i}",
                text=f"{speaker}: {text}",
                kind="turn",
                user_id="demo-user",
                ts=_epoch(day),
                metadata={"speaker": speaker, "date": day},
            )
            for i, (day, speaker, text) in enumerate(CONVERSATION)
        ]
        start = time.perf_counter()
        vectors = await embedder.embed([r.text for r in records])
        store.add(records, vectors=vectors)
        console.print(
            f"stored {store.count(Filters(user_id='demo-user'))} turns "
            f"({vectors.shape[1]}-d vectors) in {time.perf_counter() - start:.2f}s"
        )

        console.rule("3. retrieve: dense and lexical")
        only_me = Filters(user_id="demo-user")
        qvec = (await embedder.embed([QUESTION]))[0]
        dense = store.search_vector(qvec, top_k=3, filters=only_me)
        lexical = store.search_text(QUESTION, top_k=3, filters=only_me)
        console.print(f"[bold]question:[/] {QUESTION}")
        for name, hits in (("dense", dense), ("lexical", lexical)):
            for hit in hits:
                console.print(f"  {name:8s} {hit.score:6.3f}  {hit.record.metadata['date']}  {hit.record.text}")
        other = store.search_vector(qvec, top_k=3, filters=Filters(user_id="someone-else"))
        console.print(f"  another user's search sees {len(other)} of these turns")

        console.rule("4. structured output (JSON schema)")
        extractor = run.record(policy, stage="extract")
        try:
            fact = await complete_structured(
                extractor,
                ChatRequest.of(
                    f"Extract the main fact from this message as JSON.\nMessage: {records[0].text}", max_tokens=60
                ),
                Fact,
                ledger=run.ledger,
                stage="extract",
            )
            console.print(f"  {fact.model_dump()}")
        except ParseError as exc:
            console.print(f"  [yellow]the model's JSON did not validate, counted in the ledger:[/] {exc}")

        console.rule("5. answer from memory, with the question date")
        seen: dict[str, Record] = {}
        for hit in dense + lexical:
            seen.setdefault(hit.record.id, hit.record)
        fragments = sorted(seen.values(), key=lambda r: r.ts or 0.0)
        context = "\n".join(f"[{r.metadata['date']}] {r.text}" for r in fragments)
        answerer = run.record(policy, stage="answer")
        reply = await answerer.complete(
            ChatRequest.of(
                f"Today is {QUESTION_DATE}.\nMemories, oldest first:\n{context}\n\n"
                f"Question: {QUESTION}\nAnswer in one short sentence, using the newest relevant memory.",
                max_tokens=48,
            )
        )
        console.print(f"  [bold]answer:[/] {reply.text.strip()}")
        replayed = sum(1 for s in reply.samples if s.cached)
        console.print(
            f"  ({reply.usage.completion_tokens} tokens, {'replayed from the ledger' if replayed else 'paid'})"
        )

        console.rule("6. the run ledger")
        for stage, stats in run.ledger.stats().items():
            console.print(
                f"  {stage:8s} calls={stats.calls} tokens={stats.prompt_tokens}+{stats.completion_tokens} "
                f"errors={stats.errors} parse failures={stats.failures} retries={stats.retries_text()}"
            )
        console.print(f"  run directory: {run_dir} (run the tour again: recorded calls are replayed, not paid)")
    finally:
        store.close()
        if embedder is not None:
            await embedder.aclose()
        await models.aclose()
        run.close()


def tour(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Option(help="where the tour keeps its memory and ledger")] = Path("runs/tour"),
) -> None:
    """A 1-minute tour: remember a conversation, retrieve, extract JSON, answer, and show the ledger."""
    opts: GlobalOptions = ctx.obj
    asyncio.run(run_tour(opts.settings(), run_dir, Console()))
