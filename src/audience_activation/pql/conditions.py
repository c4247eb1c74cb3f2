"""Conditions on values: comparisons, ``in``/``notIn``, ``intersects``, string tests, ``like``,
``matches``, null checks and ``inSegment``.

Rules owned here (see ``docs/segments.md``, "Semantics decisions"):

- Both sides of a comparison must be of one category; objects and arrays compare with ``=``/``!=``
  only, and only when they have the same shape (and hold no maps); booleans are not ordered.
- Dates and timestamps compare as timestamps (a date is midnight UTC). Two events are equal when
  their ``_id``s are, if they have one (events are de-duplicated by ``_id``).
- A list compared with one value is true when some item matches.
- Every test is false on a missing operand, also the negated ones: ``!=``, ``notIn``,
  ``notEqualTo`` and ``doesNot*`` are not the negation of their positive forms.
- ``like`` knows only ``%`` and ``_`` (a backslash is an ordinary character); ``matches`` is a
  Java regular expression found anywhere in the string.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, NullType, StringType, TimestampType

from audience_activation.columns import type_shape
from audience_activation.pql import ast as a
from audience_activation.pql.base import CompilerBase
from audience_activation.pql.logic import false_if_null
from audience_activation.pql.scope import Env, Value
from audience_activation.pql.types import category_of, describe, is_string, is_temporal


class ConditionsMixin(CompilerBase):
    """Compiles comparisons and the tests on strings, lists, missing values and segments."""

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
