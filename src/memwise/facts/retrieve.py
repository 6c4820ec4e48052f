"""Hybrid retrieval over conversation turns: dense + BM25 fusion, context, speaker, session, entity and time cues.

No LLM runs at index or query time; the only model is the embedder. The recipe, and why each step:

1. **Index text** (:func:`render_turn_for_index`): ``[8 May 2023] Caroline: <text> [shares a photo:
   <caption>]``. A bare utterance ("I went yesterday, it was so powerful") does not say who spoke or
   when; questions nearly always name the person and often the time.
2. **Candidates**: the ``candidate_k`` best turns by cosine and the ``candidate_k`` best by the store's
   FTS5 bm25, both under the caller's filters (which the store applies as hard constraints). The
   bm25 query leaves out the names of speakers (:func:`~memwise.facts._text.without_names`): the
   index text starts with the speaker, so a name would outweigh the words that carry the content,
   and the speaker step below already uses it. Two more channels join when the question gives them
   something: the *time channel* (the best turns by cosine inside the question's time window, see
   step 8) and the *entity channel* (the turns that name the question's entities, step 7).
3. **Fusion** (:func:`fuse`): min-max normalised scores, mixed with weight ``dense_weight``. Score
   fusion keeps how *much* better the top hit is, which rank fusion throws away.
4. **Context** (:func:`context_scores`): a turn gains ``context_weight * decay**(d-1)`` times the best
   fused score among its neighbours at distance ``d`` (same session, both sides). Evidence often sits
   next to the turn that matches the words of the question: the answer to "what did you paint?" is
   "a sunset", one turn later. Neighbours of the strongest candidates are fetched even when neither
   channel found them (:func:`neighbours_to_fetch`).
5. **Speaker** (:func:`speaker_bonus`): a question naming exactly one of the speakers found among the
   candidates adds ``speaker_boost`` to that speaker's turns.
6. **Session** (:func:`session_scores`): every turn gains ``session_weight`` times its session's
   strength (the mean fused score of the session's ``session_top`` best turns, relative to the
   strongest session): evidence spread over a session outweighs one stray match elsewhere.
7. **Entities** (:mod:`memwise.facts.entities`): proper nouns, quoted titles and numbers, extracted
   by rule at index time. A turn gains ``entity_weight`` times the share of the question's entities
   it names, rarer entities weighing more (:func:`entity_weights`).
8. **Time** (:mod:`memwise.facts.temporal`): a question that names a time ("in July 2023"; with a
   question date also "3 weeks ago", "last Friday", "recently") gives a window of days; a turn gains
   ``time_weight`` times its soft date score (1 inside, decaying outside). A question asking *when*
   gives ``time_cue_weight`` to turns that say a time ("last Sunday"), which the answer needs.

Every step after fusion adds to the score, so :func:`score_parts` computes the unweighted parts once
and :func:`combine` weighs them: a sweep over the weights needs no re-scoring.

Index-time data lives in record metadata, written by :func:`link_context` (called by
:func:`index_records` and by ingest): neighbour links (:data:`CONTEXT_BEFORE`/:data:`CONTEXT_AFTER`,
nearest first), so the retriever needs no knowledge of how ids are made, and entity keys
(:data:`~memwise.facts.entities.ENTITIES`; units stored before they existed get theirs extracted at
query time). Every channel searches under the caller's filters, and records fetched through a link
are checked against them again: a link can never carry a record across a scope. Nothing is cached between queries.

The defaults were chosen on the LoCoMo dev conversations with leave-one-conversation-out checks
(``memwise bench retrieval --loo``; see :mod:`memwise.facts.retrieval_eval`). Not tuned: window 2,
decay 0.5, ``session_top`` 3, and ``time_weight`` (LoCoMo questions carry no date, and only a few
name one; it is neutral there). Tried on this recipe and left out, as they did not help beyond noise
on the dev file (recall@10 0.802): links to textually similar turns of other sessions (tf-idf,
2 per turn) lending like neighbours (0.8045 at weight 0.05, below 0.802 from 0.2 up), a bm25 scale
fixed by the query length instead of min-max (0.801-0.803), and bm25 query expansion with the top
turns' rare words (0.792-0.800).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any

import numpy.typing as npt

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError
from memwise.facts._text import mentioned_names, without_names
from memwise.facts.entities import ENTITIES, extract_entities
from memwise.facts.temporal import DateRange, asks_when, says_time, time_range, time_score
from memwise.facts.types import Conversation
from memwise.facts.units import from_epoch, index_text_for_turn, to_epoch, turn_record
from memwise.store.base import ANY, Filters, Record, ScoredRecord, Store

CONTEXT_BEFORE = "context_before"
"""Metadata key: ids of the preceding turns of the same session, nearest first."""
CONTEXT_AFTER = "context_after"
"""Metadata key: ids of the following turns of the same session, nearest first."""
SPEAKER = "speaker"
"""Metadata key: who said the turn (written by :func:`memwise.facts.units.turn_record`)."""
SESSION = "session_id"
"""Metadata key: the session a turn belongs to (written by :func:`memwise.facts.units.turn_record`)."""

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
    """Copies of one session's records (in order) with the ids of up to ``window`` neighbours each side.

    Each copy also carries its entity keys (:func:`~memwise.facts.entities.extract_entities`), for
    the entity step.
    """
    if window < 0:
        raise ConfigError(f"link_context: window must be >= 0, got {window}")
    ids = [record.id for record in records]
    out: list[Record] = []
    for i, record in enumerate(records):
        before = ids[max(0, i - window) : i][::-1]
        after = ids[i + 1 : i + 1 + window]
        entities = list(extract_entities(record.index_text or record.text))
        metadata = {**record.metadata, CONTEXT_BEFORE: before, CONTEXT_AFTER: after, ENTITIES: entities}
        out.append(replace(record, metadata=metadata))
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


def session_scores(base: Mapping[str, float], sessions: Mapping[str, object], top: int) -> dict[str, float]:
    """Each record's session strength in [0, 1].

    The strength is the mean of its session's ``top`` best base scores, over the strongest session's.

    Evidence that spans a session ("How did Ann's first week at the new job go?") is spread over
    turns that each match the question only a little; together they outweigh one stray strong turn
    of another session. Records without a session stand alone. Missing scores count as 0, so a
    session with one strong turn is weaker than one with three.

    Example:
        >>> session_scores({"a": 1.0, "b": 0.5, "c": 0.9}, {"a": "s1", "b": "s1", "c": "s2"}, top=2)
        {'a': 1.0, 'b': 1.0, 'c': 0.6}
    """
    if top < 1:
        raise ConfigError(f"session_scores: top must be >= 1, got {top}")
    members: dict[object, list[float]] = {}
    for key, session in sessions.items():
        members.setdefault(session if session is not None else ("alone", key), []).append(base.get(key, 0.0))
    strength = {s: sum(sorted(v, reverse=True)[:top]) / top for s, v in members.items()}
    hi = max(strength.values(), default=0.0)
    if hi <= 0:
        return dict.fromkeys(sessions, 0.0)
    return {
        key: round(strength[session if session is not None else ("alone", key)] / hi, 12)
        for key, session in sessions.items()
    }


def entity_weights(df: Mapping[str, int]) -> dict[str, float]:
    """Weights of the question's entity keys from how many units name each: rarer weighs more, sum 1.

    A key named by one unit points at it; one named by fifty (a pet's name, a home town) says little.
    Keys no unit names are dropped.

    Example:
        >>> {k: round(v, 3) for k, v in entity_weights({"paris": 1, "max": 8, "nobody": 0}).items()}
        {'paris': 0.755, 'max': 0.245}
    """
    raw = {key: 1.0 / (1.0 + math.log(n)) for key, n in df.items() if n > 0}
    total = sum(raw.values())
    return {key: w / total for key, w in raw.items()} if total > 0 else {}


def unit_entities(record: Record) -> tuple[str, ...]:
    """The record's entity keys: from its metadata (index time), else extracted now (older stores)."""
    stored = record.metadata.get(ENTITIES)
    if isinstance(stored, list | tuple):
        return tuple(str(key) for key in stored)
    return extract_entities(record.index_text or record.text)


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
        session_weight: how much a turn's session strength adds (0 turns session aggregation off).
        session_top: the best this many turns of a session make its strength.
        entity_weight: added to a turn for the question's entities it names (rarer ones weigh more).
        time_weight: added, times the soft date score, when the question names a time window.
        time_cue_weight: added to a turn that says a time when the question asks "when".
    """

    candidate_k: int = 100
    dense_weight: float = 0.3
    context_weight: float = 0.75
    context_decay: float = 0.5
    context_window: int = 2
    expand_top: int = 20
    speaker_boost: float = 0.5
    session_weight: float = 0.3
    session_top: int = 3
    entity_weight: float = 0.1
    time_weight: float = 0.3
    time_cue_weight: float = 0.3

    def __post_init__(self) -> None:
        if self.candidate_k < 1:
            raise ConfigError(f"RetrieverConfig.candidate_k must be >= 1, got {self.candidate_k}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"RetrieverConfig.dense_weight must be in [0, 1], got {self.dense_weight}")
        if self.context_window < 0 or self.expand_top < 0:
            raise ConfigError("RetrieverConfig.context_window and expand_top must be >= 0")
        weights = (self.context_weight, self.context_decay, self.speaker_boost, self.session_weight)
        if min(*weights, self.entity_weight, self.time_weight, self.time_cue_weight) < 0:
            raise ConfigError("RetrieverConfig weights must be >= 0")
        if self.session_top < 1:
            raise ConfigError(f"RetrieverConfig.session_top must be >= 1, got {self.session_top}")


@dataclass(frozen=True, slots=True)
class Candidates:
    """What the store returned for one query: records, each channel's raw scores, and the query's cues.

    ``entities`` are the question's entity keys with their weights (:func:`entity_weights`) and
    ``linked`` the ids of the units that name them (the entity channel); ``window`` is the time
    the question points at, if any.
    """

    records: Mapping[str, Record]
    dense: Mapping[str, float]
    lexical: Mapping[str, float]
    entities: Mapping[str, float] = field(default_factory=dict)
    linked: tuple[str, ...] = ()
    window: DateRange | None = None


def base_scores(candidates: Candidates, config: RetrieverConfig) -> dict[str, float]:
    """Fused, normalised channel scores of the candidates (steps 2-3)."""
    return fuse(
        normalise_scores(candidates.dense), normalise_scores(candidates.lexical, floor=0.0), config.dense_weight
    )


PART_WEIGHTS = {
    "speaker": "speaker_boost",
    "session": "session_weight",
    "entity": "entity_weight",
    "time": "time_weight",
    "cue": "time_cue_weight",
}
"""The weighted parts of the final score and the :class:`RetrieverConfig` field that weighs each."""
PARTS = tuple(PART_WEIGHTS)


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """The pool of one query and, per pool record (same order), the parts :func:`rank` adds up.

    ``context`` is the fused score plus what the neighbours lend (steps 3-4); every other part is
    unweighted (a 0/1 indicator or a score in [0, 1]) and enters the final score times its weight,
    so a sweep over those weights re-adds the parts instead of re-scoring (:func:`combine`).
    """

    keys: tuple[str, ...]
    context: tuple[float, ...]
    parts: Mapping[str, tuple[float, ...]]


def score_parts(query: str, candidates: Candidates, config: RetrieverConfig) -> ScoreParts:
    """Steps 3-8 before weighting.

    Depends on the config's fusion, context and pool knobs, and on whether ``entity_weight`` is set
    (the entity channel's units join the pool only then), not on the other weights.
    """
    base = base_scores(candidates, config)
    records = candidates.records
    window = config.context_window
    links = {key: context_links(records[key], window) for key in base if key in records}
    extra = neighbours_to_fetch(base, links, config.expand_top) if window and config.context_weight else []
    linked = candidates.linked if config.entity_weight else ()
    pool = [key for key in dict.fromkeys((*base, *extra, *linked)) if key in records]
    pool_links = {key: links.get(key) or context_links(records[key], window) for key in pool}
    scores = context_scores(base, pool_links, config.context_weight, config.context_decay)
    speaker = speaker_bonus(query, {key: _speaker(records[key]) for key in pool}, 1.0)
    session = session_scores(base, {key: records[key].metadata.get(SESSION) for key in pool}, config.session_top)
    wanted = candidates.entities
    asks = asks_when(query)
    parts: dict[str, list[float]] = {name: [] for name in PARTS}
    for key in pool:
        record = records[key]
        parts["speaker"].append(speaker.get(key, 0.0))
        parts["session"].append(session[key])
        named = set(unit_entities(record)) if wanted else set()
        parts["entity"].append(sum(w for e, w in wanted.items() if e in named))
        when = from_epoch(record.ts) if record.ts is not None else None
        parts["time"].append(time_score(when, candidates.window) if candidates.window is not None else 0.0)
        parts["cue"].append(1.0 if asks and says_time(record.index_text or record.text) else 0.0)
    return ScoreParts(
        tuple(pool), tuple(scores[key] for key in pool), {name: tuple(values) for name, values in parts.items()}
    )


def combine(parts: ScoreParts, config: RetrieverConfig) -> list[float]:
    """The final score of each pool record: context plus every part times its weight."""
    weights = [(parts.parts[name], getattr(config, PART_WEIGHTS[name])) for name in PARTS]
    return [
        parts.context[i] + sum(weight * values[i] for values, weight in weights if weight)
        for i in range(len(parts.keys))
    ]


def rank(query: str, candidates: Candidates, config: RetrieverConfig, top_k: int) -> list[ScoredRecord]:
    """Steps 3-8 over gathered candidates; pure, so a parameter sweep needs no store round trips.

    The pool is the channel candidates, the entity channel's units (``candidates.linked``) and,
    among ``candidates.records``, the neighbours of the ``expand_top`` best; records outside it are
    ignored even if present, so the result does not depend on how many extra records the caller
    happened to fetch. Ties keep first-seen order.
    """
    if top_k <= 0:
        return []
    parts = score_parts(query, candidates, config)
    final = combine(parts, config)
    ranked = sorted(range(len(parts.keys)), key=lambda i: (-final[i], i))[:top_k]
    return [ScoredRecord(candidates.records[parts.keys[i]], final[i]) for i in ranked]


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
        speakers = {s for hit in dense_hits if (s := _speaker(hit.record))}
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
        candidates = await self.gather(
            query, filters=filters, query_vector=query_vector, question_date=question_date
        )
        return rank(query, candidates, self.config, top_k)

    def describe(self) -> dict[str, Any]:
        """The recipe's settings, for run records."""
        return {"space": self.space, **asdict(self.config)}
