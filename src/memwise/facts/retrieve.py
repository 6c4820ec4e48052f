"""Hybrid retrieval over conversation turns: dense + BM25 fusion, context smoothing, speaker cues.

No LLM runs at index or query time; the only model is the embedder. The recipe, and why each step:

1. **Index text** (:func:`render_turn_for_index`): ``[8 May 2023] Caroline: <text> [shares a photo:
   <caption>]``. A bare utterance ("I went yesterday, it was so powerful") does not say who spoke or
   when; questions nearly always name the person and often the time.
2. **Candidates**: the ``candidate_k`` best turns by cosine and the ``candidate_k`` best by the store's
   FTS5 bm25, both under the caller's filters (which the store applies as hard constraints). The
   bm25 query leaves out the names of speakers (:func:`~memwise.facts._text.without_names`): the
   index text starts with the speaker, so a name would outweigh the words that carry the content,
   and the speaker step below already uses it.
3. **Fusion** (:func:`fuse`): min-max normalised scores, mixed with weight ``dense_weight``. Score
   fusion keeps how *much* better the top hit is, which rank fusion throws away.
4. **Context** (:func:`context_scores`): a turn gains ``context_weight * decay**(d-1)`` times the best
   fused score among its neighbours at distance ``d`` (same session, both sides). Evidence often sits
   next to the turn that matches the words of the question: the answer to "what did you paint?" is
   "a sunset", one turn later. Neighbours of the strongest candidates are fetched even when neither
   channel found them (:func:`neighbours_to_fetch`).
5. **Speaker** (:func:`speaker_bonus`): a question naming exactly one of the speakers found among the
   candidates adds ``speaker_boost`` to that speaker's turns.

Neighbour links live in record metadata (:data:`CONTEXT_BEFORE`/:data:`CONTEXT_AFTER`, nearest
first), written at index time by :func:`index_records`, so the retriever needs no knowledge of how
ids are made. Records fetched through a link are checked against the filters again: a link can never
carry a record across a scope.

The defaults were chosen on the LoCoMo dev conversations with leave-one-conversation-out checks
(see ``bench/retrieval_locomo.py``); the fixed parts (window 2, decay 0.5) were not tuned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy.typing as npt

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError
from memwise.facts._text import mentioned_names, without_names
from memwise.facts.types import Conversation
from memwise.facts.units import index_text_for_turn, turn_record
from memwise.store.base import ANY, Filters, Record, ScoredRecord
from memwise.store.sqlite import SQLiteStore

CONTEXT_BEFORE = "context_before"
"""Metadata key: ids of the preceding turns of the same session, nearest first."""
CONTEXT_AFTER = "context_after"
"""Metadata key: ids of the following turns of the same session, nearest first."""
SPEAKER = "speaker"
"""Metadata key: who said the turn (written by :func:`memwise.facts.units.turn_record`)."""

Links = tuple[tuple[str, ...], tuple[str, ...]]


# -- index time --------------------------------------------------------------------------------


render_turn_for_index = index_text_for_turn


def link_sessions(records: Sequence[Record], window: int = 2) -> list[Record]:
    """:func:`link_context` applied within each session (``metadata["session_id"]``), order kept.

    Units of different sessions never link: a new session is a new topic.
    """
    groups: dict[tuple[object, object], list[int]] = {}
    for i, record in enumerate(records):
        key = (record.metadata.get("conversation_id"), record.metadata.get("session_id"))
        groups.setdefault(key, []).append(i)
    out = list(records)
    for rows in groups.values():
        for row, linked in zip(rows, link_context([records[i] for i in rows], window), strict=True):
            out[row] = linked
    return out


def link_context(records: Sequence[Record], window: int = 2) -> list[Record]:
    """Copies of one session's records (in order) with the ids of up to ``window`` neighbours each side."""
    if window < 0:
        raise ConfigError(f"link_context: window must be >= 0, got {window}")
    ids = [record.id for record in records]
    out: list[Record] = []
    for i, record in enumerate(records):
        before = ids[max(0, i - window) : i][::-1]
        after = ids[i + 1 : i + 1 + window]
        out.append(replace(record, metadata={**record.metadata, CONTEXT_BEFORE: before, CONTEXT_AFTER: after}))
    return out


def index_records(
    conversation: Conversation,
    *,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
    window: int = 2,
) -> list[Record]:
    """Every turn of a conversation as a record ready for :meth:`HybridRetriever.index`.

    Text is :func:`render_turn_for_index`; metadata is :func:`~memwise.facts.units.turn_record`'s
    plus the neighbour links the context step follows (links never cross a session boundary: a new
    session is a new topic).
    """
    records: list[Record] = []
    for session in conversation.sessions:
        session_records = [
            turn_record(turn, conversation_id=conversation.id, user_id=user_id, agent_id=agent_id, run_id=run_id)
            for turn in session.turns
        ]
        records.extend(link_context(session_records, window))
    return records


# -- pure scoring pieces -------------------------------------------------------------------------


def normalise_scores(scores: Mapping[str, float], *, floor: float | None = None) -> dict[str, float]:
    """Min-max scale to [0, 1]; ``floor`` (when lower than every score) stands in for the minimum.

    Dense scores use the weakest candidate as the minimum; bm25 uses 0, the score of a turn that
    shares no word with the query. When all scores are equal they all become 1.
    """
    if not scores:
        return {}
    hi = max(scores.values())
    lo = min(scores.values())
    if floor is not None:
        lo = min(lo, floor)
    if hi - lo <= 1e-12:
        return dict.fromkeys(scores, 1.0)
    return {key: (value - lo) / (hi - lo) for key, value in scores.items()}


def fuse(dense: Mapping[str, float], lexical: Mapping[str, float], dense_weight: float) -> dict[str, float]:
    """``dense_weight * dense + (1 - dense_weight) * lexical`` over the union (a missing score is 0)."""
    keys = list(dict.fromkeys([*dense, *lexical]))
    return {k: dense_weight * dense.get(k, 0.0) + (1.0 - dense_weight) * lexical.get(k, 0.0) for k in keys}


def context_links(record: Record, window: int) -> Links:
    """The record's neighbour ids (before, after; nearest first), cut to ``window`` each side."""
    before = record.metadata.get(CONTEXT_BEFORE) or ()
    after = record.metadata.get(CONTEXT_AFTER) or ()
    return tuple(str(i) for i in before[:window]), tuple(str(i) for i in after[:window])


def context_scores(
    base: Mapping[str, float], links: Mapping[str, Links], weight: float, decay: float
) -> dict[str, float]:
    """Each linked record's base score plus what its neighbours lend it.

    At distance ``d`` the better of the two neighbours (before, after) lends ``weight * decay**(d-1)``
    times its base score; a neighbour without a base score lends nothing. The max rather than the
    sum, so a turn inside a run of matches is not favoured over the match itself twice over.
    """
    out: dict[str, float] = {}
    for key, (before, after) in links.items():
        score = base.get(key, 0.0)
        for d in range(max(len(before), len(after))):
            left = base.get(before[d], 0.0) if d < len(before) else 0.0
            right = base.get(after[d], 0.0) if d < len(after) else 0.0
            score += weight * decay**d * max(left, right)
        out[key] = score
    return out


def neighbours_to_fetch(base: Mapping[str, float], links: Mapping[str, Links], top: int) -> list[str]:
    """Neighbour ids of the ``top`` best-scored records that are not scored yet, nearest first."""
    best = sorted((key for key in base if key in links), key=lambda key: -base[key])[: max(top, 0)]
    wanted: list[str] = []
    for key in best:
        before, after = links[key]
        for d in range(max(len(before), len(after))):
            for side in (before, after):
                if d < len(side) and side[d] not in base:
                    wanted.append(side[d])
    return list(dict.fromkeys(wanted))


def speaker_bonus(query: str, speakers: Mapping[str, str | None], boost: float) -> dict[str, float]:
    """``boost`` for every record by the one speaker the query names; nothing if it names none or several.

    A question that names both people ("What do Jon and Gina have in common?") says nothing about
    whose turn holds the answer.
    """
    if boost == 0:
        return {}
    names = mentioned_names(query, sorted({s for s in speakers.values() if s}))
    if len(names) != 1:
        return {}
    return {key: boost for key, speaker in speakers.items() if speaker == names[0]}


def reciprocal_rank_fusion(rankings: Iterable[Sequence[str]], k: float = 60.0) -> dict[str, float]:
    """Plain RRF: each ranking adds ``1 / (k + rank)`` (rank from 1). Kept as a baseline."""
    out: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            out[key] = out.get(key, 0.0) + 1.0 / (k + rank)
    return out


# -- the retriever -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrieverConfig:
    """Knobs of the recipe; the defaults are the measured best (see the module docstring).

    Args:
        candidate_k: turns taken from each channel before fusion.
        dense_weight: share of the cosine channel in the fused score (the rest is bm25).
        context_weight: how much the best neighbour at distance 1 lends (0 turns context off).
        context_decay: factor per extra step of distance.
        context_window: neighbours considered on each side.
        expand_top: the best this many candidates have their unscored neighbours fetched.
        speaker_boost: added to the turns of the one speaker a query names (0 turns it off).
    """

    candidate_k: int = 100
    dense_weight: float = 0.4
    context_weight: float = 0.75
    context_decay: float = 0.5
    context_window: int = 2
    expand_top: int = 20
    speaker_boost: float = 0.5

    def __post_init__(self) -> None:
        if self.candidate_k < 1:
            raise ConfigError(f"RetrieverConfig.candidate_k must be >= 1, got {self.candidate_k}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"RetrieverConfig.dense_weight must be in [0, 1], got {self.dense_weight}")
        if self.context_window < 0 or self.expand_top < 0:
            raise ConfigError("RetrieverConfig.context_window and expand_top must be >= 0")
        if self.context_weight < 0 or self.context_decay < 0 or self.speaker_boost < 0:
            raise ConfigError("RetrieverConfig weights must be >= 0")


@dataclass(frozen=True, slots=True)
class Candidates:
    """What the store returned for one query: records and each channel's raw scores."""

    records: Mapping[str, Record]
    dense: Mapping[str, float]
    lexical: Mapping[str, float]


def base_scores(candidates: Candidates, config: RetrieverConfig) -> dict[str, float]:
    """Fused, normalised channel scores of the candidates (steps 2-3)."""
    return fuse(
        normalise_scores(candidates.dense), normalise_scores(candidates.lexical, floor=0.0), config.dense_weight
    )


def rank(query: str, candidates: Candidates, config: RetrieverConfig, top_k: int) -> list[ScoredRecord]:
    """Steps 3-5 over gathered candidates; pure, so a parameter sweep needs no store round trips.

    The pool is the channel candidates plus, among ``candidates.records``, the neighbours of the
    ``expand_top`` best; records outside it are ignored even if present, so the result does not
    depend on how many extra records the caller happened to fetch. Ties keep first-seen order.
    """
    if top_k <= 0:
        return []
    base = base_scores(candidates, config)
    window = config.context_window
    links = {key: context_links(record, window) for key, record in candidates.records.items()}
    extra = neighbours_to_fetch(base, links, config.expand_top) if window and config.context_weight else []
    pool = [key for key in (*base, *extra) if key in candidates.records]
    pool_links = {key: links[key] for key in pool}
    scores = context_scores(base, pool_links, config.context_weight, config.context_decay)
    speakers = {key: _speaker(candidates.records[key]) for key in pool}
    bonus = speaker_bonus(query, speakers, config.speaker_boost)
    order = {key: i for i, key in enumerate(pool)}
    final = {key: scores[key] + bonus.get(key, 0.0) for key in pool}
    ranked = sorted(pool, key=lambda key: (-final[key], order[key]))[:top_k]
    return [ScoredRecord(candidates.records[key], final[key]) for key in ranked]


def _speaker(record: Record) -> str | None:
    speaker = record.metadata.get(SPEAKER)
    return speaker if isinstance(speaker, str) else None


class HybridRetriever:
    """Search a store's turns with the recipe above.

    Args:
        store: where the records and their vectors live.
        embedder: the model the records were embedded with.
        config: the recipe's knobs.
        space: the store's vector space to search (default: the store's own default space).

    Filters are passed straight to the store and re-checked on every record fetched by a neighbour
    link, so they stay hard: a query scoped to one user never sees another user's records.
    """

    def __init__(
        self,
        store: SQLiteStore,
        embedder: Embedder,
        config: RetrieverConfig | None = None,
        *,
        space: str | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or RetrieverConfig()
        self.space = space

    async def index(self, records: Sequence[Record], batch_size: int = 256) -> list[str]:
        """Embed the records' text and add them with their vectors (re-adding the same records is a no-op)."""
        ids: list[str] = []
        for start in range(0, len(records), batch_size):
            batch = list(records[start : start + batch_size])
            vectors = await self.embedder.embed([record.index_text or record.text for record in batch])
            ids.extend(await asyncio.to_thread(self.store.add, batch, vectors, space=self.space))
        return ids

    async def gather(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        query_vector: npt.ArrayLike | None = None,
        fetch_all_neighbours: bool = False,
    ) -> Candidates:
        """Both channels' candidates, plus the neighbours the context step will need.

        ``fetch_all_neighbours`` fetches the neighbours of every candidate instead of only those of
        the best ``expand_top``, so that :func:`rank` can be re-run under other configs (sweeps).
        """
        filters = filters or ANY
        k = self.config.candidate_k

        vec = query_vector if query_vector is not None else (await self.embedder.embed([query]))[0]
        dense_hits = await asyncio.to_thread(self.store.search_vector, vec, k, filters, space=self.space)
        # Dense first: its hits say who the speakers are, and their names leave the bm25 query.
        speakers = {s for hit in dense_hits if (s := _speaker(hit.record))}
        text_query = without_names(query, mentioned_names(query, sorted(speakers)))
        text_hits = await asyncio.to_thread(self.store.search_text, text_query, k, filters)
        records: dict[str, Record] = {}
        for hit in (*dense_hits, *text_hits):
            records.setdefault(hit.record.id, hit.record)
        dense_scores = {hit.record.id: hit.score for hit in dense_hits}
        text_scores = {hit.record.id: hit.score for hit in text_hits}
        config = self.config
        if config.context_window and config.context_weight:
            links = {key: context_links(record, config.context_window) for key, record in records.items()}
            base = base_scores(Candidates(records, dense_scores, text_scores), config)
            top = len(base) if fetch_all_neighbours else config.expand_top
            missing = neighbours_to_fetch(base, links, top)
            if missing:
                fetched = await asyncio.to_thread(self.store.get_many, missing)
                now = time.time()
                records.update((r.id, r) for r in fetched if r.id not in records and filters.matches(r, now))
        return Candidates(records, dense_scores, text_scores)

    async def search(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        top_k: int = 10,
        query_vector: npt.ArrayLike | None = None,
    ) -> list[ScoredRecord]:
        """The ``top_k`` best records for ``query`` among those ``filters`` allow, best first.

        ``query_vector`` skips embedding the query when the caller already has its vector.
        """
        if top_k <= 0 or not query.strip():
            return []
        candidates = await self.gather(query, filters=filters, query_vector=query_vector)
        return rank(query, candidates, self.config, top_k)

    def describe(self) -> dict[str, Any]:
        """The recipe's settings, for run records."""
        return {"space": self.space, **asdict(self.config)}
