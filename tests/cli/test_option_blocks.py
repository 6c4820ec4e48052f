"""Option blocks from config dataclasses: one option per field, the built config handed to the command."""

from __future__ import annotations

import doctest
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from memwise.cli import _config_options
from memwise.cli._config_options import ConfigOptions, with_config_options


@dataclass(frozen=True)
class Inner:
    budget: int | None = field(default=None, metadata={"help": "tokens"})


@dataclass(frozen=True)
class Outer:
    name: str
    size: int = field(default=3, metadata={"help": "how many"})
    style: Literal["a", "b"] = field(default="a", metadata={"help": "a or b"})
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.style not in ("a", "b"):
            raise ValueError(f"style must be a or b, got {self.style!r}")


def test_the_command_gets_the_built_config_and_typer_the_options() -> None:
    seen: list[Outer] = []
    budget = ConfigOptions(Inner, ("budget",))
    outer = ConfigOptions(Outer, ("size", "style"), {"size": "count"}, {"inner": budget}, supplied=("name",))

    @with_config_options(config=outer)
    def command(label: str = "x", *, config: Callable[..., Outer]) -> None:
        seen.append(config(name=label))

    assert list(inspect.signature(command).parameters) == ["label", "count", "style", "budget"]
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, ["--label", "y", "--count", "5", "--style", "b", "--budget", "64"])
    assert result.exit_code == 0, result.output
    assert seen == [Outer(name="y", size=5, style="b", inner=Inner(budget=64))]
    defaults = CliRunner().invoke(app, [])
    assert defaults.exit_code == 0 and seen[-1] == Outer(name="x")


def test_without_supplied_fields_the_command_gets_the_config_itself() -> None:
    @with_config_options(inner=ConfigOptions(Inner, ("budget",)))
    def command(*, inner: Inner) -> Inner:
        return inner

    assert command(budget=7) == Inner(budget=7)


def test_an_option_declared_twice_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match=r"\['budget'\] are declared twice"):

        @with_config_options(inner=ConfigOptions(Inner, ("budget",)))
        def command(budget: int = 0, *, inner: Inner) -> None: ...


def test_a_literal_field_is_a_string_option_checked_by_its_config() -> None:
    (param,) = ConfigOptions(Outer, ("style",), supplied=("name",)).parameters()
    assert param.annotation is str and param.default.default == "a" and param.default.help == "a or b"


def test_doctests() -> None:
    result = doctest.testmod(_config_options, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
