"""What the compiler works with while it walks a tree: compiled values, tables, names and event sets.

- :class:`Value`: a compiled expression (Column and Spark type).
- :class:`Table`: a row whose top-level fields are columns (the profile, or one events row).
- :class:`LetRef`: a ``let`` variable, compiled where it is used.
- :class:`Env`: what names mean (bound variables, enclosing item scopes, event level or not).
- :class:`EventSet`: a set of the person's events defined by per-event conditions, the unit of
  push-down into the aggregation over the events.
- :class:`Anchor`: the time an ``occurs`` is relative to.

Everything here is an immutable dataclass; nothing builds Spark expressions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql.types import DataType, StructType

from audience_activation.pql import ast as a
from audience_activation.pql import timeops


@dataclass(frozen=True, eq=False)
class Value:
    """A compiled expression: its Column and its Spark type."""

    col: Column
    type: DataType


@dataclass(frozen=True, eq=False)
class Table:
    """A table row as a value: its top-level fields are columns (the profile, or one event row)."""

    schema: StructType
    label: str


@dataclass(frozen=True, eq=False)
class LetRef:
    """A ``let`` variable: its expression, compiled where used (so event patterns still match)."""

    node: a.Node
    env: Env


Bound = Value | Table | LetRef


@dataclass(frozen=True, eq=False)
class Env:
    """What names mean while compiling.

    Attributes:
        event_level: Compiling a per-event expression inside the aggregation over the events
            table (profile attributes, ``xEvent`` and ``inSegment`` are not available there).
        variables: Bound variables, innermost last.
        items: Items of enclosing item scopes (bracket filters, ``.sum(e)``, chain steps),
            innermost last.
    """

    event_level: bool = False
    variables: tuple[tuple[str, Bound], ...] = ()
    items: tuple[Value | Table, ...] = ()

    def lookup(self, name: str) -> Bound | None:
        for bound_name, bound in reversed(self.variables):
            if bound_name == name:
                return bound
        return None

    def bind(self, name: str, bound: Bound) -> Env:
        return dataclasses.replace(self, variables=(*self.variables, (name, bound)))

    def push_item(self, item: Value | Table) -> Env:
        return dataclasses.replace(self, items=(*self.items, item))


@dataclass(frozen=True)
class EventSet:
    """A set of the person's events defined by per-event conditions (pushed into the aggregation).

    Attributes:
        node: The expression (``xEvent``, ``xEvent[c]``, ``select X from xEvent where c, ...``).
        predicates: Per-event conditions: ``(variable, condition)`` for a select clause, or
            ``(None, condition)`` for a bracket filter (item scope).
        variable: The select variable bound to the event, if any.
        rest: Further select clauses over arrays inside the same event (``I from X.items``).
    """

    node: a.Node
    predicates: tuple[tuple[str | None, a.Node], ...] = ()
    variable: str | None = None
    rest: tuple[a.Binding, ...] = ()


@dataclass(frozen=True)
class Anchor:
    """The time an ``occurs`` is relative to: an instant (``now``) or a period (``today``).

    ``[start, end]`` (``end`` inclusive for an instant, exclusive for a period); ``before`` and
    ``after`` are the points ``occurs <n> <unit> before|after`` measure from.
    """

    start: timeops.TimeExpr
    end: timeops.TimeExpr
    inclusive_end: bool
    before: timeops.TimeExpr
    after: timeops.TimeExpr
