"""A run directory: the ledger (model calls, failures) plus a manifest saying what ran and how.

One process writes a run directory at a time: opening one takes its lock (:mod:`memwise.runs.lock`)
and closing it gives the lock back. Readers of a finished run (``memwise metamem report``, summaries)
open it with ``lock=False``: the ledger is WAL-journaled, so they read beside a live writer safely, and
a report is never refused by, nor waits on, a run in progress. ``metamem show``/``diff`` read only
JSON files and never open a ``RunDir``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from memwise._version import __version__
from memwise.llm.base import ChatModel
from memwise.llm.recorded import RecordedLLM
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import Ledger
from memwise.runs.lock import RunLock


class RunDir:
    """One run's folder. Re-opening an existing folder resumes it: recorded calls are replayed.

    Args:
        path: the folder (created if missing).
        lock: take the folder's exclusive lock (writers); raises
            :class:`~memwise.exceptions.RunDirBusyError` naming the holder when another process has it.
            Pass False only to read a run.
        command: how the lock file names this process (default: its command line).

    Example:
        >>> import tempfile
        >>> with RunDir(tempfile.mkdtemp()) as run:
        ...     run.ledger.path.name
        'ledger.sqlite3'
    """

    def __init__(self, path: str | Path, *, lock: bool = True, command: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.path, command=command) if lock else None
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.ledger = Ledger(self.path / "ledger.sqlite3")
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Close the ledger, then give the lock back (in that order: no write after the release)."""
        try:
            self.ledger.close()
        finally:
            if self._lock is not None:
                self._lock.release()
