"""Every command option that mirrors a config dataclass field has that field's default (and help).

`umem train --save-steps` once said 25 while GRPOSettings said 0: the CLI and the library silently
disagreed. These tests read the options Typer built and compare them with the dataclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer

from memwise.cli import app
from memwise.metamem.splits import SplitConfig
from memwise.metamem.train_config import StageBudgets, TrainConfig
from memwise.umem.evolve_config import EvolveConfig

# command path -> (config class, {option parameter name: field name})
MIRRORS: dict[tuple[str, ...], list[tuple[type[Any], dict[str, str]]]] = {
    ("metamem", "train"): [
        (
            TrainConfig,
            {
                "epochs": "epochs",
                "batch_size": "batch_size",
                "samples": "samples",
                "temperature": "temperature",
                "max_tokens": "max_tokens",
                "answer_style": "answer_style",
                "max_rules": "max_rules",
                "max_words": "max_words",
                "seed": "seed",
            },
        ),
        (
            StageBudgets,
            {
                "rollout_tokens": "rollout",
                "judge_tokens": "judge",
                "reflection_tokens": "reflection",
                "proposal_tokens": "proposal",
                "consolidation_tokens": "consolidation",
            },
        ),
        (
            SplitConfig,
            {
                "folds": "folds",
                "fold": "fold",
                "val_frac": "val_frac",
                "test_frac": "test_frac",
                "group_by": "group_by",
            },
        ),
    ],
    ("umem", "evolve"): [
        (
            EvolveConfig,
            {
                "epochs": "epochs",
                "top_k": "top_k",
                "floor": "similarity_floor",
                "max_tokens": "max_tokens",
                "optimizer_max_tokens": "optimizer_max_tokens",
                "repair": "repair",
            },
        )
    ],
    ("umem", "export-verl"): [
        (EvolveConfig, {"top_k": "top_k", "floor": "similarity_floor", "max_tokens": "max_tokens"})
    ],
}
GRPO_FIELDS = {
    "group_size": "group_size",
    "batch_tasks": "batch_tasks",
    "micro_batch_size": "micro_batch_size",
    "beta": "beta",
    "learning_rate": "learning_rate",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "max_completion_length": "max_completion_length",
    "model_dtype": "model_dtype",
    "save_steps": "save_steps",
}


def _command(path: tuple[str, ...]) -> Any:
    # Typer vendors its own click, so the objects are duck-typed here rather than checked against click's.
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _option_default(path: tuple[str, ...], param_name: str) -> Any:
    command = _command(path)
    ctx = typer.Context(command)
    (param,) = [p for p in command.params if p.name == param_name]
    return param.get_default(ctx, call=True)


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


CASES = [
    (path, cls, opt, fld) for path, groups in MIRRORS.items() for cls, names in groups for opt, fld in names.items()
]
IDS = [f"{' '.join(c[0])}:{c[2]}" for c in CASES]


@pytest.mark.parametrize(("path", "cls", "option", "field_name"), CASES, ids=IDS)
def test_option_default_and_help_come_from_the_dataclass(
    path: tuple[str, ...], cls: type[Any], option: str, field_name: str
) -> None:
    field = _field(cls, field_name)
    assert _option_default(path, option) == field.default
    (param,) = [p for p in _command(path).params if p.name == option]
    assert param.help == field.metadata["help"]


def test_umem_train_defaults_are_grpo_settings_defaults_save_steps_included() -> None:
    pytest.importorskip("trl")
    from memwise.umem.grpo_settings import GRPOSettings

    for option, field_name in GRPO_FIELDS.items():
        assert _option_default(("umem", "train"), option) == _field(GRPOSettings, field_name).default, option
    # The drift this test was written for: the CLI checkpointed every 25 steps, the library never.
    assert _option_default(("umem", "train"), "save_steps") == GRPOSettings().save_steps == 0
    for option, field_name in {"top_k": "top_k", "floor": "similarity_floor", "max_tokens": "max_tokens"}.items():
        assert _option_default(("umem", "train"), option) == _field(EvolveConfig, field_name).default
