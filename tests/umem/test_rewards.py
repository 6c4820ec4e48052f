"""Tests for the UMEM marginal utility reward, both the paper and the released-code forms."""

from __future__ import annotations

import doctest

import pytest

from memwise.exceptions import ConfigError
from memwise.umem import rewards
from memwise.umem.rewards import (
    ExecResult,
    format_reward,
    marginal_utility,
    marginal_utility_reward,
    paper_gain,
    released_gain,
    total_reward,
)

OK_100 = ExecResult(True, 100)
OK_60 = ExecResult(True, 60)
OK_150 = ExecResult(True, 150)
FAIL_100 = ExecResult(False, 100)
FAIL_60 = ExecResult(False, 60)


def test_doctests() -> None:
    result = doctest.testmod(rewards, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


# Hand-worked: (reference run, run with memory) -> (paper gain, released gain).
@pytest.mark.parametrize(
    ("ref", "mem", "paper", "released"),
    [
        (FAIL_100, OK_60, 1.0, 1.0),  # memory fixes the task: (1 - 0) + 0
        (OK_100, OK_60, 0.4, 0.4),  # both solve, 40 % shorter: 0 + 1*1*(1 - 60/100)
        (OK_100, FAIL_60, -1.0, 0.0),  # memory breaks the task: paper punishes, released floors at 0
        (FAIL_100, FAIL_60, 0.0, 0.0),  # both fail: nothing gained
        (OK_100, OK_150, -0.5, 0.0),  # both solve but 50 % longer: paper -0.5, released clipped to 0
        (OK_100, ExecResult(True, 0), 1.0, 1.0),  # saving cannot exceed 1
    ],
)
def test_gains_hand_worked(ref: ExecResult, mem: ExecResult, paper: float, released: float) -> None:
    assert paper_gain(ref, mem) == pytest.approx(paper)
    assert released_gain(ref, mem) == pytest.approx(released)


def test_zero_length_reference_does_not_divide_by_zero() -> None:
    empty_ok = ExecResult(True, 0)
    assert paper_gain(empty_ok, OK_60) == 0.0
    assert released_gain(empty_ok, OK_60) == 0.0


def test_released_gain_in_unit_interval() -> None:
    results = [ExecResult(s, n) for s in (True, False) for n in (0, 1, 50, 100, 1000)]
    for a in results:
        for b in results:
            assert 0.0 <= released_gain(a, b) <= 1.0
            assert paper_gain(a, b) <= 1.0  # the paper's length term is not bounded below


def test_paper_gain_length_term_unbounded_below() -> None:
    assert paper_gain(ExecResult(True, 1), ExecResult(True, 50)) == -49.0


def test_negative_length_rejected() -> None:
    with pytest.raises(ConfigError, match="length"):
        ExecResult(True, -1)


def test_marginal_utility_means_over_neighbours() -> None:
    pairs = [(FAIL_100, OK_60), (OK_100, OK_60), (OK_100, FAIL_60)]
    assert marginal_utility(pairs, form="paper") == pytest.approx((1.0 + 0.4 - 1.0) / 3)
    assert marginal_utility(pairs, form="released") == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    assert marginal_utility(pairs) == marginal_utility(pairs, form="paper")


def test_marginal_utility_no_neighbours_is_zero() -> None:
    assert marginal_utility([], form="released") == 0.0


def test_marginal_utility_rejects_unknown_form() -> None:
    with pytest.raises(ConfigError, match="paper"):
        marginal_utility([(OK_100, OK_60)], form="other")  # type: ignore[arg-type]


def test_format_and_total_reward() -> None:
    assert format_reward(True) == 1.0
    assert format_reward(False) == 0.0
    assert total_reward(True, [1.0, 0.4, -1.0]) == pytest.approx(1.0 + 0.4 / 3)
    assert total_reward(True, []) == 1.0


def test_format_failure_gives_zero_total_whatever_the_gains() -> None:
    assert total_reward(False, [1.0, 1.0, 1.0]) == 0.0
    assert total_reward(False, []) == 0.0


def test_trl_reward_returns_one_value_per_completion() -> None:
    prompts = ["task q"] * 4
    completions = [[{"role": "assistant", "content": f"c{i}"}] for i in range(4)]
    out = marginal_utility_reward(
        prompts,
        completions,
        format_ok=[True, False, True, True],
        gains=[[1.0, 0.4, -1.0], [1.0], [], None],
        trainer_state=object(),  # trl passes extra kwargs; they must be accepted
        task_id=["q"] * 4,
    )
    assert len(out) == len(completions)
    assert out[0] == pytest.approx(1.0 + 0.4 / 3)
    assert out[1] == 0.0  # malformed: 0 even though its gains were positive
    assert out[2] == 1.0  # no neighbours: format reward only
    assert out[3] is None  # not evaluated: not applicable


def test_trl_reward_is_pure() -> None:
    gains = [[0.5, 0.5]]
    kwargs = {"format_ok": [True], "gains": gains}
    first = marginal_utility_reward(["p"], ["c"], **kwargs)
    assert marginal_utility_reward(["p"], ["c"], **kwargs) == first == [1.5]
    assert gains == [[0.5, 0.5]]


def test_trl_reward_from_exec_results_both_forms() -> None:
    pairs = [(FAIL_100, OK_60), (OK_100, OK_60)]
    gains_paper = [paper_gain(r, m) for r, m in pairs]
    gains_released = [released_gain(r, m) for r, m in pairs]
    out = marginal_utility_reward(["p", "p"], ["a", "b"], format_ok=[True, True], gains=[gains_paper, gains_released])
    assert out == [pytest.approx(1.7), pytest.approx(1.7)]


@pytest.mark.parametrize(
    ("n_prompts", "n_ok", "n_gains"),
    [(2, 1, 2), (2, 2, 3), (1, 2, 2)],
)
def test_trl_reward_rejects_length_mismatch(n_prompts: int, n_ok: int, n_gains: int) -> None:
    with pytest.raises(ConfigError, match="per completion"):
        marginal_utility_reward(["p"] * n_prompts, ["c", "c"], format_ok=[True] * n_ok, gains=[[0.0]] * n_gains)
