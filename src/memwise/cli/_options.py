"""Global CLI options and how they override configuration (flags > environment > TOML > defaults)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from memwise.config import Settings, load_settings
from memwise.exceptions import ConfigError
from memwise.facts.readers import parse_datetime

# One spelling per concept, shared by every command (a newcomer guesses a flag once):
# --path is the dataset file, --dataset its format, --out a file to write, --json prints JSON to stdout.
DatasetPath = Annotated[
    Path, typer.Option("--path", help="the dataset file: LoCoMo JSON, LongMemEval JSON, or JSONL of sessions")
]
DatasetFormat = Annotated[str, typer.Option("--dataset", help="dataset format: auto, locomo, longmemeval or jsonl")]
JsonSwitch = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")]
OutFile = Annotated[Path | None, typer.Option("--out", help="also write the result (JSON) to this file")]
# The MetaMem scorer every command defaults to; `memwise demo` alone uses f1, as it has no judge server.
DEFAULT_METRIC = "judge"
MetricOption = Annotated[str, typer.Option(help="how answers are scored: judge, f1 or em")]


@dataclass(frozen=True)
class GlobalOptions:
    """Flags given before the command, e.g. ``memwise --base-url URL --model M chat "hi"``."""

    config: Path | None = None
    backend: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = None
    judge_base_url: str | None = None
    judge_model: str | None = None
    optimizer_base_url: str | None = None
    optimizer_model: str | None = None
    embed_backend: str | None = None
    embed_base_url: str | None = None
    embed_model: str | None = None
    embed_precision: str | None = None

    def settings(self) -> Settings:
        return load_settings(
            self.config,
            overrides={
                "policy": {
                    "backend": self.backend,
                    "base_url": self.base_url,
                    "model": self.model,
                    "api_key_env": self.api_key_env,
                    "max_concurrency": self.concurrency,
                },
                "judge": {"base_url": self.judge_base_url, "model": self.judge_model},
                "optimizer": {"base_url": self.optimizer_base_url, "model": self.optimizer_model},
                "embedding": {
                    "backend": self.embed_backend,
                    "base_url": self.embed_base_url,
                    "model": self.embed_model,
                    "precision": self.embed_precision,
                },
            },
        )


def parse_when(value: str | None, flag: str) -> datetime | None:
    """A date given on the command line (LoCoMo, LongMemEval or ISO form), or a clear error naming the flag."""
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: cannot read {value!r} as a date ({exc})") from exc


def config_field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    """The dataclass field behind a CLI option; a missing field is a programming error caught at import."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def config_default(cls: type[Any], name: str) -> Any:
    """A field's default value (factories called), so commands that build a config see the same value."""
    f = config_field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise AttributeError(f"{cls.__name__}.{name} has no default; make it a required option instead")


def config_option(cls: type[Any], name: str, *param_decls: str, help: str | None = None, **kwargs: Any) -> Any:  # noqa: A002
    """A Typer option whose default and help come from a config dataclass field, so the two cannot drift.

    Hand-copied defaults had drifted (``umem train --save-steps`` said 25 while ``GRPOSettings`` said 0);
    deriving them means the CLI and the library always agree, and tests/cli/test_config_options.py checks it.

    Example:
        >>> from memwise.metamem.train_config import TrainConfig
        >>> def train(epochs: int = config_option(TrainConfig, "epochs")) -> None: ...
    """
    f = config_field(cls, name)
    text = help if help is not None else str(f.metadata.get("help", ""))
    return typer.Option(config_default(cls, name), *param_decls, help=text, **kwargs)


DATASET_FORMATS = ("auto", "locomo", "longmemeval", "jsonl")
ERROR_MODES = ("raise", "collect")


def dataset_format(value: str, flag: str = "--dataset") -> Literal["auto", "locomo", "longmemeval", "jsonl"]:
    """A ``--dataset`` value checked against the readers' formats, or a ConfigError listing them."""
    if value not in DATASET_FORMATS:
        raise ConfigError(f"{flag} must be one of {', '.join(DATASET_FORMATS)}, got {value!r}")
    return cast(Literal["auto", "locomo", "longmemeval", "jsonl"], value)


def error_mode(value: str) -> Literal["raise", "collect"]:
    """An ``--errors`` value checked, or a ConfigError naming the two modes."""
    if value not in ERROR_MODES:
        raise ConfigError(f"--errors must be raise or collect, got {value!r}")
    return cast(Literal["raise", "collect"], value)


def progress_bar(*, console: Console | None = None) -> Progress:
    """The progress display every long operation uses: description, bar, done/total, elapsed (on stderr)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while one call of unknown length runs (an answer on the embedded model)."""
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        bar.add_task(text, total=None)
        yield
