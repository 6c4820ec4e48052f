"""Conversation readers: LoCoMo, LongMemEval and JSONL session logs into :mod:`memwise.facts.types`.

Every ``iter_*`` function streams (one conversation in memory at a time) and returns a
:class:`ConversationStream`; with ``errors="raise"`` (the default) a malformed record raises
:class:`~memwise.exceptions.DatasetError` naming the file, the record index and the field, after the
good conversations before it were yielded. With ``errors="collect"`` bad records are skipped and kept
in ``stream.errors``. The ``read_*`` functions are the strict, list-returning forms.
"""

from memwise.facts.readers._common import ConversationStream, ErrorMode
from memwise.facts.readers._dates import parse_datetime
from memwise.facts.readers.auto import FORMATS, Format, detect_format, iter_conversations, read_conversations
from memwise.facts.readers.jsonl import iter_sessions_jsonl, read_sessions_jsonl
from memwise.facts.readers.locomo import iter_locomo, normalise_evidence, read_locomo
from memwise.facts.readers.longmemeval import iter_longmemeval, read_longmemeval

__all__ = [
    "FORMATS",
    "ConversationStream",
    "ErrorMode",
    "Format",
    "detect_format",
    "iter_conversations",
    "iter_locomo",
    "iter_longmemeval",
    "iter_sessions_jsonl",
    "normalise_evidence",
    "parse_datetime",
    "read_conversations",
    "read_locomo",
    "read_longmemeval",
    "read_sessions_jsonl",
]
