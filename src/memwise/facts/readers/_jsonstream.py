"""Decode a top-level JSON array one element at a time.

LoCoMo and LongMemEval ship as a single JSON array (LongMemEval-M is gigabytes), so reading it with
``json.load`` would hold the whole file twice over. Here a growing text buffer feeds
``JSONDecoder.raw_decode``: when an element does not fit yet the buffer doubles, so a large element
costs amortised linear time, and the consumed prefix is dropped after each element.

A syntax error cannot be told apart from "not enough data yet" until end of file, so a malformed
element would make the reader buffer the rest of the file before it reports. The record limit
(:func:`memwise._datafile.max_record_bytes`, counted in characters of decoded text) caps that: an
element still open when the unread text passes the limit is reported then, so neither a huge
record nor a broken one can hold more than about twice the limit in memory.

Bytes that are not UTF-8 surface as a :class:`DatasetError` naming their offset and line.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any, TextIO

from memwise._datafile import max_record_bytes, too_large, utf8_error
from memwise.exceptions import DatasetError

_WHITESPACE = " \t\n\r"
DEFAULT_CHUNK = 1 << 16


class _Buffer:
    """A window on a text file: ``text[pos:]`` is unread; ``offset`` counts characters already dropped."""

    def __init__(self, handle: TextIO, chunk_size: int, *, path: str, limit: int) -> None:
        self.handle = handle
        self.chunk_size = chunk_size
        self.path = path
        self.limit = limit
        self.text = ""
        self.pos = 0
        self.offset = 0
        self.eof = False

    def fill(self, at_least: int) -> None:
        """Drop what was consumed and read ``at_least`` more characters (fewer at end of file)."""
        self.offset += self.pos
        self.text = self.text[self.pos :]
        self.pos = 0
        try:
            more = self.handle.read(max(at_least, self.chunk_size))
        except UnicodeDecodeError:
            raise utf8_error(self.path) from None
        if more:
            self.text += more
        else:
            self.eof = True

    def peek(self) -> str | None:
        """The next non-whitespace character, or ``None`` at end of file."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                return None
            self.fill(self.chunk_size)

    def decode(self, decoder: json.JSONDecoder, path: str, index: int) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    where = self.offset + exc.pos
                    raise DatasetError(
                        f"invalid or truncated JSON ({exc.msg}) at character {where}", path=path, index=index
                    ) from None
                self._grow(path, index, f"; or it is malformed: {exc.msg} at character {self.offset + exc.pos}")
                continue
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(self.text) and not self.eof:
                self._grow(path, index, "")
                continue
            self.pos = end
            return value

    def _grow(self, path: str, index: int, suspect: str) -> None:
        """Double the unread text, unless the open element has already reached the record limit."""
        unread = len(self.text) - self.pos
        if unread >= self.limit:
            size = f"record {index} does not end within its first {unread} characters"
            raise DatasetError(too_large(size, self.limit) + suspect, path=path, index=index)
        self.fill(min(unread, self.limit - unread + 1))


def iter_json_array(
    handle: TextIO, *, path: str, chunk_size: int = DEFAULT_CHUNK, limit: int | None = None
) -> Generator[tuple[int, Any], None, None]:
    """Yield ``(index, element)`` for each element of the JSON array in ``handle``.

    ``limit`` caps one element's size in characters (default :func:`max_record_bytes`).

    Raises:
        DatasetError: when the file is not an array, is malformed, is not UTF-8 or holds an element
            over the limit; elements before the fault have already been yielded, and ``index`` names
            the element being read when it broke.
    """
    cap = max_record_bytes() if limit is None else limit
    buffer = _Buffer(handle, max(1, chunk_size), path=path, limit=cap)
    decoder = json.JSONDecoder()
    first = buffer.peek()
    if first is None:
        raise DatasetError("empty file; expected a JSON array", path=path)
    if first != "[":
        raise DatasetError(f"expected a JSON array, found {first!r}", path=path)
    buffer.pos += 1
    if buffer.peek() == "]":
        buffer.pos += 1
        _expect_end(buffer, path)
        return
    index = 0
    while True:
        if buffer.peek() is None:
            raise DatasetError("truncated JSON: the array ends without ']'", path=path, index=index)
        yield index, buffer.decode(decoder, path, index)
        separator = buffer.peek()
        if separator == "]":
            buffer.pos += 1
            _expect_end(buffer, path)
            return
        index += 1
        if separator is None:
            raise DatasetError("truncated JSON: the array ends without ']'", path=path, index=index)
        if separator != ",":
            raise DatasetError(f"expected ',' or ']' between records, found {separator!r}", path=path, index=index)
        buffer.pos += 1


def _expect_end(buffer: _Buffer, path: str) -> None:
    extra = buffer.peek()
    if extra is not None:
        raise DatasetError(f"unexpected data after the JSON array, starting with {extra!r}", path=path)
