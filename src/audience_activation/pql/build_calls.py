"""Method and function calls of PQL (``events.count()``, ``name.startsWith("a", false)``, ``date(y, m, d)``,
``inSegment("id")``) turned into AST nodes: a part of the PQL builder (:mod:`audience_activation.pql.builder`).

Each supported method has a builder method, looked up by name; its argument count is checked first, then its
arguments are built in the scope the method gives them (an item scope for ``sum(e)``, ``exists(cond)``). A name
Adobe's PQL has but this subset does not (:data:`UNSUPPORTED_METHODS`, :data:`UNSUPPORTED_FUNCTIONS`) is refused
with its advice; any other unknown name with the closest known one.
"""

from __future__ import annotations

from collections.abc import Callable

from lark import Token, Tree

from audience_activation.pql import ast as a
from audience_activation.pql.build_base import BuilderBase, Scope, call_arguments, keyword_text, position, rule_name

#: Adobe PQL methods that exist but are outside the supported subset, with the advice given.
UNSUPPORTED_METHODS: dict[str, str] = {
    "intersection": "use `a.intersects(b)` to test for a common member",
    "subsetOf": "",
    "supersetOf": "",
    "groupBy": "",
    "filter": "use a bracket filter `array[condition]`",
    "map": "",
    "topN": "",
    "bottomN": "",
    "head": "",
    "regexGroup": "use `matches` to test a regular expression",
}

#: Adobe PQL functions that exist but are outside the supported subset.
UNSUPPORTED_FUNCTIONS: dict[str, str] = {
    "mapEntry": "",
}


_STRING_METHODS: dict[str, tuple[a.StringOp, bool]] = {
    "equals": (a.StringOp.EQUALS, False),
    "notEqualTo": (a.StringOp.EQUALS, True),
    "startsWith": (a.StringOp.STARTS_WITH, False),
    "doesNotStartWith": (a.StringOp.STARTS_WITH, True),
    "endsWith": (a.StringOp.ENDS_WITH, False),
    "doesNotEndWith": (a.StringOp.ENDS_WITH, True),
    "contains": (a.StringOp.CONTAINS, False),
    "doesNotContain": (a.StringOp.CONTAINS, True),
}

_DATE_PART_METHODS = {
    "getYear": a.DatePart.YEAR,
    "getMonth": a.DatePart.MONTH,
    "getDayOfMonth": a.DatePart.DAY_OF_MONTH,
}

_CURRENT_DATE_FUNCTIONS = {
    "currentYear": a.DatePart.YEAR,
    "currentMonth": a.DatePart.MONTH,
    "currentDayOfMonth": a.DatePart.DAY_OF_MONTH,
}

ITEM_AGGREGATES = {
    "sum": a.AggregateFunction.SUM,
    "average": a.AggregateFunction.AVERAGE,
    "min": a.AggregateFunction.MIN,
    "max": a.AggregateFunction.MAX,
}


class CallBuilder(BuilderBase):
    """Builds method and function calls; :class:`audience_activation.pql.builder.Builder` adds the rest."""

    def __init__(self, text: str) -> None:
        """Create a builder.

        Args:
            text: The PQL source the trees were parsed from (for error excerpts).
        """
        super().__init__(text)
        self._methods: dict[str, Callable[[a.Node, Tree, Token, list[Tree], Scope], a.Node]] = {
            "count": self._method_count,
            "distinct": self._method_distinct,
            "intersects": self._method_intersects,
            "includes": self._method_includes,
            "exists": self._method_exists,
            "matches": self._method_matches,
            "isNull": self._method_null_check,
            "isNotNull": self._method_null_check,
            "get": self._method_get,
            "keys": self._method_keys,
            "values": self._method_values,
            **{name: self._method_item_aggregate for name in ITEM_AGGREGATES},
            **{name: self._method_string_test for name in _STRING_METHODS},
            **{name: self._method_date_part for name in _DATE_PART_METHODS},
        }

    def _b_method(self, tree: Tree, scope: Scope) -> a.Node:
        target_tree, name = tree.children[0], tree.children[1]
        assert isinstance(name, Token)
        arguments = call_arguments(tree.children[2:])
        # The target first, so that the first problem in reading order is the one reported.
        target = self.build(target_tree, scope)
        handler = self._methods.get(str(name))
        if handler is None:
            self._unknown(name, UNSUPPORTED_METHODS, list(self._methods), "method")
        return handler(target, tree, name, arguments, scope)

    def _method_count(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.Aggregate(a.AggregateFunction.COUNT, target, pos=position(tree))

    def _method_item_aggregate(
        self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope
    ) -> a.Node:
        self._arity(name, arguments, 0, 1)
        value = self.build(arguments[0], scope.enter_item()) if arguments else None
        return a.Aggregate(ITEM_AGGREGATES[str(name)], target, value, pos=position(tree))

    def _method_distinct(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.Distinct(target, pos=position(tree))

    def _method_intersects(
        self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope
    ) -> a.Node:
        self._arity(name, arguments, 1)
        return a.Intersects(target, self.build(arguments[0], scope), pos=position(tree))

    def _method_includes(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 1)
        return a.In(self.build(arguments[0], scope), target, pos=position(tree))

    def _method_exists(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 1)
        pos = position(tree)
        condition = self.condition(arguments[0], scope.enter_item())
        return a.IsDefined(a.Filter(target, condition, pos=pos), pos=pos)

    def _method_matches(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 1)
        return a.Matches(target, self.build(arguments[0], scope), pos=position(tree))

    def _method_null_check(
        self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope
    ) -> a.Node:
        self._arity(name, arguments, 0)
        return a.NullCheck(target, negated=str(name) == "isNotNull", pos=position(tree))

    def _method_get(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 1)
        return a.MapGet(target, self.build(arguments[0], scope), pos=position(tree))

    def _method_keys(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.MapKeys(target, pos=position(tree))

    def _method_values(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.MapValues(target, pos=position(tree))

    def _method_string_test(
        self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope
    ) -> a.Node:
        self._arity(name, arguments, 1, 2)
        op, negated = _STRING_METHODS[str(name)]
        case_sensitive = True
        if len(arguments) == 2:
            flag = arguments[1]
            if rule_name(flag) != "boolean":
                self._error(
                    flag,
                    f"the second argument of `{name}` is the case-sensitivity flag and must be `true` or `false`",
                )
            case_sensitive = keyword_text(flag) == "true"
        return a.StringTest(
            op,
            negated,
            target,
            self.build(arguments[0], scope),
            case_sensitive,
            pos=position(tree),
        )

    def _method_date_part(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.GetDatePart(target, _DATE_PART_METHODS[str(name)], pos=position(tree))

    # --- function calls ------------------------------------------------------------------------

    def _b_call(self, tree: Tree, scope: Scope) -> a.Node:
        name = tree.children[0]
        assert isinstance(name, Token)
        arguments = call_arguments(tree.children[1:])
        word = str(name)
        pos = position(tree)
        if word == "date":
            self._arity(name, arguments, 3)
            year, month, day = (self.build(argument, scope) for argument in arguments)
            return a.DateLit(year, month, day, pos=pos)
        if word == "inSegment":
            self._arity(name, arguments, 1)
            segment = self.build(arguments[0], scope)
            if not isinstance(segment, a.StringLit):
                self._error(arguments[0], "`inSegment` takes a segment id string literal")
            return a.InSegment(segment.value, pos=pos)
        if word in _CURRENT_DATE_FUNCTIONS:
            self._arity(name, arguments, 0)
            return a.CurrentDatePart(_CURRENT_DATE_FUNCTIONS[word], pos=pos)
        if word == "if":
            self._arity(name, arguments, 3)
            test, then, otherwise = arguments
            return a.If(
                self.condition(test, scope),
                self.build(then, scope),
                self.build(otherwise, scope),
                pos=pos,
            )
        known = ["date", "inSegment", "if", *_CURRENT_DATE_FUNCTIONS]
        self._unknown(name, UNSUPPORTED_FUNCTIONS, known, "function")
