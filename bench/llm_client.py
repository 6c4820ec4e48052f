"""How close does OpenAICompatLLM get to the ideal throughput of a fixed-latency server?

A fake OpenAI-compatible server runs in its own process (so its CPU does not compete with the
client's GIL) and answers every call after ``--latency`` seconds. With ``--concurrency`` calls in
flight, ``calls`` calls ideally take ``calls * latency / concurrency`` seconds; the ratio of the
measured wall time to that ideal is the client's overhead. Each repeat reuses one client, as a run
does; the best repeat is checked against ``--max-ratio`` (co-tenant load on a shared machine only
ever adds time, so the best run is the truest view of the client), and all repeats are recorded.

    python bench/llm_client.py --calls 2000 --latency 0.05 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from memwise.llm.base import ChatRequest
from memwise.llm.openai_compat import OpenAICompatLLM
from memwise.testing.fake_openai import FakeOpenAIServer


@dataclass(frozen=True)
class Run:
    """One timed batch of calls."""

    wall_s: float
    ideal_s: float
    ratio: float
    calls_per_s: float
    client_cpu_ms_per_call: float


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency per call, seconds")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (max_concurrency)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is checked")
    parser.add_argument("--max-ratio", type=float, default=1.25, help="fail if the best wall/ideal exceeds this")
    parser.add_argument("--sdk", action="store_true", help="send through the OpenAI SDK pipeline (sdk_requests)")
    parser.add_argument("--json", default="bench/results/llm_client.json", help="where to write the results")
    return parser.parse_args(argv)


async def _timed(llm: OpenAICompatLLM, calls: int, latency: float, concurrency: int, tag: str) -> Run:
    requests = [ChatRequest.of(f"{tag} call {i}", max_tokens=16) for i in range(calls)]
    cpu0, start = time.process_time(), time.perf_counter()
    responses = await asyncio.gather(*(llm.complete(r) for r in requests))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    wrong = [r.text for r, q in zip(responses, requests, strict=True) if r.text != f"echo: {q.messages[-1].content}"]
    if wrong:
        raise SystemExit(f"{len(wrong)} wrong replies, e.g. {wrong[0]!r}")
    ideal = calls * latency / concurrency
    return Run(wall, ideal, wall / ideal, calls / wall, cpu / calls * 1000)


async def _bench(base_url: str, args: argparse.Namespace) -> list[Run]:
    llm = OpenAICompatLLM(
        base_url=base_url, model="bench", max_concurrency=args.concurrency, timeout_s=30.0, sdk_requests=args.sdk
    )
    try:
        # Warm-up: open the pool's connections and let imports and caches settle; not timed.
        await asyncio.gather(*(llm.complete(ChatRequest.of(f"warm {i}")) for i in range(args.concurrency * 2)))
        runs = []
        for repeat in range(args.repeats):
            run = await _timed(llm, args.calls, args.latency, args.concurrency, f"r{repeat}")
            print(
                f"repeat {repeat + 1}/{args.repeats}: wall {run.wall_s:.3f}s  ideal {run.ideal_s:.3f}s  "
                f"ratio {run.ratio:.3f}  {run.calls_per_s:.0f} calls/s  client CPU {run.client_cpu_ms_per_call:.3f} "
                "ms/call",
                flush=True,
            )
            runs.append(run)
        return runs
    finally:
        await llm.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if min(args.calls, args.concurrency, args.repeats) < 1 or args.latency <= 0:
        raise SystemExit("calls, concurrency and repeats must be >= 1 and latency > 0")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with FakeOpenAIServer(latency_s=args.latency).in_process() as server:
        runs = asyncio.run(_bench(server.base_url, args))
        stats = server.stats()
    expected = args.concurrency * 2 + args.calls * args.repeats
    if stats.completions != expected or any(n != 1 for n in stats.completed_by_key.values()):
        raise SystemExit(f"server saw {stats.completions} completions, expected {expected}, each prompt once")
    best = min(runs, key=lambda r: r.ratio)
    result = {
        "bench": "llm_client",
        "calls": args.calls,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "path": "sdk" if args.sdk else "lean",
        "best": asdict(best),
        "median_ratio": statistics.median(r.ratio for r in runs),
        "runs": [asdict(r) for r in runs],
        "max_ratio": args.max_ratio,
        "passed": best.ratio <= args.max_ratio,
        "server_max_in_flight": stats.max_in_flight,
        "server_connections_opened": stats.connections_opened,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_at_start": load,
            "python": platform.python_version(),
            "openai": version("openai"),
        },
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"best: wall {best.wall_s:.3f}s  ideal {best.ideal_s:.3f}s  ratio {best.ratio:.3f}  "
        f"{best.calls_per_s:.0f} calls/s  (median ratio {result['median_ratio']:.3f}; written to {out})"
    )
    if best.ratio > args.max_ratio:
        print(f"FAIL: ratio {best.ratio:.3f} > --max-ratio {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
