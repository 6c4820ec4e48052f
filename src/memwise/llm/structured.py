"""Getting structured data out of model replies.

Models wrap JSON in fences, prose and reasoning blocks, drop closing tags when cut off, and small
models emit Python-style dicts or trailing commas. The parsers here are pure and tolerant of those
habits but never guess silently: when nothing usable is found they raise :class:`ParseError` with the
reason and the raw reply. :func:`complete_structured` adds exactly one model-driven repair and makes
every failure and every repair countable in the run ledger.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from memwise.exceptions import ParseError
from memwise.llm.base import ChatModel, ChatRequest, Message, Sample
from memwise.llm.recorder import FailureRecorder

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

REASONING_TAGS = ("think", "thinking", "reasoning")
_REASONING_RE = re.compile(r"<\s*(/)?\s*(?:" + "|".join(REASONING_TAGS) + r")(?=[\s/>])[^>]*>", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_JSON_FENCE_LANGS = {"json", "jsonc", "json5", "javascript", "js"}
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"'})
_OPENERS = {"{": "}", "[": "]"}
# Bounds the scan on pathological replies ("[[[[..."): each start is a linear walk.
_MAX_STARTS = 200


# --------------------------------------------------------------------------------------------
# Reasoning blocks


def strip_reasoning(text: str) -> str:
    """Remove reasoning blocks (``<think>``, ``<thinking>``, ``<reasoning>``) from a reply.

    Thinking models differ in what reaches the caller: some emit ``<think>...</think>`` in full, some
    chat templates put the opening tag in the prompt so the reply starts with bare reasoning and a
    lone ``</think>``, and a reply cut off by ``max_tokens`` may end inside an unclosed block. All three
    are removed: text before a lone closing tag, and everything after an opening tag that never closes.

    Example:
        >>> strip_reasoning("<think>2+2 is 4</think> The answer is 4.")
        'The answer is 4.'
        >>> strip_reasoning("hmm, carry the one...</think>4")
        '4'
    """
    kept: list[str] = []
    depth = 0
    position = 0
    seen_opening = False
    for tag in _REASONING_RE.finditer(text):
        closing = tag.group(1) is not None
        if depth == 0:
            kept.append(text[position : tag.start()])
        if closing:
            if depth > 0:
                depth -= 1
            elif not seen_opening:
                kept.clear()  # everything so far was reasoning whose opening tag sat in the prompt
        elif not tag.group(0).rstrip(">").rstrip().endswith("/"):
            depth += 1
            seen_opening = True
        position = tag.end()
    if depth == 0:
        kept.append(text[position:])
    return "".join(kept).strip()


# --------------------------------------------------------------------------------------------
# JSON


def _match_brackets(text: str, start: int) -> tuple[int | None, bool]:
    """Where the JSON-ish value opened at ``text[start]`` ends: ``(end, truncated)``.

    Strings are skipped with their escapes, so brackets inside them do not count. ``end`` is the
    exclusive end index, or None when the brackets never balance (``truncated``: the reply was cut
    off) or close with the wrong kind (not JSON at all).
    """
    stack = [_OPENERS[text[start]]]
    quote = ""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            # Single quotes delimit strings only for the Python-literal fallback; inside a JSON
            # string an apostrophe is already skipped as part of the double-quoted string.
            quote = ch
        elif ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in "}]":
            if ch != stack.pop():
                return None, False
            if not stack:
                return i + 1, False
        i += 1
    return None, True


def drop_trailing_commas(text: str) -> str:
    """Remove commas directly before ``}`` or ``]`` outside strings.

    Example:
        >>> drop_trailing_commas('{"a": [1, 2,], "b": "x,}",}')
        '{"a": [1, 2], "b": "x,}"}'
    """
    out: list[str] = []
    in_string = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j >= n or text[j] not in "}]":
                out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _loads_tolerant(candidate: str, notes: list[str]) -> tuple[bool, Any]:
    """Parse strictly, then with cheap repairs; appends the strict error to ``notes`` on failure."""
    try:
        return True, json.loads(candidate)
    except json.JSONDecodeError as exc:
        first_error = f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        notes.append("JSON nested too deeply")
        return False, None
    repaired = drop_trailing_commas(candidate)
    for attempt in (repaired, drop_trailing_commas(candidate.translate(_SMART_QUOTES))):
        if attempt == candidate:
            continue
        try:
            return True, json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            pass
    # Small models often answer with a Python literal: single quotes, True/None.
    if candidate[:1] in _OPENERS:
        try:
            value = ast.literal_eval(repaired)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = None
        if isinstance(value, dict | list):
            return True, value
    notes.append(first_error)
    return False, None


def _values_in(segment: str, notes: list[str]) -> Iterator[Any]:
    """Every JSON value in ``segment``: the whole of it first, then each balanced {...}/[...] in order."""
    stripped = segment.strip()
    if stripped:
        ok, value = _loads_tolerant(stripped, [])
        if ok:
            yield value
            return
    starts = 0
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch not in _OPENERS:
            i += 1
            continue
        starts += 1
        if starts > _MAX_STARTS:
            notes.append(f"gave up after {_MAX_STARTS} candidate brackets")
            return
        end, truncated = _match_brackets(segment, i)
        if end is None:
            if truncated:
                notes.append(f"{ch!r} at offset {i} is never closed (reply cut off?)")
            i += 1
            continue
        ok, value = _loads_tolerant(segment[i:end], notes)
        if ok:
            yield value
            i = end  # values nested in a parsed one are parts of it, not answers of their own
        else:
            i += 1


def _segments(text: str) -> Iterator[str]:
    """Where JSON may be, most likely first: JSON fences, other fences, then the whole reply."""
    fences = [(m.group(1).lower(), m.group(2)) for m in _FENCE_RE.finditer(text)]
    yield from (body for lang, body in fences if lang in _JSON_FENCE_LANGS)
    yield from (body for lang, body in fences if lang not in _JSON_FENCE_LANGS)
    yield text


def iter_json(text: str, notes: list[str] | None = None) -> Iterator[Any]:
    """Every JSON value found in a reply, best candidate first (may repeat a value).

    ``notes`` collects why candidates were rejected, for error messages.
    """
    notes = [] if notes is None else notes
    for segment in _segments(strip_reasoning(text)):
        yield from _values_in(segment, notes)


def _reason(notes: list[str], text: str) -> str:
    if not text.strip():
        return "empty reply"
    if not strip_reasoning(text):
        return "reply holds nothing but reasoning (cut off while thinking?)"
    if not notes:
        return "no JSON object or array found"
    unique = list(dict.fromkeys(notes))
    shown = "; ".join(unique[:3]) + (f"; and {len(unique) - 3} more" if len(unique) > 3 else "")
    return f"no parseable JSON: {shown}"


def extract_json(text: str) -> Any:
    r"""The first JSON value in a model reply.

    Looks in ```json fences, then other fences, then the reply itself (whole, or the first balanced
    ``{...}``/``[...]`` that parses), after removing reasoning blocks. Trailing commas, smart double
    quotes and Python-literal dicts are repaired.

    Raises:
        ParseError: nothing parses; the message says why and ``raw`` keeps the reply.

    Example:
        >>> extract_json('Sure! ```json\n{"answer": "Paris", "confidence": 9,}\n``` Hope it helps.')
        {'answer': 'Paris', 'confidence': 9}
    """
    notes: list[str] = []
    for value in iter_json(text, notes):
        return value
    raise ParseError(_reason(notes, text), raw=text)


# --------------------------------------------------------------------------------------------
# XML-like tags


def _tag_pattern(tag: str) -> re.Pattern[str]:
    name = re.escape(tag.strip().strip("<>/"))
    return re.compile(r"<\s*(/)?\s*" + name + r"(?=[\s/>])[^>]*>", re.IGNORECASE)


def extract_tags(text: str, tag: str) -> list[str]:
    """The stripped contents of every ``<tag ...>...</tag>`` block, in order.

    Tag names match case-insensitively and may carry attributes; other tags nested inside are kept
    in the content. Models forget closing tags more often than they nest a tag in itself, so an
    opening tag inside an open block closes that block, and a block still open at the end runs to
    the end of the reply (a cut-off reply keeps its last block). ``<tag/>`` yields ``""``.
    Reasoning blocks are removed first, unless ``tag`` names one.

    Example:
        >>> extract_tags("<Item id=1>a <b>x</b></item> <item>b", "item")
        ['a <b>x</b>', 'b']
    """
    if tag.strip().strip("<>/").lower() not in REASONING_TAGS:
        text = strip_reasoning(text)
    blocks: list[str] = []
    open_at: int | None = None
    for match in _tag_pattern(tag).finditer(text):
        closing = match.group(1) is not None
        if closing:
            if open_at is not None:
                blocks.append(text[open_at : match.start()].strip())
                open_at = None
            continue  # a stray closing tag carries no block
        if open_at is not None:
            blocks.append(text[open_at : match.start()].strip())
            open_at = None
        if match.group(0)[:-1].rstrip().endswith("/"):
            blocks.append("")
        else:
            open_at = match.end()
    if open_at is not None:
        blocks.append(text[open_at:].strip())
    return blocks


def extract_tag(text: str, tag: str) -> str | None:
    """The stripped content of the first ``<tag>`` block, or None when there is none.

    Example:
        >>> extract_tag("<verdict> CORRECT </verdict>", "verdict")
        'CORRECT'
    """
    blocks = extract_tags(text, tag)
    return blocks[0] if blocks else None


# --------------------------------------------------------------------------------------------
# Validation


def format_validation_error(error: ValidationError) -> str:
    """A compact one-line account of what failed validation, for errors and repair prompts."""
    parts = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of parsing one reply: a model instance, or the reason there is none."""

    value: BaseModel | None
    reason: str | None


def try_parse_model(text: str, model_cls: type[BaseModel]) -> Attempt:
    """Validate each JSON candidate in ``text`` against ``model_cls``; the first that fits wins.

    Trying every candidate matters when prose quotes a fragment (``see [1]``) before the real answer.
    """
    notes: list[str] = []
    first_error: str | None = None
    for value in iter_json(text, notes):
        try:
            return Attempt(model_cls.model_validate(value), None)
        except ValidationError as exc:
            if first_error is None:
                first_error = f"reply does not match {model_cls.__name__}: {format_validation_error(exc)}"
    return Attempt(None, first_error or _reason(notes, text))


def parse_model(text: str, model_cls: type[M]) -> M:
    """Extract JSON from a reply and validate it as ``model_cls``.

    Raises:
        ParseError: no JSON, or no JSON that validates; the message carries the validation errors.
    """
    attempt = try_parse_model(text, model_cls)
    if attempt.value is None:
        raise ParseError(attempt.reason or "unparseable reply", raw=text)
    return attempt.value  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Asking a model


def repair_prompt(reason: str, schema: dict[str, Any] | None, *, cut_off: bool = False) -> str:
    """The follow-up message asking a model to fix a reply that did not parse."""
    lines = [f"Your previous reply could not be used: {reason}."]
    if cut_off:
        lines.append("It was cut off by the length limit, so keep the corrected reply short.")
    lines.append("Reply again with only the corrected JSON: no explanation, no code fences.")
    if schema is not None:
        lines.append("It must match this JSON schema:")
        lines.append(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines)


def repair_request(request: ChatRequest, reply: str, reason: str, *, cut_off: bool = False) -> ChatRequest:
    """The original conversation, the failed reply, and a request to correct it (one sample)."""
    messages = (
        *request.messages,
        Message("assistant", reply),
        Message("user", repair_prompt(reason, request.json_schema, cut_off=cut_off)),
    )
    return replace(request, messages=messages, n=1)


@dataclass(frozen=True)
class Rejected:
    """A reply a parser turned down, with the reason (kept for the ledger and the run report)."""

    reason: str


@dataclass(frozen=True)
class Repaired(Generic[T]):
    """What :func:`complete_with_repair` got: the value (None if every reply failed) and why replies failed.

    ``first_failure`` is why the first reply failed (None when it parsed); ``failure`` is why the last
    reply failed (None when there is a value); ``samples`` are the replies, one or two.
    """

    value: T | None
    first_failure: str | None
    failure: str | None
    samples: tuple[Sample, ...]

    @property
    def repaired(self) -> bool:
        """True when the value came from the repair request."""
        return self.value is not None and self.first_failure is not None


async def complete_with_repair(
    llm: ChatModel,
    request: ChatRequest,
    parse: Callable[[str], T | Rejected],
    *,
    repair: Callable[[ChatRequest, Sample, str], ChatRequest] | None = None,
    parse_repair: Callable[[str], T | Rejected] | None = None,
    on_repair_error: Callable[[str, Sample, BaseException], None] | None = None,
) -> Repaired[T]:
    """Ask once, parse, and on a rejected reply ask once more with the request ``repair`` builds.

    The one structured-output repair flow: :func:`complete_structured` (pydantic models, the failed
    reply and its validation error sent back) and the UMEM Mem-Optimizer (tags first, then
    schema-constrained JSON without the failed reply) differ only in the functions passed here.
    ``parse_repair`` parses the repair reply when it has another shape (default: ``parse``);
    ``on_repair_error`` sees a failed repair call before its error propagates.

    Example:
        >>> from memwise.testing import ScriptedLLM
        >>> import asyncio
        >>> def number(text: str) -> int | Rejected:
        ...     return int(text) if text.isdigit() else Rejected("not a number")
        >>> again = lambda req, sample, why: ChatRequest.of(f"{why}; digits only")
        >>> llm = ScriptedLLM(["seven", "7"])
        >>> out = asyncio.run(complete_with_repair(llm, ChatRequest.of("n?"), number, repair=again))
        >>> out.value, out.first_failure, out.repaired
        (7, 'not a number', True)
    """
    first = (await llm.complete(request)).samples[0]
    got = parse(first.text)
    if not isinstance(got, Rejected):
        return Repaired(got, None, None, (first,))
    if repair is None:
        return Repaired(None, got.reason, got.reason, (first,))
    fix = repair(request, first, got.reason)
    try:
        second = (await llm.complete(fix)).samples[0]
    except BaseException as exc:
        if on_repair_error is not None:
            on_repair_error(got.reason, first, exc)
        raise
    again = (parse_repair or parse)(second.text)
    if isinstance(again, Rejected):
        return Repaired(None, got.reason, again.reason, (first, second))
    return Repaired(again, got.reason, None, (first, second))


def _record(ledger: FailureRecorder | None, *, stage: str, kind: str, detail: str, raw: str) -> None:
    if ledger is not None:
        ledger.record_failure(stage=stage, kind=kind, detail=detail, raw=raw)


async def complete_structured(
    llm: ChatModel,
    request: ChatRequest,
    model_cls: type[M],
    *,
    ledger: FailureRecorder | None = None,
    stage: str = "default",
    repair: bool = True,
) -> M:
    """Ask ``llm`` for one reply and return it validated as ``model_cls``.

    The request gets ``model_cls``'s JSON schema unless it already has one, so backends that can
    constrain decoding do. A reply that does not parse gets one repair round through the model; a
    repaired reply is counted in the ledger as ``parse_repaired`` and a final failure as ``parse``
    (with both replies in ``raw``), so a run report can say how often the model needed help.

    Raises:
        ValueError: ``request.n`` is not 1 (one reply becomes one object).
        ParseError: the reply, and the repaired reply, did not validate.
        LLMError: the backend failed.
    """
    if request.n != 1:
        raise ValueError(f"complete_structured makes one object from one sample; got n={request.n}")
    if request.json_schema is None:
        request = replace(request, json_schema=model_cls.model_json_schema(), schema_name=model_cls.__name__)

    def parse(text: str) -> BaseModel | Rejected:
        attempt = try_parse_model(text, model_cls)
        return attempt.value if attempt.value is not None else Rejected(attempt.reason or "unparseable reply")

    def repair_failed(reason: str, first: Sample, exc: BaseException) -> None:
        _record(ledger, stage=stage, kind="parse", detail=f"{reason}; repair call failed: {exc}", raw=first.text)

    def ask_again(req: ChatRequest, first: Sample, reason: str) -> ChatRequest:
        return repair_request(req, first.text, reason, cut_off=first.finish_reason == "length")

    out = await complete_with_repair(
        llm, request, parse, repair=ask_again if repair else None, on_repair_error=repair_failed
    )
    first = out.samples[0]
    if out.value is not None:
        if out.repaired:
            _record(ledger, stage=stage, kind="parse_repaired", detail=out.first_failure or "", raw=first.text)
        return out.value  # type: ignore[return-value]
    if len(out.samples) == 1:
        reason = out.failure or "unparseable reply"
        _record(ledger, stage=stage, kind="parse", detail=reason, raw=first.text)
        raise ParseError(reason, raw=first.text)
    fixed = out.samples[1]
    detail = f"first reply: {out.first_failure}; repaired reply: {out.failure}"
    _record(ledger, stage=stage, kind="parse", detail=detail, raw=f"{first.text}\n--- repair ---\n{fixed.text}")
    raise ParseError(f"{detail} (after one repair attempt)", raw=fixed.text)
