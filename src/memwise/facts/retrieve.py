"""Hybrid retrieval over conversation turns: dense + BM25 fusion, context, speaker, session, entity and time cues.

No LLM runs at index or query time; the only model is the embedder. The code is in four modules:
:mod:`~memwise.facts.retrieval_links` (index time: the links and keys each record carries),
:mod:`~memwise.facts.retrieval_scores` (the pure scoring pieces), :mod:`~memwise.facts.retrieval_rank`
(the knobs, the score parts and their sum) and this one (:class:`HybridRetriever`: the store and model
round trips). The recipe, and why each step:

1. **Index text** (``retrieval_links.render_turn_for_index``): ``[8 May 2023] Caroline: <text> [shares
   a photo: <caption>]``. A bare utterance ("I went yesterday, it was so powerful") does not say who
   spoke or when; questions nearly always name the person and often the time.
2. **Candidates**: the ``candidate_k`` best turns by cosine and the ``candidate_k`` best by the store's
   FTS5 bm25, both under the caller's filters (which the store applies as hard constraints). The
   bm25 query leaves out the names of speakers (:func:`~memwise.facts._text.without_names`): the
   index text starts with the speaker, so a name would outweigh the words that carry the content,
   and the speaker step below already uses it. Two more channels join when the question gives them
   something: the *time channel* (the best turns by cosine inside the question's time window, see
   step 8) and the *entity channel* (the turns that name the question's entities, step 7).
3. **Fusion** (``retrieval_scores.fuse``): min-max normalised scores, mixed with weight
   ``dense_weight``. Score fusion keeps how *much* better the top hit is, which rank fusion throws away.
4. **Context** (``retrieval_scores.context_scores``): a turn gains ``context_weight * decay**(d-1)``
   times the best fused score among its neighbours at distance ``d`` (same session, both sides).
   Evidence often sits next to the turn that matches the words of the question: the answer to "what
   did you paint?" is "a sunset", one turn later. Neighbours of the strongest candidates are fetched
   even when neither channel found them (``retrieval_scores.neighbours_to_fetch``).
5. **Speaker** (``retrieval_scores.speaker_bonus``): a question naming exactly one of the speakers
   found among the candidates adds ``speaker_boost`` to that speaker's turns.
6. **Session** (``retrieval_scores.session_scores``): every turn gains ``session_weight`` times its
   session's strength (the mean fused score of the session's ``session_top`` best turns, relative to
   the strongest session): evidence spread over a session outweighs one stray match elsewhere.
7. **Entities** (:mod:`memwise.facts.entities`): proper nouns, quoted titles and numbers, extracted
   by rule at index time. A turn gains ``entity_weight`` times the share of the question's entities
   it names, rarer entities weighing more (``retrieval_scores.entity_weights``).
8. **Time** (:mod:`memwise.facts.temporal`): a question that names a time ("in July 2023"; with a
   question date also "3 weeks ago", "last Friday", "recently") gives a window of days; a turn gains
   ``time_weight`` times its soft date score (1 inside, decaying outside). A question asking *when*
   gives ``time_cue_weight`` to turns that say a time ("last Sunday"), which the answer needs.
9. **Length** (``retrieval_scores.length_score``): a turn gains ``length_weight`` times its word count
   over ``length_words`` (capped at 1), whatever the question. Evidence turns say something (LoCoMo dev:
   median 37 words against 25 for all turns); a short turn sharing one word with the question ("Bye
   Joanna! Good luck!") rarely is the answer. On the dev file, taking it out of the default recipe
   costs recall@10 0.013 (0.817 -> 0.804).
10. **Spread** (``retrieval_scores.spread_order``): a question that gathers several things said at
   different times (:func:`~memwise.facts._text.asks_for_many`: "What has Melanie painted?", "How many",
   "both") has the top ``spread_depth`` re-picked greedily, each turn paying ``spread_weight`` per turn
   of its session already picked. The context and session steps pull a ranking into one session, which
   is right for a single fact and wrong for a list: without it, dev recall@10 is 0.810 instead of
   0.817 (multi-hop questions 0.480 instead of 0.516). Spreading every question instead cost
   single-hop recall more than it gave (0.787-0.796 against 0.802 before steps 9-10).

Steps 4-9 add to the score, so ``retrieval_rank.score_parts`` computes the unweighted parts once and
``retrieval_rank.combine`` weighs them: a sweep over the weights needs no re-scoring. Step 10 only
re-orders the top, for many weight settings at once.

Index-time data lives in record metadata, written by ``retrieval_links.link_context`` (called by
``retrieval_links.index_records`` and by ingest): neighbour links (``CONTEXT_BEFORE``/``CONTEXT_AFTER``,
nearest first), so the retriever needs no knowledge of how ids are made, and entity keys
(:data:`~memwise.facts.entities.ENTITIES`; units stored before they existed get theirs extracted at
query time). Every channel searches under the caller's filters, and records fetched through a link
are checked against them again: a link can never carry a record across a scope. Nothing is cached
between queries.

The defaults are the in-sample best of the grid that ``memwise bench retrieval --loo`` sweeps on the
LoCoMo dev conversations (:data:`memwise.facts.retrieval_eval.GRID`; entity weights 0 and 0.1 tie
there, 0.1 is kept), and the leave-one-conversation-out check of that choice is within 0.005 of it
(recall@10 0.817, LOO 0.812). Not tuned: window 2, decay 0.5, ``session_top`` 3 (2, 4 and 5 measured
0.797-0.800), ``length_words`` 30 (20, 40 and 50: 0.807-0.813 at length weights 0.3-0.5),
``spread_depth`` 60 (20, 30 and 100: 0.817-0.818), and ``time_weight`` (LoCoMo questions carry no
date, and only a few name one; it is neutral there).

Tried on this recipe and left out, as they did not help beyond noise on the dev file (recall@10 0.802
before steps 9-10; each figure the best of dense weights 0.3-0.5):

- links to textually similar turns of other sessions (tf-idf, 2 per turn) lending like neighbours
  (0.8045 at weight 0.05, below 0.802 from 0.2 up);
- a bm25 scale fixed by the query length instead of min-max (0.801-0.803), and bm25 query expansion
  with the top turns' rare words (0.792-0.800);
- dense pseudo-relevance feedback (Rocchio: the query vector moved toward the mean vector of the 3-10
  best fused turns, then a second cosine pass; 0.793-0.803);
- a second vector per turn (the turn with its previous and next turn, or the bare utterance without
  day and speaker), max- or mean-pooled with the turn's own (0.796-0.806; it would double the
  embedding work of ingest);
- question rewriting for the dense query (question words and auxiliaries stripped, speaker names
  removed, or "Speaker: statement" like the index text), alone or averaged with the question's own
  vector (0.782-0.803; one more query embedding);
- other dense normalisations (top-30/50 only, a median or 80th-percentile floor; 0.781-0.798), a
  context decay of 0.7 (0.793), turn priors for a shared photo, a question turn or a turn answering
  a question (0.802-0.814 on top of steps 9-10, noise);
- one vector per sentence (and per photo caption), a turn's cosine the best of them: cosine alone
  goes from 0.51 to 0.60, the recipe gets 0.79-0.812 with it as its dense channel (2.7 times the
  embeddings at ingest);
- weights fitted instead of picked: a linear listwise ranker over the recipe's parts, the raw channel
  scores and ranks, the neighbours' scores and the sentence cosine reaches 0.804-0.809 leave one
  conversation out against the recipe's 0.810 without spread (``bench/retrieval_ceiling.py``); with
  a soft word match (question words met by similar turn words, MiniLM word vectors) or late
  interaction over MiniLM's token vectors (0.710 alone, the strongest single channel), 0.816-0.828,
  at the price of a word or token vector store and a fitted ranker.

None of these, nor steps 9-10, reaches recall@10 0.85: most misses of categories 1 and 3 need an
inference the words and a small embedder do not carry ("Would Melanie prefer a national park or a
theme park?" -> a camping-trip turn), and the rest sit in the right session behind its stronger turns.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import date, datetime
from typing import Any

import numpy.typing as npt

from memwise.embed.base import Embedder
from memwise.facts._text import mentioned_names, without_names
from memwise.facts.entities import extract_entities
from memwise.facts.retrieval_links import context_links
from memwise.facts.retrieval_rank import Candidates, RetrieverConfig, base_scores, rank, record_speaker
from memwise.facts.retrieval_scores import entity_weights, neighbours_to_fetch, unit_entities
from memwise.facts.temporal import DateRange, time_range
from memwise.facts.units import from_epoch, to_epoch
from memwise.store.base import ANY, Filters, Record, ScoredRecord, Store

_MAX_QUERY_ENTITIES = 4  # each costs one full-text query; questions rarely name more
_ENTITY_DEPTH = 30  # units read per entity: enough to tell a rare entity from a common one


def _implied_question_date(filters: Filters) -> datetime | None:
    """The question time a ``ts`` upper bound stands for (memories after the question are hidden)."""
    if filters.time_field == "ts" and filters.until is not None and math.isfinite(filters.until):
        return from_epoch(filters.until)
    return None


def _within(filters: Filters, window: DateRange) -> Filters | None:
    """``filters`` narrowed to event times in ``window``, plus its width each side.

    The margin is there because the time score decays there. None when the caller bounds another
    time field, which one Filters cannot combine with.
    """
    if filters.time_field != "ts" and (filters.since is not None or filters.until is not None):
        return None
    slack = window.days * 86400.0
    start = to_epoch(datetime.combine(window.start, datetime.min.time()))
    end = to_epoch(datetime.combine(window.end, datetime.min.time()))
    assert start is not None and end is not None
    since, until = start - slack, end + slack
    if filters.since is not None:
        since = max(since, filters.since)
    if filters.until is not None:
        until = min(until, filters.until)
    if since >= until:
        return None
    return replace(filters, since=since, until=until, time_field="ts")


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
        store: Store,
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
            vectors = await self.embedder.embed([record.indexed_text for record in batch])
            ids.extend(await asyncio.to_thread(self.store.add, batch, vectors, space=self.space))
        return ids

    async def gather(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        query_vector: npt.ArrayLike | None = None,
        fetch_all_neighbours: bool = False,
        question_date: datetime | date | None = None,
        entity_channel: bool | None = None,
    ) -> Candidates:
        """Both channels' candidates, the entity and time channels'.

        Also the neighbours the context step will need.

        ``fetch_all_neighbours`` fetches the neighbours of every candidate instead of only those of
        the best ``expand_top``, so that :func:`rank` can be re-run under other configs (sweeps);
        ``entity_channel`` likewise runs the entity channel even when this config gives it no weight.
        ``question_date`` places relative time words ("3 weeks ago"); without it, a ``ts`` upper
        bound in ``filters`` (how :meth:`~memwise.facts.memory.AsyncMemory.answer` hides the future)
        stands for it.
        """
        filters = filters or ANY
        config = self.config
        k = config.candidate_k

        vec = query_vector if query_vector is not None else (await self.embedder.embed([query]))[0]
        dense_hits = await asyncio.to_thread(self.store.search_vector, vec, k, filters, space=self.space)
        # Dense first: its hits say who the speakers are, and their names leave the bm25 query.
        speakers = {s for hit in dense_hits if (s := record_speaker(hit.record))}
        text_query = without_names(query, mentioned_names(query, sorted(speakers)))
        text_hits = await asyncio.to_thread(self.store.search_text, text_query, k, filters)
        window = time_range(query, question_date or _implied_question_date(filters))
        narrowed = _within(filters, window) if window is not None and config.time_weight else None
        if narrowed is not None:
            # The time channel: the turns of the window that best match, whatever else ranks above them.
            timed = await asyncio.to_thread(self.store.search_vector, vec, k, narrowed, space=self.space)
            dense_hits = [*dense_hits, *timed]
        records: dict[str, Record] = {}
        for hit in (*dense_hits, *text_hits):
            records.setdefault(hit.record.id, hit.record)
        dense_scores = {hit.record.id: hit.score for hit in dense_hits}
        text_scores = {hit.record.id: hit.score for hit in text_hits}
        weights: dict[str, float] = {}
        linked: list[str] = []
        if entity_channel or (entity_channel is None and config.entity_weight):
            weights, linked = await self._entity_channel(text_query, filters, records)
        if config.context_window and config.context_weight:
            links = {key: context_links(record, config.context_window) for key, record in records.items()}
            base = base_scores(Candidates(records, dense_scores, text_scores), config)
            top = len(base) if fetch_all_neighbours else config.expand_top
            missing = neighbours_to_fetch(base, links, top)
            if missing:
                fetched = await asyncio.to_thread(self.store.get_many, missing)
                now = time.time()
                records.update((r.id, r) for r in fetched if r.id not in records and filters.matches(r, now))
        return Candidates(records, dense_scores, text_scores, weights, tuple(linked), window)

    async def _entity_channel(
        self, text_query: str, filters: Filters, records: dict[str, Record]
    ) -> tuple[dict[str, float], list[str]]:
        """The question's entity keys (speaker names already out), weighted, and the units naming them.

        Each key's weight depends on how many units of the scope name it; found records are added
        to ``records``.

        The store's full-text index finds the units that contain a key's words; their entity keys
        (index time) decide which really name it. Counting stops at ``_ENTITY_DEPTH`` units, which is
        plenty to tell a rare key from a common one.
        """
        keys = extract_entities(text_query)[:_MAX_QUERY_ENTITIES]
        df: dict[str, int] = {}
        linked: list[str] = []
        for key in keys:
            hits = await asyncio.to_thread(self.store.search_text, key, _ENTITY_DEPTH, filters)
            naming = [hit.record for hit in hits if key in unit_entities(hit.record)]
            df[key] = len(naming)
            for record in naming:
                records.setdefault(record.id, record)
                linked.append(record.id)
        return entity_weights(df), list(dict.fromkeys(linked))

    async def search(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        top_k: int = 10,
        query_vector: npt.ArrayLike | None = None,
        question_date: datetime | date | None = None,
    ) -> list[ScoredRecord]:
        """The ``top_k`` best records for ``query`` among those ``filters`` allow, best first.

        ``query_vector`` skips embedding the query when the caller already has its vector;
        ``question_date`` is when the question is asked, for relative time words (see :meth:`gather`).
        """
        if top_k <= 0 or not query.strip():
            return []
        candidates = await self.gather(query, filters=filters, query_vector=query_vector, question_date=question_date)
        return rank(query, candidates, self.config, top_k)

    def describe(self) -> dict[str, Any]:
        """The recipe's settings, for run records."""
        return {"space": self.space, **asdict(self.config)}
