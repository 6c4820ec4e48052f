"""What MetaMem's reflection, proposal and consolidation replies mean, and schemas to constrain them.

Each step of the optimiser asks a model for JSON. The pydantic models here carry all the tolerance
(key spellings, op names in any case, rule ids written ``R3``, ``3``, ``[R3]`` or ``rule 3``, a bare list
instead of an object), so the same reading applies whether a reply goes through :func:`parse_proposal`
or through :func:`memwise.llm.structured.complete_structured` with :class:`Proposal` as the model:
there the validation error becomes the repair prompt. The tolerance stops where meaning starts: an
update or delete without a rule id, an add or update without text, or an op nobody defined is an
error, never a guess, because applying a guessed edit would corrupt the rule set for every later step.

The ``*_schema()`` functions are the strict shapes for backends that constrain decoding; they list
known rule and question ids where the caller has them, so a constrained model cannot invent one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from memwise.facts.answer import normalize_rule_id
from memwise.llm.structured import parse_model

OpName = Literal["add", "update", "delete"]
OPS: tuple[OpName, ...] = ("add", "update", "delete")

# Unambiguous synonyms small models use for the three ops.
_OP_SYNONYMS: dict[str, OpName] = {
    "add": "add",
    "create": "add",
    "insert": "add",
    "new": "add",
    "append": "add",
    "update": "update",
    "modify": "update",
    "edit": "update",
    "revise": "update",
    "rewrite": "update",
    "replace": "update",
    "delete": "delete",
    "remove": "delete",
    "drop": "delete",
}
# Ops that explicitly change nothing; a reply listing one says "leave it", so it is dropped, not refused.
_NO_OPS = frozenset({"keep", "none", "noop", "no_op", "no_change", "unchanged", "skip"})

_INT = re.compile(r"\d+")
_NONE_WORDS = frozenset({"", "none", "null", "n/a", "na", "nothing", "-"})

_OP_KEYS = {
    "op": "op",
    "operation": "op",
    "action": "op",
    "type": "op",
    "edit": "op",
    "rule_id": "rule_id",
    "id": "rule_id",
    "target": "rule_id",
    "target_id": "rule_id",
    "text": "text",
    "content": "text",
    "rule_text": "text",
    "new_text": "text",
    "new_rule": "text",
    "reason": "reason",
    "why": "reason",
    "rationale": "reason",
    "question_ids": "question_ids",
    "questions": "question_ids",
    "from": "question_ids",
    "sources": "question_ids",
}
_LIST_KEYS = ("operations", "ops", "edits", "changes", "actions")
_REFLECTION_KEYS = {
    "used": "used",
    "used_fragments": "used",
    "fragments_used": "used",
    "ignored": "ignored",
    "ignored_fragments": "ignored",
    "fragments_ignored": "ignored",
    "missed": "ignored",
    "reasoning": "reasoning",
    "trajectory": "reasoning",
    "summary": "reasoning",
    "decisive_point": "decisive_point",
    "decisive": "decisive_point",
    "key_point": "decisive_point",
    "turning_point": "decisive_point",
    "lesson": "lesson",
    "general_lesson": "lesson",
    "insight": "lesson",
}


def _snake(key: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(key).strip().lower())


def _rename(data: Mapping[Any, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Keys mapped to canonical names; the first spelling of a name wins, unknown keys pass through."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = names.get(_snake(key), _snake(key))
        out.setdefault(name, value)
    return out


def _clean_text(value: Any) -> str | None:
    """One line of text, or None when there is none (a list of strings is joined: small models split)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value if v is not None)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected text, got {type(value).__name__}")
    text = " ".join(str(value).split())
    return text or None


# --------------------------------------------------------------------------------------------
# Operations


class ProposedOp(BaseModel):
    """One edit to the rule set as a model proposed it.

    ``rule_id`` names the rule an update or delete targets (always ``R<n>``); an add has none, because
    new ids are the rule set's to assign. ``question_ids`` lists, after consolidation, the questions
    whose proposals the edit came from; it is empty for a single question's proposal, whose question
    the caller already knows.

    Example:
        >>> ProposedOp.model_validate({"op": "UPDATE", "id": "[r2]", "content": "Prefer newer dates."})
        ProposedOp(op='update', rule_id='R2', text='Prefer newer dates.', reason=None, question_ids=())
    """

    model_config = ConfigDict(frozen=True)

    op: OpName
    rule_id: str | None = None
    text: str | None = None
    reason: str | None = None
    question_ids: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = _rename(data, _OP_KEYS)
        op = data.get("op")
        is_add = isinstance(op, str) and _OP_SYNONYMS.get(_snake(op)) == "add"
        # "rule" is the id in {"op": "delete", "rule": "R2"} and the text in {"op": "add", "rule": "..."}.
        if "rule" in data:
            rule = data.pop("rule")
            try:
                if is_add:
                    raise ValueError("an add carries text, not an id")
                data.setdefault("rule_id", normalize_rule_id(rule))
            except ValueError:
                data.setdefault("text", rule)
        if is_add:
            # The model may suggest an id for a new rule; ids are the rule set's to hand out.
            data.pop("rule_id", None)
        return data

    @field_validator("op", mode="before")
    @classmethod
    def _op_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = _snake(value)
        if name in _OP_SYNONYMS:
            return _OP_SYNONYMS[name]
        if name in _NO_OPS:
            raise ValueError(f"op {value!r} changes nothing: leave it out of the list")
        raise ValueError(f"unknown op {value!r}: use add, update or delete")

    @field_validator("rule_id", mode="before")
    @classmethod
    def _rule_id(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return normalize_rule_id(value)

    @field_validator("text", "reason", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value)

    @field_validator("question_ids", mode="before")
    @classmethod
    def _question_ids(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str | int):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        ids = [" ".join(str(v).split()) for v in value if v is not None]
        return tuple(dict.fromkeys(i for i in ids if i))

    @model_validator(mode="after")
    def _meaning(self) -> ProposedOp:
        if self.op in ("update", "delete") and self.rule_id is None:
            raise ValueError(f"{self.op} needs the rule_id of an existing rule (e.g. R3)")
        if self.op in ("add", "update") and self.text is None:
            raise ValueError(f"{self.op} needs the rule text")
        return self


def _is_no_op(item: Any) -> bool:
    if not isinstance(item, Mapping):
        return False
    op = _rename(item, _OP_KEYS).get("op")
    return isinstance(op, str) and _snake(op) in _NO_OPS


def _wrap_list(data: Any) -> Any:
    """A bare list of ops, or ops under another common key, as ``{"operations": [...]}``, minus no-ops."""
    if isinstance(data, list):
        data = {"operations": data}
    elif isinstance(data, Mapping):
        renamed = {_snake(k): v for k, v in data.items()}
        key = next((k for k in _LIST_KEYS if k in renamed), None)
        if key is None and "op" in _rename(data, _OP_KEYS):
            data = {"operations": [data]}  # a single op, not wrapped
        elif key is not None:
            data = {"operations": renamed[key]}
    if isinstance(data, Mapping) and isinstance(data.get("operations"), list):
        return {**data, "operations": [item for item in data["operations"] if not _is_no_op(item)]}
    return data


class Proposal(BaseModel):
    """One question's proposed edits; an empty list means the rules already cover the lesson."""

    operations: list[ProposedOp]

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        return _wrap_list(data)


class Consolidation(BaseModel):
    """The step's merged edits: at most one per rule, so applying them in any order gives one result.

    Exact repeats are merged (their question ids united); two different edits of one rule are the
    conflict consolidation exists to resolve, so they are refused and the model is asked again.
    """

    operations: list[ProposedOp]

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        return _wrap_list(data)

    @model_validator(mode="after")
    def _one_edit_per_rule(self) -> Consolidation:
        merged: dict[tuple[str, str | None, str | None], ProposedOp] = {}
        by_rule: dict[str, ProposedOp] = {}
        for op in self.operations:
            key = (op.op, op.rule_id, (op.text or "").casefold())
            if key in merged:
                ids = merged[key].question_ids + op.question_ids
                merged[key] = merged[key].model_copy(update={"question_ids": tuple(dict.fromkeys(ids))})
                continue
            if op.rule_id is not None:
                if op.rule_id in by_rule:
                    raise ValueError(
                        f"two different edits of {op.rule_id} ({by_rule[op.rule_id].op} and {op.op}): "
                        "keep one edit per rule"
                    )
                by_rule[op.rule_id] = op
            merged[key] = op
        self.operations = list(merged.values())
        return self


# --------------------------------------------------------------------------------------------
# Reflection


def _fragment_numbers(value: Any) -> Any:
    """Fragment numbers from ``[1, 3]``, ``["F1", "[3]"]``, ``"1, 3"`` or ``"none"``, deduplicated in order."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    numbers: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"{item!r} is not a fragment number")
        if isinstance(item, int):
            found = [item]
        elif isinstance(item, str):
            found = [int(n) for n in _INT.findall(item)]
            if not found and item.strip().lower() not in _NONE_WORDS:
                raise ValueError(f"{item!r} is not a fragment number")
        else:
            raise ValueError(f"{item!r} is not a fragment number")
        numbers.extend(found)
    if any(n < 1 for n in numbers):
        raise ValueError("fragment numbers start at 1")
    return list(dict.fromkeys(numbers))


class Reflection(BaseModel):
    """What one rollout teaches: the fragments it leaned on and missed, how it reasoned, and a lesson.

    ``used`` and ``ignored`` are 1-based fragment numbers as the prompt showed them (``ignored``: ones
    that mattered but were missed or misread). ``lesson`` is required: it is what proposals are made of.

    Example:
        >>> r = Reflection.model_validate({"used": "1, 3", "Decisive point": "took the older date",
        ...                                "lesson": "Compare dates before answering."})
        >>> r.used, r.decisive_point
        ([1, 3], 'took the older date')
    """

    model_config = ConfigDict(frozen=True)

    used: list[int] = []
    ignored: list[int] = []
    reasoning: str = ""
    decisive_point: str = ""
    lesson: str

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        return _rename(data, _REFLECTION_KEYS) if isinstance(data, Mapping) else data

    @field_validator("used", "ignored", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _fragment_numbers(value)

    @field_validator("reasoning", "decisive_point", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value) or ""

    @field_validator("lesson", mode="before")
    @classmethod
    def _lesson(cls, value: Any) -> Any:
        text = _clean_text(value)
        if text is None:
            raise ValueError("the lesson is empty: state one general lesson about using memory")
        return text


# --------------------------------------------------------------------------------------------
# Parsers (pure)


def parse_reflection(text: str) -> Reflection:
    """The reply as a :class:`Reflection`.

    Raises:
        ParseError: no JSON object with a lesson; ``raw`` keeps the reply.

    Example:
        >>> parse_reflection('<think>hm</think>{"lesson": "Check the question date."}').lesson
        'Check the question date.'
    """
    return parse_model(text, Reflection)


def parse_proposal(text: str) -> list[ProposedOp]:
    r"""The edits one question's proposal asks for (possibly none).

    Raises:
        ParseError: no JSON list of ops, or an op that is unknown or lacks its rule id or text.

    Example:
        >>> parse_proposal('```json\n[{"op": "ADD", "text": "Count across all sessions."}]\n```')[0].op
        'add'
    """
    return parse_model(text, Proposal).operations


def parse_consolidation(text: str) -> list[ProposedOp]:
    """The step's merged edits, at most one per rule id (exact repeats merged).

    Raises:
        ParseError: as :func:`parse_proposal`, and when two different edits target one rule.
    """
    return parse_model(text, Consolidation).operations


# --------------------------------------------------------------------------------------------
# Schemas for constrained decoding


def _rule_id_schema(rule_ids: Sequence[str] | None) -> dict[str, Any]:
    if rule_ids is None:
        return {"type": "string", "pattern": "^R[0-9]+$"}
    return {"type": "string", "enum": list(dict.fromkeys(normalize_rule_id(i) for i in rule_ids))}


# Caps on free text in the schemas. Without them a small model under a grammar can repeat one phrase
# until the token limit and the reply never closes; measured on SmolLM2-135M with llama.cpp, a 160-char
# cap compiles and decodes at normal speed. The rule set still enforces its own word limit.
RULE_CHARS = 200
NOTE_CHARS = 200


def _op_variants(rule_ids: Sequence[str] | None, extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    text = {"type": "string", "minLength": 1, "maxLength": RULE_CHARS}
    reason = {"type": "string", "maxLength": NOTE_CHARS}
    shapes: list[tuple[str, dict[str, Any]]] = [("add", {"text": text, "reason": reason})]
    if rule_ids is None or rule_ids:  # without rules there is nothing to update or delete
        target = _rule_id_schema(rule_ids)
        shapes.append(("update", {"rule_id": target, "text": text, "reason": reason}))
        shapes.append(("delete", {"rule_id": target, "reason": reason}))
    variants = []
    for name, fields in shapes:
        properties = {"op": {"type": "string", "enum": [name]}, **fields, **extra}
        variants.append(
            {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
        )
    return variants


def _ops_schema(rule_ids: Sequence[str] | None, extra: Mapping[str, Any], max_ops: int | None) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "array", "items": {"anyOf": _op_variants(rule_ids, extra)}}
    if max_ops is not None:
        if max_ops < 0:
            raise ValueError(f"max_ops must be >= 0, got {max_ops}")
        items["maxItems"] = max_ops
    return {
        "type": "object",
        "properties": {"operations": items},
        "required": ["operations"],
        "additionalProperties": False,
    }


def proposal_schema(rule_ids: Sequence[str] | None = None, *, max_ops: int | None = None) -> dict[str, Any]:
    """``{"operations": [...]}`` with one object shape per op.

    Pass the current rule ids so a constrained model can only target rules that exist (none: adds
    only); ``None`` allows any ``R<n>``. Text is capped at :data:`RULE_CHARS` characters so a looping
    model still closes its reply; the word limit is the rule set's to enforce.

    Example:
        >>> s = proposal_schema([])
        >>> [v["properties"]["op"]["enum"] for v in s["properties"]["operations"]["items"]["anyOf"]]
        [['add']]
    """
    return _ops_schema(rule_ids, {}, max_ops)


def consolidation_schema(
    rule_ids: Sequence[str] | None = None,
    question_ids: Sequence[str] | None = None,
    *,
    max_ops: int | None = None,
) -> dict[str, Any]:
    """As :func:`proposal_schema`, each op also naming the questions it came from (``question_ids``)."""
    ids: dict[str, Any] = {"type": "string"}
    if question_ids is not None:
        ids = {"type": "string", "enum": list(dict.fromkeys(question_ids))}
    return _ops_schema(rule_ids, {"question_ids": {"type": "array", "items": ids}}, max_ops)


def reflection_schema(n_fragments: int | None = None) -> dict[str, Any]:
    """The reflection object; with ``n_fragments``, fragment numbers are limited to 1..n."""
    numbers: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 1}}
    if n_fragments is not None:
        if n_fragments < 0:
            raise ValueError(f"n_fragments must be >= 0, got {n_fragments}")
        # An empty enum is no schema at all to grammar backends; with no fragments the lists stay empty.
        # maxItems bounds the list: small models otherwise repeat "1, 2, 3, ..." until the token limit.
        numbers = {
            "type": "array",
            "items": {"type": "integer", "enum": list(range(1, n_fragments + 1))},
            "maxItems": n_fragments,
        }
        if n_fragments == 0:
            numbers = {"type": "array", "maxItems": 0}
    text = {"type": "string", "maxLength": NOTE_CHARS}
    properties = {
        "used": numbers,
        "ignored": numbers,
        "reasoning": text,
        "decisive_point": text,
        "lesson": {"type": "string", "minLength": 1, "maxLength": RULE_CHARS},
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
