"""Final-answer extraction from an executor's free text, one rule per answer kind.

Models reason before they answer and often mention several options on the way ("B looks tempting,
but..."), so every rule takes the *last* explicit answer, not the first. Each function returns
``None`` when the text states no answer at all; callers count that as wrong but flag it as a format
failure, because a model that never answers needs a different fix from one that answers wrongly.
"""

from __future__ import annotations

import re

from memwise.exceptions import ConfigError
from memwise.tasks.suites._io import LETTERS
from memwise.tasks.suites.aime import normalize_integer_answer

_NOT_WORD = r"(?![A-Za-z0-9])"


def _choice_patterns(letters: str) -> list[re.Pattern[str]]:
    cls = f"[{letters}]"
    return [
        # "Answer: C", "answer is (C)", "final answer: **C**", "the correct option is C)"; a bare
        # "option B" is not an answer, reasoning names options all the time
        re.compile(
            rf"(?i:answer|correct\s+option|correct\s+choice)\s*(?:(?i:is)\s*)?[:\-=]?\s*[*_]*\s*[\(\[]?\s*"
            rf"({cls}){_NOT_WORD}"
        ),
        # "**C**", "**(C)**", "**C)**"
        re.compile(rf"\*\*\s*[\(\[]?({cls})[\)\]]?\s*\*\*"),
        # "\boxed{C}", "\boxed{\text{C}}"
        re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\s*({cls})\s*\}}"),
    ]


def _lone_letter(text: str, letters: str) -> str | None:
    """A last non-blank line that is only a letter ("C", "(C)", "C.", "**C**"), else ``None``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = re.fullmatch(rf"\s*[*_]*[\(\[]?([{letters}])[\)\]\.]?[*_]*\s*", lines[-1])
    return match.group(1) if match else None


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The letter of the last explicit choice in ``text``, or ``None``.

    Only capital letters within the first ``n_choices`` count, so "the answer is a function" or an
    "E" in a four-option question is not mistaken for a choice.

    Example:
        >>> extract_choice("A seems right, but on reflection the answer is (C).")
        'C'
        >>> extract_choice("I cannot decide.") is None
        True
    """
    if not 1 <= n_choices <= len(LETTERS):
        raise ValueError(f"n_choices must be in 1..{len(LETTERS)}, got {n_choices}")
    letters = LETTERS[:n_choices]
    lone = _lone_letter(text, letters)
    if lone is not None:  # nothing can come after the last line
        return lone
    best: tuple[int, str] | None = None
    for pattern in _choice_patterns(letters):
        for match in pattern.finditer(text):
            if best is None or match.start(1) > best[0]:
                best = (match.start(1), match.group(1))
    return None if best is None else best[1]


def _boxed_contents(text: str) -> list[str]:
    r"""The contents of every ``\boxed{...}``, with nested braces balanced."""
    out: list[str] = []
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                out.append(text[start:i])
                break
    return out


_ANSWER_IS_INT = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:=]?\s*[*$]*\s*([+-]?\d[\d,]*)(?![\d/])")


def extract_integer(text: str) -> str | None:
    r"""The integer answer of an AIME-style reply: the last ``\boxed{}``, else the last "answer is N".

    A last box that holds no integer (``\boxed{\frac{1}{2}}``) yields ``None``: the model did answer,
    but not in the form the suite accepts.

    Example:
        >>> extract_integer("so m+n = 113, i.e. \\boxed{113}")
        '113'
        >>> extract_integer("The answer is 073.")
        '73'
    """
    boxes = _boxed_contents(text)
    if boxes:
        return normalize_integer_answer(boxes[-1])
    matches = _ANSWER_IS_INT.findall(text)
    return normalize_integer_answer(matches[-1]) if matches else None


_ANSWER_LABEL = re.compile(r"(?i)answer\s*[*_]*\s*:")


def extract_span(text: str) -> str | None:
    r"""A short free-text answer.

    The last ``\boxed{}``, else what follows the last "Answer:" on its line, else the last line.

    Markdown emphasis around the answer is dropped; the scorer's normalisation handles the rest.
    The box comes first because the paper-style executor prompt asks for it.

    Example:
        >>> extract_span("Both were born in 1950.\nAnswer: **yes**")
        'yes'
        >>> extract_span("It is Paris.\n\\boxed{\\text{Paris}}")
        'Paris'
    """
    boxes = _boxed_contents(text)
    if boxes:
        inner = re.sub(r"\\text\{(.*)\}", r"\1", boxes[-1].strip(), flags=re.DOTALL).strip()
        return inner or None
    labels = list(_ANSWER_LABEL.finditer(text))
    if labels:
        candidate = text[labels[-1].end() :].strip().split("\n", 1)[0]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        candidate = lines[-1] if lines else ""
    candidate = candidate.strip().strip("*_`").strip()
    return candidate or None


def extract_answer(suite: str, text: str, *, n_choices: int = 4) -> str | None:
    """The final answer for ``suite`` ("mmlu", "gpqa", "aime", "hotpotqa") from free text."""
    if suite in ("mmlu", "gpqa"):
        return extract_choice(text, n_choices)
    if suite == "aime":
        return extract_integer(text)
    if suite == "hotpotqa":
        return extract_span(text)
    raise ConfigError(f"unknown suite {suite!r}; known: aime, gpqa, hotpotqa, mmlu")
