"""The core of the segment compiler: the state of one compilation, error reporting and dispatch.

:class:`CompilerBase` is the class every part of the compiler (the mixins of
:mod:`~audience_activation.pql.values`, :mod:`~audience_activation.pql.conditions`,
:mod:`~audience_activation.pql.occurs`, :mod:`~audience_activation.pql.arrays`,
:mod:`~audience_activation.pql.chain` and :mod:`~audience_activation.pql.pushdown`) builds on.
It owns:

- the state of one evaluation: the schemas, ``now``/``today``, the compiled segment Columns, the
  event aggregates created so far and the event fields the collected event list must hold;
- errors: a :class:`PqlValidationError` or :class:`PqlUnsupportedError` at the position of the
  offending node (or of one part of a dotted reference);
- dispatch: :meth:`CompilerBase.cond` compiles a condition to a boolean Column that is never null
  (two-valued logic, see ``docs/segments.md``), :meth:`CompilerBase.value` an expression to a
  :class:`~audience_activation.pql.scope.Value`. Outside a per-event expression both first offer
  the node to push-down (:meth:`CompilerBase._pushdown_condition`,
  :meth:`CompilerBase._pushdown_value`, which compile nothing here), then call the handler of its
  node type from the tables the final compiler (``pql.compiler._Compiler``) fills in;
- the coercion of a value to Boolean (defined; non-empty for arrays and maps).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import NoReturn

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, MapType, StructField, StructType

from audience_activation.pql import ast as a
from audience_activation.pql import timeops
from audience_activation.pql.compiled import XEVENTS_COLUMN, EventAggregate
from audience_activation.pql.errors import PqlUnsupportedError
from audience_activation.pql.logic import false_if_null, quote
from audience_activation.pql.scope import Env, LetRef, Table, Value
from audience_activation.pql.types import describe
from audience_activation.pql.validation import ParsedSegment, PqlValidationError

#: A handler compiling one node type to a condition.
ConditionHandler = Callable[[a.Node, Env], Column]
#: A handler compiling one node type to a value.
ValueHandler = Callable[[a.Node, Env], Value]


class CompilerBase:
    """Compiles the segments of one evaluation; collects the event aggregates they need.

    The node handlers live in the mixins; :class:`~audience_activation.pql.compiler._Compiler`
    composes them and fills :attr:`_conditions` and :attr:`_values`.
    """

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
        self._conditions: dict[type[a.Node], ConditionHandler] = {}
        self._values: dict[type[a.Node], ValueHandler] = {}

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

    # --- push-down hooks (see pql.pushdown) ------------------------------------------------------

    def _pushdown_condition(self, node: a.Node, env: Env) -> Column | None:
        """The condition computed from the event aggregates, or None (compile it generically)."""
        return None

    def _pushdown_value(self, node: a.Node, env: Env) -> Value | None:
        """The value computed from the event aggregates, or None (compile it generically)."""
        return None
