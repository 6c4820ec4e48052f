"""Opening a run directory from a command: warn when the models differ from the ones it was run with.

A run directory's ledger replays recorded calls, so re-running a command there with another
``--model`` silently mixes two models' answers in one result. The manifest records the models each
invocation used; a command that reuses the folder compares them with the configured ones and says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memwise.config import Settings
from memwise.runs.rundir import RunDir, to_json_value

_KEYS = ("backend", "model", "base_url", "model_path")


def model_identity(settings: Settings) -> dict[str, dict[str, Any]]:
    """What decides a model's answers, per role: backend, model name, server and GGUF file."""
    return {
        role: {key: to_json_value(getattr(cfg, key)) for key in _KEYS} for role, cfg in sorted(settings.models.items())
    }


def model_changes(run_dir: Path, settings: Settings) -> list[str]:
    """One line per role whose model differs from the one the run's last manifest recorded."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        config = json.loads(manifest.read_text(encoding="utf-8"))["latest"]["config"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return [f"{manifest} cannot be read; the models this run used are unknown"]
    recorded = config.get("models") if isinstance(config, dict) else None
    if not isinstance(recorded, dict) or "policy" not in recorded:
        return []  # written before manifests recorded models: nothing to compare
    now = model_identity(settings)
    lines: list[str] = []
    for role in sorted(set(recorded) | set(now)):
        before, after = recorded.get(role), now.get(role)
        if before != after:
            lines.append(f"{role}: run recorded {_describe(before)}, now configured {_describe(after)}")
    return lines


def _describe(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "(none)"
    parts = [f"{k}={v}" for k, v in identity.items() if v not in (None, "")]  # pyright: ignore[reportUnknownVariableType]
    return " ".join(parts) or "(defaults)"


def open_run(run_dir: Path, command: str, config: Any, settings: Settings, *, warn: Callable[[str], None]) -> RunDir:
    """Open (and lock) a run directory, warn about model changes, and record this invocation's manifest.

    ``warn`` prints one line (the CLI passes a stderr console's ``print``); the lock is released if the
    manifest cannot be written.
    """
    for line in model_changes(run_dir, settings):
        warn(f"warning: {run_dir} was run with other models; recorded calls will be replayed. {line}")
    run = RunDir(run_dir, command=command)
    try:
        run.write_manifest(command, {"run": config, "models": model_identity(settings), "settings": settings})
    except BaseException:
        run.close()
        raise
    return run
