"""The frame of the PQL builder (:mod:`audience_activation.pql.builder`): scopes, positions, errors, and the
dispatch from a grammar rule to the method that builds it.

:class:`BuilderBase` dispatches each subtree to the ``_b_<rule>`` method of the concrete builder, and gives every
builder method the same ways to fail: a syntax error (:class:`PqlSyntaxError`) or a construct outside the
supported subset (:class:`PqlUnsupportedError`), both pointing at the source position, and an unknown name
answered with the closest known one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from lark import Token, Tree

from audience_activation.pql import ast as a
from audience_activation.pql.errors import PqlSyntaxError, PqlUnsupportedError

#: Boolean operators that only appear upper-case in Adobe's illustrative validation examples.
UPPERCASE_OPERATORS = frozenset({"AND", "OR", "NOT"})


def unsupported_reason(name: str, advice: str) -> str:
    """The message for an Adobe PQL function or method outside the supported subset."""
    return f"`{name}(...)` is not supported" + (f": {advice}" if advice else "")


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


def rule_name(item: Item) -> str:
    """The grammar rule of a subtree (empty for a token)."""
    return str(item.data) if isinstance(item, Tree) else ""


def keyword_text(tree: Tree) -> str:
    """The text of the single token of a ``!keyword`` rule such as ``cmp_op`` or ``unit``."""
    return str(tree.children[0])


def call_arguments(rest: Sequence[Item]) -> list[Tree]:
    """The argument subtrees of a call whose optional ``arguments`` child is ``rest``."""
    if not rest:
        return []
    (arguments,) = rest
    assert isinstance(arguments, Tree) and arguments.data == "arguments"
    return [child for child in arguments.children if isinstance(child, Tree)]


class BuilderBase:
    """Dispatch and errors shared by every part of the builder; subclasses add ``_b_<rule>`` methods."""

    def __init__(self, text: str) -> None:
        """Create a builder.

        Args:
            text: The PQL source the trees were parsed from (for error excerpts).
        """
        self._text = text

    def _error(self, item: Item | a.Position, reason: str) -> NoReturn:
        pos = item if isinstance(item, a.Position) else position(item)
        raise PqlSyntaxError(reason, self._text, pos.line, pos.column)

    def _unsupported(self, item: Item, construct: str, reason: str) -> NoReturn:
        pos = position(item)
        raise PqlUnsupportedError(construct, reason, self._text, pos.line, pos.column)

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

    # --- unknown names and argument counts ----------------------------------------------------

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

    def _uppercase_operator(self, token: Item) -> NoReturn:
        word = str(token.children[0] if isinstance(token, Tree) else token)
        self._unsupported(
            token,
            word,
            f"upper-case `{word}` is not PQL (it only appears in Adobe's illustrative "
            f"examples); write `{word.lower()}`",
        )
