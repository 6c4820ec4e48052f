"""Turn retrieval on LoCoMo: does the hybrid recipe find the evidence turns of each question?

Each conversation's turns go into one temporary SQLiteStore, one ``user_id`` per conversation, so
every query is scoped to its own conversation by a hard filter. For questions of categories 1-4
with at least one resolvable evidence turn, recall@k is the share of the question's evidence turns
in the top k, averaged over questions; ``all@10`` is the share of questions with all their evidence
in the top 10. No LLM is called: the only model is the embedder (all-MiniLM-L6-v2 by default).

Baselines run in the same process over the same index (same rendered text, same vectors): cosine
alone, bm25 alone, and plain reciprocal-rank fusion of the two. Ablations switch parts of the recipe
off; the rows starting with ``+`` add one later step alone to fusion + context + speaker. ``--loo``
re-picks the tuned knobs (:data:`GRID`: dense weight, context weight, speaker boost, session, time
cue, entity, length and spread weights) on four conversations and scores the fifth, for each conversation in turn.

Ingest goes through the product path (:func:`memwise.facts.ingest.ingest_many`, mode ``turns``), so the
figure measures what users get. Run it as ``memwise bench retrieval --dataset locomo --path FILE`` or
``bench/retrieval_locomo.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from memwise.embed.base import Embedder
from memwise.embed.cache import CachedEmbedder
from memwise.facts._factmode import Scope, turn_unit
from memwise.facts._text import asks_for_many
from memwise.facts.ingest import ingest_many
from memwise.facts.ownership import owner_of
from memwise.facts.readers import read_locomo
from memwise.facts.retrieval_rank import (
    PART_WEIGHTS,
    PARTS,
    Candidates,
    RetrieverConfig,
    rank,
    score_parts,
    session_codes,
)
from memwise.facts.retrieval_scores import reciprocal_rank_fusion, spread_order
from memwise.facts.retrieve import HybridRetriever
from memwise.facts.spaces import bind_space
from memwise.facts.types import Conversation
from memwise.store.base import Filters, Record, ScoredRecord
from memwise.store.sqlite import SQLiteStore

CATEGORIES = ("1", "2", "3", "4")
KS = (1, 5, 10, 20)
DEPTH = max(KS)
BASELINE_DEPTH = 100  # how deep each channel goes before RRF
# The knobs LOO re-picks. The first two change the pool and context scores (re-scored per value); the
# rest only weigh parts of the final score (re-added, see retrieval_rank.combine) or, spread_weight, re-order
# its top (retrieval_scores.spread_order, vectorised over the grid), so their grid is cheap.
# time_weight is not swept: LoCoMo questions carry no date, so this file cannot tune it.
GRID = {
    "dense_weight": (0.3, 0.4, 0.5),
    "context_weight": (0.5, 0.75, 1.0),
    "speaker_boost": (0.2, 0.35, 0.5, 0.75),
    "session_weight": (0.15, 0.3, 0.45, 0.6),
    "time_cue_weight": (0.0, 0.1, 0.2, 0.3),
    "entity_weight": (0.0, 0.1, 0.2),
    "length_weight": (0.0, 0.2, 0.3, 0.4),
    "spread_weight": (0.0, 0.1, 0.2, 0.3),
}
_RESCORED = ("dense_weight", "context_weight")
_OFF = {
    "session_weight": 0.0,
    "entity_weight": 0.0,
    "time_weight": 0.0,
    "time_cue_weight": 0.0,
    "length_weight": 0.0,
    "spread_weight": 0.0,
}
ABLATIONS = {
    "fusion only": {"context_weight": 0.0, "speaker_boost": 0.0, **_OFF},
    "fusion + speaker": {"context_weight": 0.0, **_OFF},
    "fusion + context": {"speaker_boost": 0.0, **_OFF},
    "fusion + context + speaker": _OFF,
    "+ session": {**_OFF, "session_weight": RetrieverConfig().session_weight},
    "+ time cue": {**_OFF, "time_cue_weight": RetrieverConfig().time_cue_weight},
    "+ entities": {**_OFF, "entity_weight": RetrieverConfig().entity_weight},
    "+ time window": {**_OFF, "time_weight": RetrieverConfig().time_weight},
    "+ length prior": {**_OFF, "length_weight": RetrieverConfig().length_weight},
    "+ spread": {**_OFF, "spread_weight": RetrieverConfig().spread_weight},
    "full recipe less length and spread": {"length_weight": 0.0, "spread_weight": 0.0},
    "full recipe": {},
}


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark question: its conversation (= user scope), text, category and evidence turn ids."""

    conversation: str
    question: str
    category: str
    evidence: tuple[str, ...]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--path", default="../shared/data/locomo/locomo10_dev.json", help="LoCoMo JSON file")
    parser.add_argument("--json", default="bench/results/retrieval_locomo.json", help="where to write the results")
    parser.add_argument("--loo", action="store_true", help="also run the leave-one-conversation-out sweep")
    parser.add_argument("--candidate-k", type=int, default=RetrieverConfig().candidate_k, help="per-channel candidates")
    return parser.parse_args(argv)


def questions_of(conversations: Sequence[Conversation]) -> list[Item]:
    """Questions of categories 1-4 whose evidence names at least one real turn (the reader drops the rest)."""
    return [
        Item(owner_of(conv), q.question, q.category, q.evidence)
        for conv in conversations
        for q in conv.questions
        if q.category in CATEGORIES and q.evidence
    ]


def turn_ids(hits: Sequence[ScoredRecord]) -> list[str]:
    """The dataset turn ids (LoCoMo ``dia_id``) of ranked hits."""
    return [_turn_id(hit.record) for hit in hits]


def metrics(rankings: Sequence[Sequence[str]], items: Sequence[Item]) -> dict[str, Any]:
    """recall@k, all@10 and their per-category and per-conversation breakdowns."""

    def summary(pairs: list[tuple[Sequence[str], Item]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in KS:
            out[f"recall@{k}"] = _mean([_recall(ranked, item.evidence, k) for ranked, item in pairs])
        out["all@10"] = _mean([float(_recall(ranked, item.evidence, 10) == 1.0) for ranked, item in pairs])
        out["questions"] = len(pairs)
        return out

    pairs = list(zip(rankings, items, strict=True))
    result = summary(pairs)
    result["by_category"] = {
        cat: summary([p for p in pairs if p[1].category == cat]) for cat in sorted({i.category for i in items})
    }
    result["by_conversation"] = {
        conv: summary([p for p in pairs if p[1].conversation == conv])["recall@10"]
        for conv in dict.fromkeys(i.conversation for i in items)
    }
    return result


def _recall(ranked: Sequence[str], evidence: Sequence[str], k: int) -> float:
    top = set(ranked[:k])
    return sum(e in top for e in evidence) / len(evidence)


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def index_texts(conversations: Sequence[Conversation]) -> list[str]:
    """The texts ingest embeds for these conversations in mode ``turns`` (one per turn, as indexed)."""
    return [
        unit.indexed_text
        for conv in conversations
        for unit in (turn_unit(turn, conv.id, Scope(owner_of(conv))) for turn in conv.turns())
    ]


async def embed_rate(embedder: Embedder, texts: Sequence[str]) -> float:
    """Texts per second the embedder alone manages on ``texts``, in one call.

    The yardstick for ingest speed: on a shared or small machine absolute rates move with the load,
    but the ratio of ingest to this rate, measured in the same run, says how much ingest adds. A
    cache in front is bypassed (it would answer from memory what ingest just embedded).
    """
    inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
    start = time.perf_counter()
    await inner.embed(list(texts))
    return len(texts) / max(time.perf_counter() - start, 1e-9)


async def ingest(
    store: SQLiteStore, embedder: Embedder, conversations: Sequence[Conversation]
) -> tuple[int, float, bool]:
    """Ingest every conversation (mode ``turns``) under its owner (LoCoMo: its id).

    Returns (turns, seconds, fresh): ``fresh`` is false when every conversation was already in the
    store, so the seconds timed a no-op and say nothing about ingest speed.
    """
    start = time.perf_counter()
    reports = await ingest_many(conversations, store=store, embedder=embedder, user_id=owner_of)
    fresh = not all(r.skipped for r in reports)
    return sum(r.turns for r in reports), time.perf_counter() - start, fresh


def baselines(
    store: SQLiteStore, space: str, items: Sequence[Item], vectors: Sequence[Any]
) -> dict[str, list[list[str]]]:
    """Rankings of cosine alone, bm25 alone and plain RRF of the two, over the same index."""
    out: dict[str, list[list[str]]] = {"dense": [], "bm25": [], "rrf": []}
    for item, vec in zip(items, vectors, strict=True):
        scope = Filters(user_id=item.conversation, kind="turn")
        dense = store.search_vector(vec, BASELINE_DEPTH, scope, space=space)
        text = store.search_text(item.question, BASELINE_DEPTH, scope)
        by_id = {hit.record.id: hit for hit in (*dense, *text)}
        fused = reciprocal_rank_fusion([[h.record.id for h in dense], [h.record.id for h in text]])
        rrf = sorted(fused, key=lambda key: -fused[key])[:DEPTH]
        out["dense"].append(turn_ids(dense[:DEPTH]))
        out["bm25"].append(turn_ids(text[:DEPTH]))
        out["rrf"].append(turn_ids([by_id[key] for key in rrf]))
    return out


def loo_sweep(items: Sequence[Item], gathered: Sequence[Candidates], base: RetrieverConfig) -> dict[str, Any]:
    """Pick the grid point best on four conversations, score it on the fifth; repeat for each.

    Every point's recall@10 is what :func:`~memwise.facts.retrieval_rank.rank` would give (same pool,
    same scores, same tie order): the pool and context scores are computed once per value of the
    re-scored knobs (and entity channel on/off), then all weight combinations are added up at once.
    """
    names = list(GRID)
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*GRID.values())]
    convs = list(dict.fromkeys(item.conversation for item in items))
    sums = np.zeros((len(points), len(convs)))  # per point, per conversation: summed recall@10
    column = {conv: j for j, conv in enumerate(convs)}
    groups: dict[tuple[Any, ...], list[int]] = {}
    for p, point in enumerate(points):
        groups.setdefault((*(point[n] for n in _RESCORED), point["entity_weight"] > 0), []).append(p)
    for rows in groups.values():
        config = replace(base, **points[rows[0]])
        weights = np.array([[points[p].get(w, getattr(base, w)) for w in PART_WEIGHTS.values()] for p in rows])
        spread = np.array([points[p].get("spread_weight", base.spread_weight) for p in rows])
        for item, cands in zip(items, gathered, strict=True):
            parts = score_parts(item.question, cands, config)
            if not parts.keys:
                continue
            matrix = np.array([parts.parts[name] for name in PARTS])  # parts x pool
            final = np.asarray(parts.context) + weights @ matrix  # points x pool
            if asks_for_many(item.question):
                sessions = session_codes(parts.keys, cands.records)
                top = spread_order(final, sessions, spread, 10, config.spread_depth)
            else:
                top = np.argsort(-final, axis=1, kind="stable")[:, :10]
            hit = np.array([_turn_id(cands.records[key]) in item.evidence for key in parts.keys])
            sums[rows, column[item.conversation]] += hit[top].sum(axis=1) / len(item.evidence)
    counts = np.array([sum(1 for i in items if i.conversation == conv) for conv in convs])
    folds = []
    held_total = 0.0
    for j, held in enumerate(convs):
        train = [c for c in range(len(convs)) if c != j]
        train_recall = sums[:, train].sum(axis=1) / counts[train].sum()
        best = int(np.argmax(train_recall))  # the first best, in grid order
        held_total += sums[best, j]
        folds.append(
            {
                "held_out": held,
                "picked": points[best],
                "train_recall@10": round(float(train_recall[best]), 4),
                "held_out_recall@10": round(float(sums[best, j] / counts[j]), 4),
            }
        )
    total = int(counts.sum())
    overall = sums.sum(axis=1) / total
    in_sample = int(np.argmax(overall))
    default = {name: getattr(base, name) for name in names}
    default_index = points.index(default) if default in points else None
    return {
        "grid": {name: list(values) for name, values in GRID.items()},
        "loo_recall@10": round(float(held_total / total), 4),
        "folds": folds,
        "in_sample_best": points[in_sample],
        "in_sample_best_recall@10": round(float(overall[in_sample]), 4),
        "default_in_sample_recall@10": (round(float(overall[default_index]), 4) if default_index is not None else None),
    }


def _turn_id(record: Record) -> str:
    return str(record.metadata["source_ids"][0])


async def evaluate_retrieval(
    path: str | Path,
    embedder: Embedder,
    *,
    candidate_k: int | None = None,
    loo: bool = False,
    db: str | Path | None = None,
) -> dict[str, Any]:
    """Recall of the hybrid recipe (and same-run baselines) on a LoCoMo file; the report as a dict.

    ``db`` keeps the ingested turns in that database so a re-run skips ingesting (conversations
    already there are no-ops); without it a throw-away database is used.
    """
    conversations = read_locomo(path)
    items = questions_of(conversations)
    config = RetrieverConfig() if candidate_k is None else RetrieverConfig(candidate_k=candidate_k)
    with contextlib.ExitStack() as stack:
        where = Path(db) if db is not None else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "store.db"
        store = stack.enter_context(SQLiteStore(where))
        bind_space(store, embedder.name)  # a kept --db made with another embedder is refused, not mixed
        retriever = HybridRetriever(store, embedder, config)
        # Loading the model (seconds, once per process) is timed apart, so both rates are steady state.
        # The warm-up goes through the cache: a re-run on a kept database asks the embedder nothing.
        start = time.perf_counter()
        await embedder.embed(["warm up"])
        load_s = time.perf_counter() - start
        n_turns, ingest_s, fresh = await ingest(store, embedder, conversations)
        speed: dict[str, float | None] = {
            "ingest_turns_per_s": None,
            "embed_only_texts_per_s": None,
            "ingest_to_embed_ratio": None,
        }
        if fresh:
            embed_only = await embed_rate(embedder, index_texts(conversations))
            ratio = n_turns / ingest_s / embed_only
            speed = {
                "ingest_turns_per_s": round(n_turns / ingest_s, 1),
                "embed_only_texts_per_s": round(embed_only, 1),
                "ingest_to_embed_ratio": round(ratio, 3),
            }
            print(
                f"ingested {n_turns} turns in {ingest_s:.1f}s ({n_turns / ingest_s:.0f} turns/s); embedder alone "
                f"{embed_only:.0f} texts/s on the same texts; ratio {ratio:.2f}",
                file=sys.stderr,
            )
        else:
            print(
                f"all {len(conversations)} conversations were already in {where}; ingest speed not measured",
                file=sys.stderr,
            )

        # The headline: the full search call per question, query embedding included, timed.
        latencies: list[float] = []
        headline: list[list[str]] = []
        for item in items:
            scope = Filters(user_id=item.conversation, kind="turn")
            start = time.perf_counter()
            hits = await retriever.search(item.question, filters=scope, top_k=DEPTH)
            latencies.append((time.perf_counter() - start) * 1000)
            headline.append(turn_ids(hits))

        # Everything else reuses one batch of query vectors and one gathering per question.
        vectors = list(await embedder.embed([item.question for item in items]))
        gathered = [
            await retriever.gather(
                item.question,
                filters=Filters(user_id=item.conversation, kind="turn"),
                query_vector=vec,
                fetch_all_neighbours=True,
                entity_channel=True,
            )
            for item, vec in zip(items, vectors, strict=True)
        ]
        ablations = {}
        for name, change in ABLATIONS.items():
            variant = replace(config, **change)
            rankings = [turn_ids(rank(i.question, c, variant, DEPTH)) for i, c in zip(items, gathered, strict=True)]
            ablations[name] = metrics(rankings, items)
        base_rankings = baselines(store, retriever.space or store.space, items, vectors)
        result: dict[str, Any] = metrics(headline, items)
        result.update(
            {
                **speed,
                "embedder_load_s": round(load_s, 2),
                "query_ms_p50": _percentile(latencies, 0.5),
                "query_ms_p95": _percentile(latencies, 0.95),
                "baselines": {name: metrics(r, items) for name, r in base_rankings.items()},
                "ablations": ablations,
                "config": asdict(config),
                "path": str(path),
                "conversations": len(conversations),
                "turns": n_turns,
                "embedder": embedder.describe(),
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        )
        if loo:
            result["loo"] = loo_sweep(items, gathered, config)
    return result


def print_report(result: dict[str, Any]) -> None:
    """The recall table: the headline, baselines and ablations, overall and per LoCoMo category."""
    keys = [f"recall@{k}" for k in KS] + ["all@10"]
    rows = [("hybrid (headline)", result)]
    rows += [(f"baseline: {n}", m) for n, m in result["baselines"].items()]
    rows += [(f"ablation: {n}", m) for n, m in result["ablations"].items()]
    print(f"{'':38s}" + "".join(f"{k:>11s}" for k in keys) + "".join(f"{'cat' + c + '@10':>10s}" for c in CATEGORIES))
    for name, m in rows:
        cats = "".join(f"{m['by_category'].get(c, {}).get('recall@10', 0.0):>10.3f}" for c in CATEGORIES)
        print(f"{name:38s}" + "".join(f"{m[k]:>11.3f}" for k in keys) + cats)
    speed = (
        f"ingest {result['ingest_turns_per_s']} turns/s, embedder alone {result['embed_only_texts_per_s']} "
        f"texts/s (ratio {result['ingest_to_embed_ratio']})"
        if result["ingest_turns_per_s"] is not None
        else "ingest skipped (kept database)"
    )
    print(
        f"questions {result['questions']}, {speed}, "
        f"query p50 {result['query_ms_p50']} ms, p95 {result['query_ms_p95']} ms"
    )
    if "loo" in result:
        loo = result["loo"]
        print(f"leave-one-conversation-out recall@10: {loo['loo_recall@10']}")
        for fold in loo["folds"]:
            print(f"  held out {fold['held_out']}: picked {fold['picked']} -> {fold['held_out_recall@10']}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (``python -m``): evaluate, print the table, write the JSON; returns the exit status."""
    args = _parse_args(argv)
    from memwise.embed.minilm import MiniLMEmbedder

    result = asyncio.run(evaluate_retrieval(args.path, MiniLMEmbedder(), candidate_k=args.candidate_k, loo=args.loo))
    print_report(result)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
