"""Answer normalisation, exact match, token F1 and the lexical metrics."""

from __future__ import annotations

import pytest

from memwise.tasks.metrics import (
    ExactMatchMetric,
    Metric,
    Score,
    TokenF1Metric,
    answer_tokens,
    exact_match,
    normalize_answer,
    split_answers,
    token_f1,
)
from memwise.tasks.question_types import canonical_question_type, is_abstention

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a   cat\tand\nan owl ", "cat and owl"),
        ("Charlotte's Web", "charlottes web"),
        ("well-known", "well known"),
        ("1,000,000 people", "1000000 people"),
        ("3.5 km.", "3.5 km"),
        ("May 7th, 2023", "may 7 2023"),
        ("twenty-five", "25"),
        ("twenty five", "25"),
        ("forty", "40"),
        ("Two weeks", "2 weeks"),
        ("Zoë's café", "zoes cafe"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_dates_in_either_order_share_tokens() -> None:
    assert sorted(answer_tokens("7 May 2023")) == sorted(answer_tokens("May 7th, 2023"))


def test_split_answers_keeps_numbers_whole_and_drops_joiners() -> None:
    assert split_answers("Pride parade, school speech, and support group") == [
        "Pride parade",
        "school speech",
        "support group",
    ]
    assert split_answers("It cost 1,500 dollars") == ["It cost 1,500 dollars"]
    assert split_answers("red, or blue") == ["red", "blue"]
    assert split_answers(" , ") == []


# ---------------------------------------------------------------- exact match and F1


def test_exact_match() -> None:
    assert exact_match("The answer is Paris", "Paris") == 0.0
    assert exact_match("an apple.", "Apple") == 1.0
    assert exact_match("two", "2") == 1.0
    assert exact_match("", "") == 1.0


def test_token_f1_values() -> None:
    assert token_f1("Paris", "paris") == 1.0
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("in Paris France", "Paris") == pytest.approx(0.5)  # p = 1/3, r = 1
    assert token_f1("", "Paris") == 0.0
    assert token_f1("Paris", "") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a") == 1.0  # nothing left after articles on either side


def test_token_f1_counts_repeated_tokens_once_per_occurrence() -> None:
    assert token_f1("no no no", "no") == pytest.approx(0.5)  # p = 1/3, r = 1


def test_multi_answer_f1_averages_best_match_per_gold_item() -> None:
    gold = "pottery, camping, painting, swimming"
    assert token_f1("swimming, painting, camping, pottery", gold, multi_answer=True) == 1.0
    assert token_f1("pottery, camping", gold, multi_answer=True) == pytest.approx(0.5)
    # Extra predicted items are not penalised: each gold item takes its best match.
    assert token_f1("pottery, camping, painting, swimming, chess", gold, multi_answer=True) == 1.0
    # Without splitting, order does not matter either but partial items dilute precision.
    assert token_f1("pottery, camping", gold) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_multi_answer_with_a_single_gold_equals_plain_f1_of_the_best_item() -> None:
    assert token_f1("Paris, Rome", "Paris", multi_answer=True) == 1.0
    assert token_f1("", "Paris", multi_answer=True) == 0.0


# ---------------------------------------------------------------- metric objects


async def test_token_f1_metric_splits_lists_for_multi_hop_only() -> None:
    metric = TokenF1Metric()
    gold, response = "beach, mountains, forest", "forest, beach, mountains"
    multi = await metric.score("Where has she camped?", gold, response, question_type=1)
    assert multi.value == 1.0
    single = await metric.score("Where has she camped?", "beach", "the beach", question_type="single-hop")
    assert single.value == 1.0
    forced = await TokenF1Metric(multi_answer=False).score("q", "pottery, camping", "pottery", question_type=1)
    assert forced.value == pytest.approx(2 / 3)


async def test_token_f1_metric_uses_the_open_domain_conclusion_only() -> None:
    score = await TokenF1Metric().score(
        "Would she enjoy Vivaldi?", "Yes; it's classical music", "yes", question_type="open-domain"
    )
    assert score.value == 1.0


async def test_token_f1_feedback_names_missing_and_extra_words() -> None:
    score = await TokenF1Metric().score("q", "red bicycle", "a red car", question_type="generic")
    assert isinstance(score, Score)
    assert score.value == pytest.approx(0.5)
    assert "bicycle" in score.feedback and "car" in score.feedback and "0.50" in score.feedback


async def test_exact_match_metric_feedback() -> None:
    hit = await ExactMatchMetric().score("q", "Paris", "paris.", question_type="generic")
    miss = await ExactMatchMetric().score("q", "Paris", "Rome", question_type="generic")
    assert (hit.value, miss.value) == (1.0, 0.0)
    assert "'rome'" in miss.feedback and "'paris'" in miss.feedback


async def test_metrics_reject_unknown_question_types() -> None:
    with pytest.raises(ValueError, match="unknown question type"):
        await ExactMatchMetric().score("q", "a", "a", question_type="multi_sesion")
    with pytest.raises(ValueError, match="unknown LoCoMo category"):
        await TokenF1Metric().score("q", "a", "a", question_type=7)


def test_lexical_metrics_follow_the_protocol() -> None:
    assert isinstance(TokenF1Metric(), Metric)
    assert isinstance(ExactMatchMetric(), Metric)


# ---------------------------------------------------------------- question types


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1, "multi-hop"),
        ("2", "temporal"),
        (3, "open-domain"),
        ("4", "single-hop"),
        (5, "adversarial"),
        ("Multi_Session", "multi-session"),
        ("single session preference", "single-session-preference"),
        ("knowledge-update", "knowledge-update"),
        ("generic", "generic"),
    ],
)
def test_canonical_question_type(given: str | int, expected: str) -> None:
    assert canonical_question_type(given) == expected


@pytest.mark.parametrize("bad", ["", "temporal reasoning!", 0, "6", True])
def test_canonical_question_type_rejects_unknown(bad: str | int) -> None:
    with pytest.raises(ValueError):
        canonical_question_type(bad)


def test_is_abstention() -> None:
    assert is_abstention("e47becba_abs")
    assert not is_abstention("e47becba")
    assert not is_abstention(None)
    assert is_abstention(None, flag=True)
    assert is_abstention("conv-26-q3", question_type="5")
    assert not is_abstention("conv-26-q3", question_type=4)
