"""Pure scoring pieces of the hybrid retriever: normalisation, fusion, context, speaker, session, entities.

Each function scores a mapping of record ids and knows nothing of stores or models, so each can be
read, tested and swept on its own; :mod:`memwise.facts.retrieval_rank` puts them together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from memwise.exceptions import ConfigError
from memwise.facts._text import mentioned_names
from memwise.facts.entities import ENTITIES, extract_entities
from memwise.facts.retrieval_links import Links
from memwise.store.base import Record


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
    return extract_entities(record.indexed_text)


def reciprocal_rank_fusion(rankings: Iterable[Sequence[str]], k: float = 60.0) -> dict[str, float]:
    """Plain RRF: each ranking adds ``1 / (k + rank)`` (rank from 1). Kept as a baseline."""
    out: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            out[key] = out.get(key, 0.0) + 1.0 / (k + rank)
    return out


_WORD = re.compile(r"\w+")


def length_score(text: str, words: int) -> float:
    """How much a turn says, in [0, 1]: its word count over ``words``, capped at 1.

    A prior that does not look at the query: evidence turns are longer than most (LoCoMo dev: median
    37 words against 25 for all turns), and a short turn that shares a word with the question ("Bye
    Joanna! Good luck!") is rarely what it asks about.

    Example:
        >>> length_score("Ann: I went to a support group.", 14)
        0.5
    """
    if words < 1:
        raise ConfigError(f"length_score: words must be >= 1, got {words}")
    return min(1.0, len(_WORD.findall(text)) / words)


def spread_order(
    final: npt.NDArray[np.float64],
    sessions: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    top: int,
    depth: int,
) -> npt.NDArray[np.int64]:
    """Pool positions of the ``top`` best under each row of scores, spread over sessions.

    ``final`` is points x pool (one row per weight setting; :func:`~memwise.facts.retrieval_rank.rank`
    passes one), ``sessions`` a session code per pool record and ``weights`` one spread weight per
    row. Among the ``depth`` best of a row, each pick is the record whose score, less ``weight``
    times the number of records of its session already picked, is highest (ties: the better-ranked);
    below ``depth`` the plain order follows. With weight 0 this is the plain order, ties included.

    Example:
        >>> spread_order(np.array([[1.0, 0.9, 0.8]]), np.array([0, 0, 1]), np.array([0.2]), top=3, depth=3)
        array([[0, 2, 1]])
    """
    rows, size = final.shape
    order = np.argsort(-final, axis=1, kind="stable")
    depth = min(depth, size)
    steps = min(top, depth)
    head = order[:, :depth]
    scores = np.take_along_axis(final, head, axis=1)
    codes = sessions[head]
    counts = np.zeros((rows, int(sessions.max(initial=0)) + 1))
    taken = np.zeros((rows, depth), dtype=bool)
    picked = np.empty((rows, steps), dtype=np.int64)
    every = np.arange(rows)
    for step in range(steps):
        penalised = scores - weights[:, None] * counts[every[:, None], codes]
        penalised[taken] = -np.inf
        best = np.argmax(penalised, axis=1)
        picked[:, step] = head[every, best]
        taken[every, best] = True
        counts[every, codes[every, best]] += 1
    return np.concatenate([picked, order[:, depth:top]], axis=1) if top > depth else picked
