"""Turn lark parse trees of ``grammar.lark`` into the typed AST of :mod:`audience_activation.pql.ast`.

The conversion is top-down (not a bottom-up ``lark.Transformer``) because the meaning of a name
depends on where it appears: ``X.a`` is a variable path inside ``select X ...``, ``timestamp`` is an
item path inside ``xEvent[...]`` and a profile path at the top. The builder also validates what the
grammar leaves open (argument counts, the case flag, ``COUNT(n)``, escapes) and rejects the
constructs outside the supported subset by name.

The builder is one class in three modules: :mod:`audience_activation.pql.build_base` (scopes, positions, errors,
dispatch), :mod:`audience_activation.pql.build_calls` (method and function calls) and this one (literals,
references, operators, ``occurs``, filters, ``select``/quantifiers/aggregates/``let`` and chains).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from lark import Token, Tree

from audience_activation.pql import ast as a
from audience_activation.pql.build_base import (
    UPPERCASE_OPERATORS,
    Item,
    Scope,
    keyword_text,
    position,
    rule_name,
)
from audience_activation.pql.build_calls import ITEM_AGGREGATES, CallBuilder

_UNITS: dict[str, a.TimeUnit] = {
    **{unit.value: unit for unit in a.TimeUnit},
    **{unit.plural: unit for unit in a.TimeUnit},
    # SPEC-old spells it so; accepted so that old exported definitions load.
    "millenium": a.TimeUnit.MILLENNIUM,
}

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)")
_LAMBDA_PARAMETER_RE = re.compile(r"\(\s*([A-Za-z_][A-Za-z0-9_]*)")


class Builder(CallBuilder):
    """Builds the AST of one PQL text; raises :class:`~audience_activation.pql.errors.PqlSyntaxError` for invalid
    constructs."""

    # --- entry point ---------------------------------------------------------------------------

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
        return a.BoolLit(keyword_text(tree) == "true", pos=position(tree))

    def _b_list(self, tree: Tree, scope: Scope) -> a.Node:
        items = tuple(self.build(child, scope) for child in tree.children)
        return a.ListLit(items, pos=position(tree))

    def _b_time_const(self, tree: Tree, scope: Scope) -> a.Node:
        return a.TimeConst(a.TimeConstKind(keyword_text(tree)), pos=position(tree))

    def _b_period(self, tree: Tree, scope: Scope) -> a.Node:
        relation, unit = tree.children
        assert isinstance(relation, Tree) and isinstance(unit, Tree)
        return a.CalendarPeriod(
            a.PeriodRelation(keyword_text(relation)), _UNITS[keyword_text(unit)], pos=position(tree)
        )

    # --- references ----------------------------------------------------------------------------

    def _b_name(self, tree: Tree, scope: Scope) -> a.Node:
        return self._reference(tree, (), scope, position(tree))

    _b_positional = _b_name
    _b_up = _b_name
    _b_up_name = _b_name

    def _b_member(self, tree: Tree, scope: Scope) -> a.Node:
        parts: list[str] = []
        node: Item = tree
        while rule_name(node) == "member":
            assert isinstance(node, Tree)
            target, name = node.children
            parts.append(str(name))
            node = target
        parts.reverse()
        return self._reference(node, tuple(parts), scope, position(tree))

    def _reference(self, root: Item, parts: tuple[str, ...], scope: Scope, pos: a.Position) -> a.Node:
        """Resolve ``root.parts`` where ``root`` is the innermost non-member subtree."""
        kind = rule_name(root)
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
        return a.Compare(a.CompareOp(keyword_text(op)), left, right, pos=position(tree))

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
                a.CompareOp(keyword_text(op)),
                int(str(amount)),
                _UNITS[keyword_text(unit)],
                a.Direction(keyword_text(direction)),
                self.build(anchor, scope),
                pos=pos,
            )
        if kind == "occurs_relative":
            direction, anchor = children
            assert isinstance(direction, Tree)
            return a.OccursRelative(a.Direction(keyword_text(direction)), self.build(anchor, scope), pos=pos)
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
        return a.Arith(a.ArithOp(keyword_text(op)), left, right, pos=position(tree))

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
        return a.Quantifier(a.QuantifierKind(keyword_text(keyword)), bindings, pos=position(tree))

    def _b_quantifier_colon(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, variable, source, condition = tree.children
        assert isinstance(keyword, Tree)
        # `exists X from a : c` means the same as `exists X from a where c`.
        binding, _ = self._binding(tree, variable, source, condition, scope)
        return a.Quantifier(a.QuantifierKind(keyword_text(keyword)), (binding,), pos=position(tree))

    def _b_aggregate_over(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, value, *clauses = tree.children
        assert isinstance(keyword, Tree)
        # The value is written first but ranges over the variables bound after `over`.
        bindings, inner = self._bindings(clauses, scope)
        return a.AggregateOver(
            ITEM_AGGREGATES[keyword_text(keyword)],
            self.build(value, inner),
            bindings,
            pos=position(tree),
        )

    def _b_aggregate_short(self, tree: Tree, scope: Scope) -> a.Node:
        keyword, value, source, *condition = tree.children
        assert isinstance(keyword, Tree)
        if rule_name(value) != "name":
            self._error(
                value,
                f"`{keyword_text(keyword)} ... from` needs a variable name, as in "
                f"`{keyword_text(keyword)} X from array where X > 0`; use `... over X from ...` "
                f"for an expression",
            )
        assert isinstance(value, Tree)
        variable = value.children[0]
        binding, _ = self._binding(tree, variable, source, condition[0] if condition else None, scope)
        return a.AggregateOver(
            ITEM_AGGREGATES[keyword_text(keyword)],
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
        while rule_name(node) == "member":
            assert isinstance(node, Tree)
            parts.append(str(node.children[1]))
            node = node.children[0]
        if rule_name(node) != "name":
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
