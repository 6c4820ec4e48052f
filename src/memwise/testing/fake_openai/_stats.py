"""The fake server's counters: live ones on its event loop, and the :class:`ServerStats` snapshot."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class ServerStats:
    """Counters, as a snapshot.

    ``attempts_by_key`` counts every request per distinct prompt (last user message; for embeddings the
    inputs joined by U+001F); ``completed_by_key`` counts only the replies fully written with status 200.
    """

    requests: int = 0
    completions: int = 0
    embeddings: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    attempts_by_key: dict[str, int] = field(default_factory=dict)
    completed_by_key: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    response_format_seen: int = 0
    response_format_rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerStats:
        return cls(**data)


class _Counters:
    """The live counters: mutated only on the server's own event loop."""

    def __init__(self) -> None:
        self.requests = 0
        self.completions = 0
        self.embeddings = 0
        self.failures: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.drawn: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.rf_seen = 0
        self.rf_rejected = 0

    def snapshot(self, open_connections: int) -> ServerStats:
        return ServerStats(
            requests=self.requests,
            completions=self.completions,
            embeddings=self.embeddings,
            failures=dict(self.failures),
            attempts_by_key=dict(self.attempts),
            completed_by_key=dict(self.completed),
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            connections_opened=self.connections,
            connections_open=open_connections,
            response_format_seen=self.rf_seen,
            response_format_rejected=self.rf_rejected,
        )
