"""Subprocess body for the kill -9 test: trains on the scripted world, prints paid calls and final rules."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_trainer import questions, world  # noqa: E402

from memwise.metamem.train_config import TrainConfig  # noqa: E402
from memwise.metamem.trainer import MetaMemTrainer  # noqa: E402
from memwise.runs.rundir import RunDir  # noqa: E402
from memwise.testing import ScriptedLLM  # noqa: E402


async def main(run_path: str) -> None:
    llm = ScriptedLLM(world, latency_s=0.01)
    config = TrainConfig(epochs=2, batch_size=4, samples=4)
    with RunDir(run_path) as run:
        history = await MetaMemTrainer(policy=llm, run=run, config=config).compile(questions(8))
    print(json.dumps({"paid": llm.calls, "rules": history.latest.rules.to_dict()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
