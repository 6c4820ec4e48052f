"""What an ingest did, per conversation and per run: the numbers a run report shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Mode = Literal["turns", "facts"]


@dataclass(slots=True)
class IngestReport:
    """What ingesting one conversation did.

    ``extraction_failures`` counts segments whose model call or reply failed (after one repair);
    ``fallbacks`` counts segments stored as raw turns: those failures plus segments that gave no usable
    fact. ``skipped`` is true when every session of the conversation was already in the store with the
    same content (``units_present`` then says how many of its units were found, and nothing was asked or
    written). ``sessions_present`` counts the sessions found that way; the others were stored, so a
    conversation that gained a session has ``sessions_present`` > 0 and is not skipped. The fact-level repair
    counts come from :class:`memwise.facts.extract.FactCheck`. ``failures`` says, per fallback, which
    turns and why; ``unit_ids`` names the memories this conversation has in the store.
    """

    conversation_id: str
    mode: Mode
    turns: int = 0
    units_written: int = 0
    units_present: int = 0
    sessions_present: int = 0
    segments: int = 0
    facts: int = 0
    extraction_failures: int = 0
    fallbacks: int = 0
    dropped_source_ids: int = 0
    unsourced_facts: int = 0
    rejected_facts: int = 0
    skipped: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    unit_ids: list[str] = field(default_factory=list)
    """The ids of the conversation's memories: those written now and those found already stored."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the CLI and the server report it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """Totals over a run's reports; ``seconds`` sums per-conversation time, which overlaps when parallel.

    Example:
        >>> a = IngestReport("c1", "turns", turns=4, units_written=4)
        >>> b = IngestReport("c2", "turns", turns=2, units_present=2, skipped=True)
        >>> s = IngestSummary.of([a, b])
        >>> (s.conversations, s.skipped, s.turns, s.units_written, s.units_present)
        (2, 1, 6, 4, 2)
    """

    conversations: int = 0
    skipped: int = 0
    turns: int = 0
    units_written: int = 0
    units_present: int = 0
    sessions_present: int = 0
    segments: int = 0
    facts: int = 0
    extraction_failures: int = 0
    fallbacks: int = 0
    dropped_source_ids: int = 0
    unsourced_facts: int = 0
    rejected_facts: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, reports: Iterable[IngestReport]) -> IngestSummary:
        """The counts of ``reports`` added up, one conversation per report."""
        reports = list(reports)
        summed = {f.name: sum(getattr(r, f.name) for r in reports) for f in fields(cls) if f.name != "conversations"}
        return cls(conversations=len(reports), **summed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the CLI reports it."""
        return asdict(self)
