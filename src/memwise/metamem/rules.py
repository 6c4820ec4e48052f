"""The meta-memory E: a small, versioned set of rules on how to use retrieved memory fragments.

The public MetaMem reference lost rule identity (new ids were ``len(E)``, every step renumbered all rules),
ignored edits to missing ids without a trace, never bounded or de-duplicated E, and applied hundreds of raw
conflicting edits whenever the consolidation call failed. This module is the fix, as pure data:

- ids (``R1``, ``R2``, ...) are minted from ``RuleSet.next_id``, which travels with the set, so an id is never
  reused after a delete and never renumbered;
- :meth:`RuleSet.apply` returns a *new* set and accounts for every edit: applied, merged into an existing
  rule, or rejected with a reason code (see :data:`RejectReason`);
- :func:`fallback_subset` picks a small, de-conflicted subset of raw proposals when consolidation fails;
- :class:`RuleHistory` keeps every version with the edits that produced it, so a diff can say which step
  and which questions caused each change.

Example::

    rules = RuleSet()
    add = Operation(op="add", text="When fragments disagree, prefer the newest.", step=1, question_ids=("q7",))
    result = rules.apply([add], step=1)
    render(result.new_set)  # '[R1] When fragments disagree, prefer the newest.'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
                    twin = _nearest(clean_text(op.text or ""), live.values(), similarity, threshold, skip=None)
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


def _nearest(
    text: str, rules: Iterable[Rule], similarity: Similarity, threshold: float, *, skip: str | None
) -> tuple[str, float] | None:
    """The most similar rule scoring ``>= threshold`` (ties go to the lowest id), as ``(id, score)``."""
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
    if _nearest(text, live.values(), similarity, threshold, skip=current.id) is not None:
        return Rejected(op, "duplicate")
    live[current.id] = replace(current, text=text, updated_step=step)
    return Applied(op, current.id)


@dataclass(slots=True)
class _Cluster:
    """Near-identical proposals; the earliest one leads and speaks for the group."""

    lead: Operation
    first: int
    proposals: set[int] = field(default_factory=set)
    question_ids: list[str] = field(default_factory=list)

    def join(self, op: Operation, proposal: int) -> None:
        self.proposals.add(proposal)
        self.question_ids.extend(q for q in op.question_ids if q not in self.question_ids)

    @property
    def text(self) -> str:
        return clean_text(self.lead.text or "")

    def merged_op(self) -> Operation:
        return replace(self.lead, question_ids=tuple(self.question_ids))


def _cluster(items: Iterable[tuple[int, int, Operation]], similarity: Similarity, threshold: float) -> list[_Cluster]:
    clusters: list[_Cluster] = []
    for order, proposal, op in items:
        text = clean_text(op.text or "")
        home = next((c for c in clusters if similarity(text, c.text) >= threshold), None)
        if home is None:
            home = _Cluster(lead=op, first=order)
            clusters.append(home)
        home.join(op, proposal)
    return clusters


def _useful(op: Operation, rules: RuleSet, similarity: Similarity, threshold: float) -> bool:
    """Whether ``apply`` would act on the edit alone: a known target, acceptable text, a real change."""
    current = rules.get(op.rule_id) if op.rule_id is not None else None
    if op.rule_id is not None and current is None:
        return False
    if op.op == "delete":
        return True
    if text_problem(op.text or "", max_words=rules.max_words) is not None:
        return False
    if current is None:
        return True
    text = clean_text(op.text or "")
    return text != current.text and _nearest(text, rules, similarity, threshold, skip=current.id) is None


def fallback_subset(
    proposals: Sequence[Sequence[Operation]],
    rules: RuleSet,
    *,
    limit: int = FALLBACK_LIMIT,
    similarity: Similarity = token_jaccard,
    threshold: float = DUPLICATE_THRESHOLD,
) -> list[Operation]:
    """A small, conflict-free subset of a step's raw proposals, for when the consolidation call fails.

    ``proposals`` holds one sequence per question. Applying them all (the reference's fallback) piles up
    hundreds of contradicting edits; instead, deterministically:

    1. drop edits that :meth:`RuleSet.apply` would reject or merge anyway: unknown ids, empty or over-long
       text, updates that change nothing or copy another rule;
    2. per rule id keep one edit: an update beats a delete; competing updates are grouped by similarity and
       the group proposed by the most questions wins, ties to the earliest; its lead edit is kept;
    3. group near-duplicate adds and drop those that duplicate an existing rule; at most as many adds as
       the set has free slots;
    4. rank updates, then adds, then deletes (deleting is the riskiest edit), each by question support, then
       by first appearance; return at most ``limit``. Kept edits carry the question ids of their whole group.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    flat = [(proposal, op) for proposal, ops in enumerate(proposals) for op in ops]
    usable = [(order, p, op) for order, (p, op) in enumerate(flat) if _useful(op, rules, similarity, threshold)]
    ranked: list[tuple[int, _Cluster]] = []
    for rule_id in sorted({op.rule_id for _, _, op in usable if op.rule_id is not None}, key=rule_number):
        mine = [item for item in usable if item[2].rule_id == rule_id]
        updates = _cluster((i for i in mine if i[2].op == "update"), similarity, threshold)
        if updates:
            ranked.append((0, min(updates, key=lambda c: (-len(c.proposals), c.first))))
        else:
            deletes = _Cluster(lead=mine[0][2], first=mine[0][0])
            for _, proposal, op in mine:
                deletes.join(op, proposal)
            ranked.append((2, deletes))
    adds = _cluster((i for i in usable if i[2].op == "add"), similarity, threshold)
    fresh = [c for c in adds if _nearest(c.text, rules, similarity, threshold, skip=None) is None]
    fresh.sort(key=lambda c: (-len(c.proposals), c.first))
    ranked.extend((1, c) for c in fresh[: rules.max_rules - len(rules)])
    ranked.sort(key=lambda pair: (pair[0], -len(pair[1].proposals), pair[1].first))
    return [cluster.merged_op() for _, cluster in ranked[:limit]]


# --------------------------------------------------------------------------------------------
# Versions, diffs and rendering


def _outcome_dict(item: Applied | Rejected | Merged) -> dict[str, Any]:
    data: dict[str, Any] = {"op": item.op.to_dict()}
    data.update({k: v for k, v in item._asdict().items() if k != "op"})
    return data


@dataclass(frozen=True, slots=True)
class RuleSetVersion:
    """One saved version of E with the edits that produced it (empty for a starting point)."""

    step: int
    rules: RuleSet
    ops_applied: tuple[Applied, ...] = ()
    ops_rejected: tuple[Rejected, ...] = ()
    ops_merged: tuple[Merged, ...] = ()
    note: str = ""

    @property
    def version(self) -> int:
        """The rule set's own version, so the two can never disagree."""
        return self.rules.version

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the rules and every operation applied, rejected or merged at this step."""
        return {
            "version": self.version,
            "step": self.step,
            "note": self.note,
            "rules": self.rules.to_dict(),
            "ops_applied": [_outcome_dict(x) for x in self.ops_applied],
            "ops_rejected": [_outcome_dict(x) for x in self.ops_rejected],
            "ops_merged": [_outcome_dict(x) for x in self.ops_merged],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSetVersion:
        """The inverse of :meth:`to_dict`."""
        version = cls(
            step=int(data["step"]),
            rules=RuleSet.from_dict(data["rules"]),
            ops_applied=tuple(Applied(Operation.from_dict(x["op"]), str(x["rule_id"])) for x in data["ops_applied"]),
            ops_rejected=tuple(Rejected(Operation.from_dict(x["op"]), x["reason"]) for x in data["ops_rejected"]),
            ops_merged=tuple(
                Merged(Operation.from_dict(x["op"]), str(x["into"]), float(x["similarity"])) for x in data["ops_merged"]
            ),
            note=str(data.get("note", "")),
        )
        if "version" in data and int(data["version"]) != version.version:
            raise ValueError(f"version {data['version']} disagrees with its rule set's version {version.version}")
        return version


@dataclass(frozen=True, slots=True)
class RuleHistory:
    """Every version of E in order, append-only: each new history is the old one plus one version.

    Versions must strictly increase, so a stale or reset rule set cannot be recorded on top of a newer one.
    """

    versions: tuple[RuleSetVersion, ...] = ()

    def __post_init__(self) -> None:
        """Refuse versions that do not strictly increase."""
        object.__setattr__(self, "versions", tuple(self.versions))
        numbers = [v.version for v in self.versions]
        if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
            raise ValueError(f"versions must strictly increase, got {numbers}")

    @classmethod
    def start(cls, rules: RuleSet, *, step: int = 0, note: str = "initial") -> RuleHistory:
        """A history whose first version is ``rules`` as given (no edits behind it)."""
        return cls((RuleSetVersion(step=step, rules=rules, note=note),))

    def __len__(self) -> int:
        return len(self.versions)

    def __iter__(self) -> Iterator[RuleSetVersion]:
        return iter(self.versions)

    @property
    def latest(self) -> RuleSetVersion:
        """The newest version; LookupError on an empty history."""
        if not self.versions:
            raise LookupError("the history is empty; start it with RuleHistory.start(rule_set)")
        return self.versions[-1]

    def at(self, version: int) -> RuleSetVersion:
        """The saved version with this number; ``KeyError`` if it was never recorded."""
        for item in self.versions:
            if item.version == version:
                return item
        raise KeyError(f"version {version} is not in the history ({[v.version for v in self.versions]})")

    def at_step(self, step: int) -> RuleSet:
        """The rules as they stood after training step ``step`` (0: the initial rules).

        Raises:
            KeyError: the run has no such step; the message lists the steps it has.
        """
        for item in self.versions:
            if item.step == step:
                return item.rules
        raise KeyError(f"step {step} is not in the history (steps: {[v.step for v in self.versions]})")

    def append(self, version: RuleSetVersion) -> RuleHistory:
        """A new history with ``version`` at the end (histories are immutable)."""
        return RuleHistory((*self.versions, version))

    def record(self, result: ApplyResult, *, note: str = "") -> RuleHistory:
        """The history with ``result.new_set`` appended, together with the edits behind it."""
        return self.append(
            RuleSetVersion(
                step=result.step,
                rules=result.new_set,
                ops_applied=result.applied,
                ops_rejected=result.rejected,
                ops_merged=result.merged,
                note=note,
            )
        )

    def changes_to(self, rule_id: str, *, after: int, upto: int) -> list[tuple[int, Applied]]:
        """``(step, edit)`` for every applied edit of ``rule_id`` in versions ``after < v <= upto``."""
        return [
            (item.step, applied)
            for item in self.versions
            if after < item.version <= upto
            for applied in item.ops_applied
            if applied.rule_id == rule_id
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the checkpoint a run resumes from."""
        return {"versions": [v.to_dict() for v in self.versions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleHistory:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(RuleSetVersion.from_dict(v) for v in data["versions"]))


@dataclass(frozen=True, slots=True)
class RuleDiff:
    """How E changed between two versions, matched by id (ids are stable, so this is meaningful)."""

    from_version: int
    to_version: int
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()
    changed: tuple[tuple[Rule, Rule], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff(a: RuleSet, b: RuleSet) -> RuleDiff:
    """What it takes to go from ``a`` to ``b``; each list is ordered by id number."""
    before = {rule.id: rule for rule in a.rules}
    after = {rule.id: rule for rule in b.rules}
    return RuleDiff(
        from_version=a.version,
        to_version=b.version,
        added=tuple(rule for rule in b.rules if rule.id not in before),
        removed=tuple(rule for rule in a.rules if rule.id not in after),
        changed=tuple((before[r.id], r) for r in b.rules if r.id in before and before[r.id].text != r.text),
    )


def render(rule_set: RuleSet) -> str:
    """E as prompt text, one ``[R3] rule`` line per rule, so reflections can cite ids; ``""`` when empty."""
    return "\n".join(f"[{rule.id}] {rule.text}" for rule in rule_set.rules)


def _provenance_lines(history: RuleHistory, change: RuleDiff, rule_id: str) -> list[str]:
    found = history.changes_to(rule_id, after=change.from_version, upto=change.to_version)
    if not found:
        return ["    (no recorded edit)"]
    lines = []
    for step, applied in found:
        questions = ", ".join(applied.op.question_ids) or "no question ids"
        why = f"; reason: {applied.op.reason}" if applied.op.reason else ""
        lines.append(f"    {applied.op.op} at step {step} from {questions}{why}")
    return lines


def render_diff(change: RuleDiff, history: RuleHistory) -> str:
    """A readable diff in which every change names the step and the questions that produced it."""
    lines = [
        f"v{change.from_version} -> v{change.to_version}: {len(change.added)} added, "
        f"{len(change.removed)} removed, {len(change.changed)} changed"
    ]
    for rule in change.added:
        lines += [f"+ [{rule.id}] {rule.text}", *_provenance_lines(history, change, rule.id)]
    for old, new in change.changed:
        lines += [f"~ [{old.id}] {old.text}", f"  => {new.text}", *_provenance_lines(history, change, old.id)]
    for rule in change.removed:
        lines += [f"- [{rule.id}] {rule.text}", *_provenance_lines(history, change, rule.id)]
    return "\n".join(lines)
