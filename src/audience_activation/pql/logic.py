"""Column building blocks of PQL's two-valued logic, shared by every part of the compiler.

Every condition compiles to a Column that is never null: ``false_if_null`` closes a condition a
missing operand could reach, ``all_of``/``any_of`` combine never-null conditions, and
``nonnull_array`` lets a missing array behave as an empty one (see ``docs/segments.md``,
"Semantics decisions"). ``quote`` names a top-level column whatever characters its name holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def all_of(columns: Sequence[Column]) -> Column:
    if not columns:
        return F.lit(True)
    result = columns[0]
    for column in columns[1:]:
        result = result & column
    return result


def any_of(columns: Sequence[Column]) -> Column:
    if not columns:
        return F.lit(False)
    result = columns[0]
    for column in columns[1:]:
        result = result | column
    return result


def false_if_null(column: Column) -> Column:
    return F.coalesce(column, F.lit(False))


def nonnull_array(column: Column) -> Column:
    """A missing array behaves as an empty one inside higher-order functions and aggregates."""
    return F.when(column.isNull(), F.array()).otherwise(column)
