"""Offline ("sleep-time") consolidation: newer units supersede or retire similar older ones.

For each unit of a user, oldest first, the store is searched for similar *earlier* units of the same
scope, and the model decides per candidate: UPDATE (the new unit replaces it), DELETE (the new unit
shows it is wrong or obsolete) or IGNORE (both hold). Nothing is erased: an updated or deleted unit
gets ``valid_to`` = the new unit's event time, which hides it from every search with the default
filters, and metadata linking it to its successor, so :func:`history` can walk the chain and
``Filters(include_invalid=True)`` still finds it.

Units are taken one at a time, in time order, because each decision changes what later units see
(an invalidated unit is no longer a candidate). A reply that does not parse (after one repair) or a
failed call changes nothing for that unit and is counted; re-running is safe and, behind a
:class:`~memwise.llm.recorded.RecordedLLM`, costs no repeated calls.

Prompt building (:func:`build_consolidation_messages`) and parsing (:func:`parse_decisions`) are pure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, field_validator

from memwise.embed.base import Vectors
from memwise.exceptions import LLMError, ParseError
from memwise.facts.units import FACT, from_epoch
from memwise.llm.base import ChatModel, ChatRequest, Message
from memwise.llm.structured import complete_structured, parse_model
from memwise.llm.untrusted import data_notice, fence
from memwise.runs.ledger import Ledger
from memwise.store.base import Filters, Record, Store

STAGE = "consolidate"
ACTIONS = ("UPDATE", "DELETE", "IGNORE")
Action = Literal["UPDATE", "DELETE", "IGNORE"]
MAX_TEXT_CHARS = 400

SYSTEM = (
    "You keep a memory up to date. Compare a new memory with older ones. For each older memory decide: "
    "UPDATE if the new memory replaces it (same subject, newer information), DELETE if the new memory shows "
    "it is wrong, IGNORE if both can be true. Reply with JSON only. " + data_notice("new_memory", "memory")
)


class Decision(BaseModel):
    """The model's verdict on one older memory, numbered as in the prompt."""

    candidate: int
    action: Action
    reason: str = ""

    @field_validator("action", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class Decisions(BaseModel):
    """The model's structured reply: one verdict per numbered older unit."""

    decisions: list[Decision]


# --------------------------------------------------------------------------------------------
# Prompt and parsing (pure)


def _line(tag: str, record: Record, number: int | None = None) -> str:
    when = from_epoch(record.ts).strftime("%Y-%m-%d %A") if record.ts is not None else "date unknown"
    text = " ".join(record.text.split())
    if len(text) > MAX_TEXT_CHARS:
        text = text[: MAX_TEXT_CHARS - 1].rstrip() + "…"
    return fence(tag, f"({when}) {text}", attrs={"n": number} if number is not None else None)


def build_consolidation_messages(new: Record, candidates: Sequence[Record]) -> list[Message]:
    """The prompt: the new unit, then the older ones numbered from 1.

    Short numbers, not 32-hex ids, because a small model copies a number far more reliably. Each
    memory is fenced, so a stored text cannot forge another candidate or an instruction.
    """
    if not candidates:
        raise ValueError("build_consolidation_messages needs at least one older memory")
    lines = ["New memory:", _line("new_memory", new), "", "Older memories:"]
    lines.extend(_line("memory", c, i) for i, c in enumerate(candidates, start=1))
    lines.append("")
    lines.append('Reply as {"decisions": [{"candidate": 1, "action": "UPDATE|DELETE|IGNORE", "reason": "..."}]}')
    return [Message("system", SYSTEM), Message("user", "\n".join(lines))]


def consolidation_schema(n_candidates: int) -> dict[str, Any]:
    """One decision per candidate, numbers limited to 1..n, for decoders that follow a schema."""
    decision = {
        "type": "object",
        "properties": {
            "candidate": {"type": "integer", "enum": list(range(1, n_candidates + 1))},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "reason": {"type": "string"},
        },
        "required": ["candidate", "action", "reason"],
        "additionalProperties": False,
    }
    decisions = {"type": "array", "items": decision, "minItems": 1, "maxItems": n_candidates}
    return {
        "type": "object",
        "properties": {"decisions": decisions},
        "required": ["decisions"],
        "additionalProperties": False,
    }


def parse_decisions(text: str) -> Decisions:
    """The reply as :class:`Decisions`; raises ParseError(raw=text) when it is not."""
    return parse_model(text, Decisions)


def check_decisions(decisions: Decisions, n_candidates: int) -> tuple[dict[int, Decision], int]:
    """Decisions by 0-based candidate index, and how many were unusable (out of range or repeated).

    A candidate the model did not mention is left alone (an implicit IGNORE): doing nothing is the
    only safe reading of silence.

    Example:
        >>> d = Decisions(decisions=[Decision(candidate=1, action="delete"), Decision(candidate=7, action="UPDATE")])
        >>> kept, bad = check_decisions(d, 2)
        >>> {i: x.action for i, x in kept.items()}, bad
        ({0: 'DELETE'}, 1)
    """
    kept: dict[int, Decision] = {}
    bad = 0
    for decision in decisions.decisions:
        index = decision.candidate - 1
        if not 0 <= index < n_candidates or index in kept:
            bad += 1
            continue
        kept[index] = decision
    return kept, bad


# --------------------------------------------------------------------------------------------
# Running it


@dataclass(slots=True)
class ConsolidationReport:
    """What a consolidation pass did; ``decisions`` counts applied actions by kind."""

    units: int = 0
    pairs: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    parse_failures: int = 0
    llm_errors: int = 0
    invalid_decisions: int = 0
    without_vector: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for run records and the server's job results."""
        return asdict(self)


def _event_time(record: Record) -> float:
    return record.ts if record.ts is not None else record.created_at


def _supersedes(record: Record) -> list[str]:
    """The ids a unit replaced: a list here, a single id where a manual edit made one version."""
    value = record.metadata.get("supersedes")
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _apply(store: Store, new_id: str, verdicts: list[tuple[Record, Decision]]) -> None:
    """Apply one unit's UPDATE/DELETE verdicts in one transaction (all of them, or none)."""
    with store.transaction():
        new = store.get(new_id)
        assert new is not None
        at = _event_time(new)
        superseded: list[str] = []
        for old, decision in verdicts:
            current = store.get(old.id)
            if current is None or not current.is_valid(time.time()):
                continue
            store.invalidate(old.id, at=at)
            meta = dict(current.metadata)
            if decision.action == "UPDATE":
                meta["superseded_by"] = new.id
                superseded.append(old.id)
            else:
                meta.update(deleted_by=new.id, delete_reason=decision.reason.strip() or "obsolete")
            store.update(old.id, metadata=meta)
        if superseded:
            earlier = [i for i in _supersedes(new) if i not in superseded]
            store.update(new.id, metadata={**new.metadata, "supersedes": earlier + superseded})


def _candidates(
    store: Store,
    unit: Record,
    vector: Vectors,
    position: dict[str, int],
    kinds: tuple[str, ...],
    threshold: float,
    top_k: int,
) -> list[Record]:
    """Similar earlier units of exactly the unit's scope, most similar first."""
    until = None if unit.ts is None else math.nextafter(unit.ts, math.inf)
    filters = Filters(user_id=unit.user_id, kind=kinds, until=until, time_field="ts")
    # Extra hits leave room for the unit itself and same-time units that come after it.
    hits = store.search_vector(vector, top_k * 4 + 1, filters)
    mine = position[unit.id]
    return [
        h.record
        for h in hits
        if h.score >= threshold
        and position.get(h.record.id, mine) < mine
        and (h.record.agent_id, h.record.run_id) == (unit.agent_id, unit.run_id)
    ][:top_k]


async def consolidate(
    store: Store,
    llm: ChatModel,
    *,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
    kinds: tuple[str, ...] = (FACT,),
    threshold: float = 0.7,
    top_k: int = 3,
    ledger: Ledger | None = None,
    max_tokens: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> ConsolidationReport:
    """Consolidate ``user_id``'s current units (of ``kinds``, in the given agent/run when set).

    ``threshold`` is the cosine an earlier unit needs to be shown to the model (0.7 suits MiniLM's
    spread); ``top_k`` caps candidates per unit. Only units of exactly the same user, agent and run
    are ever compared, so one scope's consolidation cannot touch another's units. ``on_progress``
    receives (units done, units in all) after each unit, for a progress bar: a user's memory can take
    one model call per unit.
    """
    started = time.perf_counter()
    report = ConsolidationReport()
    scope = Filters(user_id=user_id, agent_id=agent_id, run_id=run_id, kind=kinds)
    # sorted is stable: insertion order on ties
    units = sorted(await asyncio.to_thread(store.list_records, scope), key=_event_time)
    position = {u.id: i for i, u in enumerate(units)}
    for done, unit in enumerate(units):
        if on_progress is not None:
            on_progress(done, len(units))
        report.units += 1
        vector = await asyncio.to_thread(store.get_vector, unit.id)
        if vector is None:
            report.without_vector += 1
            continue
        candidates = await asyncio.to_thread(_candidates, store, unit, vector, position, kinds, threshold, top_k)
        if not candidates:
            continue
        report.pairs += len(candidates)
        request = ChatRequest(
            messages=tuple(build_consolidation_messages(unit, candidates)),
            max_tokens=max_tokens,
            seed=0,
            json_schema=consolidation_schema(len(candidates)),
            schema_name="Decisions",
        )
        try:
            reply = await complete_structured(llm, request, Decisions, ledger=ledger, stage=STAGE)
        except ParseError:  # counted in the ledger by complete_structured
            report.parse_failures += 1
            continue
        except LLMError as exc:
            report.llm_errors += 1
            if ledger is not None:
                ledger.record_failure(stage=STAGE, kind="llm_error", detail=str(exc))
            continue
        kept, bad = check_decisions(reply, len(candidates))
        report.invalid_decisions += bad
        verdicts = [(candidates[i], d) for i, d in sorted(kept.items()) if d.action != "IGNORE"]
        for i in range(len(candidates)):
            report.decisions[kept[i].action if i in kept else "IGNORE"] += 1
        if verdicts:
            await asyncio.to_thread(_apply, store, unit.id, verdicts)
    if on_progress is not None:
        on_progress(len(units), len(units))
    report.seconds = time.perf_counter() - started
    return report


def history(store: Store, record_id: str) -> list[Record]:
    """Every version of a unit, oldest first; empty if there is no such unit.

    The versions are the chain of ``supersedes``/``superseded_by`` links followed both ways from
    ``record_id`` (a unit may supersede several), within the unit's user.
    """
    start = store.get(record_id)
    if start is None:
        return []
    seen: dict[str, Record] = {start.id: start}
    queue = [start]
    while queue:
        record = queue.pop()
        links = [record.metadata.get("superseded_by"), *_supersedes(record)]
        for linked in store.get_many(i for i in links if isinstance(i, str) and i not in seen):
            if linked.user_id != start.user_id:
                continue  # links never cross users; a forged one must not leak another user's unit
            seen[linked.id] = linked
            queue.append(linked)
    return sorted(seen.values(), key=lambda r: (_event_time(r), r.created_at))
