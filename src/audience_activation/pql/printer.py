"""Canonical PQL text of an AST: ``parse(to_pql(tree)) == tree`` for every tree the parser builds.

The printer puts parentheses only where precedence needs them, writes the normal form of each
construct (``not`` for ``!``, ``chain`` for ``CHAIN``, infix ``matches``, the long keyword-aggregate
form, ``where`` for ``:``) and spells references so that they resolve back to the same root:
a profile field that a variable or keyword would shadow is written ``$1.field``, the profile
inside filters is ``^^.field`` (one ``^`` per enclosing item scope).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from audience_activation.pql import ast as a

# Binding strength, loosest first; a subexpression printed where a stronger one is required
# gets parentheses.
_OPEN, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _POSTFIX = range(9)

#: Names the parser would read as a keyword (or a special root) at the start of an expression.
RESERVED_NAMES = frozenset(
    {
        "select", "exists", "forall", "sum", "average", "min", "max", "let", "not",
        "true", "false", "now", "today", "yesterday", "tomorrow", "chain", "CHAIN",
        "this", "last", "next", "before", "after", "from", "between", "on",
        "xEvent", "profile", "null", "AND", "OR", "NOT",
    }
)  # fmt: skip

_STRING_METHOD_NAMES = {
    (a.StringOp.EQUALS, False): "equals",
    (a.StringOp.EQUALS, True): "notEqualTo",
    (a.StringOp.STARTS_WITH, False): "startsWith",
    (a.StringOp.STARTS_WITH, True): "doesNotStartWith",
    (a.StringOp.ENDS_WITH, False): "endsWith",
    (a.StringOp.ENDS_WITH, True): "doesNotEndWith",
    (a.StringOp.CONTAINS, False): "contains",
    (a.StringOp.CONTAINS, True): "doesNotContain",
}

_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_FIRST_CONTROL_CHAR_ALLOWED = 0x20


@dataclass(frozen=True)
class _Context:
    """Where the printed text will be parsed: the names bound there and the item depth."""

    variables: frozenset[str] = frozenset()
    depth: int = 0

    def bind(self, name: str) -> _Context:
        return replace(self, variables=self.variables | {name})

    def enter_item(self) -> _Context:
        return replace(self, depth=self.depth + 1)


def to_pql(node: a.Node) -> str:
    """Return the canonical PQL text of ``node``, in a Boolean position.

    Args:
        node: An AST as built by :func:`audience_activation.pql.parse`.

    Returns:
        Text that parses back to an equal tree.

    Raises:
        ValueError: The tree has no PQL spelling (a hand-built tree the parser cannot produce,
            such as :class:`~audience_activation.pql.ast.IsDefined` of a non-filter in a value
            position, or a bare reference to the current item).
    """
    return _Printer().print(node, _OPEN, _Context(), condition=True)


def quote(value: str) -> str:
    """Return ``value`` as a PQL string literal."""
    out = []
    for char in value:
        if char in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[char])
        elif ord(char) < _FIRST_CONTROL_CHAR_ALLOWED:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


class _Printer:
    def print(self, node: a.Node, minimum: int, ctx: _Context, *, condition: bool = False) -> str:
        text, strength = self._render(node, ctx, condition)
        return f"({text})" if strength < minimum else text

    def _render(self, node: a.Node, ctx: _Context, condition: bool) -> tuple[str, int]:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ValueError(f"{type(node).__name__} cannot be printed on its own")
        result: tuple[str, int] = method(node, ctx, condition)
        return result

    def _value(self, node: a.Node, minimum: int, ctx: _Context) -> str:
        return self.print(node, minimum, ctx)

    def _cond(self, node: a.Node, minimum: int, ctx: _Context) -> str:
        return self.print(node, minimum, ctx, condition=True)

    # --- references and literals ---------------------------------------------------------------

    def _FieldRef(self, node: a.FieldRef, ctx: _Context, condition: bool) -> tuple[str, int]:
        root, parts = node.root, node.parts
        if isinstance(root, a.VariableRoot):
            head = root.name
        elif isinstance(root, a.EventsRoot):
            head = "xEvent"
        elif isinstance(root, a.ProfileRoot):
            if ctx.depth:
                head = "^" * ctx.depth
            elif parts and _plain(parts[0], ctx):
                return ".".join(parts), _POSTFIX
            else:
                head = "$1"
        else:
            if root.up:
                head = "^" * root.up
            elif parts and _plain(parts[0], ctx):
                return ".".join(parts), _POSTFIX
            else:
                raise ValueError(f"the current item path {parts!r} has no PQL spelling here")
        return ".".join((head, *parts)), _POSTFIX

    def _Member(self, node: a.Member, ctx: _Context, condition: bool) -> tuple[str, int]:
        return ".".join((self._value(node.target, _POSTFIX, ctx), *node.parts)), _POSTFIX

    def _StringLit(self, node: a.StringLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        return quote(node.value), _POSTFIX

    def _IntLit(self, node: a.IntLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        return str(node.value), _UNARY if node.value < 0 else _POSTFIX

    def _DoubleLit(self, node: a.DoubleLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        if not math.isfinite(node.value):
            raise ValueError(f"{node.value} has no PQL spelling")
        negative = math.copysign(1.0, node.value) < 0
        return repr(node.value), _UNARY if negative else _POSTFIX

    def _BoolLit(self, node: a.BoolLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        return ("true" if node.value else "false"), _POSTFIX

    def _ListLit(self, node: a.ListLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        return "[" + ", ".join(self._value(item, _OR, ctx) for item in node.items) + "]", _POSTFIX

    def _DateLit(self, node: a.DateLit, ctx: _Context, condition: bool) -> tuple[str, int]:
        parts = (self._value(part, _OR, ctx) for part in (node.year, node.month, node.day))
        return "date(" + ", ".join(parts) + ")", _POSTFIX

    def _TimeConst(self, node: a.TimeConst, ctx: _Context, condition: bool) -> tuple[str, int]:
        return node.kind.value, _POSTFIX

    def _CalendarPeriod(self, node: a.CalendarPeriod, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{node.relation.value} {node.unit.value}", _POSTFIX

    def _CurrentDatePart(self, node: a.CurrentDatePart, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"current{node.part.value}()", _POSTFIX

    def _GetDatePart(self, node: a.GetDatePart, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{self._value(node.operand, _POSTFIX, ctx)}.get{node.part.value}()", _POSTFIX

    # --- occurs --------------------------------------------------------------------------------

    def _Occurs(self, node: a.Occurs, ctx: _Context, condition: bool) -> tuple[str, int]:
        subject = self._value(node.subject, _ADD, ctx)
        return f"{subject} occurs {self.occurs_test(node.test, ctx)}", _CMP

    def occurs_test(self, test: a.OccursTest, ctx: _Context) -> str:
        """The text after ``occurs`` (also the content of a chain step's ``WHEN(...)``)."""
        if isinstance(test, a.OccursWithin):
            unit = test.unit.value if test.amount == 1 else test.unit.plural
            anchor = self._value(test.anchor, _ADD, ctx)
            return f"{test.op.value} {test.amount} {unit} {test.direction.value} {anchor}"
        if isinstance(test, a.OccursRelative):
            return f"{test.direction.value} {self._value(test.anchor, _ADD, ctx)}"
        if isinstance(test, a.OccursOn):
            anchor = self._value(test.anchor, _ADD, ctx)
            # `occurs today` / `occurs last month` read naturally; `on` keeps any other anchor
            # (a field that happens to be called `before`, say) from reading as a keyword.
            if isinstance(test.anchor, (a.TimeConst, a.CalendarPeriod)):
                return anchor
            return f"on {anchor}"
        start = self._value(test.start, _ADD, ctx)
        return f"between {start} and {self._value(test.end, _ADD, ctx)}"

    # --- operators -----------------------------------------------------------------------------

    def _Compare(self, node: a.Compare, ctx: _Context, condition: bool) -> tuple[str, int]:
        left, right = self._value(node.left, _ADD, ctx), self._value(node.right, _ADD, ctx)
        return f"{left} {node.op.value} {right}", _CMP

    def _In(self, node: a.In, ctx: _Context, condition: bool) -> tuple[str, int]:
        operator = "notIn" if node.negated else "in"
        value, collection = self._value(node.value, _ADD, ctx), self._value(node.collection, _ADD, ctx)
        return f"{value} {operator} {collection}", _CMP

    def _Like(self, node: a.Like, ctx: _Context, condition: bool) -> tuple[str, int]:
        subject, pattern = self._value(node.subject, _ADD, ctx), self._value(node.pattern, _ADD, ctx)
        return f"{subject} like {pattern}", _CMP

    def _Matches(self, node: a.Matches, ctx: _Context, condition: bool) -> tuple[str, int]:
        subject, pattern = self._value(node.subject, _ADD, ctx), self._value(node.pattern, _ADD, ctx)
        return f"{subject} matches {pattern}", _CMP

    def _Arith(self, node: a.Arith, ctx: _Context, condition: bool) -> tuple[str, int]:
        strength = _ADD if node.op in (a.ArithOp.ADD, a.ArithOp.SUB) else _MUL
        # Left-associative: the right operand must bind strictly tighter.
        left = self._value(node.left, strength, ctx)
        right = self._value(node.right, strength + 1, ctx)
        return f"{left} {node.op.value} {right}", strength

    def _Negate(self, node: a.Negate, ctx: _Context, condition: bool) -> tuple[str, int]:
        return "-" + self._value(node.operand, _UNARY, ctx), _UNARY

    def _Not(self, node: a.Not, ctx: _Context, condition: bool) -> tuple[str, int]:
        return "not " + self._cond(node.operand, _NOT, ctx), _NOT

    def _And(self, node: a.And, ctx: _Context, condition: bool) -> tuple[str, int]:
        return " and ".join(self._cond(operand, _NOT, ctx) for operand in node.operands), _AND

    def _Or(self, node: a.Or, ctx: _Context, condition: bool) -> tuple[str, int]:
        return " or ".join(self._cond(operand, _AND, ctx) for operand in node.operands), _OR

    def _IsDefined(self, node: a.IsDefined, ctx: _Context, condition: bool) -> tuple[str, int]:
        if condition:
            # The coercion is implicit in a Boolean position: the parser re-inserts it.
            return self._render(node.operand, ctx, False)
        if isinstance(node.operand, a.Filter):
            source = self._value(node.operand.source, _POSTFIX, ctx)
            inner = self._cond(node.operand.condition, _OR, ctx.enter_item())
            return f"{source}.exists({inner})", _POSTFIX
        raise ValueError("IsDefined of a non-filter has no PQL spelling outside a condition")

    def _NullCheck(self, node: a.NullCheck, ctx: _Context, condition: bool) -> tuple[str, int]:
        method = "isNotNull" if node.negated else "isNull"
        return f"{self._value(node.operand, _POSTFIX, ctx)}.{method}()", _POSTFIX

    def _Intersects(self, node: a.Intersects, ctx: _Context, condition: bool) -> tuple[str, int]:
        left, right = self._value(node.left, _POSTFIX, ctx), self._value(node.right, _OR, ctx)
        return f"{left}.intersects({right})", _POSTFIX

    def _Distinct(self, node: a.Distinct, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{self._value(node.operand, _POSTFIX, ctx)}.distinct()", _POSTFIX

    def _StringTest(self, node: a.StringTest, ctx: _Context, condition: bool) -> tuple[str, int]:
        name = _STRING_METHOD_NAMES[(node.op, node.negated)]
        arguments = self._value(node.argument, _OR, ctx)
        if not node.case_sensitive:
            arguments += ", false"
        return f"{self._value(node.subject, _POSTFIX, ctx)}.{name}({arguments})", _POSTFIX

    # --- arrays, events, sequences -------------------------------------------------------------

    def _bindings(self, bindings: tuple[a.Binding, ...], ctx: _Context) -> tuple[str, _Context]:
        clauses = []
        for binding in bindings:
            text = f"{binding.variable} from {self._value(binding.source, _POSTFIX, ctx)}"
            ctx = ctx.bind(binding.variable)
            if binding.condition is not None:
                text += " where " + self._cond(binding.condition, _OR, ctx)
            clauses.append(text)
        return ", ".join(clauses), ctx

    def _Select(self, node: a.Select, ctx: _Context, condition: bool) -> tuple[str, int]:
        return "select " + self._bindings(node.bindings, ctx)[0], _OPEN

    def _Quantifier(self, node: a.Quantifier, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{node.kind.value} " + self._bindings(node.bindings, ctx)[0], _OPEN

    def _AggregateOver(self, node: a.AggregateOver, ctx: _Context, condition: bool) -> tuple[str, int]:
        clauses, inner = self._bindings(node.bindings, ctx)
        value = self._value(node.value, _ADD, inner)
        return f"{node.function.value} {value} over {clauses}", _OPEN

    def _Filter(self, node: a.Filter, ctx: _Context, condition: bool) -> tuple[str, int]:
        source = self._value(node.source, _POSTFIX, ctx)
        return f"{source}[{self._cond(node.condition, _OPEN, ctx.enter_item())}]", _POSTFIX

    def _Aggregate(self, node: a.Aggregate, ctx: _Context, condition: bool) -> tuple[str, int]:
        source = self._value(node.source, _POSTFIX, ctx)
        value = "" if node.value is None else self._value(node.value, _OR, ctx.enter_item())
        return f"{source}.{node.function.value}({value})", _POSTFIX

    def _Chain(self, node: a.Chain, ctx: _Context, condition: bool) -> tuple[str, int]:
        inner = ctx.enter_item()
        steps = []
        for step in node.steps:
            text = f"{step.label}: WHAT({self._cond(step.what, _OPEN, inner)})"
            if step.when is not None:
                text += f" WHEN({self.occurs_test(step.when, inner)})"
            if step.count != 1:
                text += f" COUNT({step.count})"
            steps.append(text)
        source = self._value(node.source, _OR, ctx)
        order_by = ".".join(node.order_by)
        return f"chain({source}, {order_by}, [{', '.join(steps)}])", _POSTFIX

    # --- segments, maps, let, if ---------------------------------------------------------------

    def _InSegment(self, node: a.InSegment, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"inSegment({quote(node.segment_id)})", _POSTFIX

    def _MapGet(self, node: a.MapGet, ctx: _Context, condition: bool) -> tuple[str, int]:
        target, key = self._value(node.map, _POSTFIX, ctx), self._value(node.key, _OR, ctx)
        return f"{target}.get({key})", _POSTFIX

    def _MapKeys(self, node: a.MapKeys, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{self._value(node.map, _POSTFIX, ctx)}.keys()", _POSTFIX

    def _MapValues(self, node: a.MapValues, ctx: _Context, condition: bool) -> tuple[str, int]:
        return f"{self._value(node.map, _POSTFIX, ctx)}.values()", _POSTFIX

    def _Let(self, node: a.Let, ctx: _Context, condition: bool) -> tuple[str, int]:
        value = self._value(node.value, _OPEN, ctx)
        body = self.print(node.body, _OPEN, ctx.bind(node.name), condition=condition)
        return f"let {node.name} = ({value}) in ({body})", _OPEN

    def _If(self, node: a.If, ctx: _Context, condition: bool) -> tuple[str, int]:
        test = self._cond(node.test, _OR, ctx)
        then = self.print(node.then, _OR, ctx, condition=condition)
        otherwise = self.print(node.otherwise, _OR, ctx, condition=condition)
        return f"if({test}, {then}, {otherwise})", _POSTFIX


def _plain(name: str, ctx: _Context) -> bool:
    """Whether ``name`` written bare at the start of a path means a field (of profile or item)."""
    return name not in ctx.variables and name not in RESERVED_NAMES
