"""Child-process bodies for the ingest crash tests (imported by plain name, like the store's workers).

Pytest imports tests with ``--import-mode=importlib``, under names a spawned child cannot import, so
the test puts this folder on ``sys.path`` and imports this module by its plain name.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime
from typing import Any

from memwise.facts import ingest
from memwise.facts.types import Conversation, Session, Turn
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder


def conversation(n_sessions: int = 2, per_session: int = 6, conv_id: str = "conv-1") -> Conversation:
    """A small deterministic conversation: ``n_sessions`` dated sessions of alternating speakers."""
    sessions = []
    for s in range(n_sessions):
        when = datetime(2023, 5, 8 + 7 * s, 13, 56)
        turns = tuple(
            Turn(
                id=f"D{s + 1}:{i + 1}",
                speaker="Caroline" if i % 2 == 0 else "Melanie",
                text=f"session {s} remark {i} about topic {i // 3} of {conv_id}",
                session_id=f"{conv_id}/s{s + 1}",
                index=i,
                timestamp=when,
            )
            for i in range(per_session)
        )
        sessions.append(Session(id=f"{conv_id}/s{s + 1}", turns=turns, timestamp=when))
    return Conversation(id=conv_id, sessions=tuple(sessions))


class KillingStore(SQLiteStore):
    """Dies by SIGKILL right after its first ``add``: rows written inside the open transaction, no commit."""

    def add(self, records: Any, vectors: Any = None, *, space: str | None = None) -> list[str]:
        ids = super().add(records, vectors, space=space)
        os.kill(os.getpid(), signal.SIGKILL)
        return ids


def ingest_then_die(path: str) -> None:
    ingest._WRITE_BATCH = 4  # several adds inside the one transaction
    store = KillingStore(path)
    asyncio.run(ingest.ingest_conversation(conversation(), store=store, embedder=FakeEmbedder(), user_id="u1"))
