"""The meta-memory E: a small, versioned set of rules on how to use retrieved memory fragments.

The public MetaMem reference lost rule identity (new ids were ``len(E)``, every step renumbered all rules),
ignored edits to missing ids without a trace, never bounded or de-duplicated E, and applied hundreds of raw
conflicting edits whenever the consolidation call failed. This module is the fix, as pure data:

- ids (``R1``, ``R2``, ...) are minted from ``RuleSet.next_id``, which travels with the set, so an id is never
  reused after a delete and never renumbered;
- :meth:`RuleSet.apply` returns a *new* set and accounts for every edit: applied, merged into an existing
  rule, or rejected with a reason code (see :data:`RejectReason`);
- :func:`~memwise.metamem.rule_fallback.fallback_subset` picks a small, de-conflicted subset of raw
  proposals when consolidation fails;
- :class:`~memwise.metamem.rule_history.RuleHistory` keeps every version with the edits that produced it,
  so a diff can say which step and which questions caused each change.

Example::

    rules = RuleSet()
    add = Operation(op="add", text="When fragments disagree, prefer the newest.", step=1, question_ids=("q7",))
    result = rules.apply([add], step=1)
    render(result.new_set)  # '[R1] When fragments disagree, prefer the newest.'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal, NamedTuple, get_args

OpKind = Literal["add", "update", "delete"]
RejectReason = Literal["missing", "deleted", "conflict", "empty", "too_long", "duplicate", "cap"]
"""Why :meth:`RuleSet.apply` refused an edit.

``missing``: the target id is not in the set. ``deleted``: the id was deleted earlier in the same batch.
``conflict``: an acceptable edit of the same id came earlier in the batch (the first one wins).
``empty``: no text. ``too_long``: more than ``max_words`` words; rejected rather than truncated, because a cut
rule can say something else (``"prefer the newest fact unless"``). ``duplicate``: an update would make the
rule a near-duplicate of another rule. ``cap``: the set already holds ``max_rules`` rules.
"""
Similarity = Callable[[str, str], float]
"""A pure, deterministic score in [0, 1]; an embedding cosine over cached vectors fits as well as Jaccard."""

DEFAULT_MAX_RULES = 30
DEFAULT_MAX_WORDS = 30
DUPLICATE_THRESHOLD = 0.8
FALLBACK_LIMIT = 5

_KINDS: tuple[str, ...] = get_args(OpKind)
_ID = re.compile(r"R([1-9][0-9]*)")
_TOKEN = re.compile(r"\w+")


def rule_number(rule_id: str) -> int:
    """The counter value inside a rule id (``"R12"`` -> 12); rules sort by it, never by position."""
    match = _ID.fullmatch(rule_id)
    if match is None:
        raise ValueError(f"rule id {rule_id!r} is not of the form R<n> with n >= 1")
    return int(match.group(1))


def clean_text(text: str) -> str:
    """Collapse all whitespace: a rule is one prompt line, and spacing alone must not make texts differ."""
    return " ".join(text.split())


@lru_cache(maxsize=4096)
def _tokens(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text.lower()))


def token_jaccard(a: str, b: str) -> float:
    """Jaccard overlap of lower-cased word tokens, punctuation ignored: cheap, deterministic, model-free.

    >>> token_jaccard("Prefer the newest fact.", "prefer the NEWEST fact")
    1.0
    """
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of E. ``id`` is stable for the rule's whole life; the steps say when it was born and last edited."""

    id: str
    text: str
    created_step: int
    updated_step: int

    def __post_init__(self) -> None:
        """Refuse an id that is not ``R<number>`` and an update dated before the creation."""
        rule_number(self.id)
        if self.updated_step < self.created_step:
            raise ValueError(f"rule {self.id}: updated_step {self.updated_step} precedes created_step")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in the rule history."""
        return {"id": self.id, "text": self.text, "created_step": self.created_step, "updated_step": self.updated_step}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            created_step=int(data["created_step"]),
            updated_step=int(data["updated_step"]),
        )


@dataclass(frozen=True, slots=True)
class Operation:
    """One proposed edit of E, with where it came from (training step, question ids, the model's reason).

    ``add`` takes ``text`` and no ``rule_id`` (ids are minted by the set, never chosen by a model);
    ``update`` takes both; ``delete`` takes ``rule_id`` (any text on it is kept as the proposer's note and never
    applied, since models often echo the rule they delete). A malformed shape raises ``ValueError`` at
    construction, so a parser turns it into a parse failure; content problems (empty or long text, unknown
    id) are for :meth:`RuleSet.apply` to reject and count.
    """

    op: OpKind
    rule_id: str | None = None
    text: str | None = None
    step: int = 0
    question_ids: tuple[str, ...] = ()
    reason: str | None = None

    def __post_init__(self) -> None:
        """Refuse an operation the rule set could not apply: an unknown op, or a missing or extra field."""
        if self.op not in _KINDS:
            raise ValueError(f"op must be one of {_KINDS}, got {self.op!r}")
        if self.op == "add" and self.rule_id is not None:
            raise ValueError("an add must not name a rule_id: the rule set mints ids")
        if self.op != "add" and not self.rule_id:
            raise ValueError(f"{self.op} needs the rule_id it targets")
        if self.op != "delete" and self.text is None:
            raise ValueError(f"{self.op} needs text")
        object.__setattr__(self, "question_ids", tuple(self.question_ids))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in the rule history."""
        return {
            "op": self.op,
            "rule_id": self.rule_id,
            "text": self.text,
            "step": self.step,
            "question_ids": list(self.question_ids),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """The inverse of :meth:`to_dict`; ``step`` and the provenance fields may be absent."""
        return cls(
            op=data["op"],
            rule_id=data.get("rule_id"),
            text=data.get("text"),
            step=int(data.get("step", 0)),
            question_ids=tuple(str(q) for q in data.get("question_ids", ())),
            reason=data.get("reason"),
        )


class Applied(NamedTuple):
    """An edit that changed E; ``rule_id`` is the id it touched (for an add, the id minted for it)."""

    op: Operation
    rule_id: str


class Merged(NamedTuple):
    """An edit absorbed by an existing rule: a near-duplicate add, or an update that changes nothing."""

    op: Operation
    into: str
    similarity: float


class Rejected(NamedTuple):
    """An edit that was refused, and why (a :data:`RejectReason` code, so rejections can be counted)."""

    op: Operation
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one :meth:`RuleSet.apply` did. Every input edit is in exactly one of the three lists, in input order."""

    new_set: RuleSet
    step: int
    applied: tuple[Applied, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    merged: tuple[Merged, ...] = ()

    def rejection_counts(self) -> dict[str, int]:
        """Rejections per reason code, for logs and the run ledger."""
        counts: dict[str, int] = {}
        for item in self.rejected:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class RuleSet:
    """E at one version: rules ordered by id number, the id counter, and the caps that bound growth.

    Frozen: :meth:`apply` returns a new set with ``version + 1``. The caps are part of the set (and of its
    JSON) so a resumed run enforces the same bounds as the run that wrote the checkpoint.
    """

    rules: tuple[Rule, ...] = ()
    version: int = 0
    next_id: int = 1
    max_rules: int = DEFAULT_MAX_RULES
    max_words: int = DEFAULT_MAX_WORDS

    def __post_init__(self) -> None:
        """Refuse a set whose ids repeat, are out of order or could be minted again, and bad limits."""
        object.__setattr__(self, "rules", tuple(self.rules))
        numbers = [rule_number(rule.id) for rule in self.rules]
        if numbers != sorted(set(numbers)):
            raise ValueError(f"rule ids must be unique and ordered by number, got {[r.id for r in self.rules]}")
        if numbers and numbers[-1] >= self.next_id:
            raise ValueError(f"next_id {self.next_id} would re-mint R{numbers[-1]}; it must exceed every id")
        if self.version < 0 or self.next_id < 1 or self.max_rules < 1 or self.max_words < 1:
            raise ValueError("version must be >= 0, and next_id, max_rules and max_words >= 1")
        if len(self.rules) > self.max_rules:
            raise ValueError(f"{len(self.rules)} rules exceed max_rules={self.max_rules}; raise the cap or drop rules")

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    @property
    def ids(self) -> tuple[str, ...]:
        """The rule ids in order."""
        return tuple(rule.id for rule in self.rules)

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, or ``None``."""
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    def apply(
        self,
        ops: Iterable[Operation],
        *,
        step: int,
        similarity: Similarity = token_jaccard,
        threshold: float = DUPLICATE_THRESHOLD,
    ) -> ApplyResult:
        """Execute one batch of edits and return the next version; ``self`` is left as it was.

        Within a batch the first acceptable edit of an id wins: a later edit of the same id is rejected as
        ``deleted`` (after a delete) or ``conflict``; an edit refused for its own text claims nothing. The
        surviving edits then run deletes first (so freed slots count against the cap), then updates, then adds,
        each kind in input order. An add whose text scores ``>= threshold`` against a live rule (including one
        added earlier in the batch) is merged into it; an update that would copy another rule is rejected.
        """
        live = {rule.id: rule for rule in self.rules}
        claimed: dict[str, OpKind] = {}
        accepted: list[tuple[int, Operation]] = []
        outcomes: list[tuple[int, Applied | Rejected | Merged]] = []
        for index, op in enumerate(ops):
            reason = self._precheck(op, claimed)
            if reason is not None:
                outcomes.append((index, Rejected(op, reason)))
                continue
            if op.rule_id is not None:
                claimed[op.rule_id] = op.op
            accepted.append((index, op))

        next_id = self.next_id
        for kind in ("delete", "update", "add"):
            for index, op in (pair for pair in accepted if pair[1].op == kind):
                outcome: Applied | Rejected | Merged
                if op.op == "delete":
                    assert op.rule_id is not None
                    del live[op.rule_id]
                    outcome = Applied(op, op.rule_id)
                elif op.op == "update":
                    outcome = _update(live, op, step, similarity, threshold)
                else:
                    twin = nearest_rule(clean_text(op.text or ""), live.values(), similarity, threshold, skip=None)
                    if twin is not None:
                        outcome = Merged(op, twin[0], twin[1])
                    elif len(live) >= self.max_rules:
                        outcome = Rejected(op, "cap")
                    else:
                        rule = Rule(f"R{next_id}", clean_text(op.text or ""), created_step=step, updated_step=step)
                        next_id += 1
                        live[rule.id] = rule
                        outcome = Applied(op, rule.id)
                outcomes.append((index, outcome))

        outcomes.sort(key=lambda pair: pair[0])
        new_rules = tuple(sorted(live.values(), key=lambda rule: rule_number(rule.id)))
        return ApplyResult(
            new_set=replace(self, rules=new_rules, version=self.version + 1, next_id=next_id),
            step=step,
            applied=tuple(o for _, o in outcomes if isinstance(o, Applied)),
            rejected=tuple(o for _, o in outcomes if isinstance(o, Rejected)),
            merged=tuple(o for _, o in outcomes if isinstance(o, Merged)),
        )

    def _precheck(self, op: Operation, claimed: Mapping[str, OpKind]) -> RejectReason | None:
        """Checks that need no other edit of the batch to have run: target, ordering, text shape."""
        if op.rule_id is not None:
            if op.rule_id in claimed:
                return "deleted" if claimed[op.rule_id] == "delete" else "conflict"
            if self.get(op.rule_id) is None:
                return "missing"
        return None if op.op == "delete" else text_problem(op.text or "", max_words=self.max_words)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, limits included, as kept in the rule history."""
        return {
            "version": self.version,
            "next_id": self.next_id,
            "max_rules": self.max_rules,
            "max_words": self.max_words,
            "rules": [rule.to_dict() for rule in self.rules],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        """The inverse of :meth:`to_dict`; histories written before the limits existed get the defaults."""
        return cls(
            rules=tuple(Rule.from_dict(item) for item in data["rules"]),
            version=int(data["version"]),
            next_id=int(data["next_id"]),
            max_rules=int(data.get("max_rules", DEFAULT_MAX_RULES)),
            max_words=int(data.get("max_words", DEFAULT_MAX_WORDS)),
        )


MIN_WORDS = 2
"""A rule is a sentence: fewer words (or no word with a letter, such as "...") cannot guide anyone."""


def text_problem(text: str, *, max_words: int) -> RejectReason | None:
    """Why a rule text cannot enter E (``empty`` or ``too_long``), or ``None`` when it can.

    Example:
        >>> text_problem("...", max_words=30), text_problem("Prefer the newest fragment.", max_words=30)
        ('empty', None)
    """
    words = [w for w in text.split() if any(ch.isalpha() for ch in w)]
    if len(words) < MIN_WORDS:
        return "empty"
    return "too_long" if len(text.split()) > max_words else None


def nearest_rule(
    text: str, rules: Iterable[Rule], similarity: Similarity, threshold: float, *, skip: str | None
) -> tuple[str, float] | None:
    """The most similar rule scoring ``>= threshold`` (ties go to the lowest id), as ``(id, score)``.

    ``skip`` leaves one rule out (the one an update edits, which would always match itself).
    """
    best: tuple[str, float] | None = None
    for rule in sorted(rules, key=lambda r: rule_number(r.id)):
        if rule.id == skip:
            continue
        score = similarity(text, rule.text)
        if score >= threshold and (best is None or score > best[1]):
            best = (rule.id, score)
    return best


def _update(
    live: dict[str, Rule], op: Operation, step: int, similarity: Similarity, threshold: float
) -> Applied | Rejected | Merged:
    assert op.rule_id is not None and op.text is not None
    current = live[op.rule_id]
    text = clean_text(op.text)
    if text == current.text:
        return Merged(op, current.id, 1.0)
    if nearest_rule(text, live.values(), similarity, threshold, skip=current.id) is not None:
        return Rejected(op, "duplicate")
    live[current.id] = replace(current, text=text, updated_step=step)
    return Applied(op, current.id)


def render(rule_set: RuleSet) -> str:
    """E as prompt text, one ``[R3] rule`` line per rule, so reflections can cite ids; ``""`` when empty."""
    return "\n".join(f"[{rule.id}] {rule.text}" for rule in rule_set.rules)
