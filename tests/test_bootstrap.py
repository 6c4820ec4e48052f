"""`python3 bootstrap.py test` (what CI runs) lints, type-checks and tests, in that order.

The commands are recorded instead of run: the checks themselves take minutes, and what matters
here is that pyright is part of the gate and comes from the project's own environment.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", ROOT / "bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_command_runs_ruff_then_pyright_then_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = _bootstrap()
    installed: list[str] = []
    commands: list[list[str]] = []
    monkeypatch.setattr(bootstrap, "install", installed.append)
    monkeypatch.setattr(bootstrap, "run", lambda *cmd, env=None: commands.append([str(c) for c in cmd]))

    assert bootstrap.main(["test"]) == 0

    assert installed == ["all,test"]
    tools = [Path(cmd[0]).name if Path(cmd[0]).name != "python" else cmd[2] for cmd in commands]
    assert tools == ["ruff", "pyright", "pytest"]
    # Every tool is the venv's own, so a clean clone needs nothing installed globally.
    assert all(Path(cmd[0]).parent == bootstrap.BIN for cmd in commands)


def test_pyright_comes_from_the_test_extra_and_checks_src_in_standard_mode() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    test_extra = project["project"]["optional-dependencies"]["test"]
    assert any(req.startswith("pyright[nodejs]==") for req in test_extra), test_extra
    settings = project["tool"]["pyright"]
    assert settings["include"] == ["src"]
    assert settings["typeCheckingMode"] == "standard"
    assert (settings["venvPath"], settings["venv"]) == (".", ".venv")


def test_pyright_is_pointed_at_this_projects_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pyrightconfig.json in any parent folder would otherwise win over pyproject's [tool.pyright]
    # and check nothing ("/tmp/src does not exist", 0 errors), a green gate that checks no file.
    bootstrap = _bootstrap()
    commands: list[list[str]] = []
    monkeypatch.setattr(bootstrap, "install", lambda extras: None)
    monkeypatch.setattr(bootstrap, "run", lambda *cmd, env=None: commands.append([str(c) for c in cmd]))
    bootstrap.main(["test"])
    (pyright,) = [cmd for cmd in commands if Path(cmd[0]).name == "pyright"]
    assert pyright[1:] == ["--project", str(bootstrap.ROOT / "pyproject.toml")]
