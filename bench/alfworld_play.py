"""Does ALFWorld really play through the executor? N valid_unseen games with a real model.

Each game is one :class:`~memwise.umem.executor.EnvExecutor` episode (the paper's 30-step cap, no
insights) on :class:`~memwise.tasks.envs.alfworld.AlfworldEnv`. By default the model is the
embedded SmolLM2-135M (llama.cpp, CPU); ``--base-url``/``--model`` point it at an OpenAI-compatible
server instead. Games are spread over the split (every ``len/N``-th game, so the first N are not all
one task type) unless ``--first`` is given.

    .venv/bin/python bench/alfworld_play.py [--games 3] [--json bench/results/alfworld_play.json]
    .venv/bin/python bench/alfworld_play.py --base-url http://127.0.0.1:8000/v1 --model Qwen3-8B --games 134

Printed and written: success rate, mean progress rate, mean steps, tokens (prompt and completion),
off-format replies, time in the model and in the engine, and one row per game.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memwise.config import ModelConfig
from memwise.llm.registry import build_llm
from memwise.runs.files import write_text_atomic
from memwise.runs.rundir import RunDir
from memwise.tasks.envs.alfworld import AlfworldEnv
from memwise.tasks.suites.alfworld import load_alfworld
from memwise.tasks.types import Task
from memwise.umem.executor import EnvExecutor, Observation

DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "alfworld" / "valid_unseen"


@dataclass
class TimedEnv:
    """An :class:`AlfworldEnv` whose reset and step time is added up (engine time, apart from model time)."""

    env: AlfworldEnv
    engine_s: float = 0.0
    reset_s: list[float] = field(default_factory=list)

    def reset(self, task: Task) -> Observation:
        start = time.perf_counter()
        obs = self.env.reset(task)
        elapsed = time.perf_counter() - start
        self.engine_s += elapsed
        self.reset_s.append(elapsed)
        return obs

    def step(self, action: str) -> Observation:
        start = time.perf_counter()
        obs = self.env.step(action)
        self.engine_s += time.perf_counter() - start
        return obs


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="ALFWorld split directory")
    parser.add_argument("--games", type=int, default=3, help="games to play")
    parser.add_argument("--first", action="store_true", help="play the first N games instead of spreading them")
    parser.add_argument("--max-steps", type=int, default=30, help="step cap per game (the paper's is 30)")
    parser.add_argument("--base-url", help="OpenAI-compatible server; default: the embedded SmolLM2 model")
    parser.add_argument("--model", default="", help="model name on --base-url")
    parser.add_argument("--n-threads", type=int, default=None, help="CPU threads of the embedded model")
    parser.add_argument("--json", type=Path, default=Path("bench/results/alfworld_play.json"), help="results file")
    return parser.parse_args(argv)


def pick_games(tasks: list[Task], n: int, *, first: bool) -> list[Task]:
    """``n`` games: the first ``n``, or evenly spaced over the sorted split (which is grouped by task type)."""
    if first or n >= len(tasks):
        return tasks[:n]
    return [tasks[i * len(tasks) // n] for i in range(n)]


async def play(args: argparse.Namespace) -> dict[str, Any]:
    games = pick_games(load_alfworld(args.split), args.games, first=args.first)
    if args.base_url:
        config = ModelConfig(backend="openai", base_url=args.base_url, model=args.model)
    else:
        config = ModelConfig(backend="local", n_threads=args.n_threads)
    llm = build_llm(config)
    rows: list[dict[str, Any]] = []
    wall = time.perf_counter()
    # Calls, tokens and model time per game come from a throwaway run ledger, one stage per game.
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp))
        try:
            with AlfworldEnv() as engine:
                env = TimedEnv(engine)
                for i, task in enumerate(games):
                    executor = EnvExecutor(run.record(llm, f"game-{i}"), lambda: env, max_steps=args.max_steps)
                    engine_before = env.engine_s
                    start = time.perf_counter()
                    result = await executor.run(task)
                    cost = run.ledger.stats()[f"game-{i}"]
                    row = {
                        "id": task.id,
                        "task_type": task.metadata["task_type"],
                        "goal": task.prompt,
                        "won": result.success,
                        "progress": result.progress,
                        "steps": result.steps,
                        "calls": cost.calls,
                        "prompt_tokens": cost.prompt_tokens,
                        "completion_tokens": cost.completion_tokens,
                        "off_format_replies": result.metadata["off_format_replies"],
                        "model_s": round(cost.latency_s, 2),
                        "engine_s": round(env.engine_s - engine_before, 2),
                        "reset_s": round(env.reset_s[-1], 2),
                        "wall_s": round(time.perf_counter() - start, 2),
                        "actions": [line[2:] for line in result.trajectory.splitlines() if line.startswith("> ")],
                    }
                    rows.append(row)
                    print(
                        f"{task.id}: won={row['won']} progress={row['progress']:.2f} steps={row['steps']} "
                        f"tokens={row['prompt_tokens']}+{row['completion_tokens']} wall={row['wall_s']:.1f}s",
                        flush=True,
                    )
        finally:
            run.close()
            await llm.aclose()
    n = len(rows)
    return {
        "benchmark": "alfworld_play",
        "model": llm.describe(),
        "split": str(args.split),
        "games": n,
        "max_steps": args.max_steps,
        "success_rate": sum(r["won"] for r in rows) / n,
        "mean_progress": sum(r["progress"] or 0.0 for r in rows) / n,
        "mean_steps": sum(r["steps"] for r in rows) / n,
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "calls": sum(r["calls"] for r in rows),
        "off_format_replies": sum(r["off_format_replies"] for r in rows),
        "model_s": round(sum(r["model_s"] for r in rows), 2),
        "engine_s": round(env.engine_s, 2),
        "mean_reset_s": round(sum(env.reset_s) / n, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "per_game": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.games < 1:
        print("--games must be at least 1", file=sys.stderr)
        return 2
    report = asyncio.run(play(args))
    print(
        f"{report['games']} games on {report['model']}: success {report['success_rate']:.1%}, "
        f"progress {report['mean_progress']:.3f}, steps {report['mean_steps']:.1f}, "
        f"tokens {report['prompt_tokens']}+{report['completion_tokens']} in {report['calls']} calls, "
        f"off-format {report['off_format_replies']}, model {report['model_s']:.0f}s, "
        f"engine {report['engine_s']:.0f}s, wall {report['wall_s']:.0f}s"
    )
    write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
