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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memwise.config import ModelConfig
from memwise.llm.base import ChatModel, ChatRequest, ChatResponse
from memwise.llm.registry import build_llm
from memwise.tasks.envs.alfworld import AlfworldEnv
from memwise.tasks.suites.alfworld import load_alfworld
from memwise.tasks.types import Task
from memwise.umem.executor import EnvExecutor, Observation

DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "alfworld" / "valid_unseen"


@dataclass
class CountingLLM:
    """Passes calls through and adds up tokens and model time (the executor reports completion tokens only)."""

    inner: ChatModel
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_s: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def describe(self) -> str:
        return self.inner.describe()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        response = await self.inner.complete(request)
        self.model_s += time.perf_counter() - start
        self.calls += 1
        self.prompt_tokens += response.usage.prompt_tokens
        self.completion_tokens += response.usage.completion_tokens
        return response


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
    llm = CountingLLM(build_llm(config))
    rows: list[dict[str, Any]] = []
    wall = time.perf_counter()
    try:
        with AlfworldEnv() as engine:
            env = TimedEnv(engine)
            executor = EnvExecutor(llm, lambda: env, max_steps=args.max_steps)
            for task in games:
                before = (llm.calls, llm.prompt_tokens, llm.completion_tokens, llm.model_s, env.engine_s)
                start = time.perf_counter()
                result = await executor.run(task)
                row = {
                    "id": task.id,
                    "task_type": task.metadata["task_type"],
                    "goal": task.prompt,
                    "won": result.success,
                    "progress": result.progress,
                    "steps": result.steps,
                    "calls": llm.calls - before[0],
                    "prompt_tokens": llm.prompt_tokens - before[1],
                    "completion_tokens": llm.completion_tokens - before[2],
                    "off_format_replies": result.metadata["off_format_replies"],
                    "model_s": round(llm.model_s - before[3], 2),
                    "engine_s": round(env.engine_s - before[4], 2),
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
        "prompt_tokens": llm.prompt_tokens,
        "completion_tokens": llm.completion_tokens,
        "calls": llm.calls,
        "off_format_replies": sum(r["off_format_replies"] for r in rows),
        "model_s": round(llm.model_s, 2),
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
