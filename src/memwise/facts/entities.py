"""Entities without a model: proper nouns, quoted titles and numbers, as lower-case keys.

A question about "Becoming Nicole" or "Door Dash" is about the units that name it, however little
else they share with the question's wording. These keys are cheap to find (a few regular
expressions), written into each unit's metadata at index time (:data:`ENTITIES`), and matched
against the keys of the question at query time. Capitalised sentence starters ("Thanks", "Wow",
"What") are not entities; any other capitalised word is taken to be one, which is wrong now and
then and costs little, since rare keys weigh most and a wrong key is rarely shared by a question.
"""

from __future__ import annotations

import re

ENTITIES = "entity_keys"
"""Metadata key: the unit's entity keys (see :func:`extract_entities`), sorted."""

_PREFIX = re.compile(r"^\[[^\]]{1,40}\]\s*(?:[^:\s][^:]{0,40}:\s*)?")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,60})[\"”]")
_WORD = r"(?:[A-Z][a-zA-Z'’\-]+|[A-Z]{2,}\+?)"
_PROPER = re.compile(rf"{_WORD}(?:\s+(?:(?:of|the|de|and)\s+)*{_WORD})*")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
# Capitalised words that start sentences or questions far more often than they name anything.
_COMMON = frozenset(
    "i i'm i've i'll i'd oh hey hi hello yes no wow thanks thank yeah yep sure well so but and or the a an it it's "
    "that that's this what what's when where who whom whose why how which did do does is are was were have has had "
    "can could would should will my your our their his her we you they he she me also just really absolutely "
    "definitely congrats congratulations awesome great good nice cool love glad sounds totally haha lol hmm not "
    "any some let let's keep take maybe of okay ok in on at for by with from to if as".split()
)


def _key(phrase: str) -> str:
    return re.sub(r"['’]s$", "", phrase.strip().lower())


def extract_entities(text: str) -> tuple[str, ...]:
    """The entity keys of ``text``, sorted, each once; a leading ``[day] Speaker:`` prefix is skipped.

    A multi-word name gives its whole phrase and each of its words ("door dash", "door", "dash"), so a
    question that names only part of it still meets it.

    Example:
        >>> extract_entities('[8 May 2023] Ann: Wow, I read "Becoming Nicole" in Paris with Door Dash money, 3 times!')
        ('3', 'becoming', 'becoming nicole', 'dash', 'door', 'door dash', 'nicole', 'paris')
    """
    body = _PREFIX.sub("", text)
    found: set[str] = set()
    for match in _QUOTED.finditer(body):
        found.add(_key(match.group(1)))
    for match in _PROPER.finditer(body):
        words = [w for w in match.group(0).split() if w.lower() not in _COMMON]
        if not words:
            continue
        found.add(_key(" ".join(words)))
        if len(words) > 1:
            found.update(_key(w) for w in words)
    found.update(match.group(0) for match in _NUMBER.finditer(body))
    found.discard("")
    return tuple(sorted(found))
