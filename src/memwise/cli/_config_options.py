"""Option blocks generated from config dataclasses, so commands that build the same config share one definition.

``metamem train`` and ``reproduce metamem`` both build a ``TrainConfig``; ``umem evolve`` and
``reproduce umem`` both take the evolution settings. Written out, each such block was a dozen
parameter lines copied between commands and then copied again into the constructor call. Here a
:class:`ConfigOptions` names the fields once; :func:`with_config_options` adds one option per field
to a command (default and help from the field, via :func:`~memwise.cli._options.config_option`) and
hands the command the built config instead of the loose values.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast, get_origin, get_type_hints

from memwise.cli._options import config_option

R = TypeVar("R")


@dataclass(frozen=True)
class ConfigOptions:
    """The options that build one config dataclass: one option per listed field.

    Args:
        cls: the config dataclass.
        fields: the fields offered as options, in ``--help`` order; the others keep their defaults.
        names: a parameter name per field where it differs from the field's (``{"similarity_floor":
            "floor"}`` gives ``--floor``), kept where a flag predates the field's name.
        nested: fields whose value is itself built from options (``TrainConfig.budgets``).
        supplied: required fields the command fills in itself (``EvolveConfig.suite``, checked first); with
            any, the command receives a ``functools.partial`` of the class to call with them.

    Example:
        >>> from memwise.metamem.train_config import StageBudgets
        >>> budgets = ConfigOptions(StageBudgets, ("rollout",), names={"rollout": "rollout_tokens"})
        >>> [p.name for p in budgets.parameters()], budgets.build({"rollout_tokens": 512}).rollout
        (['rollout_tokens'], 512)
    """

    cls: type[Any]
    fields: tuple[str, ...]
    names: Mapping[str, str] = field(default_factory=dict[str, str])
    nested: Mapping[str, ConfigOptions] = field(default_factory=dict[str, "ConfigOptions"])
    supplied: tuple[str, ...] = ()

    def parameters(self) -> list[inspect.Parameter]:
        """Keyword-only parameters a Typer command can declare: the nested blocks' first, then this one's."""
        hints = get_type_hints(self.cls)
        own = [
            inspect.Parameter(
                self.names.get(name, name),
                inspect.Parameter.KEYWORD_ONLY,
                default=config_option(self.cls, name),
                annotation=_option_type(hints[name]),
            )
            for name in self.fields
        ]
        return [*own, *(p for block in self.nested.values() for p in block.parameters())]

    def build(self, values: Mapping[str, Any]) -> Any:
        """The config from the parsed option values (keys are parameter names); other keys are ignored."""
        kwargs = {name: values[self.names.get(name, name)] for name in self.fields}
        kwargs.update({name: block.build(values) for name, block in self.nested.items()})
        return functools.partial(self.cls, **kwargs) if self.supplied else self.cls(**kwargs)


def _option_type(hint: Any) -> Any:
    """A ``Literal`` field is a plain string option: its config checks the value and names the choices."""
    return str if get_origin(hint) is Literal else hint


def with_config_options(**blocks: ConfigOptions) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Add each block's options to a Typer command, which receives the built config under the block's name.

    The command declares a keyword-only parameter per block (``*, config: TrainConfig``); the options
    take its place in the signature Typer reads, after the command's own parameters. A name given
    twice (two blocks offering ``--seed``) is refused when the module is imported.

    Example:
        >>> from memwise.metamem.train_config import TrainConfig
        >>> @with_config_options(config=ConfigOptions(TrainConfig, ("epochs", "seed")))
        ... def train(*, config: TrainConfig) -> int:
        ...     return config.epochs
        >>> list(inspect.signature(train).parameters), train(epochs=2, seed=0)
        (['epochs', 'seed'], 2)
    """

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        # eval_str: Typer reads these annotations as objects (an ``Annotated`` string would lose its option).
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in blocks]
        added = [p for block in blocks.values() for p in block.parameters()]
        names = [p.name for p in (*own, *added)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TypeError(f"{command.__name__}: options {repeated} are declared twice")
        option_names = {p.name for p in added}

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> R:
            values = {k: kwargs.pop(k) for k in option_names}
            return command(*args, **kwargs, **{name: block.build(values) for name, block in blocks.items()})

        cast(Any, run).__signature__ = signature.replace(parameters=[*own, *added])
        return run

    return decorate
