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
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from memwise._version import __version__
from memwise.llm.base import ChatModel
from memwise.llm.recorded import RecordedLLM
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import Ledger
from memwise.runs.lock import RunLock


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses as objects (recursively), paths as strings, enums as values.

    Manifests used ``json.dumps(default=str)``, which wrote a nested config as its Python repr
    (``"TrainConfig(epochs=5, ...)"``), unreadable by anything but a human. Anything else that JSON
    cannot hold raises TypeError naming its type, so a new config type is noticed, not mangled.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     path: Path
        ...     sizes: tuple[int, ...]
        >>> to_json_value({"c": C(Path("a/b"), (1, 2))})
        {'c': {'path': 'a/b', 'sizes': [1, 2]}}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value  # pyright: ignore[reportUnknownArgumentType]
        return [to_json_value(v) for v in items]  # pyright: ignore[reportUnknownVariableType]
    raise TypeError(f"cannot write a {type(value).__name__} to a run manifest; convert it to JSON data first")


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
            "config": to_json_value(config),
            "memwise": __version__,
            "python": platform.python_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        history = previous.get("history", [])
        history.append(entry)
        # Atomic: a crash never leaves a half-written manifest. No `default=`: a value to_json_value does not
        # know is a TypeError here, not a Python repr smuggled into the JSON.
        return write_text_atomic(path, json.dumps({"latest": entry, "history": history}, indent=2))

    def close(self) -> None:
        """Close the ledger, then give the lock back (in that order: no write after the release)."""
        try:
            self.ledger.close()
        finally:
            if self._lock is not None:
                self._lock.release()
