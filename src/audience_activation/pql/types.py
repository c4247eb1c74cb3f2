"""Spark types as PQL sees them: categories, descriptions for messages, and result types.

Rules owned here (see ``docs/segments.md``, "Semantics decisions"):

- A Spark type falls in one PQL category: number, string, time (timestamps and dates), boolean,
  null (the element type of an empty list literal), array, object (struct) or map. Values compare
  and mix only within one category.
- Arithmetic on integers stays a long (``/`` gives a double); a double anywhere gives a double, a
  decimal a ``decimal(38, 18)``.
- List items and ``if`` branches unify to one type: numbers to a double when one is, to a decimal
  when all are, else to a long; dates and timestamps mix as timestamps; arrays, objects and maps
  only with the same shape.
- Array sums accumulate integers as longs and everything else as doubles; ``sum`` over the events
  has Spark's own result type.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    CharType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegralType,
    LongType,
    MapType,
    NullType,
    NumericType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
    VarcharType,
)

from audience_activation.columns import type_shape
from audience_activation.pql import ast as a


def is_numeric(data_type: DataType) -> bool:
    return isinstance(data_type, NumericType)


def is_string(data_type: DataType) -> bool:
    return isinstance(data_type, (StringType, CharType, VarcharType))


def is_temporal(data_type: DataType) -> bool:
    return isinstance(data_type, (TimestampType, TimestampNTZType, DateType))


def category_of(data_type: DataType) -> str:
    if is_numeric(data_type):
        return "number"
    if is_string(data_type):
        return "string"
    if is_temporal(data_type):
        return "time"
    if isinstance(data_type, BooleanType):
        return "boolean"
    if isinstance(data_type, NullType):
        return "null"
    if isinstance(data_type, ArrayType):
        return "array"
    if isinstance(data_type, StructType):
        return "object"
    if isinstance(data_type, MapType):
        return "map"
    return data_type.simpleString()


_ARTICLES = {"array": "an array", "object": "an object", "null": "an empty list"}


def describe(data_type: DataType) -> str:
    category = category_of(data_type)
    article = _ARTICLES.get(category, f"a {category}")
    if category in ("number", "time", "array", "map"):
        return f"{article} ({data_type.simpleString()})"
    return article


def numeric_result(left: DataType, right: DataType, op: a.ArithOp) -> DataType:
    if isinstance(left, (DoubleType, FloatType)) or isinstance(right, (DoubleType, FloatType)):
        return DoubleType()
    if isinstance(left, DecimalType) or isinstance(right, DecimalType):
        return DecimalType(38, 18)
    if op is a.ArithOp.DIV:
        return DoubleType()
    return LongType()


def accumulator_type(data_type: DataType) -> DataType:
    """The type array sums are accumulated in: integers stay exact, the rest becomes double."""
    return LongType() if isinstance(data_type, IntegralType) else DoubleType()


def sum_type(data_type: DataType) -> DataType:
    """The result type of Spark's ``sum`` over a column of ``data_type``."""
    if isinstance(data_type, IntegralType):
        return LongType()
    if isinstance(data_type, DecimalType):
        return DecimalType(min(38, data_type.precision + 10), data_type.scale)
    return DoubleType()


def unify(types: Sequence[DataType]) -> DataType | None:
    """The common type of list items or ``if`` branches, or None when they do not mix."""
    known = [t for t in types if not isinstance(t, NullType)]
    if not known:
        return NullType()
    categories = {category_of(t) for t in known}
    if len(categories) > 1:
        return None
    category = categories.pop()
    if category == "number":
        if any(isinstance(t, (DoubleType, FloatType)) for t in known):
            return DoubleType()
        decimals = [t for t in known if isinstance(t, DecimalType)]
        if decimals:
            return decimals[0] if len(decimals) == len(known) else DoubleType()
        return LongType()
    if category == "time":
        return TimestampType() if len({type(t) for t in known}) > 1 else known[0]
    if category in ("array", "object", "map") and len({str(type_shape(t)) for t in known}) > 1:
        return None
    return known[0]
