"""A run directory: the ledger (model calls, failures) plus a manifest saying what ran and how."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from memwise import __version__
from memwise.llm.base import ChatModel
from memwise.llm.recorded import RecordedLLM
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import Ledger


class RunDir:
    """One run's folder. Re-opening an existing folder resumes it: recorded calls are replayed.

    Example:
        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> run.ledger.path.name
        'ledger.sqlite3'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.path / "ledger.sqlite3")

    def record(self, model: ChatModel, stage: str) -> RecordedLLM:
        """``model`` with its calls recorded in this run's ledger under ``stage``."""
        return RecordedLLM(model, self.ledger, stage=stage)

    def write_manifest(self, command: str, config: Any) -> Path:
        """Write (or extend) manifest.json; earlier invocations are kept under ``history``."""
        path = self.path / "manifest.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        entry = {
            "command": command,
            "config": asdict(config) if is_dataclass(config) and not isinstance(config, type) else config,
            "memwise": __version__,
            "python": platform.python_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        history = previous.get("history", [])
        history.append(entry)
        # Atomic: a crash never leaves a half-written manifest.
        return write_text_atomic(path, json.dumps({"latest": entry, "history": history}, indent=2, default=str))

    def close(self) -> None:
        self.ledger.close()
