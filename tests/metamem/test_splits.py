"""Folds and single splits: disjointness, coverage, stratification, determinism, keyed by question id."""

from __future__ import annotations

from collections import Counter

import pytest

from memwise.exceptions import ConfigError
from memwise.metamem.data import MetaQuestion
from memwise.metamem.splits import Fold, apportion, make_folds, split_once

SIZES = {"multi-session": 41, "temporal-reasoning": 30, "knowledge-update": 19, "single-session-user": 13}


def _questions(sizes: dict[str, int] = SIZES) -> list[MetaQuestion]:
    out = []
    for qtype, n in sizes.items():
        # Every question of a type reads the same: splits must still keep them apart by id.
        out += [MetaQuestion(f"{qtype}-{i}", f"a {qtype} question", "gold", qtype) for i in range(n)]
    return out


def _types(ids: tuple[str, ...], questions: list[MetaQuestion]) -> Counter[str]:
    type_of = {q.question_id: q.question_type for q in questions}
    return Counter(type_of[i] for i in ids)


def test_test_sets_are_disjoint_and_cover_every_question() -> None:
    questions = _questions()
    folds = make_folds(questions, k=5, n_val=10, seed=0)
    tests = [qid for fold in folds for qid in fold.test_ids]
    assert len(tests) == len(set(tests)) == len(questions)
    assert set(tests) == {q.question_id for q in questions}


def test_validation_sets_are_disjoint_across_folds_and_from_their_folds_train_and_test() -> None:
    questions = _questions()
    folds = make_folds(questions, k=5, n_val=10, seed=0)
    vals = [qid for fold in folds for qid in fold.val_ids]
    assert len(vals) == len(set(vals)) == 5 * 10
    everyone = {q.question_id for q in questions}
    for fold in folds:
        train, val, test = set(fold.train_ids), set(fold.val_ids), set(fold.test_ids)
        assert not (train & val or train & test or val & test)
        assert train | val | test == everyone
        assert len(fold.train_ids) == len(train)


def test_each_fold_tests_on_every_type_within_one_question_of_its_share() -> None:
    questions = _questions()
    for fold in make_folds(questions, k=5, n_val=10, seed=3):
        counts = _types(fold.test_ids, questions)
        for qtype, n in SIZES.items():
            assert abs(counts[qtype] - n / 5) < 1, (qtype, counts)


def test_validation_is_stratified_over_the_chunk_it_is_drawn_from() -> None:
    questions = _questions()
    folds = make_folds(questions, k=5, n_val=10, seed=1)
    for i, fold in enumerate(folds):
        source = folds[(i + 1) % 5].test_ids
        assert set(fold.val_ids) <= set(source)  # the rotation: fold i validates on chunk i + 1
        chunk, val = _types(source, questions), _types(fold.val_ids, questions)
        for qtype in SIZES:
            assert abs(val[qtype] - 10 * chunk[qtype] / len(source)) < 1, (qtype, val, chunk)


def test_reference_sizes_500_questions_5_folds_50_validation() -> None:
    questions = _questions({"a": 133, "b": 133, "c": 78, "d": 70, "e": 30, "f": 56})
    folds = make_folds(questions, k=5, n_val=50, seed=42)
    assert [(len(f.train_ids), len(f.val_ids), len(f.test_ids)) for f in folds] == [(350, 50, 100)] * 5


def test_same_seed_same_folds_and_other_seed_other_folds() -> None:
    questions = _questions()
    assert make_folds(questions, k=5, n_val=8, seed=7) == make_folds(questions, k=5, n_val=8, seed=7)
    first = make_folds(questions, k=5, n_val=8, seed=7)
    second = make_folds(questions, k=5, n_val=8, seed=8)
    assert [f.test_ids for f in first] != [f.test_ids for f in second]


def test_ids_come_back_in_input_order() -> None:
    questions = _questions()
    position = {q.question_id: i for i, q in enumerate(questions)}
    for fold in make_folds(questions, k=4, n_val=5, seed=0):
        for ids in (fold.train_ids, fold.val_ids, fold.test_ids):
            assert [position[i] for i in ids] == sorted(position[i] for i in ids)


@pytest.mark.parametrize(("k", "n_val"), [(1, 0), (200, 0), (5, 21), (5, -1)])
def test_impossible_fold_settings_are_refused(k: int, n_val: int) -> None:
    with pytest.raises(ConfigError):
        make_folds(_questions(), k=k, n_val=n_val, seed=0)


def test_duplicate_ids_are_refused() -> None:
    questions = _questions()
    with pytest.raises(ConfigError, match="appears twice"):
        make_folds([*questions, questions[0]], k=5, n_val=1, seed=0)
    with pytest.raises(ConfigError, match="appears twice"):
        split_once([*questions, questions[0]], val_frac=0.1, test_frac=0.2, seed=0)


def test_split_once_sizes_disjoint_cover_and_stratified() -> None:
    questions = _questions()
    fold = split_once(questions, val_frac=0.1, test_frac=0.2, seed=5)
    assert isinstance(fold, Fold)
    n = len(questions)
    assert (len(fold.val_ids), len(fold.test_ids)) == (round(0.1 * n), round(0.2 * n))
    parts = [set(fold.train_ids), set(fold.val_ids), set(fold.test_ids)]
    assert sum(map(len, parts)) == n and set().union(*parts) == {q.question_id for q in questions}
    test_counts = _types(fold.test_ids, questions)
    for qtype, size in SIZES.items():
        assert abs(test_counts[qtype] - size * len(fold.test_ids) / n) < 1
    assert split_once(questions, val_frac=0.1, test_frac=0.2, seed=5) == fold
    assert split_once(questions, val_frac=0.1, test_frac=0.2, seed=6) != fold


@pytest.mark.parametrize(("val_frac", "test_frac"), [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5)])
def test_split_once_refuses_fractions_that_cannot_work(val_frac: float, test_frac: float) -> None:
    with pytest.raises(ConfigError):
        split_once(_questions(), val_frac=val_frac, test_frac=test_frac, seed=0)


def test_apportion_gives_each_group_the_floor_or_ceiling_of_its_quota() -> None:
    counts = {"a": 41, "b": 30, "c": 19, "d": 13, "e": 1}
    size = sum(counts.values())
    for total in range(size + 1):
        shares = apportion(total, counts)
        assert sum(shares.values()) == total
        for name, count in counts.items():
            assert abs(shares[name] - total * count / size) < 1
            assert 0 <= shares[name] <= count
