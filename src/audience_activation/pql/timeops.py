"""Calendar arithmetic for ``occurs`` and ``this|last|next <unit>``, on constants and on Columns.

A time is either an aware UTC :class:`~datetime.datetime` (anything derived from the evaluation
time T: ``now``, ``today``, ``last month``, ``date(2024, 1, 1)``...), computed in Python so that the
plan carries plain timestamp literals, or a Spark :class:`~pyspark.sql.Column` (another event's
timestamp, a profile date) computed with native functions.

Units: milliseconds to weeks are exact durations (a UTC day is 24 hours); months, years, decades,
centuries and millennia are calendar months (1, 12, 120, 1200, 12000), added like ``add_months``:
the day of month is clamped to the end of a shorter month, the time of day is kept. Calendar
buckets: weeks start on Monday (ISO), decades on years divisible by 10, centuries by 100,
millennia by 1000.
"""

from __future__ import annotations

import calendar
import datetime as dt

from pyspark.sql import Column
from pyspark.sql import functions as F

from audience_activation.pql.ast import TimeUnit

UTC = dt.timezone.utc

#: Spark's timestamp range; results outside it are clamped (``occurs <= 5000 years before now``).
MIN_TIME = dt.datetime(1, 1, 1, tzinfo=UTC)
MAX_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

#: A time: a constant (aware, UTC) or a timestamp Column.
TimeExpr = dt.datetime | Column

EXACT_UNITS: dict[TimeUnit, dt.timedelta] = {
    TimeUnit.MILLISECOND: dt.timedelta(milliseconds=1),
    TimeUnit.SECOND: dt.timedelta(seconds=1),
    TimeUnit.MINUTE: dt.timedelta(minutes=1),
    TimeUnit.HOUR: dt.timedelta(hours=1),
    TimeUnit.DAY: dt.timedelta(days=1),
    TimeUnit.WEEK: dt.timedelta(weeks=1),
}

MONTH_UNITS: dict[TimeUnit, int] = {
    TimeUnit.MONTH: 1,
    TimeUnit.YEAR: 12,
    TimeUnit.DECADE: 120,
    TimeUnit.CENTURY: 1200,
    TimeUnit.MILLENNIUM: 12000,
}

#: ``timestamp_add`` unit and multiplier for each PQL unit.
_SPARK_ADD: dict[TimeUnit, tuple[str, int]] = {
    TimeUnit.MILLISECOND: ("MILLISECOND", 1),
    TimeUnit.SECOND: ("SECOND", 1),
    TimeUnit.MINUTE: ("MINUTE", 1),
    TimeUnit.HOUR: ("HOUR", 1),
    TimeUnit.DAY: ("DAY", 1),
    TimeUnit.WEEK: ("DAY", 7),
    **{unit: ("MONTH", months) for unit, months in MONTH_UNITS.items()},
}

#: ``date_trunc`` format of the units Spark truncates itself.
_SPARK_TRUNC = {
    TimeUnit.MILLISECOND: "MILLISECOND",
    TimeUnit.SECOND: "SECOND",
    TimeUnit.MINUTE: "MINUTE",
    TimeUnit.HOUR: "HOUR",
    TimeUnit.DAY: "DAY",
    TimeUnit.WEEK: "WEEK",
    TimeUnit.MONTH: "MONTH",
    TimeUnit.YEAR: "YEAR",
}

#: Years per bucket of the units above a year.
_YEAR_BUCKETS = {TimeUnit.DECADE: 10, TimeUnit.CENTURY: 100, TimeUnit.MILLENNIUM: 1000}


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_column(value: TimeExpr) -> Column:
    """A time as a timestamp Column (a literal for constants)."""
    return F.lit(value) if isinstance(value, dt.datetime) else value


def _add_months(value: dt.datetime, months: int) -> dt.datetime:
    total = value.year * 12 + value.month - 1 + months
    year, month0 = divmod(total, 12)
    if year < MIN_TIME.year:
        return MIN_TIME
    if year > MAX_TIME.year:
        return MAX_TIME
    day = min(value.day, calendar.monthrange(year, month0 + 1)[1])
    return value.replace(year=year, month=month0 + 1, day=day)


def add(value: TimeExpr, amount: int, unit: TimeUnit) -> TimeExpr:
    """Add ``amount`` units (negative to subtract).

    Args:
        value: The time.
        amount: How many units.
        unit: An exact unit (milliseconds to weeks) or a calendar one (months and above).

    Returns:
        The shifted time, clamped to Spark's range for constants.
    """
    if isinstance(value, dt.datetime):
        if unit in MONTH_UNITS:
            return _add_months(value, amount * MONTH_UNITS[unit])
        try:
            return value + amount * EXACT_UNITS[unit]
        except OverflowError:
            return MAX_TIME if amount > 0 else MIN_TIME
    spark_unit, multiplier = _SPARK_ADD[unit]
    return F.timestamp_add(spark_unit, F.lit(amount * multiplier), value)


def trunc(value: TimeExpr, unit: TimeUnit) -> TimeExpr:
    """The start of the calendar unit (UTC) that contains ``value``."""
    if isinstance(value, dt.datetime):
        if unit is TimeUnit.MILLISECOND:
            return value.replace(microsecond=value.microsecond // 1000 * 1000)
        if unit is TimeUnit.SECOND:
            return value.replace(microsecond=0)
        if unit is TimeUnit.MINUTE:
            return value.replace(second=0, microsecond=0)
        if unit is TimeUnit.HOUR:
            return value.replace(minute=0, second=0, microsecond=0)
        day = value.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit is TimeUnit.DAY:
            return day
        if unit is TimeUnit.WEEK:
            start = day - dt.timedelta(days=day.weekday())
            return max(start, MIN_TIME)
        if unit is TimeUnit.MONTH:
            return day.replace(day=1)
        year = value.year
        if unit in _YEAR_BUCKETS:
            year = max(year - year % _YEAR_BUCKETS[unit], MIN_TIME.year)
        return day.replace(year=year, month=1, day=1)
    if unit in _SPARK_TRUNC:
        return F.date_trunc(_SPARK_TRUNC[unit], value)
    size = _YEAR_BUCKETS[unit]
    year_column = F.year(value)
    return F.try_make_timestamp(
        year_column - F.pmod(year_column, F.lit(size)), F.lit(1), F.lit(1), F.lit(0), F.lit(0), F.lit(0), F.lit("UTC")
    )


def calendar_period(anchor: dt.datetime, unit: TimeUnit, offset: int) -> tuple[dt.datetime, dt.datetime]:
    """The whole calendar unit ``offset`` units from the one containing ``anchor``.

    Args:
        anchor: The evaluation time T.
        unit: The unit (``this month`` is offset 0, ``last month`` -1, ``next month`` 1).
        offset: Units to move.

    Returns:
        ``[start, end)`` of the period.
    """
    start = trunc(add(trunc(anchor, unit), offset, unit), unit)
    assert isinstance(start, dt.datetime)
    end = add(start, 1, unit)
    assert isinstance(end, dt.datetime)
    return start, end
