"""Compile parsed PQL segments into native Spark Columns over profiles and event aggregates.

Data model (what the batch job produces, see ``docs/segments.md``):

- ``profiles``: one row per person, ``person_id`` plus every profile attribute column (nested
  structs, arrays, maps) of the unified profile;
- ``events``: one row per event, ``person_id`` plus the event columns (``timestamp``,
  ``eventType``...), already de-duplicated by ``_id`` and filtered to ``timestamp <= T``.

Plan of an evaluation:

1. Every event condition of every segment that reads only the event itself (``xEvent[c].count()``,
   ``select X from xEvent where c``, ``exists``/``forall``, ``sum/average/min/max``, a ``chain``
   whose steps only look at their event, ``I from X.productListItems`` inside one event) is
   *pushed down* into one ``groupBy("person_id").agg(...)`` over the events: ``count_if``,
   ``sum(when(...))``, ``avg``/``min``/``max`` and, for chains, ``collect_list`` of the matching
   events' (timestamp, step flags). Identical conditions of different segments (up to variable
   names) share one aggregate column.
2. Event conditions that relate several events (``select A from xEvent, B from xEvent where
   B.timestamp > A.timestamp``) or read profile attributes or other segments read one collected
   list of the needed event fields (``collect_list(struct(...))``, in the same aggregation) with
   higher-order functions (``exists``, ``forall``, ``filter``, ``transform``, ``aggregate``).
3. The aggregates are joined once (left join) to the profiles; persons without events get count 0,
   sum 0, missing average/min/max and empty lists. One boolean column per segment is computed
   over the joined row; ``inSegment`` substitutes the referenced segment's Column.

Logic is Adobe's two-valued logic: every condition compiles to a Column that is never null
(``coalesce(..., false)`` wherever a missing operand could reach it), so ``not`` is a plain
negation and ``!=``, ``notIn`` and ``doesNot*`` are false on missing operands. No Python UDF is
used anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    LongType,
    MapType,
    NullType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from audience_activation.columns import type_shape
from audience_activation.pql import ast as a
from audience_activation.pql import timeops
from audience_activation.pql.analysis import canonical, free_refs
from audience_activation.pql.classify import classify_segments
from audience_activation.pql.compiled import AGGREGATE_PREFIX, XEVENTS_COLUMN, CompiledSegments, EventAggregate
from audience_activation.pql.errors import PqlError, PqlUnsupportedError
from audience_activation.pql.logic import all_of, any_of, false_if_null, nonnull_array, quote
from audience_activation.pql.scope import Anchor, Env, EventSet, LetRef, Table, Value
from audience_activation.pql.types import (
    accumulator_type,
    category_of,
    describe,
    is_numeric,
    is_string,
    is_temporal,
    numeric_result,
    sum_type,
    unify,
)
from audience_activation.pql.validation import (
    ParsedSegment,
    PqlValidationError,
    SegmentDefinitionError,
    SegmentInput,
    SegmentProblem,
    as_sources,
    dependency_order,
    parse_segments,
    reference_problems,
)

__all__ = ["AGGREGATE_PREFIX", "XEVENTS_COLUMN", "CompiledSegments", "EventAggregate", "compile_segments"]


# --- the compiler -----------------------------------------------------------------------------


class _Compiler:
    """Compiles the segments of one evaluation; collects the event aggregates they need."""

    def __init__(
        self,
        profile_schema: StructType,
        event_schema: StructType | None,
        evaluation_time: dt.datetime,
        *,
        pushdown: bool = True,
    ) -> None:
        self._pushdown = pushdown
        self._profile = Table(profile_schema, "profile")
        self._event_schema = event_schema
        self._event_row = Table(event_schema, "event") if event_schema is not None else None
        # Identity, not equality, marks values that are elements of the collected event list.
        self._event_struct: StructType | None = event_schema
        self.now = timeops.as_utc(evaluation_time)
        self.today = self.now.replace(hour=0, minute=0, second=0, microsecond=0)
        self._aggregates: dict[object, EventAggregate] = {}
        self._xevent_fields: set[str] = set()
        self._xevents_all = False
        self._xevents_used = False
        self.segment_columns: dict[str, Column] = {}
        self._text = ""
        self._conditions: dict[type[a.Node], Callable[[a.Node, Env], Column]] = {
            a.BoolLit: self._c_bool,
            a.And: self._c_and,
            a.Or: self._c_or,
            a.Not: self._c_not,
            a.IsDefined: self._c_is_defined,
            a.NullCheck: self._c_null_check,
            a.Compare: self._c_compare,
            a.In: self._c_in,
            a.Intersects: self._c_intersects,
            a.StringTest: self._c_string_test,
            a.Like: self._c_like,
            a.Matches: self._c_matches,
            a.Occurs: self._c_occurs,
            a.Quantifier: self._c_quantifier,
            a.Chain: self._c_chain,
            a.InSegment: self._c_in_segment,
        }
        self._values: dict[type[a.Node], Callable[[a.Node, Env], Value]] = {
            a.StringLit: self._v_string,
            a.IntLit: self._v_int,
            a.DoubleLit: self._v_double,
            a.ListLit: self._v_list,
            a.DateLit: self._v_date,
            a.TimeConst: self._v_time_const,
            a.CurrentDatePart: self._v_current_date_part,
            a.GetDatePart: self._v_get_date_part,
            a.CalendarPeriod: self._v_calendar_period,
            a.FieldRef: self._v_field_ref,
            a.Member: self._v_member,
            a.Arith: self._v_arith,
            a.Negate: self._v_negate,
            a.If: self._v_if,
            a.Let: self._v_let,
            a.MapGet: self._v_map_get,
            a.MapKeys: self._v_map_keys,
            a.MapValues: self._v_map_values,
            a.Distinct: self._v_distinct,
            a.Filter: self._v_filter,
            a.Select: self._v_select,
            a.Aggregate: self._v_aggregate,
            a.AggregateOver: self._v_aggregate_over,
        }

    # --- entry points and errors -----------------------------------------------------------------

    def compile(self, segment: ParsedSegment) -> Column:
        """Compile one segment (its references must be compiled already).

        Args:
            segment: The parsed segment.

        Returns:
            A boolean Column over the profile row joined with the event aggregates; never null.

        Raises:
            PqlValidationError: Unknown attribute, type mismatch, ``xEvent`` without events...
        """
        self._text = segment.text
        column = self.cond(segment.tree, Env())
        self.segment_columns[segment.id] = column
        return column

    def aggregates(self) -> list[EventAggregate]:
        """The event aggregates the compiled segments need, the collected event list last."""
        out = list(self._aggregates.values())
        if self._xevents_used:
            assert self._event_schema is not None
            fields = [
                field for field in self._event_schema.fields if self._xevents_all or field.name in self._xevent_fields
            ] or [self._event_schema.fields[0]]
            struct_type = StructType([StructField(f.name, f.dataType, f.nullable) for f in fields])
            out.append(
                EventAggregate(
                    XEVENTS_COLUMN,
                    F.collect_list(F.struct(*[F.col(quote(f.name)) for f in fields])),
                    F.array().cast(ArrayType(struct_type)),
                    ArrayType(struct_type),
                )
            )
        return out

    def _error(self, where: a.Node | a.Position, reason: str) -> NoReturn:
        pos = where if isinstance(where, a.Position) else where.pos
        raise PqlValidationError(reason, self._text, pos.line, pos.column)

    def _unsupported(self, node: a.Node, construct: str, reason: str) -> NoReturn:
        raise PqlUnsupportedError(construct, reason, self._text, node.pos.line, node.pos.column)

    def _pql(self, node: a.Node) -> str:
        """The canonical text of a node, for messages."""
        text = node.to_pql()
        return text if len(text) <= 60 else text[:57] + "..."

    def _part_position(self, node: a.FieldRef, index: int) -> a.Position:
        """Where ``node.parts[index]`` is written (the reference itself when it cannot be found)."""
        pos = node.pos
        if pos.line < 1:
            return pos
        lines = self._text.split("\n")
        offset = sum(len(line) + 1 for line in lines[: pos.line - 1]) + pos.column - 1
        start = offset
        for part in node.parts[: index + 1]:
            match = re.search(rf"(?<![A-Za-z0-9_]){re.escape(part)}(?![A-Za-z0-9_])", self._text[offset:])
            if match is None:
                return pos
            start, offset = offset + match.start(), offset + match.end()
        line = self._text.count("\n", 0, start) + 1
        column = start - (self._text.rfind("\n", 0, start) + 1) + 1
        return a.Position(line, column)

    # --- dispatch --------------------------------------------------------------------------------

    def cond(self, node: a.Node, env: Env) -> Column:
        """Compile a condition to a boolean Column that is never null."""
        if not env.event_level:
            pushed = self._pushdown_condition(node, env)
            if pushed is not None:
                return pushed
        handler = self._conditions.get(type(node))
        if handler is not None:
            return handler(node, env)
        if isinstance(node, a.If):
            return F.when(self.cond(node.test, env), self.cond(node.then, env)).otherwise(
                self.cond(node.otherwise, env)
            )
        if isinstance(node, a.Let):
            return self.cond(node.body, env.bind(node.name, LetRef(node.value, env)))
        return self._truthy(self.value(node, env))

    def value(self, node: a.Node, env: Env) -> Value:
        """Compile an expression to a Column and its type."""
        if not env.event_level:
            pushed = self._pushdown_value(node, env)
            if pushed is not None:
                return pushed
        if type(node) in self._conditions:
            return Value(self.cond(node, env), BooleanType())
        handler = self._values.get(type(node))
        if handler is None:  # pragma: no cover - every parser node has a handler
            self._unsupported(node, type(node).__name__, f"`{self._pql(node)}` cannot be compiled")
        return handler(node, env)

    def _truthy(self, value: Value) -> Column:
        """Adobe's coercion to Boolean: defined, and non-empty for arrays and maps."""
        if isinstance(value.type, (ArrayType, MapType)):
            return false_if_null(F.size(value.col) > 0)
        if isinstance(value.type, BooleanType):
            return false_if_null(value.col)
        return value.col.isNotNull()

    def _array(self, node: a.Node, env: Env, what: str = "") -> Value:
        value = self.value(node, env)
        if not isinstance(value.type, ArrayType):
            usage = f" {what}" if what else ""
            self._error(node, f"`{self._pql(node)}` is {describe(value.type)}, not an array{usage}")
        return value

    def _deref(self, node: a.Node, env: Env) -> tuple[a.Node, Env]:
        """Follow ``let`` variables to their expressions."""
        while isinstance(node, a.FieldRef) and isinstance(node.root, a.VariableRoot) and not node.parts:
            bound = env.lookup(node.root.name)
            if not isinstance(bound, LetRef):
                break
            node, env = bound.node, bound.env
        return node, env

    # --- literals and time values ------------------------------------------------------------------

    def _c_bool(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.BoolLit)
        return F.lit(node.value)

    def _v_string(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.StringLit)
        return Value(F.lit(node.value), StringType())

    def _v_int(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.IntLit)
        return Value(F.lit(node.value).cast(LongType()), LongType())

    def _v_double(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.DoubleLit)
        return Value(F.lit(node.value), DoubleType())

    def _v_list(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.ListLit)
        items = [self.value(item, env) for item in node.items]
        element = unify([item.type for item in items])
        if element is None:
            kinds = ", ".join(sorted({category_of(item.type) for item in items}))
            self._error(node, f"list items must all be of one kind (got {kinds})")
        if not items:
            return Value(F.array(), ArrayType(NullType()))
        return Value(F.array(*[self._cast_to(item, element) for item in items]), ArrayType(element))

    def _cast_to(self, value: Value, target: DataType) -> Column:
        if isinstance(target, TimestampType) and not isinstance(value.type, TimestampType):
            return value.col.cast(TimestampType())
        return value.col

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

    # --- references ------------------------------------------------------------------------------

    def _v_field_ref(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.FieldRef)
        root = node.root
        base: Value | Table
        if isinstance(root, a.ProfileRoot):
            assert not env.event_level, "profile reference inside a pushed-down event condition"
            if not node.parts:
                self._error(node, "the profile itself is not a value; name one of its attributes")
            base = self._profile
        elif isinstance(root, a.EventsRoot):
            assert not env.event_level, "xEvent inside a pushed-down event condition"
            base = self._xevents(node)
        elif isinstance(root, a.VariableRoot):
            bound = env.lookup(root.name)
            assert bound is not None, f"unbound variable {root.name}"
            base = self.value(bound.node, bound.env) if isinstance(bound, LetRef) else bound
        else:
            assert root.up < len(env.items), "item reference outside an item scope"
            base = env.items[-1 - root.up]
        return self._path(base, node.parts, node)

    def _xevents(self, node: a.Node) -> Value:
        if self._event_struct is None:
            self._error(node, "`xEvent` is used but there is no events table (experience_events)")
        self._xevents_used = True
        return Value(F.col(XEVENTS_COLUMN), ArrayType(self._event_struct))

    def _path(self, base: Value | Table, parts: tuple[str, ...], node: a.Node) -> Value:
        label = "attribute"
        if isinstance(base, Table):
            if not parts:
                # A whole event as a value (object comparison of select variables).
                return Value(F.struct(*[F.col(quote(f.name)) for f in base.schema.fields]), base.schema)
            label = f"{base.label} attribute"
            field = self._lookup(base.schema, parts, node, 0, label)
            current = Value(F.col(quote(parts[0])), field.dataType)
            start = 1
        else:
            current, start = base, 0
            element = current.type.elementType if isinstance(current.type, ArrayType) else current.type
            if element is self._event_struct:
                label = "event attribute"
                if not parts:
                    self._xevents_all = True
            elif isinstance(node, a.FieldRef) and isinstance(node.root, a.ProfileRoot):
                label = "profile attribute"
        for index in range(start, len(parts)):
            current = self._field(current, parts, index, node, label)
        return current

    def _lookup(self, schema: StructType, parts: tuple[str, ...], node: a.Node, index: int, label: str) -> StructField:
        name = parts[index]
        for field in schema.fields:
            if field.name == name:
                return field
        close = difflib.get_close_matches(name, schema.fieldNames(), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        where = self._part_position(node, index) if isinstance(node, a.FieldRef) else node.pos
        self._error(where, f"unknown {label} `{'.'.join(parts[: index + 1])}`{hint}")

    def _field(
        self, current: Value, parts: tuple[str, ...], index: int, node: a.Node, label: str = "attribute"
    ) -> Value:
        name = parts[index]
        data_type = current.type
        if isinstance(data_type, StructType):
            if data_type is self._event_struct:
                self._xevent_fields.add(name)
            field = self._lookup(data_type, parts, node, index, label)
            return Value(current.col.getField(name), field.dataType)
        if isinstance(data_type, ArrayType) and isinstance(data_type.elementType, StructType):
            element = data_type.elementType
            if element is self._event_struct:
                self._xevent_fields.add(name)
            field = self._lookup(element, parts, node, index, label)
            column = current.col.getField(name)
            # A dot after an array flattens: `xEvent.productListItems.SKU` is the list of all SKUs.
            if isinstance(field.dataType, ArrayType):
                # flatten() is null as soon as one inner array is: skip the missing ones.
                present = F.filter(column, lambda inner: inner.isNotNull())
                return Value(F.flatten(present), field.dataType)
            # The list holds the defined values only: `xEvent.commerce.order` is non-empty when
            # some event has an order, not whenever there are events.
            return Value(F.filter(column, lambda item: item.isNotNull()), ArrayType(field.dataType))
        where = self._part_position(node, index) if isinstance(node, a.FieldRef) else node.pos
        prefix = ".".join(parts[:index]) or self._pql(node)
        if isinstance(data_type, MapType):
            self._error(where, f'`{prefix}` is a map: read its entries with `.get("{name}")`')
        self._error(where, f"`{prefix}` is {describe(data_type)}; it has no field `{name}`")

    def _v_member(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Member)
        current = self.value(node.target, env)
        for index in range(len(node.parts)):
            current = self._field(current, node.parts, index, node)
        return current

    # --- operators -------------------------------------------------------------------------------

    def _c_and(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.And)
        return all_of([self.cond(operand, env) for operand in node.operands])

    def _c_or(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Or)
        return any_of([self.cond(operand, env) for operand in node.operands])

    def _c_not(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Not)
        # Two-valued logic: the operand is never null, so `not` is a plain negation.
        return ~self.cond(node.operand, env)

    def _v_arith(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Arith)
        left, right = self.value(node.left, env), self.value(node.right, env)
        for operand, value in ((node.left, left), (node.right, right)):
            if not is_numeric(value.type):
                self._error(
                    operand,
                    f"arithmetic `{node.op.value}` needs numbers, but `{self._pql(operand)}` is {describe(value.type)}",
                )
        # try_* functions: division by zero (and overflow) give a missing value, as in PQL,
        # whatever spark.sql.ansi.enabled says.
        function = {
            a.ArithOp.ADD: F.try_add,
            a.ArithOp.SUB: F.try_subtract,
            a.ArithOp.MUL: F.try_multiply,
            a.ArithOp.DIV: F.try_divide,
            a.ArithOp.MOD: F.try_mod,
        }[node.op]
        return Value(function(left.col, right.col), numeric_result(left.type, right.type, node.op))

    def _v_negate(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Negate)
        operand = self.value(node.operand, env)
        if not is_numeric(operand.type):
            self._error(node, f"`-` needs a number, but `{self._pql(node.operand)}` is {describe(operand.type)}")
        return Value(F.try_subtract(F.lit(0), operand.col), operand.type)

    def _v_if(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.If)
        test = self.cond(node.test, env)
        then, otherwise = self.value(node.then, env), self.value(node.otherwise, env)
        common = unify([then.type, otherwise.type])
        if common is None:
            self._error(
                node,
                f"the branches of `if` must be of one kind, got {describe(then.type)} and {describe(otherwise.type)}",
            )
        return Value(
            F.when(test, self._cast_to(then, common)).otherwise(self._cast_to(otherwise, common)),
            common,
        )

    def _v_let(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Let)
        return self.value(node.body, env.bind(node.name, LetRef(node.value, env)))

    def _v_map_get(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapGet)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.get(...)` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        key = self.value(node.key, env)
        if category_of(key.type) != category_of(target.type.keyType):
            self._error(
                node.key,
                f"the map's keys are {describe(target.type.keyType)}, but `{self._pql(node.key)}` is "
                f"{describe(key.type)}",
            )
        # try_element_at: a missing key is a missing value, never an error under ANSI mode.
        return Value(F.try_element_at(target.col, key.col), target.type.valueType)

    def _v_map_keys(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapKeys)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.keys()` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        return Value(F.map_keys(target.col), ArrayType(target.type.keyType))

    def _v_map_values(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapValues)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.values()` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        return Value(F.map_values(target.col), ArrayType(target.type.valueType))

    def _v_distinct(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Distinct)
        source = self._array(node.operand, env, "(`.distinct()` needs an array)")
        return Value(F.array_distinct(source.col), source.type)

    # --- comparisons -----------------------------------------------------------------------------

    def _check_comparable(self, node: a.Node, op: str, left: DataType, right: DataType, ordered: bool) -> None:
        lc, rc = category_of(left), category_of(right)
        if lc == "null" or rc == "null":
            return
        if lc != rc:
            self._error(node, f"type mismatch: `{op}` compares {describe(left)} with {describe(right)}")
        if lc in ("array", "object", "map"):
            if lc == "map" or ordered:
                self._error(node, f"`{op}` cannot compare {describe(left)} values")
            if type_shape(left) != type_shape(right):
                self._error(node, f"type mismatch: `{op}` compares values of different shapes")
            if "map<" in left.simpleString():
                # Spark cannot compare maps (their entry order is not canonical).
                self._error(node, f"`{op}` cannot compare values that contain maps")
        if lc == "boolean" and ordered:
            self._error(node, f"`{op}` cannot order booleans")

    def _comparison(self, op: a.CompareOp, left: Value, right: Value) -> Column:
        lcol, rcol = left.col, right.col
        if is_temporal(left.type) and type(left.type) is not type(right.type):
            lcol, rcol = lcol.cast(TimestampType()), rcol.cast(TimestampType())
        return {
            a.CompareOp.EQ: lambda: lcol == rcol,
            a.CompareOp.NE: lambda: lcol != rcol,
            a.CompareOp.LT: lambda: lcol < rcol,
            a.CompareOp.LE: lambda: lcol <= rcol,
            a.CompareOp.GT: lambda: lcol > rcol,
            a.CompareOp.GE: lambda: lcol >= rcol,
        }[op]()

    def _c_compare(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Compare)
        left, right = self.value(node.left, env), self.value(node.right, env)
        op = node.op
        if (
            self._event_schema is not None
            and left.type is self._event_schema
            and right.type is self._event_schema
            and op in (a.CompareOp.EQ, a.CompareOp.NE)
            and "_id" in self._event_schema.fieldNames()
        ):
            # Two events are the same event when their `_id`s are (events are de-duplicated by `_id`).
            self._xevent_fields.add("_id")
            left = Value(left.col.getField("_id"), StringType())
            right = Value(right.col.getField("_id"), StringType())
        ordered = op not in (a.CompareOp.EQ, a.CompareOp.NE)
        left_array, right_array = isinstance(left.type, ArrayType), isinstance(right.type, ArrayType)
        if left_array != right_array:
            # A list (`xEvent.device.model`, an array field) compared with one value: some item matches.
            array, single = (left, right) if left_array else (right, left)
            assert isinstance(array.type, ArrayType)
            element_type = array.type.elementType
            lt, rt = (element_type, single.type) if left_array else (single.type, element_type)
            self._check_comparable(node, op.value, lt, rt, ordered)

            def some(item: Column) -> Column:
                element = Value(item, element_type)
                pair = (element, single) if left_array else (single, element)
                return self._comparison(op, *pair)

            return false_if_null(F.exists(array.col, some))
        self._check_comparable(node, op.value, left.type, right.type, ordered)
        return false_if_null(self._comparison(op, left, right))

    def _c_in(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.In)
        keyword = "notIn" if node.negated else "in"
        value = self.value(node.value, env)
        if isinstance(value.type, ArrayType):
            self._error(
                node.value,
                f"the left side of `{keyword}` must be one value, but `{self._pql(node.value)}` is an array; "
                f"use `.intersects(...)` to compare two lists",
            )
        collection_node, collection_env = self._deref(node.collection, env)
        if isinstance(collection_node, a.ListLit):
            items = [self.value(item, collection_env) for item in collection_node.items]
            if not items:
                return F.lit(False)
            for item_node, item in zip(collection_node.items, items, strict=True):
                self._check_comparable(item_node, keyword, value.type, item.type, False)
            temporal = is_temporal(value.type)
            column = value.col.cast(TimestampType()) if temporal else value.col
            cast = (lambda v: v.col.cast(TimestampType())) if temporal else (lambda v: v.col)
            contains = column.isin(*[cast(item) for item in items])
            present = value.col.isNotNull()
        else:
            collection = self._array(collection_node, collection_env, f"(the right side of `{keyword}`)")
            assert isinstance(collection.type, ArrayType)
            self._check_comparable(node, keyword, value.type, collection.type.elementType, False)
            contains = F.array_contains(collection.col, value.col)
            present = value.col.isNotNull() & collection.col.isNotNull()
        if node.negated:
            # notIn is not `not in`: false when either side is missing.
            return false_if_null(present & ~contains)
        return false_if_null(contains)

    def _c_intersects(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Intersects)
        left = self._array(node.left, env, "(`.intersects(...)` compares two lists)")
        right = self._array(node.right, env, "(`.intersects(...)` compares two lists)")
        assert isinstance(left.type, ArrayType) and isinstance(right.type, ArrayType)
        if isinstance(left.type.elementType, NullType) or isinstance(right.type.elementType, NullType):
            return F.lit(False)
        self._check_comparable(node, "intersects", left.type.elementType, right.type.elementType, False)
        return false_if_null(F.arrays_overlap(left.col, right.col))

    def _string(self, node: a.Node, env: Env, usage: str) -> Column:
        value = self.value(node, env)
        if not is_string(value.type):
            self._error(node, f"{usage} needs a string, but `{self._pql(node)}` is {describe(value.type)}")
        return value.col

    def _c_string_test(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.StringTest)
        names = {
            a.StringOp.EQUALS: ("equals", "notEqualTo"),
            a.StringOp.STARTS_WITH: ("startsWith", "doesNotStartWith"),
            a.StringOp.ENDS_WITH: ("endsWith", "doesNotEndWith"),
            a.StringOp.CONTAINS: ("contains", "doesNotContain"),
        }[node.op]
        usage = f"`{names[node.negated]}`"
        subject = self._string(node.subject, env, usage)
        argument = self._string(node.argument, env, usage)
        left, right = (subject, argument) if node.case_sensitive else (F.lower(subject), F.lower(argument))
        positive = {
            a.StringOp.EQUALS: lambda: left == right,
            a.StringOp.STARTS_WITH: lambda: left.startswith(right),
            a.StringOp.ENDS_WITH: lambda: left.endswith(right),
            a.StringOp.CONTAINS: lambda: left.contains(right),
        }[node.op]()
        if node.negated:
            return false_if_null(subject.isNotNull() & argument.isNotNull() & ~positive)
        return false_if_null(positive)

    def _c_like(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Like)
        subject = self._string(node.subject, env, "`like`")
        pattern = self._string(node.pattern, env, "`like`")
        # PQL patterns only know % and _; a backslash is an ordinary character, so escape it
        # for Spark's LIKE (whose escape character is the backslash).
        escaped = F.replace(pattern, F.lit("\\"), F.lit("\\\\"))
        return false_if_null(F.like(subject, escaped))

    def _c_matches(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Matches)
        subject = self._string(node.subject, env, "`matches`")
        pattern = self._string(node.pattern, env, "`matches`")
        # Spark's regexp is java.util.regex find(): a match anywhere, as PQL's matches.
        return false_if_null(F.regexp(subject, pattern))

    def _c_null_check(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.NullCheck)
        value = self.value(node.operand, env)
        return value.col.isNotNull() if node.negated else value.col.isNull()

    def _c_in_segment(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.InSegment)
        assert not env.event_level, "inSegment inside a pushed-down event condition"
        column = self.segment_columns.get(node.segment_id)
        assert column is not None, f"segment {node.segment_id} is not compiled yet"
        return column

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

    # --- arrays and selects (generic: higher-order functions) ----------------------------------

    def _v_filter(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Filter)
        source = self._array(node.source, env, "(`[...]` filters an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType
        column = F.filter(
            nonnull_array(source.col),
            lambda item: self.cond(node.condition, env.push_item(Value(item, element))),
        )
        return Value(column, source.type)

    def _v_select(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Select)
        if len(node.bindings) > 1:
            self._error(
                node,
                "a select of several variables is a set of tuples: it can only be tested "
                "(in a condition) or counted with `.count()`",
            )
        binding = node.bindings[0]
        source = self._array(binding.source, env, "(`select ... from` needs an array)")
        assert isinstance(source.type, ArrayType)
        if binding.condition is None:
            return source
        element = source.type.elementType
        condition = binding.condition
        column = F.filter(
            nonnull_array(source.col),
            lambda item: self.cond(condition, env.bind(binding.variable, Value(item, element))),
        )
        return Value(column, source.type)

    def _tuples(
        self,
        bindings: tuple[a.Binding, ...],
        env: Env,
        leaf: Callable[[Env], Value],
        index: int = 0,
    ) -> Value:
        """The list of ``leaf`` values of every tuple of ``V1 from s1 where c1, V2 from ...``."""
        binding = bindings[index]
        source = self._array(binding.source, env, "(`from` needs an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType
        column = nonnull_array(source.col)
        if binding.condition is not None:
            condition = binding.condition
            column = F.filter(
                column, lambda item: self.cond(condition, env.bind(binding.variable, Value(item, element)))
            )
        result_type: list[DataType] = []

        def each(item: Column) -> Column:
            inner = env.bind(binding.variable, Value(item, element))
            value = leaf(inner) if index + 1 == len(bindings) else self._tuples(bindings, inner, leaf, index + 1)
            result_type.append(value.type)
            return value.col

        mapped = F.transform(column, each)
        if index + 1 == len(bindings):
            return Value(mapped, ArrayType(result_type[0]))
        inner_type = result_type[0]
        assert isinstance(inner_type, ArrayType)
        return Value(F.flatten(mapped), inner_type)

    def _tuple_test(self, bindings: tuple[a.Binding, ...], env: Env, forall: bool, index: int = 0) -> Column:
        """``exists``/``forall V1 from s1 where c1, ...`` with nested higher-order functions."""
        binding = bindings[index]
        source = self._array(binding.source, env, "(`from` needs an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType

        def body(item: Column) -> Column:
            inner = env.bind(binding.variable, Value(item, element))
            parts = []
            if binding.condition is not None:
                parts.append(self.cond(binding.condition, inner))
            if index + 1 < len(bindings):
                parts.append(self._tuple_test(bindings, inner, forall, index + 1))
            return all_of(parts)

        function = F.forall if forall else F.exists
        return false_if_null(function(source.col, body))

    def _c_is_defined(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.IsDefined)
        operand, operand_env = self._deref(node.operand, env)
        if isinstance(operand, a.Select):
            return self._tuple_test(operand.bindings, operand_env, forall=False)
        if isinstance(operand, a.Filter):
            source = self._array(operand.source, operand_env, "(`[...]` filters an array)")
            assert isinstance(source.type, ArrayType)
            element = source.type.elementType
            condition = operand.condition
            return false_if_null(
                F.exists(source.col, lambda item: self.cond(condition, operand_env.push_item(Value(item, element))))
            )
        return self._truthy(self.value(operand, operand_env))

    def _c_quantifier(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Quantifier)
        return self._tuple_test(node.bindings, env, forall=node.kind is a.QuantifierKind.FORALL)

    def _reduce(self, function: a.AggregateFunction, values: Value, node: a.Node) -> Value:
        """``sum``/``average``/``min``/``max`` of a list of values (missing items are skipped)."""
        assert isinstance(values.type, ArrayType)
        element = values.type.elementType
        self._check_aggregable(function, element, node)
        present = F.filter(nonnull_array(values.col), lambda item: item.isNotNull())
        if function is a.AggregateFunction.MIN:
            return Value(F.array_min(present), element)
        if function is a.AggregateFunction.MAX:
            return Value(F.array_max(present), element)
        accumulator = accumulator_type(element)
        total = F.aggregate(
            present,
            F.lit(0).cast(accumulator),
            lambda acc, item: (acc + item.cast(accumulator)).cast(accumulator),
        )
        if function is a.AggregateFunction.SUM:
            return Value(total, accumulator)
        return Value(F.try_divide(total, F.size(present)), DoubleType())

    def _check_aggregable(self, function: a.AggregateFunction, element: DataType, node: a.Node) -> None:
        if is_numeric(element) or isinstance(element, NullType):
            return
        if function in (a.AggregateFunction.MIN, a.AggregateFunction.MAX) and is_temporal(element):
            return
        extremes = function in (a.AggregateFunction.MIN, a.AggregateFunction.MAX)
        wanted = "numbers or timestamps" if extremes else "numbers"
        self._error(node, f"`{function.value}` aggregates {wanted}, but the values are {describe(element)}")

    def _v_aggregate(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Aggregate)
        source_node, source_env = self._deref(node.source, env)
        if isinstance(source_node, a.Select) and len(source_node.bindings) > 1:
            if node.function is not a.AggregateFunction.COUNT:
                self._error(
                    node,
                    f"`.{node.function.value}(...)` of a select of several variables is ambiguous; "
                    f"write `{node.function.value} <value> over V1 from ..., V2 from ...`",
                )
            tuples = self._tuples(source_node.bindings, source_env, lambda _: Value(F.lit(1), LongType()))
            return Value(F.size(tuples.col).cast(LongType()), LongType())
        source = self._array(node.source, env, f"(`.{node.function.value}()` aggregates an array)")
        assert isinstance(source.type, ArrayType)
        if node.function is a.AggregateFunction.COUNT:
            return Value(F.size(nonnull_array(source.col)).cast(LongType()), LongType())
        if node.value is None:
            return self._reduce(node.function, source, node)
        element = source.type.elementType
        value_node = node.value
        result_type: list[DataType] = []

        def each(item: Column) -> Column:
            value = self.value(value_node, env.push_item(Value(item, element)))
            result_type.append(value.type)
            return value.col

        values = F.transform(nonnull_array(source.col), each)
        return self._reduce(node.function, Value(values, ArrayType(result_type[0])), node)

    def _v_aggregate_over(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.AggregateOver)
        values = self._tuples(node.bindings, env, lambda inner: self.value(node.value, inner))
        return self._reduce(node.function, values, node)

    # --- chain -----------------------------------------------------------------------------------

    def _chain_flags(self, node: a.Chain, element: Value | Table, env: Env) -> tuple[Column, list[Column], DataType]:
        """The ordering value and the per-step flags of one event (item scope of the steps)."""
        order = self._path(element, node.order_by, node)
        order_type: DataType
        if is_temporal(order.type):
            ts, order_type = self._timestamp(order, node, "the ordering field of `chain`"), TimestampType()
        elif is_numeric(order.type) and not any(step.when is not None for step in node.steps):
            ts, order_type = order.col.cast(DoubleType()), DoubleType()
        else:
            self._error(
                node,
                f"the ordering field `{'.'.join(node.order_by)}` of `chain` must be a timestamp, "
                f"but it is {describe(order.type)}",
            )
        inner = env.push_item(element)
        flags = []
        for step in node.steps:
            flag = self.cond(step.what, inner)
            if step.when is not None:
                flag = flag & self._occurs_test(ts, step.when, inner)
            flags.append(flag)
        return ts, flags, order_type

    @staticmethod
    def _chain_struct(ts: Column, flags: list[Column]) -> Column:
        return F.struct(ts.alias("t"), *[flag.alias(f"f{index}") for index, flag in enumerate(flags)])

    @staticmethod
    def _chain_type(order_type: DataType, steps: int) -> ArrayType:
        fields = [StructField("t", order_type), *[StructField(f"f{index}", BooleanType()) for index in range(steps)]]
        return ArrayType(StructType(fields))

    @staticmethod
    def _chain_match(events: Column, steps: Sequence[a.ChainStep], order_type: DataType) -> Column:
        """Whether the events (``struct(t, f0..fn)``) contain the steps in strictly increasing time.

        A greedy scan over the events sorted by time completes each step as early as possible
        (which leaves the most room for the next steps): step ``k`` needs ``COUNT`` events
        flagged for it with a time after the event that completed step ``k - 1``.
        """
        initial = F.struct(
            F.lit(0).alias("k"),
            F.lit(0).alias("c"),
            F.lit(None).cast(order_type).alias("t"),
        )

        def merge(acc: Column, event: Column) -> Column:
            step, count, last = acc["k"], acc["c"], acc["t"]
            flagged = any_of([(step == index) & event[f"f{index}"] for index in range(len(steps))])
            need = F.lit(steps[-1].count)
            for index in range(len(steps) - 2, -1, -1):
                need = F.when(step == index, F.lit(steps[index].count)).otherwise(need)
            usable = flagged & (last.isNull() | (event["t"] > last))
            complete = usable & (count + 1 >= need)
            return F.struct(
                F.when(complete, step + 1).otherwise(step).alias("k"),
                F.when(complete, F.lit(0)).when(usable, count + 1).otherwise(count).alias("c"),
                F.when(complete, event["t"]).otherwise(last).alias("t"),
            )

        matched = F.aggregate(F.array_sort(events), initial, merge, lambda acc: acc["k"] >= len(steps))
        return false_if_null(matched)

    def _c_chain(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Chain)
        source = self._array(node.source, env, "(`chain` reads a list of events)")
        assert isinstance(source.type, ArrayType)
        element_type = source.type.elementType
        if not isinstance(element_type, StructType):
            self._error(node.source, "`chain` needs a list of events (objects with a timestamp)")
        order_type: list[DataType] = []

        def to_struct(item: Column) -> Column:
            ts, flags, kind = self._chain_flags(node, Value(item, element_type), env)
            order_type.append(kind)
            return self._chain_struct(ts, flags)

        structs = F.transform(nonnull_array(source.col), to_struct)
        relevant = F.filter(
            structs,
            lambda s: s["t"].isNotNull() & any_of([s[f"f{index}"] for index in range(len(node.steps))]),
        )
        return self._chain_match(relevant, node.steps, order_type[0])

    # --- push-down of event conditions into the aggregation ------------------------------------

    def _event_set(self, node: a.Node, env: Env) -> EventSet | None:
        """Recognise a set of events defined by conditions on each event alone."""
        if self._event_row is None or not self._pushdown:
            return None
        node, env = self._deref(node, env)
        if isinstance(node, a.FieldRef):
            if isinstance(node.root, a.EventsRoot) and not node.parts:
                return EventSet(node)
            return None
        if isinstance(node, a.Filter):
            inner = self._event_set(node.source, env)
            if inner is None or inner.rest or not free_refs(node.condition) <= {("item", 0)}:
                return None
            return dataclasses.replace(inner, node=node, predicates=(*inner.predicates, (None, node.condition)))
        if isinstance(node, a.Select):
            first, rest = node.bindings[0], node.bindings[1:]
            inner = self._event_set(first.source, env)
            if inner is None or inner.rest:
                return None
            closed = a.Select((a.Binding(first.variable, a.ListLit(()), first.condition), *rest))
            if free_refs(closed):
                return None
            predicates = inner.predicates
            if first.condition is not None:
                predicates = (*predicates, (first.variable, first.condition))
            return EventSet(node, predicates, first.variable, rest)
        return None

    def _row_env(self, variable: str | None) -> Env:
        assert self._event_row is not None
        if variable is None:
            return Env(event_level=True, items=(self._event_row,))
        return Env(event_level=True, variables=((variable, self._event_row),))

    def _row_predicate(self, events: EventSet) -> Column:
        return all_of([self.cond(condition, self._row_env(variable)) for variable, condition in events.predicates])

    def _aggregate(self, key: object, build: Callable[[], tuple[Column, Column | None, DataType]]) -> Value:
        spec = self._aggregates.get(key)
        if spec is None:
            expression, default, data_type = build()
            spec = EventAggregate(f"{AGGREGATE_PREFIX}{len(self._aggregates)}", expression, default, data_type)
            self._aggregates[key] = spec
        return Value(F.col(spec.name), spec.type)

    def _event_count(self, events: EventSet) -> Column:
        """The number of matching events (tuples for selects over arrays inside each event)."""

        def build() -> tuple[Column, Column | None, DataType]:
            predicate = self._row_predicate(events)
            if not events.rest:
                return F.count_if(predicate), F.lit(0).cast(LongType()), LongType()
            one = Value(F.lit(1), LongType())
            per_event = self._tuples(events.rest, self._row_env(events.variable), lambda _: one)
            count = F.when(predicate, F.size(per_event.col)).otherwise(F.lit(0)).cast(LongType())
            return F.sum(count), F.lit(0).cast(LongType()), LongType()

        return self._aggregate(("count", canonical(events.node)), build).col

    def _event_values(
        self,
        function: a.AggregateFunction,
        events: EventSet,
        value: Callable[[Env], Value],
        value_env: Env,
        key: object,
        node: a.Node,
    ) -> Value:
        """``sum``/``average``/``min``/``max`` of a value over the matching events."""
        if not events.rest:

            def build() -> tuple[Column, Column | None, DataType]:
                predicate = self._row_predicate(events)
                item = value(value_env)
                self._check_aggregable(function, item.type, node)
                selected = F.when(predicate, item.col)
                if function is a.AggregateFunction.SUM:
                    return F.sum(selected), F.lit(0), sum_type(item.type)
                if function is a.AggregateFunction.AVERAGE:
                    average_type = item.type if isinstance(item.type, DecimalType) else DoubleType()
                    return F.avg(selected), None, average_type
                aggregate = F.min if function is a.AggregateFunction.MIN else F.max
                return aggregate(selected), None, item.type

            return self._aggregate((function.value, key), build)

        # Tuples inside each event: reduce per event, then across events.
        def per_event() -> tuple[Column, DataType]:
            values = self._tuples(events.rest, value_env, value)
            assert isinstance(values.type, ArrayType)
            self._check_aggregable(function, values.type.elementType, node)
            return values.col, values.type.elementType

        def reduced(inner: a.AggregateFunction) -> Callable[[], tuple[Column, Column | None, DataType]]:
            def build() -> tuple[Column, Column | None, DataType]:
                predicate = self._row_predicate(events)
                values, element = per_event()
                present = F.filter(values, lambda item: item.isNotNull())
                if inner is a.AggregateFunction.MIN:
                    return F.min(F.when(predicate, F.array_min(present))), None, element
                if inner is a.AggregateFunction.MAX:
                    return F.max(F.when(predicate, F.array_max(present))), None, element
                if inner is a.AggregateFunction.COUNT:
                    count = F.when(predicate, F.size(present)).otherwise(F.lit(0)).cast(LongType())
                    return F.sum(count), F.lit(0).cast(LongType()), LongType()
                accumulator = accumulator_type(element)
                total = F.aggregate(
                    present,
                    F.lit(0).cast(accumulator),
                    lambda acc, item: (acc + item.cast(accumulator)).cast(accumulator),
                )
                return F.sum(F.when(predicate, total)), F.lit(0).cast(accumulator), accumulator

            return build

        if function is a.AggregateFunction.AVERAGE:
            total = self._aggregate(("sum", key), reduced(a.AggregateFunction.SUM))
            count = self._aggregate(("count-values", key), reduced(a.AggregateFunction.COUNT))
            return Value(F.try_divide(total.col, count.col), DoubleType())
        return self._aggregate((function.value, key), reduced(function))

    def _pushdown_condition(self, node: a.Node, env: Env) -> Column | None:
        if isinstance(node, a.IsDefined):
            events = self._event_set(node.operand, env)
            return None if events is None else self._event_count(events) > 0
        if isinstance(node, a.Quantifier):
            if node.kind is a.QuantifierKind.EXISTS:
                events = self._event_set(a.Select(node.bindings, pos=node.pos), env)
                return None if events is None else self._event_count(events) > 0
            return self._pushdown_forall(node, env)
        if isinstance(node, a.Chain):
            return self._pushdown_chain(node, env)
        return None

    def _pushdown_forall(self, node: a.Quantifier, env: Env) -> Column | None:
        if len(node.bindings) != 1:
            return None
        binding = node.bindings[0]
        source = self._event_set(binding.source, env)
        if source is None or source.rest:
            return None
        if binding.condition is None:
            return F.lit(True)
        if not free_refs(binding.condition) <= {("var", binding.variable)}:
            return None
        # forall X from S where c  <=>  no event of S violates c.
        violation = a.Not(binding.condition, pos=binding.condition.pos)
        violations = EventSet(
            a.Select((a.Binding(binding.variable, binding.source, violation),)),
            (*source.predicates, (binding.variable, violation)),
            binding.variable,
        )
        return self._event_count(violations) == 0

    def _pushdown_chain(self, node: a.Chain, env: Env) -> Column | None:
        events = self._event_set(node.source, env)
        if events is None or events.rest:
            return None
        for step in node.steps:
            refs = free_refs(step.what) | (free_refs(step.when) if step.when is not None else frozenset())
            if not refs <= {("item", 0)}:
                return None
        row = self._event_row
        assert row is not None

        def build() -> tuple[Column, Column | None, DataType]:
            predicate = self._row_predicate(events)
            ts, flags, order_type = self._chain_flags(node, row, Env(event_level=True))
            keep = predicate & ts.isNotNull() & any_of(flags)
            # Only the events that can match a step are collected, with their step flags.
            collected = F.collect_list(F.when(keep, self._chain_struct(ts, flags)))
            list_type = self._chain_type(order_type, len(node.steps))
            return collected, F.array().cast(list_type), list_type

        collected = self._aggregate(("chain", canonical(node)), build)
        assert isinstance(collected.type, ArrayType) and isinstance(collected.type.elementType, StructType)
        order_type = collected.type.elementType.fields[0].dataType
        return self._chain_match(collected.col, node.steps, order_type)

    def _pushdown_value(self, node: a.Node, env: Env) -> Value | None:
        if isinstance(node, a.Aggregate):
            events = self._event_set(node.source, env)
            if events is None:
                return None
            if node.function is a.AggregateFunction.COUNT:
                return Value(self._event_count(events), LongType())
            if node.value is None:
                self._error(
                    node,
                    f"`.{node.function.value}()` of events needs a value, e.g. "
                    f"`.{node.function.value}(commerce.order.priceTotal)`",
                )
            if events.rest or not free_refs(node.value) <= {("item", 0)}:
                return None
            value_node = node.value
            key: object = (canonical(events.node), "item", canonical(value_node))
            return self._event_values(
                node.function,
                events,
                lambda inner: self.value(value_node, inner),
                self._row_env(None),
                key,
                node,
            )
        if isinstance(node, a.AggregateOver):
            select = a.Select(node.bindings, pos=node.pos)
            events = self._event_set(select, env)
            if events is None:
                return None
            bound = {binding.variable for binding in node.bindings}
            if not all(ref[0] == "var" and ref[1] in bound for ref in free_refs(node.value)):
                return None
            over_key = (canonical(a.AggregateOver(node.function, node.value, node.bindings)), "over")
            value_node = node.value
            return self._event_values(
                node.function,
                events,
                lambda inner: self.value(value_node, inner),
                self._row_env(events.variable),
                over_key,
                node,
            )
        return None


def compile_segments(
    segments: Iterable[SegmentInput],
    profile_schema: StructType,
    event_schema: StructType | None,
    evaluation_time: dt.datetime,
    *,
    pushdown: bool = True,
) -> CompiledSegments:
    """Parse, check and compile segment definitions.

    Building the Columns needs an active SparkSession (no job runs).

    Args:
        segments: ``SegmentSource`` objects, ``(id, pql_text)`` or ``(id, parsed_tree)`` pairs.
        profile_schema: The schema of the profiles DataFrame (``person_id`` + attributes).
        event_schema: The schema of the events DataFrame, or None when there is no events table.
        evaluation_time: T; ``now`` is T and ``today`` the start of T's UTC day. A naive datetime
            is taken as UTC.
        pushdown: Push per-event conditions into the aggregation (``count_if``, ``sum(when)``...).
            ``False`` evaluates every event condition with higher-order functions over the
            collected event list instead: slower, the same results (the tests compare both).

    Returns:
        The compiled segments.

    Raises:
        SegmentDefinitionError: Listing every syntax error, unknown ``inSegment`` id, cycle,
            unknown attribute and type mismatch, each with its segment id, line and column.
    """
    sources = as_sources(segments)
    parsed, problems = parse_segments(sources)
    problems += reference_problems(parsed, (source.id for source in sources))
    # Schema problems are reported together with syntax and reference problems, so a user
    # fixes everything in one round; segments that reference a broken one are skipped.
    failed = {problem.segment_id for problem in problems}
    compiler = _Compiler(profile_schema, event_schema, evaluation_time, pushdown=pushdown)
    for segment in dependency_order(parsed):
        if segment.id in failed or any(reference in failed for reference in segment.references):
            failed.add(segment.id)  # its own problems are reported; do not cascade
            continue
        try:
            compiler.compile(segment)
        except PqlError as error:
            problems.append(SegmentProblem(segment.id, error))
            failed.add(segment.id)
    if problems:
        order = {source.id: index for index, source in enumerate(sources)}
        raise SegmentDefinitionError(sorted(problems, key=lambda problem: order[problem.segment_id]))
    ids = tuple(source.id for source in sources)
    return CompiledSegments(
        segment_ids=ids,
        columns={segment_id: compiler.segment_columns[segment_id] for segment_id in ids},
        aggregates=tuple(compiler.aggregates()),
        classification=classify_segments(dependency_order(parsed)),
        evaluation_time=compiler.now,
    )
