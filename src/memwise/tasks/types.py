"""Tasks the UMEM executor solves: one record shape for every suite (MMLU, AIME, GPQA, HotpotQA...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Task:
    """One task.

    ``prompt`` is the full text the executor sees (the question, and for multiple choice the lettered
    options); ``answer`` is the gold final answer in the suite's own normal form (a letter for
    multiple choice, an integer string for AIME, a short span for HotpotQA). ``text`` is what
    neighbourhoods and the insight bank embed: the question without option letters.
    """

    id: str
    suite: str
    prompt: str
    answer: str
    text: str = ""
    choices: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """The text a memory is keyed by."""
        return self.text or self.prompt
