"""Vector search on a store of a million memory units: latency, exactness and memory.

Builds a synthetic store through the real ``SQLiteStore.add`` (``--units`` records, 384-d, about a
thousand units per user, ingested in interleaved sessions so one user's rows are scattered through
the matrix, as they are when many users write over time), then times ``search_vector`` for three
query shapes: unfiltered top-10, one user's top-10, and one user's facts. Every timed query is
paired with the plain exact baseline, a float32 product with the whole matrix followed by a mask
and a partition, measured on the same query right after it, so co-tenant load hits both alike;
the ratio of medians is the figure to compare between runs. ``store`` is the whole public call
(change-log probe, index search, fetching the hit records); ``index_only`` is the in-memory search
alone. Exactness is checked on ``--check`` random queries against brute force (float32 ranking;
float64 for the order of near ties), and memory is reported both as the arrays the index holds
and as the process RSS growth.

    python bench/store_scale.py                      # 1M units (ingest takes a few minutes)
    python bench/store_scale.py --units 100000       # quick run
    python bench/store_scale.py --db /tmp/s.db --reuse   # time an existing store again

Vectors are a mixture: each user has a few topics, each unit is its topic's centre plus noise plus a
direction shared by everything (sentence embeddings are anisotropic), so unrelated units score
about 0.1 and same-topic ones about 0.55. Half the queries are a topic centre plus fresh noise
(many close competitors near the top: the hard case for exactness), half are isotropic noise.
Search cost does not depend on this: every allowed row is scored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.embed.base import normalise
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore
from memwise.testing.resources import resident_bytes

KINDS = ("turn", "fact", "rule")
KIND_P = (0.6, 0.35, 0.05)
SESSION = 20  # units written together by one user (one conversation's worth)
TOPICS = 5  # topics per user
AGENTS = 8
T0 = 1_700_000_000.0
K = 10


@dataclass
class Corpus:
    """The synthetic store's contents, regenerated identically from the seed."""

    vectors: npt.NDArray[np.float32]  # unit rows, as the store normalises them
    user: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]
    session: npt.NDArray[np.int32]
    expired: npt.NDArray[np.bool_]  # invalidated (valid_to in the past): hidden by default
    centres: npt.NDArray[np.float32]  # (users * TOPICS, dim)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000, help="records in the store")
    parser.add_argument("--per-user", type=int, default=1000, help="units per user")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=2000, help="records per SQLiteStore.add call")
    parser.add_argument("--queries", type=int, default=100, help="timed unfiltered queries")
    parser.add_argument("--filtered-queries", type=int, default=500, help="timed queries per filtered shape")
    parser.add_argument("--check", type=int, default=200, help="queries checked against brute force")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", default=None, help="store file (default: a temporary folder, removed after)")
    parser.add_argument("--reuse", action="store_true", help="reuse --db if it already holds --units records")
    parser.add_argument("--json", default="bench/results/store_scale.json", help="where to write the results")
    return parser.parse_args(argv)


def make_corpus(units: int, per_user: int, dim: int, seed: int) -> Corpus:
    """Users write in sessions of SESSION units, sessions in random order (rows scattered per user)."""
    rng = np.random.default_rng(seed)
    users = max(1, units // per_user)
    sessions = math.ceil(units / SESSION)
    session_user = rng.permutation(np.arange(sessions) % users).astype(np.int32)
    session = np.repeat(np.arange(sessions, dtype=np.int32), SESSION)[:units]
    user = session_user[session]
    centres = normalise(rng.standard_normal((users * TOPICS, dim), dtype=np.float32))
    shared = normalise(rng.standard_normal(dim, dtype=np.float32))[0]
    topic = user * TOPICS + rng.integers(0, TOPICS, units)
    vectors = np.empty((units, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, units, step):
        end = min(units, start + step)
        raw = rng.standard_normal((end - start, dim), dtype=np.float32) / np.float32(math.sqrt(dim))
        raw += centres[topic[start:end]]
        raw += np.float32(0.5) * shared
        vectors[start:end] = normalise(raw)  # the same float32 operation the store applies on add
    kind = rng.choice(len(KINDS), size=units, p=KIND_P).astype(np.int8)
    expired = rng.random(units) < 0.01
    return Corpus(vectors, user, kind, session, expired, centres)


def _records(corpus: Corpus, start: int, end: int) -> list[Record]:
    out = []
    for i in range(start, end):
        user, session = int(corpus.user[i]), int(corpus.session[i])
        out.append(
            Record(
                text=f"user {user} session {session} note {i} about topic {i % 97}",
                kind=KINDS[corpus.kind[i]],
                user_id=f"user{user}",
                agent_id=f"agent{user % AGENTS}",
                run_id=f"s{session}",
                id=f"m{i:08d}",
                created_at=T0 + i,
                ts=T0 + i,
                valid_to=T0 if corpus.expired[i] else None,
            )
        )
    return out


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ingest(path: Path, corpus: Corpus, batch: int) -> dict[str, Any]:
    units = corpus.vectors.shape[0]
    start = time.perf_counter()
    with SQLiteStore(path) as store:
        for lo in range(0, units, batch):
            hi = min(units, lo + batch)
            store.add(_records(corpus, lo, hi), corpus.vectors[lo:hi])
            if lo // batch % 50 == 0:
                rate = hi / (time.perf_counter() - start)
                print(f"  ingested {hi:,} / {units:,} ({rate:,.0f} units/s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "units_per_s": units / seconds, "batch": batch}


def _quantiles(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1e3 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "mean_ms": statistics.fmean(ms), "n": len(ms)}


class Baseline:
    """The plain exact scan: one float32 product with every row, a boolean mask, a partition."""

    def __init__(self, corpus: Corpus) -> None:
        self.mat = corpus.vectors
        self.user = corpus.user
        self.kind = corpus.kind
        self.valid = ~corpus.expired

    def mask(self, user: int | None, kind: int | None) -> npt.NDArray[np.bool_]:
        mask = self.valid.copy()
        if user is not None:
            mask &= self.user == user
        if kind is not None:
            mask &= self.kind == kind
        return mask

    def search(self, q: npt.NDArray[np.float32], user: int | None, kind: int | None) -> list[int]:
        scores = self.mat @ q
        rows = np.flatnonzero(self.mask(user, kind))
        sub = scores[rows]
        k = min(K, sub.size)
        best = np.argpartition(sub, sub.size - k)[sub.size - k :]
        return rows[best[np.argsort(-sub[best], kind="stable")]].tolist()


def _query(rng: np.random.Generator, corpus: Corpus, user: int | None) -> npt.NDArray[np.float32]:
    dim = corpus.vectors.shape[1]
    noise = rng.standard_normal(dim, dtype=np.float32) / np.float32(math.sqrt(dim))
    if rng.random() < 0.5:
        owner = int(rng.integers(0, corpus.user.max() + 1)) if user is None else user
        noise += corpus.centres[owner * TOPICS + int(rng.integers(0, TOPICS))]
    return normalise(noise)[0]


def _filters(user: int | None, kind: int | None) -> Filters:
    return Filters(user_id=None if user is None else f"user{user}", kind=None if kind is None else KINDS[kind])


def _draw(
    rng: np.random.Generator, corpus: Corpus, users: int, shape: str
) -> tuple[npt.NDArray[np.float32], int | None, int | None, Filters]:
    """One query of ``shape``: the vector, the user and kind it is limited to, and those as filters."""
    user = None if shape == "unfiltered" else int(rng.integers(0, users))
    kind = KINDS.index("fact") if shape == "user+kind" else None
    return _query(rng, corpus, user), user, kind, _filters(user, kind)


def time_shape(
    store: SQLiteStore, base: Baseline, corpus: Corpus, rng: np.random.Generator, n: int, shape: str
) -> dict[str, Any]:
    users = int(corpus.user.max()) + 1
    index = store._indexes[store.space]  # noqa: SLF001 - timed alone too, without the SQLite round trips
    ours: list[float] = []
    alone: list[float] = []
    plain: list[float] = []
    for _ in range(n):
        q, user, kind, filters = _draw(rng, corpus, users, shape)
        t0 = time.perf_counter()
        store.search_vector(q, K, filters)
        t1 = time.perf_counter()
        index.search(q, K, filters, time.time())
        t2 = time.perf_counter()
        base.search(q, user, kind)
        t3 = time.perf_counter()
        ours.append(t1 - t0)
        alone.append(t2 - t1)
        plain.append(t3 - t2)
    # The same shape again without the baseline between queries: its 1.5 GB scans evict the index's
    # row lists and rows from cache and leave BLAS threads spinning, which shows in the tails above.
    unpaired: list[float] = []
    for _ in range(n):
        q, _, _, filters = _draw(rng, corpus, users, shape)
        t0 = time.perf_counter()
        store.search_vector(q, K, filters)
        unpaired.append(time.perf_counter() - t0)
    result = {
        "store": _quantiles(ours),
        "index_only": _quantiles(alone),
        "plain_scan": _quantiles(plain),
        "store_unpaired": _quantiles(unpaired),
    }
    result["speedup_p50"] = result["plain_scan"]["p50_ms"] / result["store"]["p50_ms"]
    result["speedup_p95"] = result["plain_scan"]["p95_ms"] / result["store"]["p95_ms"]
    return result


def check_exact(store: SQLiteStore, corpus: Corpus, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Top-k ids equal to brute force; a differing id must be a tie (same float64 score to 1e-6)."""
    base = Baseline(corpus)
    users = int(corpus.user.max()) + 1
    same = ties = wrong = 0
    examples: list[str] = []
    for i in range(n):
        shape = ("unfiltered", "user", "user+kind")[i % 3]
        user = None if shape == "unfiltered" else int(rng.integers(0, users))
        kind = KINDS.index("fact") if shape == "user+kind" else None
        q = _query(rng, corpus, user)
        got = [int(hit.record.id[1:]) for hit in store.search_vector(q, K, _filters(user, kind))]
        rows = np.flatnonzero(base.mask(user, kind))
        s32 = corpus.vectors[rows] @ q
        want = rows[np.argsort(-s32, kind="stable")[:K]].tolist()
        if got == want:
            same += 1
            continue
        pool = sorted(set(got) | set(want))
        s64 = dict(zip(pool, (corpus.vectors[pool].astype(np.float64) @ q.astype(np.float64)).tolist(), strict=True))
        if len(got) == len(want) and all(abs(s64[a] - s64[b]) <= 1e-6 for a, b in zip(got, want, strict=True)):
            ties += 1
        else:
            wrong += 1
            if len(examples) < 3:
                examples.append(f"{shape}: got {got} want {want}")
    return {"queries": n, "identical": same, "differ_only_by_ties": ties, "wrong": wrong, "examples": examples}


def _index_bytes(store: SQLiteStore) -> dict[str, Any]:
    index = store._indexes[store.space]  # noqa: SLF001 - the bench reports the cache's own arrays
    rows = len(index)
    arrays = {
        "float32_matrix": index._mat.nbytes,  # noqa: SLF001
        "scope_codes": index._scope.nbytes,  # noqa: SLF001
        "times": index._times.nbytes,  # noqa: SLF001
        "alive": index._alive.nbytes,  # noqa: SLF001
        "row_lists": sum(lst._rows.nbytes for col in index._lists for lst in col.values()),  # noqa: SLF001
        "scratch": index._scores.nbytes + index._flags.nbytes + index._gather.nbytes,  # noqa: SLF001
    }
    capacity = index._alive.shape[0]  # noqa: SLF001
    per_unit = {name: size / capacity for name, size in arrays.items() if name not in ("row_lists", "scratch")}
    per_unit["row_lists"] = arrays["row_lists"] / max(rows, 1)
    per_unit["scratch"] = arrays["scratch"] / capacity
    return {"rows": rows, "capacity": capacity, "bytes": arrays, "bytes_per_unit": per_unit}


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    corpus_start = time.perf_counter()
    corpus = make_corpus(args.units, args.per_user, args.dim, args.seed)
    print(f"corpus: {args.units:,} x {args.dim} in {time.perf_counter() - corpus_start:.1f}s", file=sys.stderr)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="memwise-scale-")
        path = Path(tmp.name) / "scale.db"
    else:
        path = Path(args.db)
    result: dict[str, Any] = {
        "bench": "store_scale",
        "units": args.units,
        "users": int(corpus.user.max()) + 1,
        "dim": args.dim,
        "k": K,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    try:
        reused = False
        if args.reuse and path.exists():
            with SQLiteStore(path) as probe:
                reused = probe.count(Filters(include_invalid=True)) == args.units
        if reused:
            result["ingest"] = {"reused": str(path)}
        else:
            for stale in path.parent.glob(path.name + "*"):
                stale.unlink()
            print(f"ingesting into {path} in batches of {args.batch}", file=sys.stderr)
            result["ingest"] = ingest(path, corpus, args.batch)
        result["db_bytes"] = _db_bytes(path)
        result["db_bytes_per_unit"] = result["db_bytes"] / args.units

        base = Baseline(corpus)
        rng = np.random.default_rng(args.seed + 1)
        with SQLiteStore(path) as store:
            rss0 = resident_bytes()
            cold = _time(lambda: store.search_vector(_query(rng, corpus, None), K))
            rss1 = resident_bytes()
            result["cold_build_s"] = cold
            result["memory"] = {
                "rss_before_index": rss0,
                "rss_after_index": rss1,
                "rss_growth_per_unit": (rss1 - rss0) / args.units,
                "index": _index_bytes(store),
            }
            print(f"cold index build {cold:.1f}s, RSS +{(rss1 - rss0) / 2**20:,.0f} MiB", file=sys.stderr)
            result["exactness"] = check_exact(store, corpus, rng, args.check)
            print(f"exactness: {result['exactness']}", file=sys.stderr)
            result["latency"] = {}
            for shape, n in (
                ("unfiltered", args.queries),
                ("user", args.filtered_queries),
                ("user+kind", args.filtered_queries),
            ):
                store.search_vector(_query(rng, corpus, None), K, _filters(0, None))  # warm
                result["latency"][shape] = timed = time_shape(store, base, corpus, rng, n, shape)
                store_q, alone_q, plain_q = timed["store"], timed["index_only"], timed["plain_scan"]
                print(
                    f"{shape:10s} store p50 {store_q['p50_ms']:7.2f} p95 {store_q['p95_ms']:7.2f} "
                    f"p99 {store_q['p99_ms']:7.2f} ms | index alone p50 {alone_q['p50_ms']:7.2f} "
                    f"p95 {alone_q['p95_ms']:7.2f} | plain scan p50 {plain_q['p50_ms']:7.2f} "
                    f"p95 {plain_q['p95_ms']:7.2f} ms | speedup p50 {timed['speedup_p50']:.2f}x | store unpaired "
                    f"p50 {timed['store_unpaired']['p50_ms']:7.2f} p95 {timed['store_unpaired']['p95_ms']:7.2f}",
                    file=sys.stderr,
                )
        result["load_avg_end"] = os.getloadavg()
    finally:
        if tmp is not None:
            tmp.cleanup()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if result["exactness"]["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
