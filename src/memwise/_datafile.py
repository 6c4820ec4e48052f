r"""Opening and decoding dataset files, shared by every reader so bad input fails the same way everywhere.

Dataset files come from users, so the readers must turn the usual accidents into errors that say what
to do instead of tracebacks:

* a missing path, a directory where a file belongs (or a file where a directory belongs) is misuse:
  :class:`~memwise.exceptions.ConfigError` saying which of these it is;
* bytes that are not UTF-8 (a binary file, a Latin-1 export) are a malformed file:
  :class:`~memwise.exceptions.DatasetError` naming the byte, its offset and its line;
* a record (a JSONL line, or one element of a JSON array) larger than :func:`max_record_bytes` is
  refused as soon as the limit is crossed, so one runaway line costs a bounded amount of memory and
  time. The limit defaults to 32 MiB, far above real records (a LongMemEval-S question with its whole
  haystack is about 0.5 MB, a LongMemEval-M one about 6 MB), and ``MEMWISE_MAX_RECORD_MB`` raises it;
* a conversation turn longer than :func:`max_turn_chars` (1,000,000 characters unless
  ``MEMWISE_MAX_TURN_CHARS`` says otherwise) is refused by the conversation readers: embedding one
  10-million-character turn takes about 10 s and 1.3 GB, and no real chat turn comes near the limit.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = p.write_bytes(b'{"a": 1}\n{"caf\xe9": 2}\n')
    >>> first, second = iter_lines(p)
    >>> first
    (0, '{"a": 1}\n')
    >>> print(second[1])  # doctest: +ELLIPSIS
    /.../a.jsonl, record 1: line 2: not valid UTF-8 text at byte offset 14 (line 2): 0xe9 (invalid ...
"""

from __future__ import annotations

import codecs
import itertools
import math
import os
from collections.abc import Generator, Mapping
from pathlib import Path

from memwise.exceptions import ConfigError, DatasetError

PathLike = str | os.PathLike[str]

MAX_RECORD_ENV = "MEMWISE_MAX_RECORD_MB"
DEFAULT_MAX_RECORD_MB = 32
MAX_TURN_ENV = "MEMWISE_MAX_TURN_CHARS"
DEFAULT_MAX_TURN_CHARS = 1_000_000
_MIB = 1 << 20
_BOM = codecs.BOM_UTF8
_SCAN_CHUNK = 1 << 16


def max_record_bytes(env: Mapping[str, str] | None = None) -> int:
    """The largest record a reader accepts, in bytes: ``$MEMWISE_MAX_RECORD_MB`` MiB, else 32 MiB.

    Read at each call rather than at import, so a user who raises it in the shell after reading the
    error gets the new value without any other change.

    Raises:
        ConfigError: the variable is set but is not a positive number.
    """
    return int(_positive_setting(env, MAX_RECORD_ENV, DEFAULT_MAX_RECORD_MB, "number of MiB") * _MIB)


def max_turn_chars(env: Mapping[str, str] | None = None) -> int:
    """The longest conversation turn the readers accept: ``$MEMWISE_MAX_TURN_CHARS``, else 1,000,000.

    Raises:
        ConfigError: the variable is set but is not a positive number.
    """
    return int(_positive_setting(env, MAX_TURN_ENV, DEFAULT_MAX_TURN_CHARS, "number of characters"))


def _positive_setting(env: Mapping[str, str] | None, name: str, default: float, unit: str) -> float:
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive {unit}, got {raw!r}")
    return value


def too_large(size_words: str, limit: int) -> str:
    """The one wording of "record over the limit", naming the limit and how to raise it."""
    return (
        f"{size_words}, over the limit of {limit / _MIB:g} MiB per record; if the file really holds records "
        f"this large, raise the limit with {MAX_RECORD_ENV}=<MiB>"
    )


def existing_file(path: PathLike, what: str = "dataset file") -> Path:
    """``path`` as a :class:`Path`, after checking it names a readable regular file.

    Raises:
        ConfigError: saying whether the path is missing, is a directory, or cannot be read.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory; give the path of a file inside it")
    if not p.exists():
        raise ConfigError(f"{what} not found: {p} does not exist")
    if not p.is_file():
        raise ConfigError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} {p} is not readable (check its permissions)")
    return p


def existing_dir(path: PathLike, what: str = "dataset directory") -> Path:
    """``path`` as a :class:`Path`, after checking it names a directory.

    Raises:
        ConfigError: saying whether the path is missing or is a file.
    """
    p = Path(path)
    if p.is_file():
        raise ConfigError(f"{what} {p} is a file, but a directory is expected here; give the folder that holds it")
    if not p.exists():
        raise ConfigError(f"{what} not found: {p} does not exist")
    if not p.is_dir():
        raise ConfigError(f"{what} {p} is not a directory")
    return p


def _describe_bad_bytes(exc: UnicodeDecodeError, offset: int, line: int) -> str:
    bad = exc.object[exc.start : exc.end]
    shown = " ".join(f"0x{b:02x}" for b in bad[:4])
    return (
        f"not valid UTF-8 text at byte offset {offset} (line {line}): {shown} ({exc.reason}); "
        "save the file as UTF-8 JSON/JSONL (a binary file cannot be read)"
    )


def locate_invalid_utf8(path: PathLike) -> str | None:
    """Describe the first byte of ``path`` that is not UTF-8 (offset, line, byte), or ``None`` if all are.

    Streaming text readers only learn *that* a chunk failed to decode; this rescan, done once on the
    error path in bounded memory, finds *where*, which is what the user needs to fix the file.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0
    lines = 1
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_SCAN_CHUNK)
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # The decoder saw its pending partial character followed by this chunk.
                lines += exc.object.count(b"\n", 0, exc.start)
                return _describe_bad_bytes(exc, consumed - len(pending) + exc.start, lines)
            if not chunk:
                return None
            consumed += len(chunk)
            lines += chunk.count(b"\n")


def utf8_error(path: PathLike, *, index: int | None = None) -> DatasetError:
    """The :class:`DatasetError` for a file that failed to decode, with the offending byte located."""
    where = locate_invalid_utf8(path) or "not valid UTF-8 text; save the file as UTF-8 JSON/JSONL"
    return DatasetError(where, path=os.fspath(path), index=index)


def read_text(path: PathLike, what: str = "dataset file") -> str:
    """The whole text of a small file (a BOM is dropped), with bad bytes reported by offset and line."""
    p = existing_file(path, what)
    data = p.read_bytes()
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = 1 + data.count(b"\n", 0, start + exc.start)
        raise DatasetError(_describe_bad_bytes(exc, start + exc.start, line), path=str(p)) from None


def iter_lines(path: PathLike, *, limit: int | None = None) -> Generator[tuple[int, str | DatasetError], None, None]:
    """Yield ``(index, line)`` for each physical line of a JSONL file; ``index`` is 0-based.

    A line that cannot be used comes out as ``(index, DatasetError)`` instead, so the caller decides
    between stopping and skipping: a line not in UTF-8 (its byte offset named), or a line longer than
    ``limit`` bytes (default :func:`max_record_bytes`). An over-long line is never held whole: reading
    stops at the limit and the rest of the line is skipped in small pieces.
    """
    cap = max_record_bytes() if limit is None else limit
    name = os.fspath(path)
    offset = 0
    with open(path, "rb") as handle:
        for index in itertools.count():
            raw = handle.readline(cap + 2)  # room for the limit plus "\r\n"
            if not raw:
                return
            if index == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
                offset += len(_BOM)
            start = offset
            offset += len(raw)
            if len(raw.rstrip(b"\r\n")) > cap:
                while not raw.endswith(b"\n"):
                    raw = handle.readline(_SCAN_CHUNK)
                    if not raw:
                        break
                    offset += len(raw)
                problem = too_large(f"line {index + 1} is longer than {cap} bytes", cap)
                yield index, DatasetError(problem, path=name, index=index)
                continue
            try:
                yield index, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                detail = _describe_bad_bytes(exc, start + exc.start, index + 1)
                yield index, DatasetError(f"line {index + 1}: {detail}", path=name, index=index)
