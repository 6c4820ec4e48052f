"""How far can the retriever's signals go? Learned weights against the hand-tuned recipe, on LoCoMo.

Issue 13 asks for recall@10 >= 0.85 with no model call at query time. The recipe
(:mod:`memwise.facts.retrieve`) adds a dozen signals with weights picked on a grid. If the signals held
more than the grid finds, a ranker fitted to them should show it. This bench fits one, leave one
conversation out, over the same candidate pool the recipe ranks, and prints both:

- ``recipe``: the default :class:`~memwise.facts.retrieval_rank.RetrieverConfig`, without and with
  (``+ spread``) its re-ordering of list questions over sessions;
- ``learned: parts``: a linear score over the recipe's own parts (context, speaker, session, entity,
  time cue, length), fitted with a listwise softmax loss (the evidence turns' share of the pool's
  softmax), L2-regularised, by Adam;
- ``learned: + channels``: also the raw cosine, both channels' min-max scores and ranks, whether each
  channel found the turn, the neighbours' fused scores and cosines, and two question-type crossings;
- ``learned: + sentences`` (``--sentences``): also the best cosine between the question and any one
  sentence of the turn (or its photo caption), which needs each sentence embedded (about 2.7 texts
  per turn) and lifts cosine alone from about 0.51 to 0.60 recall@10 on the dev file;
- ``learned: + word match`` (``--words``): also how well the turn's words cover the question's, each
  question word met by its most similar turn word (MiniLM vectors of the single words, kept above a
  cosine of 0.5, weighted by idf), with exact matches and without them (the expansions alone: "pets"
  met by "dog", "cities" by "Rome"). It needs the vocabulary embedded (4,230 words on the dev file,
  seconds) and, at query time, the vectors of the question's words and the pool's;
- ``learned: + token maxsim`` (``--tokens``): also late interaction (ColBERT's MaxSim, on MiniLM as it
  is, not trained for it): each question token's best cosine with a token of the turn, averaged. It
  needs every token's vector kept (about 35 per turn, 20 times a turn's one vector).

``alone`` is each signal's own recall@10 over all of a conversation's turns, for scale.

Each learned row gives ``loo`` (plain order), ``loo + spread`` (list questions re-ordered over sessions
as the recipe does, the weight picked on each fold's training conversations) and ``in_sample``.

Measured on the dev file (float32 MiniLM; the pool: both channels' 100 best, the entity channel and
the neighbours of every candidate, which holds 0.965 of the evidence), recall@10:

| ranker | LOO | LOO + spread |
|---|---|---|
| the recipe, grid-picked (its LOO from ``bench retrieval --loo``: 0.813) | 0.810 in-sample | 0.817 in-sample |
| learned: parts / + channels / + sentences | 0.804 / 0.806 / 0.809 | 0.808 / 0.810 / 0.812 |
| learned: + word match / + token maxsim / + all of these | 0.823 / 0.816 / 0.828 | 0.823 / 0.818 / 0.825 |

Alone: cosine 0.509, sentence cosine 0.594, word match 0.650, token maxsim 0.710 (bm25 alone is 0.651).

Fitted weights over the recipe's own signals are no better than the grid's; a gradient-boosted
LambdaMART over channels and sentences (lightgbm, tried outside this file as it is not a dependency)
reached 0.795-0.810. The sentence cosine lifts cosine alone 0.51 -> 0.60 yet adds little once bm25 and
the context step are in. The word match pays most, about +0.01 over the recipe's LOO, and only
through fitted weights: added to the recipe with a grid weight it gives at most +0.004 in-sample,
as the fitted model gets its gain by trading bm25 and the length prior for it. Token maxsim is by far
the strongest single channel, yet beside bm25 and the context step it adds less than the word match,
and all of them together stop at 0.828. 0.85 stays out of reach; it needs a signal none of these
carry (a stronger embedder or a reranker, ruled out: the project ships all-MiniLM-L6-v2 and the
issue allows no model call at query time).

    .venv/bin/python bench/retrieval_ceiling.py --sentences --words --tokens  # --path defaults to the dev file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memwise.embed.minilm import MiniLMEmbedder
from memwise.facts._text import asks_for_many
from memwise.facts.readers import read_locomo
from memwise.facts.retrieval_eval import Item, ingest, questions_of
from memwise.facts.retrieval_links import SPEAKER, context_links
from memwise.facts.retrieval_rank import (
    Candidates,
    RetrieverConfig,
    base_scores,
    combine,
    rank,
    score_parts,
    session_codes,
)
from memwise.facts.retrieval_scores import spread_order
from memwise.facts.retrieve import HybridRetriever
from memwise.facts.spaces import bind_space
from memwise.facts.temporal import asks_when
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore

PARTS = ["context", "speaker", "session", "entity", "cue", "length"]
CHANNELS = ["cosine", "dense", "bm25", "in dense", "in bm25", "dense rank", "bm25 rank"]
CHANNELS += ["neighbour 1", "neighbour 2", "neighbour cosine", "many x session", "when x cue"]
SENTENCES = ["sentence cosine"]
WORDS = ["word match", "word match, expansions only"]
TOKENS = ["token maxsim"]
SPREADS = (0.0, 0.1, 0.2, 0.3)  # spread weights tried per fold, in standard deviations of the learned score
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset(
    "the and you that for are was with have this but not your what they all just can about it's i'm like how did "
    "does when where which who whom why has had been were will would could should there their them then than from "
    "into out our his her she him its also very really some any much many more most one two get got make made lot "
    "too yes yeah wow thanks thank hey great good awesome amazing love".split()
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_PHOTO = re.compile(r"\s*\[shares a photo: (.*)\]\s*$")


def sentences_of(record: Record) -> list[str]:
    """The turn's sentences of three words or more, and its photo caption, each said by its speaker."""
    text = record.text
    speaker = str(record.metadata.get(SPEAKER) or "")
    caption = _PHOTO.search(text)
    if caption:
        text = text[: caption.start()]
    if speaker and text.startswith(f"{speaker}: "):
        text = text[len(speaker) + 2 :]
    out = [f"{speaker}: {s}" for s in _SENTENCE_END.split(text.strip()) if len(s.split()) >= 3]
    if caption:
        out.append(f"{speaker} shares a photo: {caption.group(1)}")
    return out


def _rank_feature(scores: dict[str, float]) -> dict[str, float]:
    ordered = sorted(scores, key=lambda key: -scores[key])
    return {key: 1.0 / (1.0 + math.log1p(r)) for r, key in enumerate(ordered)}


def features(
    item: Item, cands: Candidates, config: RetrieverConfig, cosine: dict[str, float], extras: Sequence[dict[str, float]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pool x features (PARTS, CHANNELS, then one column per map of ``extras``); labels; pool keys."""
    parts = score_parts(item.question, cands, config)
    base = base_scores(cands, config)
    dense, lexical = cands.dense, cands.lexical
    lo, hi = min(dense.values(), default=0.0), max(dense.values(), default=1.0)
    top_bm25 = max(lexical.values(), default=0.0)
    dense_rank, bm25_rank = _rank_feature(dict(dense)), _rank_feature(dict(lexical))
    many, when = float(asks_for_many(item.question)), float(asks_when(item.question))
    rows = []
    for i, key in enumerate(parts.keys):
        before, after = context_links(cands.records[key], 2)

        def best(
            d: int, score: dict[str, float], sides: tuple[Sequence[str], Sequence[str]] = (before, after)
        ) -> float:
            return max((score.get(side[d], 0.0) for side in sides if d < len(side)), default=0.0)

        row = [parts.context[i], *(parts.parts[name][i] for name in PARTS[1:])]
        cos = cosine.get(key, 0.0)
        row += [
            cos,
            (cos - lo) / (hi - lo + 1e-9),
            lexical.get(key, 0.0) / top_bm25 if top_bm25 > 0 else 0.0,
            float(key in dense),
            float(key in lexical),
            dense_rank.get(key, 0.0),
            bm25_rank.get(key, 0.0),
            best(0, base),
            best(1, base),
            best(0, cosine),
            many * parts.parts["session"][i],
            when * parts.parts["cue"][i],
        ]
        row += [extra.get(key, 0.0) for extra in extras]
        rows.append(row)
    labels = np.array([_turn(cands.records[key]) in item.evidence for key in parts.keys], dtype=float)
    return np.array(rows, dtype=float), labels, list(parts.keys)


def _turn(record: Record) -> str:
    return str(record.metadata["source_ids"][0])


def fit(x: np.ndarray, mask: np.ndarray, target: np.ndarray, l2: float = 1e-3, steps: int = 400) -> np.ndarray:
    """Weights of a linear listwise ranker: softmax over each question's pool against its evidence share.

    ``x`` is questions x pool x features (standardised), ``mask`` marks real pool entries, ``target`` is
    the evidence share per entry (rows sum to 1). Adam on the mean cross-entropy plus ``l2 * |w|^2``.
    """
    w = np.zeros(x.shape[2])
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, steps + 1):
        s = np.where(mask, x @ w, -np.inf)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        grad = np.einsum("qp,qpf->f", p - target, x) / len(x) + 2 * l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= 0.05 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w


def share(found: set[str], item: Item) -> float:
    """recall@k of one question: the share of its evidence turns among ``found`` (its top k)."""
    return sum(e in found for e in item.evidence) / len(item.evidence)


def top10_share(row: np.ndarray, labels: np.ndarray, evidence: int, top: np.ndarray | None = None) -> float:
    """The share of a question's ``evidence`` turns among the 10 best of ``row`` (or the pool positions ``top``)."""
    top = np.argsort(-row, kind="stable")[:10] if top is None else top
    return float(labels[top].sum()) / evidence


def learned_loo(
    data: list[tuple[np.ndarray, np.ndarray, list[str], np.ndarray]], items: Sequence[Item], cols: list[int]
) -> dict[str, float]:
    """Recall@10 of the linear ranker on feature columns ``cols``: leave one conversation out, and in-sample.

    ``loo + spread`` also re-orders list questions over sessions as the recipe does
    (:func:`~memwise.facts.retrieval_scores.spread_order`), its weight, in standard deviations of the
    learned score, picked on the training conversations of each fold.
    """
    size = max(len(d[1]) for d in data)
    x = np.zeros((len(data), size, len(cols)))
    mask = np.zeros((len(data), size), dtype=bool)
    target = np.zeros((len(data), size))
    for q, (feats, lab, _, _) in enumerate(data):
        x[q, : len(lab)] = feats[:, cols]
        mask[q, : len(lab)] = True
        if lab.sum():
            target[q, : len(lab)] = lab / lab.sum()
    labels = [d[1] for d in data]
    evidence = [len(item.evidence) for item in items]
    convs = np.array([item.conversation for item in items])
    many = [asks_for_many(item.question) for item in items]

    def scores(train: np.ndarray) -> np.ndarray:
        mean = x[train][mask[train]].mean(axis=0)
        std = x[train][mask[train]].std(axis=0) + 1e-9
        z = np.where(mask[..., None], (x - mean) / std, 0.0)
        return z @ fit(z[train], mask[train], target[train])

    def recall(s: np.ndarray, q: int, spread: float) -> float:
        row = s[q, : len(labels[q])]
        top = None
        if spread and many[q]:
            top = spread_order(row[None, :], data[q][3], np.array([spread * row.std()]), 10, 60)[0]
        return top10_share(row, labels[q], evidence[q], top)

    plain = [0.0] * len(data)
    spread = [0.0] * len(data)
    for conv in dict.fromkeys(convs):
        s = scores(convs != conv)
        train = np.flatnonzero(convs != conv)
        weight = max(SPREADS, key=lambda w: sum(recall(s, q, w) for q in train))
        for q in np.flatnonzero(convs == conv):
            plain[q], spread[q] = recall(s, q, 0.0), recall(s, q, weight)
    s = scores(np.ones(len(data), dtype=bool))
    return {
        "loo": round(float(np.mean(plain)), 4),
        "loo + spread": round(float(np.mean(spread)), 4),
        "in_sample": round(float(np.mean([recall(s, q, 0.0) for q in range(len(data))])), 4),
    }


def content_words(text: str) -> list[str]:
    """Lower-cased words of three letters or more, less a short list of function and filler words."""
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP]


def word_match(
    question: list[str], turn: set[str], vectors: dict[str, np.ndarray], idf: dict[str, float]
) -> tuple[float, float]:
    """How well a turn's words cover the question's: idf-weighted best word cosine, kept above 0.5.

    Returns the cover with exact matches counted (1.0) and without them (the expansions alone: "pets"
    met by "dog", "cities" by "Rome").
    """
    if not question or not turn:
        return 0.0, 0.0
    q = np.array([vectors[w] for w in question])
    t = np.array([vectors[w] for w in turn])
    best = (q @ t.T).max(axis=1)
    soft = np.where(best > 0.5, best, 0.0)
    weights = np.array([idf.get(w, max(idf.values(), default=1.0)) for w in question])
    exact = np.array([w in turn for w in question])
    total = float(weights.sum())
    return float(weights @ soft) / total, float(weights @ np.where(exact, 0.0, soft)) / total


def token_vectors(texts: Sequence[str]) -> list[np.ndarray]:
    """Each text's contextual token vectors from MiniLM (before pooling), unit length, [CLS]/[SEP] left out.

    Late interaction needs the model's per-token output, which the embedder pools away, so this loads
    the packaged model through sentence-transformers itself (float32).
    """
    from sentence_transformers import SentenceTransformer

    from memwise.embed.minilm import model_dir

    model = SentenceTransformer(str(model_dir()), device="cpu")
    outputs = model.encode(list(texts), output_value="token_embeddings", batch_size=64, convert_to_numpy=False)
    special = {model.tokenizer.cls_token_id, model.tokenizer.sep_token_id}
    out = []
    for text, tokens in zip(texts, outputs, strict=True):
        ids = model.tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        rows = tokens.float().numpy()[[i for i, t in enumerate(ids) if t not in special]]
        out.append(rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9))
    return out


def maxsim(question: np.ndarray, turn: np.ndarray) -> float:
    """Late interaction: each question token's best cosine with a turn token, averaged over the question."""
    return float((question @ turn.T).max(axis=1).mean()) if len(question) and len(turn) else 0.0


async def run(path: str, with_sentences: bool, with_words: bool, with_tokens: bool) -> dict[str, Any]:
    conversations = read_locomo(path)
    items = questions_of(conversations)
    config = RetrieverConfig()
    embedder = MiniLMEmbedder(precision="float32")
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "store.db") as store:
        bind_space(store, embedder.name)
        retriever = HybridRetriever(store, embedder, config)
        await ingest(store, embedder, conversations)
        vectors = np.asarray(await embedder.embed([item.question for item in items]))
        turns: dict[str, tuple[list[Record], np.ndarray]] = {}
        for conv in dict.fromkeys(item.conversation for item in items):
            records = store.list_records(Filters(user_id=conv, kind="turn"))
            matrix = np.array([store.get_vector(r.id, space=store.space) for r in records])
            turns[conv] = (records, matrix)
        pieces: dict[str, tuple[list[int], np.ndarray]] = {}
        if with_sentences:
            start = time.perf_counter()
            for conv, (records, _) in turns.items():
                owner = [k for k, r in enumerate(records) for _ in sentences_of(r)]
                texts = [s for r in records for s in sentences_of(r)]
                pieces[conv] = (owner, np.asarray(await embedder.embed(texts)))
            print(f"embedded the sentences in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        words: dict[str, set[str]] = {}
        word_vectors: dict[str, np.ndarray] = {}
        idf: dict[str, dict[str, float]] = {}
        speakers: dict[str, set[str]] = {}
        if with_words:
            start = time.perf_counter()
            for conv, (records, _) in turns.items():
                df: dict[str, int] = {}
                for r in records:
                    words[r.id] = set(content_words(r.text))
                    for w in words[r.id]:
                        df[w] = df.get(w, 0) + 1
                idf[conv] = {w: math.log(1 + len(records) / n) for w, n in df.items()}
                speakers[conv] = {str(r.metadata.get(SPEAKER, "")).lower() for r in records}
            vocabulary = sorted(
                {w for ws in words.values() for w in ws} | {w for i in items for w in content_words(i.question)}
            )
            word_vectors = dict(zip(vocabulary, np.asarray(await embedder.embed(vocabulary)), strict=True))
            print(f"embedded {len(vocabulary)} words in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        token_rows: dict[str, np.ndarray] = {}
        question_rows: list[np.ndarray] = []
        if with_tokens:
            start = time.perf_counter()
            every = [r for records, _ in turns.values() for r in records]
            token_rows = dict(zip((r.id for r in every), token_vectors([r.indexed_text for r in every]), strict=True))
            question_rows = token_vectors([item.question for item in items])
            print(f"token vectors in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        data = []
        recipe, spread = [], []
        alone: dict[str, list[float]] = {}  # recall@10 of each signal alone, over all of a conversation's turns
        by_id = {r.id: r for records, _ in turns.values() for r in records}
        extra_names = (
            (SENTENCES if with_sentences else []) + (WORDS if with_words else []) + (TOKENS if with_tokens else [])
        )
        for item, vec in zip(items, vectors, strict=True):
            cands = await retriever.gather(
                item.question,
                filters=Filters(user_id=item.conversation, kind="turn"),
                query_vector=vec,
                fetch_all_neighbours=True,
                entity_channel=True,
            )
            records, matrix = turns[item.conversation]
            cos = matrix @ vec
            cosine = {r.id: float(c) for r, c in zip(records, cos, strict=True)}
            extras: list[dict[str, float]] = []
            if with_sentences:
                owner, svec = pieces[item.conversation]
                best = np.full(len(records), -1.0)
                np.maximum.at(best, np.array(owner, dtype=int), svec @ vec)
                extras.append({r.id: max(float(b), float(c)) for r, b, c in zip(records, best, cos, strict=True)})
            if with_words:
                asked = [w for w in dict.fromkeys(content_words(item.question)) if w not in speakers[item.conversation]]
                match = {r.id: word_match(asked, words[r.id], word_vectors, idf[item.conversation]) for r in records}
                extras += [{key: m[0] for key, m in match.items()}, {key: m[1] for key, m in match.items()}]
            if with_tokens:
                asked_rows = question_rows[len(data)]
                extras.append({r.id: maxsim(asked_rows, token_rows[r.id]) for r in records})
            for name, signal in zip(["cosine", *extra_names], [cosine, *extras], strict=True):
                best = sorted(signal, key=lambda key: -signal[key])[:10]
                alone.setdefault(name, []).append(share({_turn(by_id[key]) for key in best}, item))
            feats, labels, keys = features(item, cands, config, cosine, extras)
            sessions = session_codes(keys, cands.records)
            data.append((feats, labels, keys, sessions))
            plain = np.array(combine(score_parts(item.question, cands, config), config))
            recipe.append(top10_share(plain, labels, len(item.evidence)))
            spread.append(share({_turn(hit.record) for hit in rank(item.question, cands, config, 10)}, item))
    names = PARTS + CHANNELS + (SENTENCES if with_sentences else []) + (WORDS if with_words else [])
    names += TOKENS if with_tokens else []
    groups = {"learned: parts": PARTS, "learned: + channels": PARTS + CHANNELS}
    if with_sentences:
        groups["learned: + sentences"] = PARTS + CHANNELS + SENTENCES
    if with_words:
        groups["learned: + word match"] = PARTS + CHANNELS + WORDS
    if with_tokens:
        groups["learned: + token maxsim"] = PARTS + CHANNELS + TOKENS
    if sum((with_sentences, with_words, with_tokens)) > 1:
        groups["learned: + all of these"] = names
    result: dict[str, Any] = {
        "recipe": round(float(np.mean(recipe)), 4),
        "recipe + spread": round(float(np.mean(spread)), 4),
        "questions": len(items),
        "alone": {name: round(float(np.mean(values)), 4) for name, values in alone.items()},
        "pool_recall": round(
            float(np.mean([d[1].sum() / len(i.evidence) for d, i in zip(data, items, strict=True)])), 4
        ),
    }
    for name, group in groups.items():
        result[name] = learned_loo(data, items, [names.index(g) for g in group])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--path", default="../shared/data/locomo/locomo10_dev.json")
    parser.add_argument("--sentences", action="store_true", help="add the best sentence cosine (embeds every sentence)")
    parser.add_argument("--words", action="store_true", help="add the soft word match (embeds the vocabulary)")
    parser.add_argument("--tokens", action="store_true", help="add late interaction over MiniLM's token vectors")
    parser.add_argument("--out", default="bench/results/retrieval_ceiling.json")
    args = parser.parse_args()
    result = asyncio.run(run(args.path, args.sentences, args.words, args.tokens))
    for name, value in result.items():
        print(f"{name:24s} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
