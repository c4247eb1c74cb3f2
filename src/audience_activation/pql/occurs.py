"""Time: ``now``/``today``, ``date(y, m, d)``, date parts, and ``occurs`` with its time windows.

Rules owned here (see ``docs/segments.md``, "Semantics decisions"):

- ``now`` is the evaluation time T; ``today``/``yesterday``/``tomorrow`` are UTC days relative to
  T. ``date(y, m, d)`` is midnight UTC; it folds to a constant when its parts are literals or
  ``current*()``, and an impossible date computed from attributes is missing, not an error.
- An ``occurs`` time is an instant (``now``, a timestamp) or a period (a day, ``this|last|next``
  calendar unit): ``occurs on`` a period is inside it, ``before`` it is before its start, ``after``
  it is at or after its end (after the instant itself for an instant).
- ``occurs < N units before T`` measures the distance from T on the right side of T (inclusive);
  ``= N units`` is the whole unit bucket of ``T - N units``; ``!=`` is the right side outside that
  bucket. ``occurs ... from <time>`` is rejected as unsupported.
- ``occurs`` tests one timestamp or date, never a list, and is false when the timestamp is missing.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DateType, LongType, TimestampType

from audience_activation.pql import ast as a
from audience_activation.pql import timeops
from audience_activation.pql.base import CompilerBase
from audience_activation.pql.logic import false_if_null
from audience_activation.pql.scope import Anchor, Env, Value
from audience_activation.pql.types import describe, is_numeric, is_temporal


class OccursMixin(CompilerBase):
    """Compiles time constants, ``date(...)``, date parts and ``occurs`` tests."""

    # --- time values and dates ------------------------------------------------------------------

    def _const_int(self, node: a.Node) -> int | None:
        """Fold an integer expression made of literals and ``current*()`` into a Python int."""
        if isinstance(node, a.IntLit):
            return node.value
        if isinstance(node, a.CurrentDatePart):
            return self._date_part(self.now, node.part)
        if isinstance(node, a.Negate):
            inner = self._const_int(node.operand)
            return None if inner is None else -inner
        if isinstance(node, a.Arith) and node.op in (a.ArithOp.ADD, a.ArithOp.SUB, a.ArithOp.MUL):
            left, right = self._const_int(node.left), self._const_int(node.right)
            if left is None or right is None:
                return None
            if node.op is a.ArithOp.ADD:
                return left + right
            if node.op is a.ArithOp.SUB:
                return left - right
            return left * right
        return None

    @staticmethod
    def _date_part(value: dt.datetime, part: a.DatePart) -> int:
        if part is a.DatePart.YEAR:
            return value.year
        if part is a.DatePart.MONTH:
            return value.month
        return value.day

    def _date(self, node: a.DateLit, env: Env) -> timeops.TimeExpr:
        """``date(y, m, d)``: midnight UTC, a constant when the parts fold to integers."""
        parts = [self._const_int(part) for part in (node.year, node.month, node.day)]
        if all(part is not None for part in parts):
            year, month, day = (int(part) for part in parts)  # type: ignore[arg-type]
            try:
                return dt.datetime(year, month, day, tzinfo=timeops.UTC)
            except ValueError as error:
                self._error(node, f"invalid date({year}, {month}, {day}): {error}")
        columns = []
        for part in (node.year, node.month, node.day):
            value = self.value(part, env)
            if not is_numeric(value.type):
                self._error(part, f"`date(...)` needs numbers, but `{self._pql(part)}` is {describe(value.type)}")
            columns.append(value.col.try_cast("int"))
        # An impossible date (February 30th) is missing, not an error.
        year_column, month_column, day_column = columns
        return F.try_make_timestamp(year_column, month_column, day_column, F.lit(0), F.lit(0), F.lit(0), F.lit("UTC"))

    def _v_date(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.DateLit)
        return Value(timeops.to_column(self._date(node, env)), TimestampType())

    def _time_const(self, kind: a.TimeConstKind) -> dt.datetime:
        if kind is a.TimeConstKind.NOW:
            return self.now
        offset = {a.TimeConstKind.TODAY: 0, a.TimeConstKind.YESTERDAY: -1, a.TimeConstKind.TOMORROW: 1}[kind]
        return self.today + dt.timedelta(days=offset)

    def _v_time_const(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.TimeConst)
        return Value(F.lit(self._time_const(node.kind)), TimestampType())

    def _v_current_date_part(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.CurrentDatePart)
        return Value(F.lit(self._date_part(self.now, node.part)).cast(LongType()), LongType())

    def _timestamp(self, value: Value, node: a.Node, usage: str) -> Column:
        if not is_temporal(value.type):
            self._error(node, f"{usage} needs a timestamp or date, but `{self._pql(node)}` is {describe(value.type)}")
        if isinstance(value.type, TimestampType):
            return value.col
        # Dates are midnight UTC; the session time zone is UTC (session.REQUIRED_CONF).
        return value.col.cast(TimestampType())

    def _v_get_date_part(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.GetDatePart)
        operand = self.value(node.operand, env)
        method = f"get{node.part.value}()"
        ts = self._timestamp(operand, node.operand, f"`{method}`")
        function = {a.DatePart.YEAR: F.year, a.DatePart.MONTH: F.month, a.DatePart.DAY_OF_MONTH: F.dayofmonth}
        return Value(function[node.part](ts).cast(LongType()), LongType())

    def _v_calendar_period(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.CalendarPeriod)
        self._error(
            node,
            f"`{self._pql(node)}` is a period: it can only follow `occurs` (e.g. `timestamp occurs {self._pql(node)}`)",
        )

    # --- occurs ----------------------------------------------------------------------------------

    def _c_occurs(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Occurs)
        subject = self.value(node.subject, env)
        if isinstance(subject.type, ArrayType):
            self._error(
                node.subject,
                f"`occurs` tests one timestamp, but `{self._pql(node.subject)}` is a list; "
                f"use `select X from ... where X.timestamp occurs ...`",
            )
        ts = self._timestamp(subject, node.subject, "`occurs`")
        return self._occurs_test(ts, node.test, env)

    def _anchor(self, node: a.Node, env: Env) -> Anchor:
        if isinstance(node, a.TimeConst):
            instant = self._time_const(node.kind)
            if node.kind is a.TimeConstKind.NOW:
                return Anchor(instant, instant, True, instant, instant)
            return Anchor(instant, instant + dt.timedelta(days=1), False, instant, instant)
        if isinstance(node, a.CalendarPeriod):
            offset = {a.PeriodRelation.THIS: 0, a.PeriodRelation.LAST: -1, a.PeriodRelation.NEXT: 1}[node.relation]
            start, end = timeops.calendar_period(self.now, node.unit, offset)
            return Anchor(start, end, False, start, end)
        if isinstance(node, a.DateLit):
            day = self._date(node, env)
            return Anchor(day, timeops.add(day, 1, a.TimeUnit.DAY), False, day, day)
        value = self.value(node, env)
        ts = self._timestamp(value, node, "an `occurs` time")
        if isinstance(value.type, DateType):
            return Anchor(ts, timeops.add(ts, 1, a.TimeUnit.DAY), False, ts, ts)
        return Anchor(ts, ts, True, ts, ts)

    def _occurs_test(self, ts: Column, test: a.Node, env: Env) -> Column:
        """``ts occurs <test>`` as a never-null condition."""

        def lit(value: timeops.TimeExpr) -> Column:
            return timeops.to_column(value)

        if isinstance(test, a.OccursOn):
            anchor = self._anchor(test.anchor, env)
            upper = ts <= lit(anchor.end) if anchor.inclusive_end else ts < lit(anchor.end)
            return false_if_null((ts >= lit(anchor.start)) & upper)
        if isinstance(test, a.OccursBetween):
            first, last = self._anchor(test.start, env), self._anchor(test.end, env)
            upper = ts <= lit(last.end) if last.inclusive_end else ts < lit(last.end)
            return false_if_null((ts >= lit(first.start)) & upper)
        if isinstance(test, a.OccursRelative):
            if test.direction is a.Direction.FROM:
                self._unsupported(test, "occurs from", "`occurs from <time>` is not supported: use `before` or `after`")
            anchor = self._anchor(test.anchor, env)
            if test.direction is a.Direction.BEFORE:
                return false_if_null(ts < lit(anchor.start))
            return false_if_null(ts > lit(anchor.end) if anchor.inclusive_end else ts >= lit(anchor.end))
        assert isinstance(test, a.OccursWithin)
        if test.direction is a.Direction.FROM:
            self._unsupported(
                test,
                "occurs from",
                f"`occurs {test.op.value} {test.amount} {test.unit.plural} from <time>` is not supported "
                f"(Adobe documents no meaning for it): use `before` or `after`",
            )
        anchor = self._anchor(test.anchor, env)
        before = test.direction is a.Direction.BEFORE
        point = anchor.before if before else anchor.after
        bound = timeops.add(point, -test.amount if before else test.amount, test.unit)
        p, b = lit(point), lit(bound)
        # On the right side of the anchor (inclusive), as `now - N days <= ts <= now`.
        side = ts <= p if before else ts >= p
        op = test.op
        if op in (a.CompareOp.EQ, a.CompareOp.NE):
            # `= N units before` is the whole unit bucket (same UTC day, hour...) as the bound.
            start = timeops.trunc(bound, test.unit)
            end = timeops.add(start, 1, test.unit)
            bucket = (ts >= lit(start)) & (ts < lit(end))
            return false_if_null(bucket if op is a.CompareOp.EQ else side & ~bucket)
        # The distance |anchor - ts| compared with N units: closer means nearer the anchor.
        closer = {
            a.CompareOp.LT: lambda: ts > b if before else ts < b,
            a.CompareOp.LE: lambda: ts >= b if before else ts <= b,
            a.CompareOp.GT: lambda: ts < b if before else ts > b,
            a.CompareOp.GE: lambda: ts <= b if before else ts >= b,
        }[op]()
        if op in (a.CompareOp.LT, a.CompareOp.LE):
            return false_if_null(side & closer)
        return false_if_null(closer)
