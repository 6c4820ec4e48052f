"""Time words in questions: the window of days each phrase points at, and the soft score against it."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from memwise.exceptions import ConfigError
from memwise.facts.temporal import DateRange, asks_when, says_time, time_range, time_score

TUESDAY = date(2023, 5, 30)


def _days(question: str, asked: date | datetime | None = TUESDAY) -> tuple[date, date] | None:
    found = time_range(question, asked)
    return None if found is None else (found.start, found.end)


def test_n_units_ago_is_a_window_around_that_day() -> None:
    start, end = _days("What did I buy 3 weeks ago?")
    assert start <= date(2023, 5, 9) < end
    assert (end - start).days == 7
    assert _days("Who called two days ago?") == (date(2023, 5, 27), date(2023, 5, 30))
    start, end = _days("Where was I a few months ago?")
    assert start <= date(2023, 3, 1) < end


def test_weekday_is_the_latest_one_before_the_question() -> None:
    assert _days("Where did we go last Friday?") == (date(2023, 5, 26), date(2023, 5, 27))
    assert _days("What did I eat on Tuesday?") == (date(2023, 5, 23), date(2023, 5, 24))  # not today


def test_last_week_month_weekend_and_simple_words() -> None:
    assert _days("What did I read last week?") == (date(2023, 5, 22), date(2023, 5, 29))
    assert _days("What did I read last month?") == (date(2023, 4, 1), date(2023, 5, 1))
    assert _days("Where did I hike last weekend?") == (date(2023, 5, 27), date(2023, 5, 29))
    assert _days("What did I cook yesterday?") == (date(2023, 5, 29), date(2023, 5, 30))
    start, end = _days("What have I been reading recently?")
    assert start == date(2023, 4, 30) and end == date(2023, 5, 31)  # the last 30 days, today included


def test_month_name_is_the_latest_such_month() -> None:
    assert _days("What did I plant in May?") == (date(2023, 5, 1), date(2023, 6, 1))
    assert _days("What did I plant in May?", date(2023, 3, 1)) == (date(2022, 5, 1), date(2022, 6, 1))
    assert _days("This may help: what did I plant?") is None  # the verb, not the month


def test_absolute_dates_need_no_question_date_and_win_over_relative_words() -> None:
    assert _days("What happened in July 2023?", None) == (date(2023, 7, 1), date(2023, 8, 1))
    assert _days("What did Maria do the weekend before April 10, 2023?") == (date(2023, 4, 10), date(2023, 4, 11))
    assert _days("Where did she go in 2022?", None) == (date(2022, 1, 1), date(2023, 1, 1))
    assert _days("What did I buy 3 weeks ago?", None) is None  # relative words need a question date
    assert _days("What did Caroline paint?") is None


def test_time_score_is_one_inside_and_decays_with_distance() -> None:
    window = DateRange(date(2023, 5, 6), date(2023, 5, 13))
    assert time_score(datetime(2023, 5, 12, 23, 0), window) == 1.0
    near, far = time_score(date(2023, 5, 14), window), time_score(date(2023, 6, 14), window)
    assert 1.0 > near > far > 0.0
    assert time_score(date(2023, 5, 5), window) == pytest.approx(time_score(date(2023, 5, 13), window))  # a day off
    assert time_score(None, window) == 0.0
    with pytest.raises(ConfigError):
        DateRange(date(2023, 5, 6), date(2023, 5, 6))


def test_asks_when_and_says_time() -> None:
    assert asks_when("How long has Nate had his turtles?")
    assert not asks_when("What did Ann paint?")
    assert says_time("[8 May 2023] Ann: I've had them for 3 years now")
    assert not says_time("[8 May 2023] Ann: They bring me joy")  # the day label does not count
