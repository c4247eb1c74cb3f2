"""Turn lark parse trees of ``grammar.lark`` into the typed AST of :mod:`audience_activation.pql.ast`.

The conversion is top-down (not a bottom-up ``lark.Transformer``) because the meaning of a name
depends on where it appears: ``X.a`` is a variable path inside ``select X ...``, ``timestamp`` is an
item path inside ``xEvent[...]`` and a profile path at the top. The builder also validates what the
grammar leaves open (argument counts, the case flag, ``COUNT(n)``, escapes) and rejects the
constructs outside the supported subset by name.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from lark import Token, Tree

from audience_activation.pql import ast as a
from audience_activation.pql.errors import PqlSyntaxError, PqlUnsupportedError

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


def unsupported_reason(name: str, advice: str) -> str:
    """The message for an Adobe PQL function or method outside the supported subset."""
    return f"`{name}(...)` is not supported" + (f": {advice}" if advice else "")


#: Boolean operators that only appear upper-case in Adobe's illustrative validation examples.
UPPERCASE_OPERATORS = frozenset({"AND", "OR", "NOT"})

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

_ITEM_AGGREGATES = {
    "sum": a.AggregateFunction.SUM,
    "average": a.AggregateFunction.AVERAGE,
    "min": a.AggregateFunction.MIN,
    "max": a.AggregateFunction.MAX,
}

_UNITS: dict[str, a.TimeUnit] = {
    **{unit.value: unit for unit in a.TimeUnit},
    **{unit.plural: unit for unit in a.TimeUnit},
    # SPEC-old spells it so; accepted so that old exported definitions load.
    "millenium": a.TimeUnit.MILLENNIUM,
}

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)")
_LAMBDA_PARAMETER_RE = re.compile(r"\(\s*([A-Za-z_][A-Za-z0-9_]*)")

#: A parse-tree item: a subtree, or a token kept by the grammar.
Item = Tree | Token


@dataclass(frozen=True)
class Scope:
    """What names mean at a point of the expression.

    Attributes:
        variables: Variables bound by enclosing ``select``/quantifier/aggregate/``let``.
        item_depth: Number of enclosing item scopes (bracket filters, item-scoped methods, chain
            steps); bare names refer to the innermost item when it is positive.
        lambda_parameter: The parameter of a ``(Profile) =>`` head, an alias of the profile.
    """

    variables: frozenset[str] = frozenset()
    item_depth: int = 0
    lambda_parameter: str | None = None

    def bind(self, name: str) -> Scope:
        """Return this scope with ``name`` bound as a variable."""
        return replace(self, variables=self.variables | {name})

    def enter_item(self) -> Scope:
        """Return the scope inside a new item scope."""
        return replace(self, item_depth=self.item_depth + 1)


def position(item: Item) -> a.Position:
    """Return the source position of a parse-tree item."""
    if isinstance(item, Token):
        return a.Position(item.line or 0, item.column or 0)
    return a.Position(item.meta.line, item.meta.column)


def _rule(item: Item) -> str:
    return str(item.data) if isinstance(item, Tree) else ""


def _keyword(tree: Tree) -> str:
    """The text of the single token of a ``!keyword`` rule such as ``cmp_op`` or ``unit``."""
    return str(tree.children[0])


class Builder:
    """Builds the AST of one PQL text; raises :class:`PqlSyntaxError` for invalid constructs."""

    def __init__(self, text: str) -> None:
        """Create a builder.

        Args:
            text: The PQL source the trees were parsed from (for error excerpts).
        """
        self._text = text
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
            **{name: self._method_item_aggregate for name in _ITEM_AGGREGATES},
            **{name: self._method_string_test for name in _STRING_METHODS},
            **{name: self._method_date_part for name in _DATE_PART_METHODS},
        }

    # --- entry points and errors ---------------------------------------------------------------

    def build_start(self, tree: Tree, *, condition: bool) -> a.Node:
        """Build the AST of a ``start`` tree.

        Args:
            tree: The parse tree of the whole text.
            condition: Coerce the result to a Boolean condition (a segment definition).

        Returns:
            The AST root.
        """
        children = tree.children
        scope = Scope()
        first = children[0]
        if isinstance(first, Token) and first.type == "LAMBDA_HEAD":
            match = _LAMBDA_PARAMETER_RE.match(str(first))
            assert match is not None  # the terminal's regex guarantees it
            scope = Scope(lambda_parameter=match.group(1))
            children = children[1:]
        node = self.build(children[0], scope)
        return a.as_condition(node) if condition else node

    def _error(self, item: Item | a.Position, reason: str) -> NoReturn:
        pos = item if isinstance(item, a.Position) else position(item)
        raise PqlSyntaxError(reason, self._text, pos.line, pos.column)

    def _unsupported(self, item: Item, construct: str, reason: str) -> NoReturn:
        pos = position(item)
        raise PqlUnsupportedError(construct, reason, self._text, pos.line, pos.column)

    # --- dispatch ------------------------------------------------------------------------------

    def build(self, item: Item, scope: Scope) -> a.Node:
        """Build the AST of an expression subtree.

        Args:
            item: An expression subtree.
            scope: The scope the expression appears in.

        Returns:
            The AST node.
        """
        assert isinstance(item, Tree), item  # expression rules never inline to a bare token
        handler = getattr(self, f"_b_{item.data}", None)
        assert handler is not None, f"no builder for grammar rule {item.data!r}"
        node: a.Node = handler(item, scope)
        return node

    def condition(self, item: Item, scope: Scope) -> a.Node:
        """Build a subtree in a Boolean position (Adobe's coercion to Boolean applies)."""
        return a.as_condition(self.build(item, scope))

    # --- literals ------------------------------------------------------------------------------

    def _b_string(self, tree: Tree, scope: Scope) -> a.Node:
        token = tree.children[0]
        assert isinstance(token, Token)
        return a.StringLit(self._decode_string(token), pos=position(tree))

    def _decode_string(self, token: Token) -> str:
        body = str(token)[1:-1]

        def decode(match: re.Match[str]) -> str:
            escape = match.group(1)
            if escape[0] == "u" and len(escape) == 5:
                return chr(int(escape[1:], 16))
            if escape in _ESCAPES:
                return _ESCAPES[escape]
            # +1 for the opening quote: the column of the backslash.
            column = (token.column or 0) + 1 + match.start()
            self._error(
                a.Position(token.line or 0, column),
                f"unknown escape `\\{escape}` in string; write `\\\\` for a backslash "
                f"(a regex `\\d` is written `\\\\d`)",
            )

        return _ESCAPE_RE.sub(decode, body)

    def _b_int(self, tree: Tree, scope: Scope) -> a.Node:
        return a.IntLit(int(str(tree.children[0])), pos=position(tree))

    def _b_double(self, tree: Tree, scope: Scope) -> a.Node:
        value = float(str(tree.children[0]))
        if math.isinf(value):
            self._error(tree, f"number `{tree.children[0]}` is out of range")
        return a.DoubleLit(value, pos=position(tree))

    def _b_boolean(self, tree: Tree, scope: Scope) -> a.Node:
        return a.BoolLit(_keyword(tree) == "true", pos=position(tree))

    def _b_list(self, tree: Tree, scope: Scope) -> a.Node:
        items = tuple(self.build(child, scope) for child in tree.children)
        return a.ListLit(items, pos=position(tree))

    def _b_time_const(self, tree: Tree, scope: Scope) -> a.Node:
        return a.TimeConst(a.TimeConstKind(_keyword(tree)), pos=position(tree))

    def _b_period(self, tree: Tree, scope: Scope) -> a.Node:
        relation, unit = tree.children
        assert isinstance(relation, Tree) and isinstance(unit, Tree)
        return a.CalendarPeriod(a.PeriodRelation(_keyword(relation)), _UNITS[_keyword(unit)], pos=position(tree))

    # --- references ----------------------------------------------------------------------------

    def _b_name(self, tree: Tree, scope: Scope) -> a.Node:
        return self._reference(tree, (), scope, position(tree))

    _b_positional = _b_name
    _b_up = _b_name
    _b_up_name = _b_name

    def _b_member(self, tree: Tree, scope: Scope) -> a.Node:
        parts: list[str] = []
        node: Item = tree
        while _rule(node) == "member":
            assert isinstance(node, Tree)
            target, name = node.children
            parts.append(str(name))
            node = target
        parts.reverse()
        return self._reference(node, tuple(parts), scope, position(tree))

    def _reference(self, root: Item, parts: tuple[str, ...], scope: Scope, pos: a.Position) -> a.Node:
        """Resolve ``root.parts`` where ``root`` is the innermost non-member subtree."""
        kind = _rule(root)
        assert isinstance(root, Tree)
        if kind == "name":
            return self._resolve_name(root.children[0], parts, scope, pos)
        if kind == "positional":
            token = root.children[0]
            if str(token) != "$1":
                self._error(root, f"`{token}` does not exist: `$1` is the profile, the only input")
            return a.FieldRef(a.ProfileRoot(), parts, pos=pos)
        if kind in ("up", "up_name"):
            up_token = root.children[0]
            assert isinstance(up_token, Token)
            names = (str(root.children[1]),) if kind == "up_name" else ()
            return a.FieldRef(self._up_root(up_token, scope), names + parts, pos=pos)
        base = self.build(root, scope)
        if not parts:
            return base
        if isinstance(base, (a.FieldRef, a.Member)):
            # `(a.b).c` is `a.b.c`: keep one path node per path.
            return replace(base, parts=base.parts + parts)
        return a.Member(base, parts, pos=pos)

    def _resolve_name(self, token: Item, parts: tuple[str, ...], scope: Scope, pos: a.Position) -> a.Node:
        assert isinstance(token, Token)
        name = str(token)
        if name in scope.variables:
            return a.FieldRef(a.VariableRoot(name), parts, pos=pos)
        if name == "xEvent":
            return a.FieldRef(a.EventsRoot(), parts, pos=pos)
        if name in ("profile", scope.lambda_parameter):
            return a.FieldRef(a.ProfileRoot(), parts, pos=pos)
        if name == "null" and not parts:
            self._unsupported(token, "null", "the `null` literal is not PQL; use `x.isNull()` / `x.isNotNull()`")
        if name in UPPERCASE_OPERATORS and not parts:
            self._uppercase_operator(token)
        root: a.Root = a.ItemRoot(0) if scope.item_depth else a.ProfileRoot()
        return a.FieldRef(root, (name, *parts), pos=pos)

    def _up_root(self, token: Token, scope: Scope) -> a.Root:
        levels = len(str(token))
        if scope.item_depth == 0:
            self._error(token, "`^` refers to an enclosing filter's item but is used outside `[...]`")
        if levels > scope.item_depth:
            self._error(
                token,
                f"`{token}` goes above the profile: only {scope.item_depth} enclosing "
                f"item scope(s) here (`{'^' * scope.item_depth}` is the profile)",
            )
        return a.ProfileRoot() if levels == scope.item_depth else a.ItemRoot(levels)

    def _uppercase_operator(self, token: Item) -> NoReturn:
        word = str(token.children[0] if isinstance(token, Tree) else token)
        self._unsupported(
            token,
            word,
            f"upper-case `{word}` is not PQL (it only appears in Adobe's illustrative "
            f"examples); write `{word.lower()}`",
        )

    # --- boolean operators ---------------------------------------------------------------------

    def _b_or_(self, tree: Tree, scope: Scope) -> a.Node:
        return a.Or(self._flatten(tree, scope, a.Or), pos=position(tree))

    def _b_and_(self, tree: Tree, scope: Scope) -> a.Node:
        return a.And(self._flatten(tree, scope, a.And), pos=position(tree))

    def _flatten(self, tree: Tree, scope: Scope, kind: type[a.And] | type[a.Or]) -> tuple[a.Node, ...]:
        operands: list[a.Node] = []
        for child in tree.children:
            node = self.condition(child, scope)
            # `a and (b and c)` is `a and b and c`: one n-ary node per run of the same operator.
            operands.extend(node.operands if isinstance(node, kind) else (node,))
        return tuple(operands)

    def _b_not_(self, tree: Tree, scope: Scope) -> a.Node:
        return a.Not(self.condition(tree.children[0], scope), pos=position(tree))

    # --- comparisons ---------------------------------------------------------------------------

    def _binary(self, tree: Tree, scope: Scope) -> tuple[a.Node, a.Node]:
        left, right = tree.children[0], tree.children[-1]
        return self.build(left, scope), self.build(right, scope)

    def _b_compare(self, tree: Tree, scope: Scope) -> a.Node:
        op = tree.children[1]
        assert isinstance(op, Tree)
        left, right = self._binary(tree, scope)
        return a.Compare(a.CompareOp(_keyword(op)), left, right, pos=position(tree))

    def _b_in_(self, tree: Tree, scope: Scope) -> a.Node:
        value, collection = self._binary(tree, scope)
        return a.In(value, collection, pos=position(tree))

    def _b_not_in(self, tree: Tree, scope: Scope) -> a.Node:
        value, collection = self._binary(tree, scope)
        return a.In(value, collection, negated=True, pos=position(tree))

    def _b_like(self, tree: Tree, scope: Scope) -> a.Node:
        subject, pattern = self._binary(tree, scope)
        return a.Like(subject, pattern, pos=position(tree))

    def _b_matches(self, tree: Tree, scope: Scope) -> a.Node:
        subject, pattern = self._binary(tree, scope)
        return a.Matches(subject, pattern, pos=position(tree))

    def _b_occurs(self, tree: Tree, scope: Scope) -> a.Node:
        subject, test = tree.children
        assert isinstance(test, Tree)
        return a.Occurs(self.build(subject, scope), self._occurs_test(test, scope), pos=position(tree))

    def _occurs_test(self, tree: Tree, scope: Scope) -> a.OccursTest:
        kind = tree.data
        children = tree.children
        pos = position(tree)
        if kind == "occurs_within":
            op, amount, unit, direction, anchor = children
            assert isinstance(op, Tree) and isinstance(unit, Tree) and isinstance(direction, Tree)
            return a.OccursWithin(
                a.CompareOp(_keyword(op)),
                int(str(amount)),
                _UNITS[_keyword(unit)],
                a.Direction(_keyword(direction)),
                self.build(anchor, scope),
                pos=pos,
            )
        if kind == "occurs_relative":
            direction, anchor = children
            assert isinstance(direction, Tree)
            return a.OccursRelative(a.Direction(_keyword(direction)), self.build(anchor, scope), pos=pos)
        if kind == "occurs_on":
            return a.OccursOn(self.build(children[0], scope), pos=pos)
        assert kind == "occurs_between", kind
        start, end = children
        return a.OccursBetween(self.build(start, scope), self.build(end, scope), pos=pos)

    # --- arithmetic ----------------------------------------------------------------------------

    def _b_arith(self, tree: Tree, scope: Scope) -> a.Node:
        op = tree.children[1]
        assert isinstance(op, Tree)
        left, right = self._binary(tree, scope)
        return a.Arith(a.ArithOp(_keyword(op)), left, right, pos=position(tree))

    def _b_negate(self, tree: Tree, scope: Scope) -> a.Node:
        operand = self.build(tree.children[0], scope)
        pos = position(tree)
        # `-201` is a literal, not an operation: the literal form is the normal one.
        if isinstance(operand, a.IntLit):
            return a.IntLit(-operand.value, pos=pos)
        if isinstance(operand, a.DoubleLit):
            return a.DoubleLit(-operand.value, pos=pos)
        return a.Negate(operand, pos=pos)

    # --- postfix -------------------------------------------------------------------------------

    def _b_filter(self, tree: Tree, scope: Scope) -> a.Node:
        source, condition = tree.children
        return a.Filter(
            self.build(source, scope),
            self.condition(condition, scope.enter_item()),
            pos=position(tree),
        )

    def _b_method(self, tree: Tree, scope: Scope) -> a.Node:
        target_tree, name = tree.children[0], tree.children[1]
        assert isinstance(name, Token)
        arguments = _arguments(tree.children[2:])
        # The target first, so that the first problem in reading order is the one reported.
        target = self.build(target_tree, scope)
        handler = self._methods.get(str(name))
        if handler is None:
            self._unknown(name, UNSUPPORTED_METHODS, list(self._methods), "method")
        return handler(target, tree, name, arguments, scope)

    def _unknown(self, name: Token, unsupported: dict[str, str], known: Sequence[str], what: str) -> NoReturn:
        word = str(name)
        if word in unsupported:
            self._unsupported(name, word, unsupported_reason(word, unsupported[word]))
        if word in UPPERCASE_OPERATORS:
            self._uppercase_operator(name)
        close = difflib.get_close_matches(word, known, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        self._error(name, f"unknown {what} `{word}`{hint}")

    def _arity(self, name: Token, arguments: list[Tree], minimum: int, maximum: int | None = None) -> None:
        maximum = minimum if maximum is None else maximum
        if minimum <= len(arguments) <= maximum:
            return
        expected = str(minimum) if minimum == maximum else f"{minimum} to {maximum}"
        self._error(name, f"`{name}` takes {expected} argument(s), got {len(arguments)}")

    def _method_count(self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope) -> a.Node:
        self._arity(name, arguments, 0)
        return a.Aggregate(a.AggregateFunction.COUNT, target, pos=position(tree))

    def _method_item_aggregate(
        self, target: a.Node, tree: Tree, name: Token, arguments: list[Tree], scope: Scope
    ) -> a.Node:
        self._arity(name, arguments, 0, 1)
        value = self.build(arguments[0], scope.enter_item()) if arguments else None
        return a.Aggregate(_ITEM_AGGREGATES[str(name)], target, value, pos=position(tree))

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
            if _rule(flag) != "boolean":
                self._error(
                    flag,
                    f"the second argument of `{name}` is the case-sensitivity flag and must be `true` or `false`",
                )
            case_sensitive = _keyword(flag) == "true"
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
        arguments = _arguments(tree.children[1:])
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

    # --- select, quantifiers, aggregates, let ---------------------------------------------------

    def _bindings(self, trees: Sequence[Item], scope: Scope) -> tuple[tuple[a.Binding, ...], Scope]:
        """Build ``V from source [where cond], ...``; each clause sees the variables to its left."""
        bindings: list[a.Binding] = []
        for tree in trees:
            assert isinstance(tree, Tree) and tree.data == "binding"
            variable, source, *condition = tree.children
            binding, scope = self._binding(tree, variable, source, condition[0] if condition else None, scope, bindings)
            bindings.append(binding)
        return tuple(bindings), scope

    def _binding(
        self,
        tree: Tree,
        variable: Item,
        source: Item,
        condition: Item | None,
        scope: Scope,
        siblings: Sequence[a.Binding] = (),
    ) -> tuple[a.Binding, Scope]:
        name = str(variable)
        if name == "xEvent":
            self._error(variable, "`xEvent` is reserved for the events and cannot be a variable")
        if any(sibling.variable == name for sibling in siblings):
            self._error(variable, f"variable `{name}` is already bound in this clause list")
        source_node = self.build(source, scope)
        inner = scope.bind(name)
        condition_node = None if condition is None else self.condition(condition, inner)
        return a.Binding(name, source_node, condition_node, pos=position(tree)), inner

    def _b_select(self, tree: Tree, scope: Scope) -> a.Node:
        bindings, _ = self._bindings(tree.children, scope)
        return a.Select(bindings, pos=position(tree))

    def _b_quantifier(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, *clauses = tree.children
        assert isinstance(keyword, Tree)
        bindings, _ = self._bindings(clauses, scope)
        return a.Quantifier(a.QuantifierKind(_keyword(keyword)), bindings, pos=position(tree))

    def _b_quantifier_colon(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, variable, source, condition = tree.children
        assert isinstance(keyword, Tree)
        # `exists X from a : c` means the same as `exists X from a where c`.
        binding, _ = self._binding(tree, variable, source, condition, scope)
        return a.Quantifier(a.QuantifierKind(_keyword(keyword)), (binding,), pos=position(tree))

    def _b_aggregate_over(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, value, *clauses = tree.children
        assert isinstance(keyword, Tree)
        # The value is written first but ranges over the variables bound after `over`.
        bindings, inner = self._bindings(clauses, scope)
        return a.AggregateOver(
            _ITEM_AGGREGATES[_keyword(keyword)],
            self.build(value, inner),
            bindings,
            pos=position(tree),
        )

    def _b_aggregate_short(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, value, source, *condition = tree.children
        assert isinstance(keyword, Tree)
        if _rule(value) != "name":
            self._error(
                value,
                f"`{_keyword(keyword)} ... from` needs a variable name, as in "
                f"`{_keyword(keyword)} X from array where X > 0`; use `... over X from ...` "
                f"for an expression",
            )
        assert isinstance(value, Tree)
        variable = value.children[0]
        binding, _ = self._binding(tree, variable, source, condition[0] if condition else None, scope)
        return a.AggregateOver(
            _ITEM_AGGREGATES[_keyword(keyword)],
            a.FieldRef(a.VariableRoot(binding.variable), pos=position(value)),
            (binding,),
            pos=position(tree),
        )

    def _b_let(self, tree: Tree, scope: Scope) -> a.Node:
        name, value, body = tree.children
        if str(name) == "xEvent":
            self._error(name, "`xEvent` is reserved for the events and cannot be a variable")
        return a.Let(
            str(name),
            self.build(value, scope),
            self.build(body, scope.bind(str(name))),
            pos=position(tree),
        )

    # --- chain ---------------------------------------------------------------------------------

    def _b_chain(self, tree: Tree, scope: Scope) -> a.Node:
        source, order_by, *step_trees = tree.children
        labels: set[str] = set()
        steps = []
        for step_tree in step_trees:
            assert isinstance(step_tree, Tree)
            step = self._chain_step(step_tree, scope.enter_item())
            if step.label in labels:
                self._error(step_tree, f"chain step label `{step.label}` is used twice")
            labels.add(step.label)
            steps.append(step)
        return a.Chain(
            self.build(source, scope),
            self._plain_path(order_by, "the ordering field of `chain`"),
            tuple(steps),
            pos=position(tree),
        )

    def _plain_path(self, tree: Item, what: str) -> tuple[str, ...]:
        parts: list[str] = []
        node = tree
        while _rule(node) == "member":
            assert isinstance(node, Tree)
            parts.append(str(node.children[1]))
            node = node.children[0]
        if _rule(node) != "name":
            self._error(tree, f"{what} must be a field path such as `timestamp`")
        assert isinstance(node, Tree)
        parts.append(str(node.children[0]))
        return tuple(reversed(parts))

    def _chain_step(self, tree: Tree, scope: Scope) -> a.ChainStep:
        label, *clauses = tree.children
        seen: dict[str, Tree] = {}
        for clause in clauses:
            assert isinstance(clause, Tree)
            if clause.data == "chain_where":
                self._unsupported(
                    clause,
                    "WHERE",
                    "a chain step's `WHERE(...)` clause is not supported (its scope is "
                    "undocumented); put the condition in `WHAT(...)` or outside the chain",
                )
            if clause.data in seen:
                self._error(clause, f"`{str(clause.data).upper()}(...)` is given twice in one step")
            seen[str(clause.data)] = clause
        if "what" not in seen:
            self._error(tree, f"chain step `{label}` has no `WHAT(...)`")
        what = self.condition(seen["what"].children[0], scope)
        when = None
        if "when" in seen:
            test = seen["when"].children[0]
            assert isinstance(test, Tree)
            when = self._occurs_test(test, scope)
        count = 1
        if "count" in seen:
            count = int(str(seen["count"].children[0]))
            if count < 1:
                self._error(seen["count"], "`COUNT(n)` needs n >= 1")
        return a.ChainStep(str(label), what, when, count, pos=position(tree))


def _arguments(rest: Sequence[Item]) -> list[Tree]:
    """The argument subtrees of a call whose optional ``arguments`` child is ``rest``."""
    if not rest:
        return []
    (arguments,) = rest
    assert isinstance(arguments, Tree) and arguments.data == "arguments"
    return [child for child in arguments.children if isinstance(child, Tree)]
