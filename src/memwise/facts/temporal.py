"""Time words in a question turned into a date range, and a soft score for how close a memory falls.

"What did I buy three weeks ago?" names no word the memory shares; it names *when*. Given the date the
question is asked, :func:`time_range` turns such phrases into a window of days, and
:func:`time_score` rates a memory's event time against it: 1 inside the window, decaying outside
(an approximate phrase like "a few weeks ago" rarely lands on the exact day, and session dates are
not event dates). Absolute dates ("in July 2023", "April 10, 2023") need no question date.

Pure functions with no model call: the retriever runs them on every query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from memwise.exceptions import ConfigError
from memwise.facts.readers._dates import MONTHS

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3, "few": 3,
    "several": 4,
}  # fmt: skip
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUMBER_RE = r"\d+|" + "|".join(sorted((re.escape(n) for n in _NUMBERS), key=len, reverse=True))

_FULL_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<m1>{_MONTH_RE})\.?,?\s+(?P<y1>\d{{4}})"
    rf"|(?P<m2>{_MONTH_RE})\.?\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y2>\d{{4}}))\b",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"\b(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})\b")
_MONTH_YEAR = re.compile(rf"\b(?P<m>{_MONTH_RE})\.?,?\s+(?P<y>(?:19|20)\d\d)\b", re.IGNORECASE)
_YEAR = re.compile(r"\b(?:in|during|of|since)\s+(?P<y>(?:19|20)\d\d)\b", re.IGNORECASE)
_AGO = re.compile(rf"\b(?P<n>{_NUMBER_RE})\s+(?P<unit>day|week|month|year)s?\s+ago\b", re.IGNORECASE)
_LAST_UNIT = re.compile(
    r"\b(?P<which>last|past|previous|this)\s+(?P<unit>day|week|weekend|month|year)\b", re.IGNORECASE
)
_WEEKDAY = re.compile(rf"\b(?P<day>{'|'.join(_WEEKDAYS)})\b", re.IGNORECASE)
# Not "this": "this may help" is the verb. After "in", "last" or "during", "may" is the month.
_MONTH_ALONE = re.compile(rf"\b(?P<pre>in|last|during)\s+(?P<m>{_MONTH_RE})\b", re.IGNORECASE)
_SIMPLE = {"yesterday": (1, 1), "today": (0, 1), "recently": (30, 31), "lately": (30, 31)}
_SIMPLE_RE = re.compile(r"\b(?P<w>yesterday|today|recently|lately)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DateRange:
    """Days ``start`` (inclusive) to ``end`` (exclusive) that a question points at."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConfigError(f"DateRange: end {self.end} must be after start {self.start}")

    @property
    def days(self) -> int:
        """Whole days the range covers (``end`` is exclusive)."""
        return (self.end - self.start).days


def _month_range(year: int, month: int) -> DateRange:
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return DateRange(date(year, month, 1), end)


def _day(year: int, month: int, day: int) -> DateRange | None:
    try:
        start = date(year, month, day)
    except ValueError:
        return None
    return DateRange(start, start + timedelta(days=1))


def _absolute(text: str) -> DateRange | None:
    if m := _FULL_DATE.search(text):
        day = m.group("d1") or m.group("d2")
        month = MONTHS[(m.group("m1") or m.group("m2")).lower()]
        return _day(int(m.group("y1") or m.group("y2")), month, int(day))
    if m := _ISO_DATE.search(text):
        return _day(int(m.group("y")), int(m.group("m")), int(m.group("d")))
    if m := _MONTH_YEAR.search(text):
        return _month_range(int(m.group("y")), MONTHS[m.group("m").lower()])
    if m := _YEAR.search(text):
        year = int(m.group("y"))
        return DateRange(date(year, 1, 1), date(year + 1, 1, 1))
    return None


def _relative(text: str, today: date) -> DateRange | None:
    if m := _AGO.search(text):
        raw = m.group("n").lower()
        n = int(raw) if raw.isdigit() else _NUMBERS[raw]
        unit = _UNIT_DAYS[m.group("unit").lower()]
        centre = today - timedelta(days=n * unit)
        half = max(1, unit // 2) if n > 0 else 0
        return DateRange(centre - timedelta(days=half), centre + timedelta(days=half + 1))
    if m := _LAST_UNIT.search(text):
        which, unit = m.group("which").lower(), m.group("unit").lower()
        this_week = today - timedelta(days=today.weekday())
        if unit == "weekend":
            saturday = this_week + timedelta(days=5)
            if which != "this" or saturday > today:
                saturday -= timedelta(days=7)
            return DateRange(saturday, saturday + timedelta(days=2))
        if unit == "day":
            return DateRange(today - timedelta(days=1), today + timedelta(days=1))
        if unit == "week":
            start = this_week if which == "this" else this_week - timedelta(days=7)
            return DateRange(start, start + timedelta(days=7))
        if unit == "month":
            if which == "this":
                return _month_range(today.year, today.month)
            prev = today.replace(day=1) - timedelta(days=1)
            return _month_range(prev.year, prev.month)
        year = today.year if which == "this" else today.year - 1
        return DateRange(date(year, 1, 1), date(year + 1, 1, 1))
    if m := _WEEKDAY.search(text):
        wanted = _WEEKDAYS.index(m.group("day").lower())
        back = (today.weekday() - wanted) % 7 or 7  # the latest such day strictly before today
        start = today - timedelta(days=back)
        return DateRange(start, start + timedelta(days=1))
    if m := _MONTH_ALONE.search(text):
        month = MONTHS[m.group("m").lower()]
        year = today.year if month <= today.month else today.year - 1
        if m.group("pre").lower() == "last" and month == today.month:
            year -= 1
        return _month_range(year, month)
    if m := _SIMPLE_RE.search(text):
        back, width = _SIMPLE[m.group("w").lower()]
        start = today - timedelta(days=back)
        return DateRange(start, start + timedelta(days=width))
    return None


def time_range(question: str, question_date: datetime | date | None = None) -> DateRange | None:
    """The days ``question`` points at, or None when it names no time this can place.

    Absolute dates win over relative words ("the weekend before April 10, 2023" is about April 2023
    whatever today is); relative words ("3 weeks ago", "last Friday", "in May", "recently") need
    the ``question_date`` and are ignored without it.

    Example:
        >>> time_range("What did I buy 3 weeks ago?", date(2023, 5, 30))
        DateRange(start=datetime.date(2023, 5, 6), end=datetime.date(2023, 5, 13))
        >>> time_range("Where did we go last Friday?", date(2023, 5, 30))  # a Tuesday
        DateRange(start=datetime.date(2023, 5, 26), end=datetime.date(2023, 5, 27))
        >>> time_range("What happened in July 2023?")
        DateRange(start=datetime.date(2023, 7, 1), end=datetime.date(2023, 8, 1))
        >>> time_range("What did I buy 3 weeks ago?") is None
        True
    """
    found = _absolute(question)
    if found is not None or question_date is None:
        return found
    today = question_date.date() if isinstance(question_date, datetime) else question_date
    return _relative(question, today)


def time_score(when: datetime | date | None, window: DateRange, *, min_decay_days: float = 3.0) -> float:
    """1 inside ``window``, ``exp(-distance / scale)`` outside; 0 for a memory without a date.

    The scale is the window's width (at least ``min_decay_days``): a day off matters for "yesterday",
    much less for "last year".

    Example:
        >>> w = DateRange(date(2023, 5, 6), date(2023, 5, 13))
        >>> time_score(date(2023, 5, 8), w), round(time_score(date(2023, 5, 19), w), 3)  # a week past the last day
        (1.0, 0.368)
    """
    if when is None:
        return 0.0
    day = when.date() if isinstance(when, datetime) else when
    if window.start <= day < window.end:
        return 1.0
    distance = (window.start - day).days if day < window.start else (day - window.end).days + 1
    return math.exp(-distance / max(float(window.days), min_decay_days))


_ASKS_WHEN = re.compile(r"^\W*(?:when|how long|what (?:date|day|month|year|time))\b", re.IGNORECASE)
_SAYS_TIME = re.compile(
    rf"\b(?:yesterday|today|tonight|tomorrow|last|next|ago|since|recently|weekend|{'|'.join(_WEEKDAYS)}|"
    rf"{_MONTH_RE}|(?:19|20)\d\d|\d+\s+(?:day|week|month|year)s?|(?:day|week|month|year)s?)\b",
    re.IGNORECASE,
)


def asks_when(question: str) -> bool:
    """Whether the answer to ``question`` is a time ("When did...", "How long has...").

    Example:
        >>> asks_when("When did Ann go to Rome?"), asks_when("What did Ann paint?")
        (True, False)
    """
    return _ASKS_WHEN.search(question) is not None


def says_time(text: str) -> bool:
    """Whether ``text`` itself says when something happened ("last Saturday", "3 years", "in May").

    A leading ``[day]`` label (index text) does not count: every dated unit has one.

    Example:
        >>> says_time("[8 May 2023] Ann: I ran a race last Sunday."), says_time("[8 May 2023] Ann: I ran a race.")
        (True, False)
    """
    return _SAYS_TIME.search(re.sub(r"^\[[^\]]*\]", "", text)) is not None
