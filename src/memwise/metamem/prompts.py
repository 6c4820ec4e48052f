"""MetaMem's four prompts, as pure builders: rollout, reflection, proposal, consolidation.

Every builder takes what it shows as arguments (question date, rules, verdicts) and returns chat
messages; nothing reads a clock or global state, so a run's prompts are reproducible and cacheable.
Two defects of the public reference setup are closed here rather than left to callers: the question
date is a required argument of the rollout and is shown whenever it is known, and the reflection
refuses an empty gold answer (a gold lost in preprocessing made every reflection compare against "").

Rules are passed as a mapping from stable id to text (``{"R3": "..."}``, in display order) and always
shown as ``[R3] text``, so proposals can name the rule they change and the ids survive between steps.
Prompts stay short: the default model is a 135M-parameter one with a 4k context.

Everything a prompt shows that came from a dataset or a model (questions, fragments, responses, judge
notes, reflections, rule texts, proposed edits) is fenced with :func:`~memwise.llm.untrusted.fence`, so
none of it can forge a section, a rule or a verdict. No prompt shows a dataset identifier: the
consolidation prompt names proposing questions ``Q1..Qn`` (:func:`question_labels`) rather than by
their ids, which carry labels such as LongMemEval's ``_abs`` suffix; callers map the labels back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from memwise.facts.answer import AnswerStyle, build_fragment_answer_messages, format_question_date, render_rules
from memwise.llm.base import Message
from memwise.llm.untrusted import data_notice, fence
from memwise.metamem.parse import ProposedOp, Reflection, normalize_rule_id

MAX_RULE_WORDS = 30
_EXAMPLE_EDIT = {"text": "...", "reason": "..."}
# Reasons and reasoning are context, not payload: clipped so one verbose reply cannot crowd the prompt.
_MAX_NOTE_CHARS = 240

_RULES_ARE = (
    "Rules describe how to use retrieved memory fragments (reading dates, ordering events, resolving "
    "conflicts or outdated fragments, combining fragments across sessions, admitting missing information). "
    "They never state facts about a particular user or topic."
)

_REFLECT_SYSTEM = (
    "You review how an assistant used memory fragments from past conversations to answer a question. "
    "Explain which fragments it relied on or missed, how it reasoned and what decided the outcome, then "
    "draw one lesson about using memory fragments that would help on other questions. The lesson is about "
    "method, not about this user's facts. Reply with JSON only. "
    + data_notice("question", "memory", "response", "reference", "note")
)

_PROPOSE_SYSTEM = (
    "You maintain a short list of rules that guide an assistant when it answers from memory fragments. "
    + _RULES_ARE
    + " Compare attempts at one question that succeeded with attempts that failed, and propose edits to "
    "the rules. Reply with JSON only. " + data_notice("rule", "question", "attempt")
)

_CONSOLIDATE_SYSTEM = (
    "You maintain a short list of rules that guide an assistant when it answers from memory fragments. "
    + _RULES_ARE
    + " Several reviewers each proposed edits after studying one question. Turn all proposals into one "
    "consistent list of edits. Reply with JSON only. " + data_notice("rule", "edit", "note")
)


# --------------------------------------------------------------------------------------------
# Shared rendering


def format_rules(rules: Mapping[str, str]) -> list[str]:
    """Each rule as ``[R3] text``, in the mapping's order, on one line that cannot open a fence.

    Raises:
        TypeError: ``rules`` is not a mapping (a list of texts would lose the ids proposals refer to).
        ValueError: a key is not a rule id.

    Example:
        >>> format_rules({"R1": "Prefer the newest fragment.", "3": "Use the question date."})
        ['[R1] Prefer the newest fragment.', '[R3] Use the question date.']
    """
    if not isinstance(rules, Mapping):
        raise TypeError(
            f"rules must map rule id to text, e.g. {{'R3': '...'}}, got {type(rules).__name__}: "
            "the ids are shown so that proposals can name the rule they change"
        )
    return render_rules(rules)


def _rules_block(rules: Mapping[str, str]) -> str:
    """The rules as data to edit: one fenced ``<rule id="R3">`` line each."""
    if not isinstance(rules, Mapping):
        format_rules(rules)  # raises the explanatory TypeError
    lines = [fence("rule", text, attrs={"id": normalize_rule_id(rule_id)}) for rule_id, text in rules.items()]
    return "Current rules:\n" + ("\n".join(lines) if lines else "(no rules yet)")


def _numbered(fragments: Sequence[str]) -> str:
    lines = [fence("memory", text, attrs={"n": i}) for i, text in enumerate(fragments, start=1)]
    return "\n".join(lines) or "(no memories found)"


def _clip(text: str, limit: int = _MAX_NOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _asked_on(question_date: datetime | str | None) -> str | None:
    when = format_question_date(question_date)
    return f"The question was asked on {when}." if when else None


# --------------------------------------------------------------------------------------------
# Rollout


def build_rollout_messages(
    question: str,
    fragments: Sequence[str],
    *,
    question_date: datetime | str | None,
    rules: Mapping[str, str],
    style: AnswerStyle = "direct",
) -> list[Message]:
    """The answer prompt a rollout samples from: the same prompt inference uses, rules shown with ids.

    ``question_date`` has no default on purpose: forgetting it silently (as the reference setup did)
    makes temporal questions unanswerable, so a caller without a date must say ``None``. Fragments are
    shown in the order given, numbered from 1; reflections refer to those numbers.

    Example:
        >>> msgs = build_rollout_messages("When did I move?", ["2023-05-01 Monday I moved to Oslo."],
        ...                               question_date="2023-07-01", rules={"R1": "Use the question date."})
        >>> "Today is 2023-07-01." in msgs[-1].content and "[R1] Use the question date." in msgs[-1].content
        True
    """
    format_rules(rules)  # refuses a plain list: training needs the ids proposals refer to
    return build_fragment_answer_messages(question, fragments, question_date=question_date, rules=rules, style=style)


# --------------------------------------------------------------------------------------------
# Reflection


def build_reflection_messages(
    question: str,
    fragments: Sequence[str],
    *,
    gold: str,
    response: str,
    correct: bool,
    question_date: datetime | str | None = None,
    feedback: str = "",
) -> list[Message]:
    """The prompt for summarising one judged rollout into a :class:`~memwise.metamem.parse.Reflection`.

    ``feedback`` is the judge's or metric's note (a :class:`~memwise.tasks.metrics.Score`'s words),
    shown when there is one. Answer with :func:`~memwise.metamem.parse.reflection_schema`.

    Raises:
        ValueError: ``gold`` is empty. A lost gold answer must stop the run: reflecting against "" teaches
            the rules nothing true. (For a question that has no answer, pass what the right reply says,
            e.g. "The conversations do not say.")

    Example:
        >>> msgs = build_reflection_messages("Where do I live?", ["I moved to Oslo."], gold="Oslo",
        ...                                  response="Bergen", correct=False)
        >>> "Reference answer: <reference>Oslo</reference>" in msgs[-1].content and "Judged: wrong" in msgs[-1].content
        True
    """
    gold = " ".join(gold.split())
    if not gold:
        raise ValueError(f"empty gold answer for question {question!r}: was it lost in preprocessing?")
    parts = [f"Question: {fence('question', question)}"]
    if asked := _asked_on(question_date):
        parts.append(asked)
    parts.append("Memory fragments:\n" + _numbered(fragments))
    parts.append(f"Response: {fence('response', response, one_line_text=False)}")
    verdict = f"Reference answer: {fence('reference', gold)}\nJudged: {'correct' if correct else 'wrong'}"
    if feedback.strip():
        verdict += f"\nJudge's note: {fence('note', _clip(feedback))}"
    parts.append(verdict)
    parts.append(
        "Reply as JSON with these keys:\n"
        '"used": numbers of the fragments the response relied on;\n'
        '"ignored": numbers of fragments that mattered but were missed or misread;\n'
        '"reasoning": how the response reached its answer, in one or two sentences;\n'
        '"decisive_point": the step that made it right or wrong;\n'
        '"lesson": one sentence on using memory fragments that holds beyond this question.'
    )
    return [Message("system", _REFLECT_SYSTEM), Message("user", "\n\n".join(parts))]


# --------------------------------------------------------------------------------------------
# Proposal


def render_reflection(reflection: Reflection) -> str:
    """One attempt's reflection as a compact line for the proposal prompt.

    Example:
        >>> render_reflection(Reflection(used=[2], decisive_point="took the older fragment",
        ...                              lesson="Compare dates."))
        'used fragments 2; decisive: took the older fragment; lesson: Compare dates.'
    """
    parts = []
    if reflection.used:
        parts.append("used fragments " + ", ".join(map(str, reflection.used)))
    if reflection.ignored:
        parts.append("missed fragments " + ", ".join(map(str, reflection.ignored)))
    if reflection.reasoning:
        parts.append(f"reasoning: {_clip(reflection.reasoning)}")
    if reflection.decisive_point:
        parts.append(f"decisive: {_clip(reflection.decisive_point)}")
    parts.append(f"lesson: {_clip(reflection.lesson)}")
    return "; ".join(parts)


def _attempts(title: str, reflections: Sequence[Reflection]) -> str:
    lines = [f"- {fence('attempt', render_reflection(r))}" for r in reflections] or ["(none)"]
    return f"{title}:\n" + "\n".join(lines)


def build_proposal_messages(
    question: str,
    *,
    rules: Mapping[str, str],
    successes: Sequence[Reflection],
    failures: Sequence[Reflection],
    max_words: int = MAX_RULE_WORDS,
) -> list[Message]:
    """The prompt for one question's edits to the rules, contrasting its good and bad attempts.

    Without rules, only adds are offered (there is nothing to update or delete). Answer with
    :func:`~memwise.metamem.parse.proposal_schema` of the current rule ids.

    Raises:
        ValueError: no reflections at all.

    Example:
        >>> msgs = build_proposal_messages("How many trips?", rules={"R2": "Count every session."},
        ...                                successes=[], failures=[Reflection(lesson="Check all sessions.")])
        >>> '<rule id="R2">Count every session.</rule>' in msgs[-1].content
        True
        >>> "<attempt>lesson: Check all sessions.</attempt>" in msgs[-1].content
        True
    """
    if not successes and not failures:
        raise ValueError("a proposal needs at least one reflected attempt")
    parts = [
        _rules_block(rules),
        f"Question: {fence('question', question)}",
        _attempts("Attempts judged correct", successes),
        _attempts("Attempts judged wrong", failures),
    ]
    how = [
        "Propose edits so the wrong attempts would go right without breaking the correct ones:",
        '- "add" a rule when no rule covers the lesson;',
    ]
    example: dict[str, object] = {"op": "add", **_EXAMPLE_EDIT}
    if rules:
        how.append('- "update" rule_id to rewrite a rule that is close but incomplete or wrong (prefer this to add);')
        how.append('- "delete" rule_id only for a rule that caused a wrong answer.')
        example = {"op": "update", "rule_id": normalize_rule_id(next(iter(rules))), **_EXAMPLE_EDIT}
    how.append(
        f"Each rule is one sentence of at most {max_words} words that helps on other questions too. "
        "Return an empty list if the rules already cover the lesson."
    )
    parts.append("\n".join(how))
    parts.append("Reply as " + json.dumps({"operations": [example]}))
    return [Message("system", _PROPOSE_SYSTEM), Message("user", "\n\n".join(parts))]


# --------------------------------------------------------------------------------------------
# Consolidation


def _describe(op: ProposedOp) -> str:
    target = f" {op.rule_id}" if op.rule_id else ""
    text = f": {fence('edit', op.text)}" if op.text and op.op != "delete" else ""
    reason = f" reason: {fence('note', _clip(op.reason))}" if op.reason else ""
    return f"{op.op}{target}{text}{reason}"


def question_labels(proposals: Mapping[str, Sequence[ProposedOp]]) -> dict[str, str]:
    """Per-prompt label -> question id of every question that proposed an edit: ``Q1`` for the first.

    The consolidation prompt and its schema use the labels; a reply's ``question_ids`` are labels to
    map back through this dict. Question ids never reach the model: they are dataset names, and some
    carry labels (LongMemEval's ``_abs`` marks an abstention question).

    Example:
        >>> question_labels({"gpt4_2655b836_abs": [ProposedOp(op="delete", rule_id="R1")], "q2": []})
        {'Q1': 'gpt4_2655b836_abs'}
    """
    return {f"Q{i}": qid for i, qid in enumerate((qid for qid, ops in proposals.items() if ops), start=1)}


def unlabel_questions(ops: Sequence[ProposedOp], labels: Mapping[str, str]) -> list[ProposedOp]:
    """``ops`` with each ``question_ids`` label mapped back to its question id; unknown labels dropped.

    A dropped label leaves provenance to the caller's default (every proposer), which is what an op
    that names no question gets anyway.

    Example:
        >>> ops = [ProposedOp(op="delete", rule_id="R1", question_ids=["Q1", "Q7"])]
        >>> unlabel_questions(ops, {"Q1": "gpt4_2655b836_abs"})[0].question_ids
        ('gpt4_2655b836_abs',)
    """
    return [
        op.model_copy(update={"question_ids": tuple(labels[q] for q in op.question_ids if q in labels)}) for op in ops
    ]


def _grouped(rules: Mapping[str, str], proposals: Mapping[str, Sequence[ProposedOp]]) -> list[str]:
    """One line per distinct edit with every question that proposed it; edits of one rule side by side.

    Putting edits of the same rule next to each other is what lets a small model see a conflict, and
    merging repeats keeps a 50-question step within a small context. Questions show as their labels.
    """
    label_of = {qid: label for label, qid in question_labels(proposals).items()}
    order = {normalize_rule_id(rule_id): i for i, rule_id in enumerate(rules)}
    askers: dict[tuple[str, str | None, str], list[str]] = {}
    shown: dict[tuple[str, str | None, str], ProposedOp] = {}
    for question_id, ops in proposals.items():
        for op in ops:
            key = (op.op, op.rule_id, (op.text or "").casefold() if op.op != "delete" else "")
            shown.setdefault(key, op)
            askers.setdefault(key, [])
            if label_of[question_id] not in askers[key]:
                askers[key].append(label_of[question_id])

    def place(key: tuple[str, str | None, str]) -> tuple[int, int]:
        rule_id = key[1]
        if rule_id is None:
            return (1, 0)  # adds after all edits of existing rules, in the order proposed
        return (0, order.get(rule_id, len(order)))

    keys = sorted(shown, key=place)
    return [f"- [{', '.join(askers[k])}] {_describe(shown[k])}" for k in keys]


def build_consolidation_messages(
    rules: Mapping[str, str],
    proposals: Mapping[str, Sequence[ProposedOp]],
    *,
    max_rules: int | None = None,
    max_words: int = MAX_RULE_WORDS,
) -> list[Message]:
    """The step's one consolidation prompt: current rules and every proposal, by proposing question label.

    ``max_rules`` tells the model the bound on the rule set, when there is one. Answer with
    :func:`~memwise.metamem.parse.consolidation_schema` of the current rule ids and the labels of
    :func:`question_labels`, which also maps the reply's ``question_ids`` back to question ids.

    Raises:
        ValueError: no question proposed any edit (there is nothing to consolidate; skip the call).

    Example:
        >>> ops = {"q1": [ProposedOp(op="update", rule_id="R1", text="Prefer newer dates.")],
        ...        "q2": [ProposedOp(op="delete", rule_id="R1")]}
        >>> text = build_consolidation_messages({"R1": "Prefer dates."}, ops)[-1].content
        >>> '- [Q1] update R1: <edit>Prefer newer dates.</edit>' in text and "- [Q2] delete R1" in text
        True
    """
    lines = _grouped(rules, proposals)
    if not lines:
        raise ValueError("no proposed edits to consolidate")
    size = f"The rule set holds {len(rules)} rule{'' if len(rules) == 1 else 's'}"
    size += f" and may hold at most {max_rules}." if max_rules is not None else "."
    how = [
        "Write the final edits. " + size,
        f"- Merge edits that say the same thing into one, in one sentence of at most {max_words} words.",
    ]
    first_asker = next(iter(question_labels(proposals)))
    example: dict[str, object] = {"op": "add", "text": "...", "reason": "...", "question_ids": [first_asker]}
    if rules:
        how += [
            "- Prefer updating an existing rule over adding a near-duplicate.",
            "- At most one edit per rule id; if one proposal deletes a rule and another updates it, "
            "keep the update unless the rule is clearly harmful.",
            "- Delete rarely: only a rule that is wrong or fully covered by another.",
        ]
        example = {"op": "update", "rule_id": normalize_rule_id(next(iter(rules))), **_EXAMPLE_EDIT}
        example["question_ids"] = [first_asker]
    how += [
        "- Drop edits that state facts about a user instead of a way to use memory.",
        '- In "question_ids" list the questions whose proposals each edit comes from.',
    ]
    parts = [
        _rules_block(rules),
        "Proposed edits (proposing questions in brackets):\n" + "\n".join(lines),
        "\n".join(how),
        "Reply as " + json.dumps({"operations": [example]}),
    ]
    return [Message("system", _CONSOLIDATE_SYSTEM), Message("user", "\n\n".join(parts))]
