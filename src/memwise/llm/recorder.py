"""What the model layer needs from a record of calls, as protocols the run ledger satisfies.

The ledger (:class:`memwise.runs.ledger.Ledger`) lives in a higher layer than the model clients: it
knows run directories and reports. Naming the few methods the clients call here keeps the import arrow
pointing one way (``runs`` imports ``llm``, never the reverse) while any object with these methods,
the ledger or a test double, can be passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from memwise.llm.base import ChatRequest, Sample


class FailureRecorder(Protocol):
    """Counts failures that are not failed calls: replies that did not parse, repairs that did."""

    def record_failure(self, *, stage: str, kind: str, detail: str, raw: str | None = None) -> None:
        """Count one failure of ``kind`` at ``stage``; ``raw`` keeps the offending reply for diagnosis."""
        ...


class CallRecorder(FailureRecorder, Protocol):
    """Keeps every completed sample under its call key, so a resumed run replays instead of paying again."""

    @property
    def path(self) -> Path:
        """The file the calls are kept in (shown in descriptions and reports)."""
        ...

    def lookup(self, key: str) -> Sample | None:
        """The sample recorded under ``key``, or None; a hit must be returned instead of calling again."""
        ...

    def record(
        self,
        key: str,
        *,
        model: str,
        stage: str,
        sample_index: int,
        request: ChatRequest,
        sample: Sample,
        retries: Sequence[str] = (),
    ) -> None:
        """Keep one completed sample under ``key``, so that a later :meth:`lookup` replays it."""
        ...

    def record_error(self, key: str, *, model: str, stage: str, error: str) -> None:
        """Note a call that failed for good, so the run report counts it per stage."""
        ...
