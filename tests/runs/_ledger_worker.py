"""Subprocess body for the kill -9 test: makes CALLS recorded calls to a slow scripted model."""

from __future__ import annotations

import asyncio
import sys

from memwise.llm.base import ChatRequest
from memwise.runs.rundir import RunDir
from memwise.testing import ScriptedLLM


async def main(run_path: str, calls: int) -> None:
    backend = ScriptedLLM(lambda req: "answer to " + req.messages[-1].content, latency_s=0.05)
    run = RunDir(run_path)
    llm = run.record(backend, stage="work")
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> str:
        async with sem:
            return (await llm.complete(ChatRequest.of(f"question {i}"))).text

    texts = await asyncio.gather(*(one(i) for i in range(calls)))
    assert texts == [f"answer to question {i}" for i in range(calls)]
    print(f"paid={backend.calls}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
