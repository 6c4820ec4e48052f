"""How the meta-memory E changed: every version with the edits behind it, and readable diffs.

Each :class:`RuleSetVersion` keeps the operations that were applied, merged or rejected to make it,
with their step and question ids, so :func:`render_diff` can say which step and which questions
caused each change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from memwise.metamem.rules import Applied, ApplyResult, Merged, Operation, Rejected, Rule, RuleSet

__all__ = ["RuleDiff", "RuleHistory", "RuleSetVersion", "diff", "render_diff"]


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
