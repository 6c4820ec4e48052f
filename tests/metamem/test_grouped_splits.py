"""LoCoMo splits keep each conversation whole: its questions never sit in two of train, validation, test.

A conversation's questions share one user's facts, and reflections see gold answers: a conversation
split across train and test lets a rule carry that user's facts into the test score.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from memwise.exceptions import ConfigError
from memwise.facts.readers import read_locomo
from memwise.metamem.data import MetaQuestion
from memwise.metamem.prepare import build_meta_question, selected_questions
from memwise.metamem.splits import Fold, SplitConfig, make_folds, split_once, split_questions


@pytest.fixture(scope="module")
def locomo_questions(shared_data: Path) -> list[MetaQuestion]:
    convs = read_locomo(shared_data / "locomo" / "locomo10_dev.json")
    assert len(convs) == 5
    return [
        build_meta_question(conv, q, []) for conv in convs for q in selected_questions(conv, include_adversarial=False)
    ]


def _parts_of(fold: Fold, questions: list[MetaQuestion]) -> dict[str, set[str]]:
    """For each conversation, the parts (train / val / test) its questions landed in."""
    conv = {q.question_id: q.metadata["conversation_id"] for q in questions}
    parts: dict[str, set[str]] = {}
    for name, ids in (("train", fold.train_ids), ("val", fold.val_ids), ("test", fold.test_ids)):
        for qid in ids:
            parts.setdefault(conv[qid], set()).add(name)
    return parts


@pytest.mark.parametrize("k", [3, 4, 5])
def test_locomo_folds_never_put_one_conversation_in_two_parts(locomo_questions: list[MetaQuestion], k: int) -> None:
    folds = make_folds(locomo_questions, k=k, n_val=20, seed=0)
    tested: list[str] = []
    for fold in folds:
        parts = _parts_of(fold, locomo_questions)
        assert len(parts) == 5 and all(len(p) == 1 for p in parts.values()), parts
        assert fold.train_ids and fold.val_ids and fold.test_ids
        tested += [c for c, p in parts.items() if p == {"test"}]
    # Every conversation is a test conversation in exactly one fold.
    assert sorted(tested) == sorted({q.metadata["conversation_id"] for q in locomo_questions})


def test_locomo_single_split_and_split_questions_keep_conversations_whole(
    locomo_questions: list[MetaQuestion],
) -> None:
    fold = split_once(locomo_questions, val_frac=0.2, test_frac=0.2, seed=3)
    assert all(len(p) == 1 for p in _parts_of(fold, locomo_questions).values())
    train, val, test = split_questions(locomo_questions, SplitConfig(folds=5, fold=2, val_frac=0.1))
    convs = [{q.metadata["conversation_id"] for q in part} for part in (train, val, test)]
    assert not (convs[0] & convs[1]) and not (convs[0] & convs[2]) and not (convs[1] & convs[2])


def test_more_folds_than_conversations_is_refused_with_the_counts(locomo_questions: list[MetaQuestion]) -> None:
    with pytest.raises(ConfigError, match=r"k=6 folds cannot be formed from 5 conversations"):
        make_folds(locomo_questions, k=6, n_val=10, seed=0)


def test_two_conversations_cannot_give_a_fold_all_three_parts(locomo_questions: list[MetaQuestion]) -> None:
    two = [q for q in locomo_questions if q.metadata["conversation_id"] in {"conv-26", "conv-30"}]
    assert len({q.metadata["conversation_id"] for q in two}) == 2
    with pytest.raises(ConfigError, match="no training question"):
        make_folds(two, k=2, n_val=5, seed=0)


def test_questions_without_a_conversation_are_split_one_by_one_as_before() -> None:
    qs = [MetaQuestion(f"q{i}", "?", "a", "generic", metadata={"conversation_id": f"q{i}"}) for i in range(10)]
    assert [len(f.test_ids) for f in make_folds(qs, k=5, n_val=1, seed=0)] == [2, 2, 2, 2, 2]


def test_split_by_question_is_an_explicit_opt_out(locomo_questions: list[MetaQuestion]) -> None:
    two = [q for q in locomo_questions if q.metadata["conversation_id"] in {"conv-26", "conv-30"}]
    train, val, test = split_questions(two, SplitConfig(val_frac=0.2, test_frac=0.2, group_by="question"))
    assert train and val and test
    with pytest.raises(ConfigError, match="no training conversation"):
        split_questions(two, SplitConfig(val_frac=0.2, test_frac=0.2))
