"""MetaMem training throughput against its critical-path limit.

Workload: 40 questions, batch 20, 5 samples, 1 epoch, concurrency 16; policy and judge on separate
OpenAI-compatible servers (by default two fake servers at 200 ms a call, each on its own thread: at 80 calls/s
they need little CPU).
The limit is what a perfect scheduler could do: for each step, each dependent stage (rollout, judge,
reflect, propose, consolidate) needs at least calls / concurrency x latency; summed over stages and
steps. The reference design needs about 8x its limit on this workload (its judge calls ran one at a
time); the target here is at most 1.5x.

    .venv/bin/python bench/metamem_step.py [--latency 0.2] [--json bench/results/metamem_step.json]
    .venv/bin/python bench/metamem_step.py --base-url URL --judge-base-url URL --model M --judge-model J

Against real servers the same workload runs and the same ratio is printed, with the latency taken
as the mean latency the ledger recorded per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from memwise.llm.openai_compat import OpenAICompatLLM
from memwise.metamem.data import MetaQuestion
from memwise.metamem.train_config import TrainConfig
from memwise.metamem.trainer import MetaMemTrainer
from memwise.runs.rundir import RunDir
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

STAGES = ("rollout", "judge", "reflect", "propose", "consolidate")


def questions(n: int) -> list[MetaQuestion]:
    return [
        MetaQuestion(
            question_id=f"q{i:03d}",
            question=f"What is the locker code of person {i}?",
            answer=str(1000 + i),
            question_type="single-session-user",
            question_date="2023/07/01 (Sat) 10:00",
            memories=(f"2023-05-08 13:56 Monday user: person {i} has locker code {1000 + i}.",),
        )
        for i in range(n)
    ]


def _schema(call: ChatCall) -> str | None:
    fmt = call.body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("name")


def policy_responder(call: ChatCall) -> str:
    """Right on even seeds, wrong on odd ones, so every group is mixed and every stage has work."""
    user = call.messages[-1]["content"]
    name = _schema(call)
    if name == "Reflection":
        return json.dumps({"used": [1], "lesson": "Quote the code from the fragment exactly."})
    if name == "Proposal":
        person = re.search(r"person (\d+)", user)
        text = f"When several people are named, quote the code of person {person.group(1) if person else 0}."
        return json.dumps({"operations": [{"op": "add", "text": text}]})
    if name == "Consolidation":
        return json.dumps({"operations": [{"op": "add", "text": "Quote codes from fragments exactly."}]})
    code = re.search(r"locker code (\d+)", user)
    return f"It is {code.group(1)}." if code and (call.body.get("seed") or 0) % 2 == 0 else "I am not sure."


def judge_responder(call: ChatCall) -> str:
    user = call.messages[-1]["content"]
    response = user.split("<response>")[-1].split("</response>")[0]
    gold = user.split("<reference>")[-1].split("</reference>")[0].strip()
    return "yes" if gold and gold in response else "no"


def critical_path_limit(calls_by_step_stage: list[dict[str, int]], concurrency: int, latency: float) -> float:
    """Sum over steps and dependent stages of calls / concurrency x latency."""
    return sum(calls / concurrency * latency for step in calls_by_step_stage for calls in step.values())


async def run(args: argparse.Namespace, policy_url: str, judge_url: str) -> dict[str, Any]:
    # Calls in flight are bounded per role by the backends' max_concurrency (one setting each).
    config = TrainConfig(
        epochs=1, batch_size=args.batch_size, samples=args.samples, max_tokens=256
    )
    policy = OpenAICompatLLM(base_url=policy_url, model=args.model, max_concurrency=args.concurrency)
    judge = OpenAICompatLLM(base_url=judge_url, model=args.judge_model, max_concurrency=args.concurrency)
    with tempfile.TemporaryDirectory(prefix="memwise-metamem-bench-") as tmp:
        with RunDir(Path(tmp)) as run_dir:  # closed (and unlocked) on every way out
            trainer = MetaMemTrainer(policy=policy, judge=judge, run=run_dir, config=config)
            per_step: list[dict[str, int]] = []
            seen: dict[str, int] = dict.fromkeys(STAGES, 0)

            def on_step(_: object) -> None:
                # Calls per stage made during this step: the ledger's running totals minus the last ones.
                totals = {stage: run_dir.ledger.count_calls(stage) for stage in STAGES}
                per_step.append({stage: totals[stage] - seen[stage] for stage in STAGES})
                seen.update(totals)

            trainer.on_step = on_step
            start = time.perf_counter()
            history = await trainer.compile(questions(args.questions))
            wall = time.perf_counter() - start
            stats = run_dir.ledger.stats()
            records = trainer.step_records()
    await policy.aclose()
    await judge.aclose()
    calls = {stage: stats[stage].calls if stage in stats else 0 for stage in STAGES}
    mean_latency = sum(s.latency_s for s in stats.values()) / max(1, sum(s.calls for s in stats.values()))
    latency = args.latency if args.fake else mean_latency
    limit = critical_path_limit(per_step, args.concurrency, latency)
    return {
        "bench": "metamem_step",
        "questions": args.questions,
        "batch_size": args.batch_size,
        "samples": args.samples,
        "concurrency": args.concurrency,
        "latency_s": latency,
        "steps": len(records),
        "calls_by_stage": calls,
        "calls_by_step": per_step,
        "wall_s": round(wall, 3),
        "critical_path_limit_s": round(limit, 3),
        "ratio": round(wall / limit, 3) if limit else None,
        "rules": len(history.latest.rules),
        "fake_servers": args.fake,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="fake servers' latency per call")
    parser.add_argument("--base-url", help="policy server (default: a fake one)")
    parser.add_argument("--judge-base-url", help="judge server (default: a second fake one)")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--judge-model", default="fake-model")
    parser.add_argument("--max-ratio", type=float, default=1.5)
    parser.add_argument("--json", default="bench/results/metamem_step.json")
    args = parser.parse_args(argv)
    args.fake = not (args.base_url and args.judge_base_url)
    with ExitStack() as stack:
        if args.fake:
            policy_srv = stack.enter_context(
                FakeOpenAIServer(
                    latency_s=args.latency,
                    responder=policy_responder,
                    json_responder=lambda call, schema: policy_responder(call),
                ).in_thread()
            )
            judge_srv = stack.enter_context(
                FakeOpenAIServer(latency_s=args.latency, responder=judge_responder).in_thread()
            )
            policy_url, judge_url = policy_srv.base_url, judge_srv.base_url
        else:
            policy_url, judge_url = args.base_url, args.judge_base_url
        result = asyncio.run(run(args, policy_url, judge_url))
    result["max_ratio"] = args.max_ratio
    result["passed"] = result["ratio"] is not None and result["ratio"] <= args.max_ratio
    print(f"steps {result['steps']}, calls by stage {result['calls_by_stage']}")
    print(
        f"wall {result['wall_s']:.2f}s, critical-path limit {result['critical_path_limit_s']:.2f}s, "
        f"ratio {result['ratio']} (target <= {args.max_ratio})"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not result["passed"]:
        print(f"ratio above {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
