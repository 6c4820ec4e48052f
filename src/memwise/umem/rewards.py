"""UMEM rewards: a memory is worth what it adds on neighbouring tasks.

A candidate Mem-Optimizer output for task q is scored on each neighbour q' (see `neighbours`) by
comparing an executor run that uses the candidate memory with a reference run that does not. Two
gain definitions exist and both are kept because they disagree on a failure the memory causes:

- `paper_gain` (the paper): reference bank vs. bank after the candidate action; a memory that breaks
  a solved neighbour costs -1.
- `released_gain` (the released code): no memory vs. only the candidate memory; harm is floored at 0.

The reward fed to GRPO is ``format_ok + mean gain`` (`total_reward`); a malformed output earns 0 and
needs no executor runs at all. Executor calls are async and expensive, so they happen *before* the
reward function: `marginal_utility_reward` only combines precomputed results, keeping it pure and
compatible with trl's ``RewardFunc`` contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memwise.exceptions import ConfigError

__all__ = [
    "ExecResult",
    "GainForm",
    "format_reward",
    "marginal_utility",
    "marginal_utility_reward",
    "paper_gain",
    "released_gain",
    "total_reward",
]

GainForm = Literal["paper", "released"]


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one executor run on one task: did it succeed, and how many tokens it took.

    Length matters because UMEM also rewards memories that make an already-solved task cheaper.
    """

    success: bool
    length: int

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ConfigError(f"length is a token count and must be >= 0, got {self.length}")


def _length_saving(reference_length: int, test_length: int) -> float:
    # An empty reference trajectory leaves nothing to save; treat it as no saving instead of dividing by 0.
    if reference_length == 0:
        return 0.0
    return 1.0 - test_length / reference_length


def paper_gain(ref: ExecResult, mem: ExecResult) -> float:
    """Paper form: ``(c_mem - c_ref) + c_mem * c_ref * (1 - l_mem / l_ref)``.

    Success dominates; the length term only applies when both runs succeed, and is negative when the
    memory makes the executor ramble. As in the paper it is not clipped, so it is unbounded below
    (use `released_gain` for a bounded reward).

    Example:
        >>> paper_gain(ExecResult(True, 100), ExecResult(True, 60))
        0.4
        >>> paper_gain(ExecResult(True, 100), ExecResult(False, 60))
        -1.0
    """
    c_ref, c_mem = float(ref.success), float(mem.success)
    both = c_mem * c_ref
    saving = _length_saving(ref.length, mem.length) if both else 0.0
    return (c_mem - c_ref) + both * saving


def released_gain(no_memory: ExecResult, only_candidate: ExecResult) -> float:
    """Released-code form, always in [0, 1].

    0 if the candidate-only run fails, 1 if it fixes a task the memory-free run failed, otherwise the
    relative length saving clipped to [0, 1] (a longer trajectory is not punished below 0).

    Example:
        >>> released_gain(ExecResult(False, 100), ExecResult(True, 80))
        1.0
        >>> released_gain(ExecResult(True, 100), ExecResult(True, 60))
        0.4
        >>> released_gain(ExecResult(True, 100), ExecResult(False, 10))
        0.0
    """
    if not only_candidate.success:
        return 0.0
    if not no_memory.success:
        return 1.0
    return min(1.0, max(0.0, _length_saving(no_memory.length, only_candidate.length)))


def marginal_utility(pairs: Sequence[tuple[ExecResult, ExecResult]], form: GainForm = "paper") -> float:
    """Mean gain over a task's neighbours; each pair is ``(reference_run, candidate_run)``.

    No neighbours means no evidence the memory helps anyone, so the utility is 0.

    Example:
        >>> pairs = [(ExecResult(False, 50), ExecResult(True, 50)), (ExecResult(True, 100), ExecResult(True, 60))]
        >>> marginal_utility(pairs, form="paper")
        0.7
    """
    if form == "paper":
        gain = paper_gain
    elif form == "released":
        gain = released_gain
    else:
        raise ConfigError(f"form must be 'paper' or 'released', got {form!r}")
    if not pairs:
        return 0.0
    return sum(gain(ref, test) for ref, test in pairs) / len(pairs)


def format_reward(ok: bool) -> float:
    """1 for a parseable Mem-Optimizer output, 0 otherwise."""
    return 1.0 if ok else 0.0


def total_reward(format_ok: bool, gains: Sequence[float]) -> float:
    """``format_ok + mean(gains)``, but exactly 0 for malformed output.

    A malformed output cannot change the bank, so it is never executed and its gains are ignored;
    an empty gain list (no neighbours) leaves only the format reward.

    Example:
        >>> total_reward(True, [1.0, 0.4, -1.0])
        1.1333333333333333
        >>> total_reward(False, [1.0])
        0.0
    """
    if not format_ok:
        return 0.0
    mean_gain = sum(gains) / len(gains) if gains else 0.0
    return format_reward(True) + mean_gain


def marginal_utility_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    format_ok: Sequence[bool],
    gains: Sequence[Sequence[float] | None],
    **kwargs: Any,
) -> list[float | None]:
    """A trl ``RewardFunc``: one `total_reward` per completion from precomputed neighbour gains.

    ``format_ok[i]`` says whether completion i parsed; ``gains[i]`` are its per-neighbour gains
    (from `paper_gain` or `released_gain`). ``gains[i] is None`` for a well-formed completion means
    it was not evaluated, so the reward is ``None`` ("not applicable" in trl) rather than a made-up
    number. Other trl keyword arguments (dataset columns, ``trainer_state``) are accepted and unused.

    Example:
        >>> marginal_utility_reward(
        ...     ["q", "q", "q"], ["c1", "c2", "c3"],
        ...     format_ok=[True, False, True], gains=[[1.0, 0.0], None, None],
        ... )
        [1.5, 0.0, None]
    """
    n = len(completions)
    if len(format_ok) != n or len(gains) != n:
        raise ConfigError(
            f"got {n} completions, {len(format_ok)} format_ok flags and {len(gains)} gain lists; "
            "pass exactly one of each per completion"
        )
    if len(prompts) != n:
        raise ConfigError(f"got {len(prompts)} prompts for {n} completions; trl passes one prompt per completion")
    rewards: list[float | None] = []
    for ok, g in zip(format_ok, gains, strict=True):
        if not ok:
            rewards.append(0.0)
        elif g is None:
            rewards.append(None)
        else:
            rewards.append(total_reward(True, g))
    return rewards
