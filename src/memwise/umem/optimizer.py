"""The Mem-Optimizer step: prompt, strict parser, and applying its action to the bank.

One generation does both halves of UMEM's job: *extract* an insight from a trajectory and *manage*
the bank (ADD a new entry, or UPDATE one of the retrieved entries). The parser is strict because
its verdict is the format part of the GRPO reward: a lenient parser would reward malformed output.
In particular an ``UPDATE i`` whose ``i`` names no retrieved entry is a failure with reason
``"invalid target"``; the released code quietly turned it into ADD, which hid the error from the
reward and from run reports.

Entries are numbered 0..K-1 in the prompt, one number per *entry* (never per value string), and
:func:`apply_action` maps ``UPDATE i`` back to the id of the i-th retrieved entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memwise.exceptions import ConfigError, ParseError
from memwise.llm.base import Message
from memwise.llm.structured import extract_json, strip_reasoning
from memwise.llm.untrusted import data_notice, fence, one_line
from memwise.umem.bank import BankEntry, InsightBank, clean_values

Operation = Literal["ADD", "UPDATE"]

# Every reason the parser can give; a run report can tally format failures by these.
FORMAT_FAILURE_REASONS = (
    "no experience block",
    "several experience blocks",
    "unclosed experience block",
    "malformed value tags",
    "no value",
    "no operation",
    "several operations",
    "unknown operation",
    "invalid target",
)

_SYSTEM = """\
You maintain a memory of reusable lessons for a problem-solving agent. After each attempt you study \
what happened and either write a new lesson or improve one the agent already had.

Rules for every lesson:
1. Never reveal the answer of the task, neither directly nor through hints that only fit this task.
2. Stay general: replace names, numbers, entities and options from the task with variables or \
categories, so the lesson helps on other tasks of the same kind.
3. Claim only what the trajectory and the task support; do not invent facts, tools or outcomes.
4. If the attempt was CORRECT, distil the method that worked into steps another solver can follow.
5. If the attempt was INCORRECT, name the root cause: the kind of trap or reasoning error that \
misled the agent and how to detect it next time. Do not write "avoid option X".

Memory operations:
- ADD: store the lessons as a new entry for this task.
- UPDATE i: replace the lessons of existing entry i (a number from the list you are shown) with \
your improved lessons. Use it when entry i covers the same kind of task but is wrong, vague or \
incomplete; carry over what was still useful, because its old lessons are discarded.

Reply format: first write your analysis in plain text. Then end with exactly one block:
<experience>
<value>a lesson</value>
<value>another lesson (optional; one or more)</value>
<operation>ADD</operation>
</experience>
The operation is either ADD or UPDATE followed by an entry number, for example UPDATE 0."""
_SYSTEM += "\n\n" + data_notice("task", "entries", "trajectory")


@dataclass(frozen=True, slots=True)
class OptimizerAction:
    """A parsed Mem-Optimizer decision; ``target`` is the entry number for UPDATE, else None."""

    op: Operation
    target: int | None
    values: list[str]


class OptimizerParseError(ParseError):
    """A Mem-Optimizer reply that breaks the format; ``reason`` is one of FORMAT_FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str, *, raw: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason, raw=raw)


def _render_entries(entries: Sequence[BankEntry]) -> str:
    if not entries:
        return "(none: the memory had nothing close to this task, so only ADD is possible)"
    blocks = []
    for number, entry in enumerate(entries):
        # One line per lesson: a stored value cannot start a line of its own ("Entry 1:", "## Task").
        lessons = "\n".join(f"  - {one_line(value)}" for value in entry.values) or "  - (empty)"
        blocks.append(f"Entry {number}:\n{lessons}")
    return fence("entries", "\n".join(blocks), one_line_text=False)


def build_optimizer_messages(task: str, entries: Sequence[BankEntry], trajectory: str, success: bool) -> list[Message]:
    """The Mem-Optimizer prompt for one executed task.

    ``entries`` are the retrieved entries in retrieval order; their position is the number the
    model must use in ``UPDATE i``. Only values are shown: keys are other tasks' texts, and showing
    them would tempt the model to copy their specifics. Task, entries and trajectory are fenced: none
    can close its block, so a stored value or a trajectory cannot forge a task, an entry or an outcome.
    """
    status = "CORRECT" if success else "INCORRECT"
    user = (
        f"## Task\n{fence('task', task, one_line_text=False)}\n\n"
        f"## Lessons the agent was given (existing memory entries)\n{_render_entries(entries)}\n\n"
        f"## Agent trajectory\n{fence('trajectory', trajectory, one_line_text=False)}\n\n"
        f"## Outcome\n{status}\n\n"
        "Analyse the attempt, then write your <experience> block."
    )
    return [Message("system", _SYSTEM), Message("user", user)]


def _tags(text: str, name: str) -> list[re.Match[str]]:
    return list(re.finditer(r"<\s*(/)?\s*" + name + r"\s*>", text, re.IGNORECASE))


def _fail(reason: str, detail: str, raw: str) -> OptimizerParseError:
    return OptimizerParseError(reason, detail, raw=raw)


def _experience_block(text: str, raw: str) -> str:
    tags = _tags(text, "experience")
    opens = [t for t in tags if t.group(1) is None]
    closes = [t for t in tags if t.group(1) is not None]
    if not opens:
        raise _fail("no experience block", "expected one <experience>...</experience>", raw)
    if len(opens) > 1:
        raise _fail("several experience blocks", f"found {len(opens)} <experience> tags", raw)
    if len(closes) != 1 or closes[0].start() < opens[0].end():
        raise _fail("unclosed experience block", "expected exactly one </experience> after <experience>", raw)
    return text[opens[0].end() : closes[0].start()]


def _values(block: str, raw: str) -> list[str]:
    tags = _tags(block, "value")
    expect_open = True
    spans: list[tuple[int, int]] = []
    start = 0
    for tag in tags:
        is_open = tag.group(1) is None
        if is_open != expect_open:
            raise _fail("malformed value tags", "<value> tags must open and close in turn, without nesting", raw)
        if is_open:
            start = tag.end()
        else:
            spans.append((start, tag.start()))
        expect_open = not expect_open
    if not expect_open:
        raise _fail("malformed value tags", "a <value> is never closed", raw)
    values = clean_values([block[a:b] for a, b in spans])
    if not values:
        raise _fail("no value", "the experience block needs at least one non-empty <value>", raw)
    return values


_OP_RE = re.compile(r"(ADD|UPDATE)(?:\s+(\d+))?", re.IGNORECASE)


def _operation(block: str, n_entries: int, raw: str) -> tuple[Operation, int | None]:
    ops = re.findall(r"<\s*operation\s*>(.*?)<\s*/\s*operation\s*>", block, re.IGNORECASE | re.DOTALL)
    if not ops:
        raise _fail("no operation", "expected <operation>ADD</operation> or <operation>UPDATE i</operation>", raw)
    if len(ops) > 1:
        raise _fail("several operations", f"found {len(ops)} <operation> blocks", raw)
    text = " ".join(ops[0].split())
    match = _OP_RE.fullmatch(text)
    if match is None:
        # An UPDATE with a target that is not a number is still an UPDATE with an invalid target.
        if re.match(r"update\b", text, re.IGNORECASE):
            raise _fail("invalid target", f"{text!r} does not name an entry number", raw)
        raise _fail("unknown operation", f"{text!r} is neither ADD nor UPDATE i", raw)
    verb, number = match.group(1).upper(), match.group(2)
    if verb == "ADD":
        if number is not None:
            raise _fail("unknown operation", f"ADD takes no entry number, got {text!r}", raw)
        return "ADD", None
    if number is None:
        raise _fail("invalid target", "UPDATE needs an entry number", raw)
    target = int(number)
    if not 0 <= target < n_entries:
        shown = f"entries 0..{n_entries - 1}" if n_entries else "no entries"
        raise _fail("invalid target", f"UPDATE {target}, but the prompt showed {shown}", raw)
    return "UPDATE", target


def parse_optimizer_output(text: str, n_entries: int) -> OptimizerAction:
    """Parse a Mem-Optimizer reply into an action, or raise :class:`OptimizerParseError`.

    Reasoning blocks (``<think>`` and kin) are removed first. Then the reply must hold exactly one
    ``<experience>`` block with at least one non-empty ``<value>`` and exactly one ``<operation>``
    reading ``ADD`` or ``UPDATE i`` with ``0 <= i < n_entries`` (case and spacing are free). Blank
    and repeated values are dropped. Text outside the tags (the analysis) is ignored.
    """
    if n_entries < 0:
        raise ConfigError(f"parse_optimizer_output: n_entries must be >= 0, got {n_entries}")
    visible = strip_reasoning(text)
    block = _experience_block(visible, text)
    values = _values(block, text)
    op, target = _operation(block, n_entries, text)
    return OptimizerAction(op=op, target=target, values=values)


def try_parse_optimizer_output(text: str, n_entries: int) -> OptimizerAction | str:
    """Like :func:`parse_optimizer_output`, but a format failure comes back as its reason string.

    Reward functions and run reports use this to count failures by reason without try/except.
    """
    try:
        return parse_optimizer_output(text, n_entries)
    except OptimizerParseError as exc:
        return exc.reason


async def apply_action(
    bank: InsightBank, task: str, entries: Sequence[BankEntry], action: OptimizerAction
) -> BankEntry:
    """Carry out ``action`` on ``bank``: ADD keys the values by ``task``; UPDATE i rewrites entries[i].

    ``entries`` must be the list the prompt numbered, in the same order. A target outside it means
    the action was parsed against a different list, which is a caller bug, so it raises ConfigError
    rather than falling back to ADD.
    """
    if action.op == "ADD":
        return await bank.add(task, action.values)
    if action.target is None or not 0 <= action.target < len(entries):
        raise ConfigError(f"apply_action: UPDATE {action.target} but only {len(entries)} entries were retrieved")
    return await bank.update(entries[action.target].id, action.values)


# -- repair: a second, schema-constrained chance for models that cannot hold the tag format -----------

REPAIR_LESSON_CHARS = 200
REPAIR_MAX_LESSONS = 2


def repair_schema(n_entries: int) -> dict[str, Any]:
    """JSON schema for a repaired reply: 1-2 bounded lessons and an operation naming a shown entry.

    The bounds matter for small local models under grammar-constrained decoding: an unbounded string
    lets them loop until the token budget runs out. The operation is an enum, so ``UPDATE i`` can
    only name an entry the prompt showed.
    """
    ops = ["ADD", *(f"UPDATE {i}" for i in range(n_entries))]
    return {
        "type": "object",
        "properties": {
            "lessons": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": REPAIR_LESSON_CHARS},
                "minItems": 1,
                "maxItems": REPAIR_MAX_LESSONS,
            },
            "operation": {"type": "string", "enum": ops},
        },
        "required": ["lessons", "operation"],
        "additionalProperties": False,
    }


def build_repair_messages(messages: Sequence[Message], n_entries: int) -> list[Message]:
    """The optimizer prompt again, asking for the decision as JSON instead of tags.

    The malformed reply is not shown back: from a small model it is often a long loop that would only
    crowd the context and invite more of the same.
    """
    ops = "ADD" + "".join(f", UPDATE {i}" for i in range(n_entries))
    ask = (
        "\n\nReply with JSON only, no analysis: "
        f'{{"lessons": [one or two short general lessons], "operation": one of {ops}}}.'
    )
    *head, last = messages
    return [*head, Message(last.role, last.content + ask)]


def parse_repair(text: str, n_entries: int) -> OptimizerAction | str:
    """A repaired reply as an action, or a failure reason (``"repair failed: ..."``)."""
    try:
        data = extract_json(text)
    except ParseError:
        return "repair failed: no JSON"
    if not isinstance(data, dict):
        return "repair failed: not a JSON object"
    lessons = data.get("lessons")
    if isinstance(lessons, str):
        lessons = [lessons]
    if not isinstance(lessons, list) or not all(isinstance(x, str) for x in lessons):
        return "repair failed: lessons is not a list of strings"
    values = clean_values(lessons)
    if not values:
        return "repair failed: no lesson"
    op = " ".join(str(data.get("operation", "")).split()).upper()
    if op == "ADD":
        return OptimizerAction("ADD", None, values)
    match = re.fullmatch(r"UPDATE (\d+)", op)
    if match is None:
        return f"repair failed: unknown operation {op!r}"
    target = int(match.group(1))
    if not 0 <= target < n_entries:
        return f"repair failed: UPDATE {target} names no shown entry"
    return OptimizerAction("UPDATE", target, values)


# -- lesson screen ----------------------------------------------------------------------------------

_ENUMERATOR = re.compile(r"^\s*(?:[(\[]?[A-Za-z0-9][)\].:]\s+|[-*]\s+)")
MIN_LESSON_WORDS = 2
"""A lesson is a sentence: fewer words with letters ("B", "1.1.1.1", "...") guide no one."""


def _norm(text: str) -> str:
    text = _ENUMERATOR.sub("", text.strip())
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    if len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]  # "The amnion" copies the option "amnion"
    return " ".join(words)


_ANSWER_STATEMENT = re.compile(
    r"^(?:so\s+|thus\s+|hence\s+|therefore\s+)?(?:the\s+)?(?:final\s+|correct\s+|right\s+)?"
    r"(?:answer|option|choice|result)\s+(?:is|was|should\s+be|must\s+be)\s+"
)


def _stated(text: str) -> str:
    """What a lesson of the form "the (correct) answer is X" states, normalised; else the whole lesson."""
    norm = _norm(text)
    return _norm(_ANSWER_STATEMENT.sub("", norm, count=1))


def screen_lessons(action: OptimizerAction, answer: str, choices: Sequence[str] = ()) -> OptimizerAction | str:
    """Drop lessons that are no sentence, or just the task's answer or one of its options.

    The prompt forbids answer leakage, but small models often "remember" the answer itself ("B",
    "The correct answer is (B).", or an option's text) or loop on a token ("1.1.1.1"). Such a value
    helps no other task and would mislead the next one that shares its options, so it never enters
    the bank. Copies of the answer or an option are caught, bare or as "the answer is X": a lesson
    that mentions the answer inside a longer sentence passes, as the screen cannot judge intent.
    When nothing is left the reason is ``"answer leak"`` if any value was a leak, else ``"not a
    lesson"``. Online evolution and the training reward (:class:`~memwise.umem.loop.UtilityScorer`)
    both call this one function, so a lesson the bank would refuse never earns a reward either.

    Example:
        >>> screen_lessons(OptimizerAction("ADD", None, ["B", "Check the sign of each term."]), "B", ("2x", "x"))
        OptimizerAction(op='ADD', target=None, values=['Check the sign of each term.'])
        >>> screen_lessons(OptimizerAction("ADD", None, ["1. 2x"]), "A", ("2x", "x"))
        'answer leak'
    """
    letters = {chr(ord("a") + i) for i in range(len(choices))}
    banned = {_norm(answer), *(_norm(c) for c in choices), *letters} - {""}
    leaks = [v for v in action.values if _norm(v) in banned or _stated(v) in banned]
    kept = [
        v
        for v in action.values
        if v not in leaks and sum(any(ch.isalpha() for ch in w) for w in v.split()) >= MIN_LESSON_WORDS
    ]
    if not kept:
        return "answer leak" if leaks else "not a lesson"
    return action if len(kept) == len(action.values) else OptimizerAction(action.op, action.target, kept)
