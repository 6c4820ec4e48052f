"""Subprocess body for the run-lock tests: hold a run directory and append records to it slowly.

Usage: ``_lock_worker.py RUN_DIR N``. Prints ``ready`` once the run directory is open (and locked),
then appends N lines naming its pid to ``records.jsonl``, 50 ms apart, and closes the run.
"""

from __future__ import annotations

import json
import os
import sys
import time

from memwise.runs.rundir import RunDir


def main(run_path: str, n: int) -> None:
    with RunDir(run_path, command="lock-worker") as run:
        print("ready", flush=True)
        with (run.path / "records.jsonl").open("a") as out:
            for i in range(n):
                out.write(json.dumps({"pid": os.getpid(), "i": i}) + "\n")
                out.flush()
                time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
