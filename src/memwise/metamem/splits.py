"""Train / validation / test splits for MetaMem, stratified by question type and keyed by question id.

The reference setup runs 5 folds of 100 test, 50 validation and 350 training questions. Two
properties matter for the numbers to mean anything:

* every question is a test question in exactly one fold (test sets disjoint and covering), so the
  per-fold accuracies average to an accuracy over the whole set;
* no question is a validation question in two folds, so the best-step choice of one fold is not
  tuned on the same questions as another's.

Both hold by construction: the questions are dealt into ``k`` chunks; fold ``i`` tests on chunk ``i``
and validates on part of chunk ``i + 1`` (mod ``k``). Each chunk feeds exactly one fold's validation.

Stratification: questions are grouped by type (types in name order, each type shuffled with the
seed) and the grouped sequence is dealt round-robin. A type's questions are then a contiguous run
dealt over the chunks in turn, so every chunk gets ``floor`` or ``ceil`` of ``n_type / k`` of them:
each type's share is within one question of exact. Validation picks apportion ``n_val`` over the
types of the chunk by largest remainder, which also keeps each type within one of its exact share.

Everything keys on ``question_id``, never on the question text (the reference grouped by text, which
merges distinct questions that happen to read the same). Pure functions; ``random.Random(seed)``.

Grouping by conversation: a LoCoMo conversation carries dozens of questions about the same user. If one
of them trains and another tests, reflections (which see gold answers) can write that user's facts into
a rule, and the test score rises for the wrong reason. So questions that share
``metadata["conversation_id"]`` are one group, and a group lies wholly in train, validation or test
(:func:`group_of`); ``by="question"`` opts out, for a demo on too few conversations. LongMemEval gives
every question its own haystack, so its groups are single questions and the stratified deal above
applies unchanged. With groups larger than one question the deal is by whole groups: largest first, each
to the chunk with the fewest questions so far (seeded order among equals), and fold ``i`` validates on
whole groups of chunk ``i + 1``. When the groups are too few for the folds asked, the split is refused
with the counts rather than overlapping silently.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from memwise.exceptions import ConfigError
from memwise.metamem.data import MetaQuestion


@dataclass(frozen=True, slots=True)
class Fold:
    """One split, as question ids in the order the questions were given."""

    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        """Plain lists, for results files."""
        return {"train_ids": list(self.train_ids), "val_ids": list(self.val_ids), "test_ids": list(self.test_ids)}


def _check_ids(questions: Sequence[MetaQuestion]) -> None:
    seen: set[str] = set()
    for question in questions:
        if question.question_id in seen:
            raise ConfigError(f"question_id {question.question_id!r} appears twice; splits need unique ids")
        seen.add(question.question_id)


def group_of(question: MetaQuestion) -> str:
    """The unit a split never cuts: the question's conversation when it names one, else the question.

    Example:
        >>> group_of(MetaQuestion("q1", "?", "a", "temporal", metadata={"conversation_id": "conv-26"}))
        'conv-26'
        >>> group_of(MetaQuestion("q2", "?", "a", "temporal"))
        'q2'
    """
    conversation = question.metadata.get("conversation_id")
    return str(conversation) if conversation not in (None, "") else question.question_id


def _groups(questions: Sequence[MetaQuestion]) -> dict[str, list[str]]:
    """Question ids per group, groups and ids in input order."""
    groups: dict[str, list[str]] = {}
    for question in questions:
        groups.setdefault(group_of(question), []).append(question.question_id)
    return groups


GROUPINGS = ("conversation", "question")


def _grouped(questions: Sequence[MetaQuestion], by: str) -> bool:
    if by not in GROUPINGS:
        raise ConfigError(f"splits group by one of {', '.join(GROUPINGS)}, got {by!r}")
    return by == "conversation" and any(len(ids) > 1 for ids in _groups(questions).values())


def _deal_groups(groups: dict[str, list[str]], k: int, rng: random.Random) -> list[list[str]]:
    """Whole groups into ``k`` chunks of near-equal question counts: largest group first, to the lightest chunk."""
    names = sorted(groups)
    rng.shuffle(names)
    names.sort(key=lambda name: -len(groups[name]))  # stable: the shuffle breaks ties between equal sizes
    chunks: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for name in names:
        target = min(range(k), key=lambda i: (sizes[i], i))
        chunks[target].append(name)
        sizes[target] += len(groups[name])
    return chunks


def _take_groups(names: Sequence[str], groups: dict[str, list[str]], n: int) -> list[str]:
    """Whole groups, in the order given, until ``n`` questions are reached (at least one group when n > 0)."""
    taken: list[str] = []
    count = 0
    for name in names:
        if count >= n:
            break
        taken.append(name)
        count += len(groups[name])
    return taken


def _make_grouped_folds(questions: Sequence[MetaQuestion], *, k: int, n_val: int, seed: int) -> list[Fold]:
    groups = _groups(questions)
    if k > len(groups):
        raise ConfigError(
            f"k={k} folds cannot be formed from {len(groups)} conversations: a conversation's questions must "
            f"stay in one part (train, validation or test). Use --folds {max(len(groups), 2)} or fewer with at "
            "least 3 conversations, or more conversations"
        )
    rng = random.Random(seed)
    chunks = _deal_groups(groups, k, rng)
    order = [q.question_id for q in questions]
    folds: list[Fold] = []
    for i in range(k):
        test = {qid for name in chunks[i] for qid in groups[name]}
        val = {qid for name in _take_groups(chunks[(i + 1) % k], groups, n_val) for qid in groups[name]}
        train = [qid for qid in order if qid not in test and qid not in val]
        if not train:
            raise ConfigError(
                f"fold {i} of {k} has no training question once whole conversations go to test and validation "
                f"({len(groups)} conversations); use fewer folds, a smaller val_frac or more conversations"
            )
        folds.append(Fold(tuple(train), _in_order(val, order), _in_order(test, order)))
    return folds


def _by_type(questions: Sequence[MetaQuestion], rng: random.Random) -> dict[str, list[str]]:
    """Ids per question type, types in name order, each type's ids shuffled."""
    groups: dict[str, list[str]] = {}
    for question in questions:
        groups.setdefault(question.question_type, []).append(question.question_id)
    ordered = {name: groups[name] for name in sorted(groups)}
    for ids in ordered.values():
        rng.shuffle(ids)
    return ordered


def apportion(total: int, counts: dict[str, int]) -> dict[str, int]:
    """Share ``total`` among groups in proportion to ``counts`` (largest remainder, integer exact).

    Each share is the floor or the ceiling of its exact quota and never exceeds its count. Ties go to
    the larger group, then to the name that sorts first, so the result is deterministic.

    Example:
        >>> apportion(5, {"a": 6, "b": 3, "c": 1})
        {'a': 3, 'b': 2, 'c': 0}
    """
    size = sum(counts.values())
    if not 0 <= total <= size:
        raise ConfigError(f"cannot take {total} of {size} questions")
    if size == 0:
        return dict.fromkeys(counts, 0)
    shares = {name: total * count // size for name, count in counts.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(counts, key=lambda name: (-(total * counts[name] % size), -counts[name], name))
    for name in by_remainder[:left]:
        shares[name] += 1
    return shares


def _chunks(groups: dict[str, list[str]], k: int) -> list[list[str]]:
    """Deal the type-grouped sequence round-robin into ``k`` chunks."""
    sequence = [qid for ids in groups.values() for qid in ids]
    return [sequence[i::k] for i in range(k)]


def _pick_stratified(chunk: list[str], n: int, type_of: dict[str, str]) -> list[str]:
    """``n`` ids from ``chunk``, each type in proportion; within a type, the chunk's (shuffled) order."""
    per_type: dict[str, list[str]] = {}
    for qid in chunk:
        per_type.setdefault(type_of[qid], []).append(qid)
    shares = apportion(n, {name: len(ids) for name, ids in sorted(per_type.items())})
    return [qid for name, ids in sorted(per_type.items()) for qid in ids[: shares[name]]]


def _in_order(ids: Iterable[str], order: Sequence[str]) -> tuple[str, ...]:
    wanted = set(ids)
    return tuple(qid for qid in order if qid in wanted)


def make_folds(
    questions: Sequence[MetaQuestion], *, k: int = 5, n_val: int, seed: int, by: str = "conversation"
) -> list[Fold]:
    """``k`` folds: disjoint covering test sets, disjoint validation sets, train = the rest.

    ``n_val`` validation questions per fold are taken from the next fold's test chunk, so it can be at
    most the smallest chunk (``len(questions) // k``). With 500 questions, ``k=5`` and ``n_val=50``
    each fold has 100 test, 50 validation and 350 training questions, as in the reference setup.

    Raises:
        ConfigError: ``k`` below 2 or above the number of questions, ``n_val`` out of range, or a
            repeated ``question_id``.

    Example:
        >>> qs = [MetaQuestion(f"q{i}", "?", "a", "generic") for i in range(10)]
        >>> [len(f.test_ids) for f in make_folds(qs, k=5, n_val=1, seed=0)]
        [2, 2, 2, 2, 2]
    """
    if k < 2:
        raise ConfigError(f"k must be at least 2, got {k}")
    _check_ids(questions)
    if _grouped(questions, by):
        return _make_grouped_folds(questions, k=k, n_val=n_val, seed=seed)
    if k > len(questions):
        raise ConfigError(f"k={k} folds need at least {k} questions, got {len(questions)}")
    smallest = len(questions) // k
    if not 0 <= n_val <= smallest:
        raise ConfigError(f"n_val must be between 0 and {smallest} (the smallest test chunk), got {n_val}")
    order = [q.question_id for q in questions]
    type_of = {q.question_id: q.question_type for q in questions}
    chunks = _chunks(_by_type(questions, random.Random(seed)), k)
    folds: list[Fold] = []
    for i in range(k):
        test = set(chunks[i])
        val = set(_pick_stratified(chunks[(i + 1) % k], n_val, type_of))
        train = [qid for qid in order if qid not in test and qid not in val]
        folds.append(Fold(tuple(train), _in_order(val, order), _in_order(test, order)))
    return folds


def split_once(
    questions: Sequence[MetaQuestion], *, val_frac: float, test_frac: float, seed: int, by: str = "conversation"
) -> Fold:
    """One stratified train / validation / test split.

    The test set has ``round(test_frac * n)`` questions and the validation set ``round(val_frac * n)``,
    each apportioned over the question types by largest remainder (validation over what the test set
    left), so every type keeps its share within one question.

    Raises:
        ConfigError: a fraction outside ``[0, 1)``, fractions that leave no training question, or a
            repeated ``question_id``.

    Example:
        >>> qs = [MetaQuestion(f"q{i}", "?", "a", "generic") for i in range(10)]
        >>> fold = split_once(qs, val_frac=0.2, test_frac=0.3, seed=0)
        >>> (len(fold.train_ids), len(fold.val_ids), len(fold.test_ids))
        (5, 2, 3)
    """
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0 <= frac < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {frac}")
    _check_ids(questions)
    n = len(questions)
    n_test, n_val = round(test_frac * n), round(val_frac * n)
    if n and n_test + n_val >= n:
        raise ConfigError(f"val_frac={val_frac} and test_frac={test_frac} leave no training question of {n}")
    if _grouped(questions, by):
        return _split_once_grouped(questions, n_test=n_test, n_val=n_val, seed=seed)
    groups = _by_type(questions, random.Random(seed))
    test_shares = apportion(n_test, {name: len(ids) for name, ids in groups.items()})
    rest = {name: ids[test_shares[name] :] for name, ids in groups.items()}
    val_shares = apportion(n_val, {name: len(ids) for name, ids in rest.items()})
    test = {qid for name, ids in groups.items() for qid in ids[: test_shares[name]]}
    val = {qid for name, ids in rest.items() for qid in ids[: val_shares[name]]}
    order = [q.question_id for q in questions]
    train = [qid for qid in order if qid not in test and qid not in val]
    return Fold(tuple(train), _in_order(val, order), _in_order(test, order))


def _split_once_grouped(questions: Sequence[MetaQuestion], *, n_test: int, n_val: int, seed: int) -> Fold:
    """One split by whole conversations: seeded order, test groups until ``n_test``, then validation until ``n_val``."""
    groups = _groups(questions)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    test_names = _take_groups(names, groups, n_test)
    val_names = _take_groups(names[len(test_names) :], groups, n_val)
    if len(test_names) + len(val_names) >= len(names):
        raise ConfigError(
            f"{len(names)} conversations leave no training conversation once whole conversations go to test "
            f"({len(test_names)}) and validation ({len(val_names)}); use smaller fractions or more conversations"
        )
    test = {qid for name in test_names for qid in groups[name]}
    val = {qid for name in val_names for qid in groups[name]}
    order = [q.question_id for q in questions]
    train = [qid for qid in order if qid not in test and qid not in val]
    return Fold(tuple(train), _in_order(val, order), _in_order(test, order))


@dataclass(frozen=True)
class SplitConfig:
    """How a question set is split for one training run; the CLI's split flags are derived from these fields."""

    folds: int = field(default=1, metadata={"help": "k-fold cross-validation (1 = one split)"})
    fold: int = field(default=0, metadata={"help": "which fold to run"})
    val_frac: float = field(default=0.1, metadata={"help": "share of questions held out for validation"})
    test_frac: float = field(default=0.2, metadata={"help": "share held out for testing (one split only)"})
    seed: int = field(default=0, metadata={"help": "seeds the stratified shuffle"})
    group_by: str = field(
        default="conversation",
        metadata={"help": "keep each conversation in one part (conversation) or split question by question"},
    )

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ConfigError(f"folds must be >= 1, got {self.folds}")
        if not 0 <= self.fold < self.folds:
            raise ConfigError(f"fold must be in 0..{self.folds - 1}, got {self.fold}")


def split_questions(
    questions: Sequence[MetaQuestion], config: SplitConfig
) -> tuple[list[MetaQuestion], list[MetaQuestion], list[MetaQuestion]]:
    """The (train, validation, test) questions of one run: fold ``config.fold`` of k, or one split.

    With folds, the validation size is ``val_frac`` of the whole set, capped at one chunk, so every
    fold validates on questions no other fold validates on.

    Example:
        >>> qs = [MetaQuestion(f"q{i}", "?", "a", "generic") for i in range(10)]
        >>> [len(part) for part in split_questions(qs, SplitConfig(val_frac=0.2, test_frac=0.3))]
        [5, 2, 3]
        >>> [len(part) for part in split_questions(qs, SplitConfig(folds=5, fold=1))]
        [7, 1, 2]
    """
    if config.folds > 1:
        n_val = max(1, round(len(questions) * config.val_frac))
        chosen = make_folds(
            questions,
            k=config.folds,
            n_val=min(n_val, len(questions) // config.folds),
            seed=config.seed,
            by=config.group_by,
        )[config.fold]
    else:
        chosen = split_once(
            questions, val_frac=config.val_frac, test_frac=config.test_frac, seed=config.seed, by=config.group_by
        )
    by_id = {q.question_id: q for q in questions}
    return (
        [by_id[i] for i in chosen.train_ids],
        [by_id[i] for i in chosen.val_ids],
        [by_id[i] for i in chosen.test_ids],
    )
