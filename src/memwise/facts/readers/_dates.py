"""Date parsing for the dataset formats memwise reads.

Written with regular expressions rather than ``strptime`` so month names parse the same whatever the
process locale is, and so one function accepts every format a user may mix in a JSONL file.
"""

from __future__ import annotations

import re
from datetime import datetime

MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}

# LoCoMo: "1:56 pm on 8 May, 2023" (the comma and the dots of "p.m." are optional).
_LOCOMO = re.compile(
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<half>[ap])\.?\s*m\.?\s+on\s+"
    r"(?P<day>\d{1,2})\s+(?P<month>[a-z]+)\.?,?\s+(?P<year>\d{4})",
    re.IGNORECASE,
)
# LongMemEval: "2023/05/30 (Tue) 23:40"; the weekday is decoration and is not checked.
_LONGMEMEVAL = re.compile(
    r"(?P<year>\d{4})/(?P<month>\d{1,2})/(?P<day>\d{1,2})(?:\s*\([a-z]+\))?"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?",
    re.IGNORECASE,
)


def _from_locomo(match: re.Match[str]) -> datetime:
    hour = int(match["hour"])
    if not 1 <= hour <= 12:
        raise ValueError(f"hour {hour} is not a 12-hour clock hour")
    month = MONTHS.get(match["month"].lower())
    if month is None:
        raise ValueError(f"unknown month {match['month']!r}")
    hour = hour % 12 + (12 if match["half"].lower() == "p" else 0)
    return datetime(int(match["year"]), month, int(match["day"]), hour, int(match["minute"]))


def _from_longmemeval(match: re.Match[str]) -> datetime:
    return datetime(
        int(match["year"]),
        int(match["month"]),
        int(match["day"]),
        int(match["hour"] or 0),
        int(match["minute"] or 0),
        int(match["second"] or 0),
    )


def parse_datetime(text: str) -> datetime:
    """Parse a LoCoMo, LongMemEval or ISO 8601 date time.

    Naive unless the text carries an offset (ISO only), matching what each dataset records.

    Raises:
        ValueError: naming the value, when no format fits or the fields are out of range.
    """
    value = text.strip()
    locomo = _LOCOMO.fullmatch(value)
    longmemeval = None if locomo else _LONGMEMEVAL.fullmatch(value)
    try:
        if locomo:
            return _from_locomo(locomo)
        if longmemeval:
            return _from_longmemeval(longmemeval)
    except ValueError as exc:
        raise ValueError(f"unparsable date {text!r}: {exc}") from None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"unparsable date {text!r}: expected e.g. '1:56 pm on 8 May, 2023', '2023/05/30 (Tue) 23:40' or ISO 8601"
        ) from None
