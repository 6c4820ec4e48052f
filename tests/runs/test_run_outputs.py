"""Run outputs a user can read: JSON manifests (not Python reprs) and files with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest

from memwise.config import load_settings
from memwise.metamem.train_config import TrainConfig
from memwise.runs.files import write_text_atomic
from memwise.runs.rundir import RunDir


class Colour(Enum):
    RED = "red"


@dataclass(frozen=True)
class Nested:
    where: Path
    colour: Colour
    sizes: tuple[int, ...] = (1, 2)
    tags: frozenset[str] = field(default_factory=lambda: frozenset({"b", "a"}))


def test_manifest_round_trips_through_json_loads(tmp_path: Path) -> None:
    settings = load_settings(None, env={})
    config = {"train": TrainConfig(epochs=2), "nested": Nested(tmp_path / "x", Colour.RED), "models": settings}
    with RunDir(tmp_path / "run") as run:
        path = run.write_manifest("memwise metamem train", config)
    written = json.loads(path.read_text())["latest"]["config"]
    # Structure, not reprs: the dataclass is an object whose fields read back as themselves.
    assert written["train"]["epochs"] == 2 and written["train"]["batch_size"] == TrainConfig().batch_size
    assert written["nested"] == {"where": str(tmp_path / "x"), "colour": "red", "sizes": [1, 2], "tags": ["a", "b"]}
    assert written["models"]["models"]["policy"]["backend"] == settings.models["policy"].backend
    assert "TrainConfig(" not in path.read_text()


def test_manifest_refuses_a_value_json_cannot_hold(tmp_path: Path) -> None:
    with RunDir(tmp_path / "run") as run, pytest.raises(TypeError, match="object"):
        run.write_manifest("cmd", {"x": object()})


def test_atomic_writes_follow_the_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind
