"""Ranking gathered candidates: the recipe's knobs, the unweighted score parts, and their weighted sum.

Pure (no store, no model): :meth:`~memwise.facts.retrieve.HybridRetriever.gather` collects the
:class:`Candidates` once, and :func:`rank` can then be re-run under any :class:`RetrieverConfig`,
which is how the leave-one-conversation-out sweep of :mod:`memwise.facts.retrieval_eval` works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from memwise.exceptions import ConfigError
from memwise.facts._text import asks_for_many
from memwise.facts.retrieval_links import SESSION, SPEAKER, context_links
from memwise.facts.retrieval_scores import (
    context_scores,
    fuse,
    length_score,
    neighbours_to_fetch,
    normalise_scores,
    session_scores,
    speaker_bonus,
    spread_order,
    unit_entities,
)
from memwise.facts.temporal import DateRange, asks_when, says_time, time_score
from memwise.facts.units import from_epoch
from memwise.store.base import Record, ScoredRecord


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
        length_weight: added times the turn's length score (:func:`length_score`): a prior for
            turns that say something.
        length_words: the word count at which the length score reaches 1.
        spread_weight: for questions that gather several things (:func:`asks_for_many`), what each
            turn already ranked from the same session costs a turn (:func:`spread_order`).
        spread_depth: how many of the best turns the spread re-orders.
    """

    candidate_k: int = 100
    dense_weight: float = 0.4
    context_weight: float = 0.75
    context_decay: float = 0.5
    context_window: int = 2
    expand_top: int = 20
    speaker_boost: float = 0.5
    session_weight: float = 0.45
    session_top: int = 3
    entity_weight: float = 0.1
    time_weight: float = 0.3
    time_cue_weight: float = 0.2
    length_weight: float = 0.4
    length_words: int = 30
    spread_weight: float = 0.2
    spread_depth: int = 60

    def __post_init__(self) -> None:
        if self.candidate_k < 1:
            raise ConfigError(f"RetrieverConfig.candidate_k must be >= 1, got {self.candidate_k}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"RetrieverConfig.dense_weight must be in [0, 1], got {self.dense_weight}")
        if self.context_window < 0 or self.expand_top < 0:
            raise ConfigError("RetrieverConfig.context_window and expand_top must be >= 0")
        weights = (self.context_weight, self.context_decay, self.speaker_boost, self.session_weight)
        others = (self.entity_weight, self.time_weight, self.time_cue_weight, self.length_weight, self.spread_weight)
        if min(*weights, *others) < 0:
            raise ConfigError("RetrieverConfig weights must be >= 0")
        if self.length_words < 1 or self.spread_depth < 1:
            raise ConfigError("RetrieverConfig.length_words and spread_depth must be >= 1")
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
    "length": "length_weight",
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

    Depends on the config's fusion, context and pool knobs, on ``length_words``, and on whether
    ``entity_weight`` is set (the entity channel's units join the pool only then), not on the other
    weights.
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
    speaker = speaker_bonus(query, {key: record_speaker(records[key]) for key in pool}, 1.0)
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
        parts["cue"].append(1.0 if asks and says_time(record.indexed_text) else 0.0)
        parts["length"].append(length_score(record.text, config.length_words))
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
    happened to fetch. Ties keep first-seen order. A question that gathers several things
    (:func:`asks_for_many`) has its best ``spread_depth`` spread over sessions (:func:`spread_order`).
    """
    if top_k <= 0:
        return []
    parts = score_parts(query, candidates, config)
    final = combine(parts, config)
    if config.spread_weight and parts.keys and asks_for_many(query):
        weights = np.array([config.spread_weight])
        sessions = session_codes(parts.keys, candidates.records)
        ranked = [int(i) for i in spread_order(np.array([final]), sessions, weights, top_k, config.spread_depth)[0]]
    else:
        ranked = sorted(range(len(parts.keys)), key=lambda i: (-final[i], i))[:top_k]
    return [ScoredRecord(candidates.records[parts.keys[i]], final[i]) for i in ranked]


def session_codes(keys: Sequence[str], records: Mapping[str, Record]) -> npt.NDArray[np.int64]:
    """A small integer per record, the same for records of one session; a record without one stands alone."""
    codes: dict[object, int] = {}
    out = []
    for key in keys:
        session = records[key].metadata.get(SESSION)
        out.append(codes.setdefault(session if session is not None else ("alone", key), len(codes)))
    return np.array(out, dtype=np.int64)


def record_speaker(record: Record) -> str | None:
    """Who said the record (its :data:`SPEAKER` metadata), if it says."""
    speaker = record.metadata.get(SPEAKER)
    return speaker if isinstance(speaker, str) else None
