"""HotpotQA from the official JSON: a list of ``{_id, question, answer, type, level, supporting_facts, context}``.

The prompt carries the record's context paragraphs (the distractor setting) when the file has them,
since a question without its paragraphs is a different, open-book task. ``text`` is the bare question
so that memories are keyed by what is asked, not by the paragraphs that happen to accompany it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memwise.exceptions import DatasetError
from memwise.tasks.metrics import exact_match
from memwise.tasks.suites._io import existing_file, read_json_list, require_str
from memwise.tasks.types import Task

SUITE = "hotpotqa"


def _paragraphs(context: Any, *, path: Path, index: int) -> list[tuple[str, list[str]]]:
    """The ``[title, [sentence, ...]]`` pairs of a context, checked."""
    if context is None:
        return []
    ok = isinstance(context, list) and all(
        isinstance(p, list)
        and len(p) == 2
        and isinstance(p[0], str)
        and isinstance(p[1], list)
        and all(isinstance(s, str) for s in p[1])
        for p in context
    )
    if not ok:
        raise DatasetError("field 'context' must be a list of [title, [sentences]] pairs", path=str(path), index=index)
    return [(title, sentences) for title, sentences in context]


def build_prompt(question: str, paragraphs: list[tuple[str, list[str]]]) -> str:
    """Paragraphs first, each under its title, then the question."""
    if not paragraphs:
        return question
    blocks = [f"{title}: {''.join(sentences).strip()}" for title, sentences in paragraphs]
    return "Context:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def parse_hotpotqa_record(record: Any, *, path: Path, index: int) -> Task:
    """One HotpotQA record as a :class:`Task`."""
    task_id = require_str(record, "_id", path, index)
    question = require_str(record, "question", path, index)
    answer = require_str(record, "answer", path, index)
    paragraphs = _paragraphs(record.get("context"), path=path, index=index)
    metadata: dict[str, Any] = {k: record[k] for k in ("type", "level") if isinstance(record.get(k), str)}
    if isinstance(record.get("supporting_facts"), list):
        metadata["supporting_facts"] = [tuple(f) for f in record["supporting_facts"]]
    metadata["titles"] = [title for title, _ in paragraphs]
    prompt = build_prompt(question, paragraphs)
    return Task(id=task_id, suite=SUITE, prompt=prompt, answer=answer, text=question, metadata=metadata)


def score_hotpotqa(prediction: str | None, gold: str) -> bool:
    """SQuAD-style normalised exact match; no prediction is wrong."""
    return prediction is not None and exact_match(prediction, gold) == 1.0


def load_hotpotqa(path: str | Path, *, seed: int = 0) -> list[Task]:
    """Every record of a HotpotQA JSON file, in file order."""
    del seed
    p = existing_file(path)
    return [parse_hotpotqa_record(r, path=p, index=i) for i, r in enumerate(read_json_list(p))]
