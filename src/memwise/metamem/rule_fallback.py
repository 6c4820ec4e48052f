"""The fallback when MetaMem's consolidation call fails: a small, de-conflicted subset of raw proposals.

Applying every raw proposal (what the public reference did) piles up hundreds of contradicting edits;
:func:`fallback_subset` keeps a few, deterministically, that :meth:`RuleSet.apply` would act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from memwise.metamem.rules import (
    DUPLICATE_THRESHOLD,
    FALLBACK_LIMIT,
    Operation,
    RuleSet,
    Similarity,
    clean_text,
    nearest_rule,
    rule_number,
    text_problem,
    token_jaccard,
)

__all__ = ["fallback_subset"]


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
    return text != current.text and nearest_rule(text, rules, similarity, threshold, skip=current.id) is None


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
    fresh = [c for c in adds if nearest_rule(c.text, rules, similarity, threshold, skip=None) is None]
    fresh.sort(key=lambda c: (-len(c.proposals), c.first))
    ranked.extend((1, c) for c in fresh[: rules.max_rules - len(rules)])
    ranked.sort(key=lambda pair: (pair[0], -len(pair[1].proposals), pair[1].first))
    return [cluster.merged_op() for _, cluster in ranked[:limit]]
