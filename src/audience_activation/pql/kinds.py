"""The kinds the PQL AST (:mod:`audience_activation.pql.ast`) is built from: operators, units, time keywords,
calendar parts, aggregates and quantifiers, each a string enumeration whose values are PQL's own spelling (so
that the printer writes them back and error messages quote them as written; a calendar part's value is the end of
its method names, ``Month`` of ``getMonth()`` and ``currentMonth()``).

:mod:`audience_activation.pql.ast` re-exports every one of them: the compiler and the tests use them as
``ast.CompareOp``.
"""

from __future__ import annotations

import enum


class CompareOp(str, enum.Enum):
    """Infix comparison operators (also the comparator of ``occurs <cmp> N <unit> ...``)."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class ArithOp(str, enum.Enum):
    """Arithmetic operators. Division (and ``%``) by zero yields a missing value."""

    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    MOD = "%"


class StringOp(str, enum.Enum):
    """String tests; the value is the PQL method name of the positive form."""

    EQUALS = "equals"
    STARTS_WITH = "startsWith"
    ENDS_WITH = "endsWith"
    CONTAINS = "contains"


class TimeConstKind(str, enum.Enum):
    """Timestamp keywords: ``now`` is T, ``today`` the start of T's UTC day, and so on."""

    NOW = "now"
    TODAY = "today"
    YESTERDAY = "yesterday"
    TOMORROW = "tomorrow"


class TimeUnit(str, enum.Enum):
    """Units of ``occurs`` and of ``this|last|next <unit>``; values are the singular spelling."""

    MILLISECOND = "millisecond"
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    DECADE = "decade"
    CENTURY = "century"
    MILLENNIUM = "millennium"

    @property
    def plural(self) -> str:
        """The plural spelling (``days``, ``centuries``, ``millennia``)."""
        return _PLURALS[self]


_PLURALS = {
    **{unit: unit.value + "s" for unit in TimeUnit},
    TimeUnit.CENTURY: "centuries",
    TimeUnit.MILLENNIUM: "millennia",
}


class PeriodRelation(str, enum.Enum):
    """``this``, ``last`` or ``next`` whole calendar unit (UTC)."""

    THIS = "this"
    LAST = "last"
    NEXT = "next"


class Direction(str, enum.Enum):
    """Direction of ``occurs``. Adobe lists ``from`` but never shows an example of it."""

    BEFORE = "before"
    AFTER = "after"
    FROM = "from"


class DatePart(str, enum.Enum):
    """Calendar part of a timestamp (``getMonth()``) or of T (``currentMonth()``), in UTC."""

    YEAR = "Year"
    MONTH = "Month"
    DAY_OF_MONTH = "DayOfMonth"


class AggregateFunction(str, enum.Enum):
    """Aggregates; ``sum`` of nothing is 0, the others of nothing are missing."""

    COUNT = "count"
    SUM = "sum"
    AVERAGE = "average"
    MIN = "min"
    MAX = "max"


class QuantifierKind(str, enum.Enum):
    """``exists`` or ``forall``."""

    EXISTS = "exists"
    FORALL = "forall"
