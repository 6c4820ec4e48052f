"""Shared pieces of the readers: field checks, the error-collecting stream, path handling.

Format converters are pure functions from one decoded record to a :class:`Conversation`; they raise
:class:`RecordError` naming the field at fault, and the per-format generator turns that into a
:class:`DatasetError` carrying the file and record index. Generators *yield* errors instead of raising
them so that one class, :class:`ConversationStream`, decides between failing fast and collecting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Literal

from memwise._datafile import MAX_TURN_ENV, existing_file, max_turn_chars
from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.readers._dates import parse_datetime
from memwise.facts.readers._jsonstream import iter_json_array
from memwise.facts.types import Conversation

ErrorMode = Literal["raise", "collect"]
PathLike = str | os.PathLike[str]
Outcome = Conversation | DatasetError


class RecordError(Exception):
    """A problem inside one record, before the reader knows which file and index it came from."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


def dataset_error(err: RecordError, *, path: str, index: int, record_id: str | None = None) -> DatasetError:
    """Attach file and index (and the record's own id, which is easier to grep for) to a record problem."""
    prefix = f"{record_id!r}: " if record_id else ""
    return DatasetError(f"{prefix}{err}", path=path, index=index)


class ConversationStream(Iterator[Conversation]):
    """Iterator over conversations that either raises at the first bad record or skips and keeps it.

    In ``"collect"`` mode every skipped record lands in :attr:`errors`, so nothing disappears without a
    trace; check it (or :attr:`skipped`) after the loop.
    """

    def __init__(self, outcomes: Iterator[Outcome], errors: ErrorMode = "raise") -> None:
        if errors not in ("raise", "collect"):
            raise ConfigError(f"errors must be 'raise' or 'collect', not {errors!r}")
        self._outcomes = outcomes
        self._mode: ErrorMode = errors
        self._done = False
        self.errors: list[DatasetError] = []

    @property
    def skipped(self) -> int:
        """How many bad records were skipped (collect mode)."""
        return len(self.errors)

    def __iter__(self) -> ConversationStream:
        return self

    def __next__(self) -> Conversation:
        if self._done:
            raise StopIteration
        for outcome in self._outcomes:
            if isinstance(outcome, Conversation):
                return outcome
            if self._mode == "raise":
                self.close()
                raise outcome
            self.errors.append(outcome)
        self._done = True
        raise StopIteration

    def close(self) -> None:
        """Release the file now rather than when the stream is garbage collected."""
        self._done = True
        close = getattr(self._outcomes, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ConversationStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_readable(path: PathLike) -> None:
    """Fail at call time, not at the first ``next()``, when the path is missing or is a directory."""
    existing_file(path)


def stream_json_array(
    path: PathLike,
    convert: Callable[[Any, int], Conversation],
    *,
    id_key: str,
    errors: ErrorMode,
    chunk_size: int,
) -> ConversationStream:
    """Stream a file holding a JSON array with one conversation per element, decoding one at a time.

    ``convert`` turns one element into a conversation, given the per-turn character limit; an element
    it rejects is reported with the element's own ``id_key`` when that is a string.
    """
    check_readable(path)
    return ConversationStream(_array_outcomes(path, convert, id_key, chunk_size), errors)


def _array_outcomes(
    path: PathLike, convert: Callable[[Any, int], Conversation], id_key: str, chunk_size: int
) -> Iterator[Outcome]:
    name = str(path)
    max_turn = max_turn_chars()
    with open(path, encoding="utf-8-sig") as handle:
        try:
            for index, record in iter_json_array(handle, path=name, chunk_size=chunk_size):
                try:
                    yield convert(record, max_turn)
                except RecordError as err:
                    own_id = record.get(id_key) if isinstance(record, dict) else None
                    record_id = own_id if isinstance(own_id, str) else None
                    yield dataset_error(err, path=name, index=index, record_id=record_id)
        except DatasetError as err:
            yield err  # the array itself is broken: nothing after this point can be read


def require(record: dict[str, Any], key: str, where: str) -> Any:
    """Fetch a field that must be present (``null`` counts as missing)."""
    value = record.get(key)
    if value is None:
        raise RecordError(join(where, key), "missing required field")
    return value


def join(where: str, key: str | int) -> str:
    """Build a field path such as ``qa[3].evidence`` for error messages."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecordError(where, f"expected an object, got {_type_name(value)}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RecordError(where, f"expected a list, got {_type_name(value)}")
    return value


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(where, f"expected a string, got {_type_name(value)}")
    return value


def as_str_list(value: Any, where: str) -> list[str]:
    return [as_str(item, join(where, i)) for i, item in enumerate(as_list(value, where))]


def as_text(value: Any, where: str) -> str:
    """Accept numbers as text: gold answers such as ``2022`` are stored as JSON numbers in LoCoMo."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(where, f"expected a string or number, got {_type_name(value)}")
    return str(value)


def as_turn_text(value: Any, where: str, limit: int) -> str:
    """A turn's text, refused past ``limit`` characters: one runaway turn would stall embedding for minutes."""
    text = as_str(value, where)
    if len(text) > limit:
        raise RecordError(
            where,
            f"turn text is {len(text)} characters, over the limit of {limit} per turn; if the turns really "
            f"are this long, raise the limit with {MAX_TURN_ENV}=<characters>",
        )
    return text


def as_datetime(value: Any, where: str) -> datetime:
    text = as_str(value, where)
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise RecordError(where, str(exc)) from None


def as_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RecordError(where, f"expected true or false, got {_type_name(value)}")
    return value
