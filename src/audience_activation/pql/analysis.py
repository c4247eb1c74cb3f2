"""Structural analysis of PQL trees: children, free references, canonical forms.

Pure functions over :mod:`audience_activation.pql.ast` trees, shared by the compiler (which uses
free references to decide which event conditions can be pushed into the one aggregation over the
events table, and canonical forms to de-duplicate them across segments) and the classifier.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from audience_activation.pql import ast as a

#: A free reference of an expression: what it reads from outside itself.
#: ``("profile",)`` the profile, ``("events",)`` ``xEvent``, ``("segment", id)`` ``inSegment(id)``,
#: ``("var", name)`` a variable bound outside, ``("item", up)`` the item ``up`` scopes out
#: (0 is the item of the innermost scope enclosing the expression).
Ref = tuple[Any, ...]

PROFILE: Ref = ("profile",)
EVENTS: Ref = ("events",)


def children(node: a.Node) -> Iterator[a.Node]:
    """Yield the direct child nodes of a node, in field order.

    Args:
        node: Any AST node.

    Yields:
        Child nodes (fields holding a node, and nodes inside tuple fields).
    """
    for field in dataclasses.fields(node):
        if field.name == "pos":
            continue
        value = getattr(node, field.name)
        if isinstance(value, a.Node):
            yield value
        elif isinstance(value, tuple):
            yield from (item for item in value if isinstance(item, a.Node))


def walk(node: a.Node) -> Iterator[a.Node]:
    """Yield a node and all its descendants, parents first."""
    yield node
    for child in children(node):
        yield from walk(child)


def _shift(refs: frozenset[Ref]) -> frozenset[Ref]:
    """References seen from outside one item scope: its own item disappears, outer ones move in."""
    out: set[Ref] = set()
    for ref in refs:
        if ref[0] == "item":
            if ref[1] > 0:
                out.add(("item", ref[1] - 1))
        else:
            out.add(ref)
    return frozenset(out)


def _unbind(refs: frozenset[Ref], names: set[str]) -> frozenset[Ref]:
    return frozenset(ref for ref in refs if not (ref[0] == "var" and ref[1] in names))


def _bindings_refs(bindings: tuple[a.Binding, ...], value: a.Node | None = None) -> frozenset[Ref]:
    """Free references of ``V1 from s1 where c1, V2 from s2 where c2, ...`` (and a value over them)."""
    out: set[Ref] = set()
    bound: set[str] = set()
    for binding in bindings:
        out |= _unbind(free_refs(binding.source), bound)
        bound.add(binding.variable)
        if binding.condition is not None:
            out |= _unbind(free_refs(binding.condition), bound)
    if value is not None:
        out |= _unbind(free_refs(value), bound)
    return frozenset(out)


def free_refs(node: a.Node) -> frozenset[Ref]:
    """Return what an expression reads from outside itself.

    Args:
        node: An AST node.

    Returns:
        The set of :data:`Ref` of the node: a condition whose references are only its own item
        or variable reads nothing but the current element, and can be evaluated row by row.
    """
    if isinstance(node, a.FieldRef):
        root = node.root
        if isinstance(root, a.ProfileRoot):
            return frozenset({PROFILE})
        if isinstance(root, a.EventsRoot):
            return frozenset({EVENTS})
        if isinstance(root, a.VariableRoot):
            return frozenset({("var", root.name)})
        return frozenset({("item", root.up)})
    if isinstance(node, a.Filter):
        return free_refs(node.source) | _shift(free_refs(node.condition))
    if isinstance(node, a.Aggregate):
        value = _shift(free_refs(node.value)) if node.value is not None else frozenset()
        return free_refs(node.source) | value
    if isinstance(node, a.Chain):
        steps: set[Ref] = set()
        for step in node.steps:
            steps |= free_refs(step.what)
            if step.when is not None:
                steps |= free_refs(step.when)
        return free_refs(node.source) | _shift(frozenset(steps))
    if isinstance(node, (a.Select, a.Quantifier)):
        return _bindings_refs(node.bindings)
    if isinstance(node, a.AggregateOver):
        return _bindings_refs(node.bindings, node.value)
    if isinstance(node, a.Let):
        return free_refs(node.value) | _unbind(free_refs(node.body), {node.name})
    if isinstance(node, a.InSegment):
        return frozenset({("segment", node.segment_id)})
    out: set[Ref] = set()
    for child in children(node):
        out |= free_refs(child)
    return frozenset(out)


def _map_children(node: a.Node, func: Callable[[a.Node], a.Node]) -> a.Node:
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(node):
        if field.name == "pos":
            continue
        value = getattr(node, field.name)
        if isinstance(value, a.Node):
            changes[field.name] = func(value)
        elif isinstance(value, tuple) and any(isinstance(item, a.Node) for item in value):
            changes[field.name] = tuple(func(item) if isinstance(item, a.Node) else item for item in value)
    return dataclasses.replace(node, **changes) if changes else node


def canonical(node: a.Node) -> a.Node:
    """Rename every bound variable to ``_v0``, ``_v1``... in binding order.

    Two expressions that differ only in the names of their variables (``select X from xEvent where
    X.a = 1`` and ``select Y from xEvent where Y.a = 1``) get equal canonical forms, so the compiler
    computes their event aggregate once. Free variables keep their names.

    Args:
        node: An AST node.

    Returns:
        The renamed tree (positions are kept but do not take part in equality).
    """
    counter = itertools.count()

    def fresh() -> str:
        return f"_v{next(counter)}"

    def bindings(items: tuple[a.Binding, ...], names: dict[str, str]) -> tuple[tuple[a.Binding, ...], dict[str, str]]:
        renamed = []
        for binding in items:
            source = rename(binding.source, names)
            new = fresh()
            names = {**names, binding.variable: new}
            condition = None if binding.condition is None else rename(binding.condition, names)
            renamed.append(a.Binding(new, source, condition, pos=binding.pos))
        return tuple(renamed), names

    def rename(current: a.Node, names: dict[str, str]) -> a.Node:
        if isinstance(current, a.FieldRef):
            root = current.root
            if isinstance(root, a.VariableRoot) and root.name in names:
                return dataclasses.replace(current, root=a.VariableRoot(names[root.name]))
            return current
        if isinstance(current, (a.Select, a.Quantifier)):
            renamed, _ = bindings(current.bindings, names)
            return dataclasses.replace(current, bindings=renamed)
        if isinstance(current, a.AggregateOver):
            renamed, inner = bindings(current.bindings, names)
            return dataclasses.replace(current, bindings=renamed, value=rename(current.value, inner))
        if isinstance(current, a.Let):
            new = fresh()
            return dataclasses.replace(
                current,
                name=new,
                value=rename(current.value, names),
                body=rename(current.body, {**names, current.name: new}),
            )
        return _map_children(current, lambda child: rename(child, names))

    return rename(node, {})


def segment_references(node: a.Node) -> list[a.InSegment]:
    """Return every ``inSegment(...)`` of a tree, in reading order."""
    return [child for child in walk(node) if isinstance(child, a.InSegment)]


def conjuncts(node: a.Node) -> tuple[a.Node, ...]:
    """Split a condition into its top-level ``and`` operands."""
    return node.operands if isinstance(node, a.And) else (node,)
