"""A plain-Python reference evaluator of a PQL subset, and Hypothesis strategies for random ASTs.

The evaluator states the semantics of docs/segments.md directly, one person at a time: two-valued
logic (a comparison, ``in``/``notIn`` or string function with a missing operand is false, ``not``
negates that), arithmetic with a missing operand is missing, division (and ``%``) by zero is
missing, ``sum`` over nothing is 0 and ``average``/``min``/``max`` over nothing are missing.
The property test compares it with the Spark compiler on random conditions and random rows.

Subset: literals, profile fields, ``+ - * / %``, unary minus, comparisons, ``and``/``or``/``not``,
``in``/``notIn`` with list literals, string tests (with the case flag), ``like``, ``matches``,
``isNull``/``isNotNull``, bare references, and over ``xEvent``: bracket filters with ``count()``,
``sum``/``average``/``min``/``max``, ``select X from xEvent where ...``, ``forall``, and
``occurs <cmp> N <unit> before now`` on event timestamps.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from audience_activation.pql import ast as a

Row = dict[str, Any]

_UNITS = {
    a.TimeUnit.MINUTE: dt.timedelta(minutes=1),
    a.TimeUnit.HOUR: dt.timedelta(hours=1),
    a.TimeUnit.DAY: dt.timedelta(days=1),
}


def _java_mod(left: Any, right: Any) -> Any:
    """``%`` as in Java/Spark: the result has the sign of the dividend."""
    if isinstance(left, float) or isinstance(right, float):
        return math.fmod(left, right)
    quotient = abs(left) // abs(right)
    if (left < 0) != (right < 0):
        quotient = -quotient
    return left - right * quotient


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern]
    return re.compile("".join(parts), re.DOTALL)


class ReferenceEvaluator:
    """Evaluates a PQL condition for one person (profile dict + list of event dicts) at time T."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def condition(self, node: a.Node, profile: Row, events: list[Row]) -> bool:
        """The value of a segment condition for one person."""
        return self._cond(node, {"profile": profile, "events": events, "items": [], "vars": {}})

    # --- conditions ----------------------------------------------------------------------------

    def _cond(self, node: a.Node, scope: dict[str, Any]) -> bool:
        if isinstance(node, a.BoolLit):
            return node.value
        if isinstance(node, a.And):
            return all(self._cond(operand, scope) for operand in node.operands)
        if isinstance(node, a.Or):
            return any(self._cond(operand, scope) for operand in node.operands)
        if isinstance(node, a.Not):
            return not self._cond(node.operand, scope)
        if isinstance(node, a.Compare):
            left, right = self._value(node.left, scope), self._value(node.right, scope)
            if left is None or right is None:
                return False
            return {
                a.CompareOp.EQ: left == right,
                a.CompareOp.NE: left != right,
                a.CompareOp.LT: left < right,
                a.CompareOp.LE: left <= right,
                a.CompareOp.GT: left > right,
                a.CompareOp.GE: left >= right,
            }[node.op]
        if isinstance(node, a.In):
            value = self._value(node.value, scope)
            assert isinstance(node.collection, a.ListLit)
            items = [self._value(item, scope) for item in node.collection.items]
            if value is None:
                return False
            return (value not in items) if node.negated else (value in items)
        if isinstance(node, a.StringTest):
            subject, argument = self._value(node.subject, scope), self._value(node.argument, scope)
            if subject is None or argument is None:
                return False
            if not node.case_sensitive:
                subject, argument = subject.lower(), argument.lower()
            positive = {
                a.StringOp.EQUALS: subject == argument,
                a.StringOp.STARTS_WITH: subject.startswith(argument),
                a.StringOp.ENDS_WITH: subject.endswith(argument),
                a.StringOp.CONTAINS: argument in subject,
            }[node.op]
            return not positive if node.negated else positive
        if isinstance(node, a.Like):
            subject, pattern = self._value(node.subject, scope), self._value(node.pattern, scope)
            if subject is None or pattern is None:
                return False
            return _like_regex(pattern).fullmatch(subject) is not None
        if isinstance(node, a.Matches):
            subject, pattern = self._value(node.subject, scope), self._value(node.pattern, scope)
            if subject is None or pattern is None:
                return False
            return re.search(pattern, subject) is not None
        if isinstance(node, a.NullCheck):
            missing = self._value(node.operand, scope) is None
            return not missing if node.negated else missing
        if isinstance(node, a.IsDefined):
            operand = node.operand
            if isinstance(operand, a.Select):
                return any(True for _ in self._matching(operand.bindings[0], scope))
            if isinstance(operand, a.Filter):
                return bool(self._filtered(operand, scope))
            value = self._value(operand, scope)
            if isinstance(value, bool):
                return value
            if isinstance(value, list):
                return bool(value)
            return value is not None
        if isinstance(node, a.Quantifier):
            (binding,) = node.bindings
            source = self._events_of(binding.source, scope)
            check = self._binding_test(binding, scope)
            if node.kind is a.QuantifierKind.EXISTS:
                return any(check(event) for event in source)
            return all(check(event) for event in source)
        if isinstance(node, a.Occurs):
            value = self._value(node.subject, scope)
            return value is not None and self._occurs(value, node.test)
        raise NotImplementedError(type(node).__name__)

    def _occurs(self, ts: dt.datetime, test: a.Node) -> bool:
        assert isinstance(test, a.OccursWithin)
        assert test.direction is a.Direction.BEFORE and isinstance(test.anchor, a.TimeConst)
        bound = self.now - test.amount * _UNITS[test.unit]
        return {
            a.CompareOp.LE: bound <= ts <= self.now,
            a.CompareOp.LT: bound < ts <= self.now,
            a.CompareOp.GE: ts <= bound,
            a.CompareOp.GT: ts < bound,
        }[test.op]

    # --- values --------------------------------------------------------------------------------

    def _value(self, node: a.Node, scope: dict[str, Any]) -> Any:
        if isinstance(node, (a.StringLit, a.IntLit, a.DoubleLit, a.BoolLit)):
            return node.value
        if isinstance(node, a.FieldRef):
            root = node.root
            if isinstance(root, a.ProfileRoot):
                row = scope["profile"]
            elif isinstance(root, a.ItemRoot):
                row = scope["items"][-1 - root.up]
            elif isinstance(root, a.VariableRoot):
                row = scope["vars"][root.name]
            else:
                raise NotImplementedError("xEvent as a value")
            (name,) = node.parts
            return row.get(name)
        if isinstance(node, a.Negate):
            value = self._value(node.operand, scope)
            return None if value is None else 0 - value
        if isinstance(node, a.Arith):
            left, right = self._value(node.left, scope), self._value(node.right, scope)
            if left is None or right is None:
                return None
            if node.op is a.ArithOp.ADD:
                return left + right
            if node.op is a.ArithOp.SUB:
                return left - right
            if node.op is a.ArithOp.MUL:
                return left * right
            if right == 0:
                return None
            if node.op is a.ArithOp.DIV:
                return left / right
            return _java_mod(left, right)
        if isinstance(node, a.Aggregate):
            events = self._events_of(node.source, scope)
            if node.function is a.AggregateFunction.COUNT:
                return len(events)
            assert node.value is not None
            values = [self._value(node.value, {**scope, "items": [*scope["items"], event]}) for event in events]
            return self._reduce(node.function, values)
        raise NotImplementedError(type(node).__name__)

    @staticmethod
    def _reduce(function: a.AggregateFunction, values: list[Any]) -> Any:
        present = [value for value in values if value is not None]
        if function is a.AggregateFunction.SUM:
            return sum(present) if present else 0
        if not present:
            return None
        if function is a.AggregateFunction.AVERAGE:
            return sum(present) / len(present)
        return min(present) if function is a.AggregateFunction.MIN else max(present)

    # --- events --------------------------------------------------------------------------------

    def _events_of(self, node: a.Node, scope: dict[str, Any]) -> list[Row]:
        if isinstance(node, a.FieldRef) and isinstance(node.root, a.EventsRoot) and not node.parts:
            return list(scope["events"])
        if isinstance(node, a.Filter):
            return self._filtered(node, scope)
        raise NotImplementedError(type(node).__name__)

    def _filtered(self, node: a.Filter, scope: dict[str, Any]) -> list[Row]:
        return [
            event
            for event in self._events_of(node.source, scope)
            if self._cond(node.condition, {**scope, "items": [*scope["items"], event]})
        ]

    def _binding_test(self, binding: a.Binding, scope: dict[str, Any]) -> Callable[[Row], bool]:
        def check(event: Row) -> bool:
            if binding.condition is None:
                return True
            return self._cond(binding.condition, {**scope, "vars": {**scope["vars"], binding.variable: event}})

        return check

    def _matching(self, binding: a.Binding, scope: dict[str, Any]) -> list[Row]:
        check = self._binding_test(binding, scope)
        return [event for event in self._events_of(binding.source, scope) if check(event)]


# --- Hypothesis strategies ----------------------------------------------------------------------

#: Dyadic fractions: sums and averages are exact in binary floating point, so the order in which
#: Spark adds partial aggregates cannot change a result.
DOUBLES = (-2.5, -1.0, 0.0, 0.25, 1.5, 3.75)
LETTERS = "abAB"
EVENT_TYPES = ("view", "buy", "launch")

_profile_number = st.sampled_from(["a", "b"]).map(lambda name: a.FieldRef(a.ProfileRoot(), (name,)))
_profile_string = st.sampled_from(["s", "t"]).map(lambda name: a.FieldRef(a.ProfileRoot(), (name,)))
_int_literal = st.integers(-5, 5).map(a.IntLit)
_double_literal = st.sampled_from(DOUBLES).map(a.DoubleLit)
_string_literal = st.text(alphabet=LETTERS, max_size=3).map(a.StringLit)
_compare_op = st.sampled_from(list(a.CompareOp))
_arith_op = st.sampled_from(list(a.ArithOp))


def _item(name: str, root: a.Root) -> a.FieldRef:
    return a.FieldRef(root, (name,))


def _event_condition(root: a.Root) -> st.SearchStrategy[a.Node]:
    """A condition on one event (``root`` is the item of a filter or a select variable)."""
    leaf = st.one_of(
        st.sampled_from(EVENT_TYPES).map(
            lambda kind: a.Compare(a.CompareOp.EQ, _item("eventType", root), a.StringLit(kind))
        ),
        st.builds(
            lambda op, name, literal: a.Compare(op, _item(name, root), literal),
            _compare_op,
            st.sampled_from(["value", "n"]),
            st.one_of(_int_literal, _double_literal),
        ),
        st.builds(
            lambda op, amount, unit: a.Occurs(
                _item("timestamp", root),
                a.OccursWithin(op, amount, unit, a.Direction.BEFORE, a.TimeConst(a.TimeConstKind.NOW)),
            ),
            st.sampled_from([a.CompareOp.LT, a.CompareOp.LE, a.CompareOp.GT, a.CompareOp.GE]),
            st.integers(0, 48),
            st.sampled_from(list(_UNITS)),
        ),
    )
    return st.one_of(
        leaf,
        st.builds(lambda x, y: a.And((x, y)), leaf, leaf),
        st.builds(lambda x, y: a.Or((x, y)), leaf, leaf),
        leaf.map(a.Not),
    )


_events = a.FieldRef(a.EventsRoot())


def _event_number() -> st.SearchStrategy[a.Node]:
    filtered = _event_condition(a.ItemRoot(0)).map(lambda condition: a.Filter(_events, condition))
    count = filtered.map(lambda source: a.Aggregate(a.AggregateFunction.COUNT, source))
    value_aggregate = st.builds(
        lambda function, source, name: a.Aggregate(function, source, _item(name, a.ItemRoot(0))),
        st.sampled_from(
            [a.AggregateFunction.SUM, a.AggregateFunction.AVERAGE, a.AggregateFunction.MIN, a.AggregateFunction.MAX]
        ),
        filtered,
        st.sampled_from(["value", "n"]),
    )
    return st.one_of(count, value_aggregate)


def _number(depth: int) -> st.SearchStrategy[a.Node]:
    leaf = st.one_of(_profile_number, _int_literal, _double_literal, _event_number())
    if depth == 0:
        return leaf
    inner = _number(depth - 1)
    return st.one_of(
        leaf,
        st.builds(a.Arith, _arith_op, inner, inner),
        st.builds(a.Negate, _profile_number),
    )


def _string() -> st.SearchStrategy[a.Node]:
    return st.one_of(_profile_string, _string_literal)


def _leaf_condition() -> st.SearchStrategy[a.Node]:
    number = _number(2)
    return st.one_of(
        st.builds(a.Compare, _compare_op, number, number),
        st.builds(a.Compare, _compare_op, _profile_string, _string()),
        st.builds(
            lambda value, items, negated: a.In(value, a.ListLit(tuple(items)), negated=negated),
            _profile_number,
            st.lists(st.one_of(_int_literal, _double_literal), min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda value, items, negated: a.In(value, a.ListLit(tuple(items)), negated=negated),
            _profile_string,
            st.lists(_string_literal, min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(
            a.StringTest, st.sampled_from(list(a.StringOp)), st.booleans(), _profile_string, _string(), st.booleans()
        ),
        st.builds(a.Like, _profile_string, st.text(alphabet="ab%_", max_size=4).map(a.StringLit)),
        st.builds(a.Matches, _profile_string, st.text(alphabet="ab^$.", max_size=3).map(a.StringLit)),
        st.builds(a.NullCheck, st.one_of(_profile_number, _profile_string), st.booleans()),
        st.sampled_from(["a", "s", "flag"]).map(lambda name: a.IsDefined(a.FieldRef(a.ProfileRoot(), (name,)))),
        st.booleans().map(a.BoolLit),
        _event_condition(a.VariableRoot("X")).map(
            lambda condition: a.IsDefined(a.Select((a.Binding("X", _events, condition),)))
        ),
        st.builds(
            lambda kind, condition: a.Quantifier(kind, (a.Binding("X", _events, condition),)),
            st.sampled_from(list(a.QuantifierKind)),
            _event_condition(a.VariableRoot("X")),
        ),
    )


def random_condition(depth: int = 2) -> st.SearchStrategy[a.Node]:
    """A random, well-typed segment condition of the subset."""
    leaf = _leaf_condition()
    if depth == 0:
        return leaf
    inner = random_condition(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, min_size=2, max_size=3).map(lambda items: a.And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: a.Or(tuple(items))),
        inner.map(a.Not),
    )


def random_profile() -> st.SearchStrategy[Row]:
    """Random profile attributes ``a`` (bigint), ``b`` (double), ``s``, ``t`` (strings), ``flag``."""
    return st.fixed_dictionaries(
        {
            "a": st.one_of(st.none(), st.integers(-5, 5)),
            "b": st.one_of(st.none(), st.sampled_from(DOUBLES)),
            "s": st.one_of(st.none(), st.text(alphabet=LETTERS, max_size=3)),
            "t": st.one_of(st.none(), st.text(alphabet=LETTERS, max_size=3)),
            "flag": st.one_of(st.none(), st.booleans()),
        }
    )


def random_events(
    now: dt.datetime = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc),
) -> st.SearchStrategy[list[Row]]:
    """Random events of one person, at whole hours up to three days before ``now``."""
    event = st.fixed_dictionaries(
        {
            "timestamp": st.integers(0, 72).map(lambda hours: now - dt.timedelta(hours=hours)),
            "eventType": st.one_of(st.none(), st.sampled_from(EVENT_TYPES)),
            "value": st.one_of(st.none(), st.sampled_from(DOUBLES)),
            "n": st.one_of(st.none(), st.integers(-3, 5)),
        }
    )
    return st.lists(event, max_size=4)
