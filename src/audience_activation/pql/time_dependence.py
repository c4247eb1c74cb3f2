"""Which results of a segment can change with the evaluation time alone, with no new data.

The streaming job (docs/streaming.md, "Time-driven changes") re-evaluates only the persons new rows affect; a
member of ``... X.timestamp occurs <= 24 hours before now`` must still exit when its event leaves the window,
with no new row. The rules, in the order :func:`time_dependence` applies them to a segment's tree:

1. **Event windows.** An ``occurs`` test on an event's ``timestamp`` (a ``select``/``exists``/``forall``
   variable or a bracket-filter item over ``xEvent``, or a ``chain`` step's ``WHEN`` when the chain orders by
   ``timestamp``) whose test reads no attribute is an *event window*. Between two evaluation times it changes
   the result only through the events whose test result differs at the two times:
   :func:`audience_activation.pql.compiler.window_changes` marks them, so their persons are re-evaluated.
2. **Everything else that reads the time** (``now``, ``today``, ``yesterday``, ``tomorrow``, ``this/last/next
   <unit>``, ``current*()``) outside an event window — for example ``birthDate occurs today`` on the profile,
   or an ``occurs`` test whose anchor is an attribute — is *other*: the segment's result can change for any
   person, and the streaming job revisits every person when it moves the time.

``inSegment`` does not add anything: every segment is analysed, and the caller takes the union over the
segments it evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from audience_activation.pql import ast as a
from audience_activation.pql.analysis import children, free_refs
from audience_activation.pql.classify import event_source

_TIME_NODES = (a.TimeConst, a.CalendarPeriod, a.CurrentDatePart)
_TIMESTAMP = ("timestamp",)


@dataclass(frozen=True)
class TimeDependence:
    """How a segment's result depends on ``now`` (rules in the module docstring).

    Attributes:
        event_windows: The ``occurs`` tests applied to an event's ``timestamp`` (rule 1).
        other: Where it reads the time otherwise (rule 2), as ``line L, column C`` of the PQL text.
    """

    event_windows: tuple[a.Node, ...] = ()
    other: tuple[str, ...] = ()

    @property
    def time_dependent(self) -> bool:
        return bool(self.event_windows or self.other)

    def __or__(self, more: TimeDependence) -> TimeDependence:
        return TimeDependence(self.event_windows + more.event_windows, self.other + more.other)


def _constant(test: a.Node) -> bool:
    """A test that reads no attribute (its anchors are time constants and literals)."""
    return not free_refs(test)


def time_dependence(tree: a.Node) -> TimeDependence:
    """Analyse one segment's condition (rules in the module docstring)."""
    windows: list[a.Node] = []
    other: list[str] = []

    def event_timestamp(subject: a.Node, variables: frozenset[str], items: tuple[bool, ...]) -> bool:
        if not isinstance(subject, a.FieldRef) or subject.parts != _TIMESTAMP:
            return False
        root = subject.root
        if isinstance(root, a.VariableRoot):
            return root.name in variables
        if isinstance(root, a.ItemRoot):
            return root.up < len(items) and items[-1 - root.up]
        return False

    def visit(node: a.Node, variables: frozenset[str], items: tuple[bool, ...]) -> None:
        if isinstance(node, a.Occurs) and event_timestamp(node.subject, variables, items) and _constant(node.test):
            windows.append(node.test)
            return
        if isinstance(node, _TIME_NODES):
            other.append(f"line {node.pos.line}, column {node.pos.column}")
            return
        if isinstance(node, a.Chain):
            visit(node.source, variables, items)
            on_events = event_source(node.source) is not None
            for step in node.steps:
                visit(step.what, variables, (*items, on_events))
                if step.when is None:
                    continue
                if on_events and node.order_by == _TIMESTAMP and _constant(step.when):
                    windows.append(step.when)
                else:
                    visit(step.when, variables, items)
            return
        if isinstance(node, (a.Filter, a.Aggregate)):
            visit(node.source, variables, items)
            inner = node.condition if isinstance(node, a.Filter) else node.value
            if inner is not None:
                visit(inner, variables, (*items, event_source(node.source) is not None))
            return
        if isinstance(node, (a.Select, a.Quantifier, a.AggregateOver)):
            bound = variables
            for binding in node.bindings:
                visit(binding.source, bound, items)
                is_event = event_source(binding.source) is not None
                bound = bound | {binding.variable} if is_event else bound - {binding.variable}
                if binding.condition is not None:
                    visit(binding.condition, bound, items)
            if isinstance(node, a.AggregateOver):
                visit(node.value, bound, items)
            return
        if isinstance(node, a.Let):
            visit(node.value, variables, items)
            visit(node.body, variables - {node.name}, items)
            return
        for child in children(node):
            visit(child, variables, items)

    visit(tree, frozenset(), ())
    return TimeDependence(tuple(windows), tuple(other))


def combined(dependences: Iterable[TimeDependence]) -> TimeDependence:
    """The union of several segments' time dependence."""
    return reduce(TimeDependence.__or__, dependences, TimeDependence())
