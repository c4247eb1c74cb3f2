"""Classify segments as ``edge``, ``streaming`` or ``batch`` with Adobe's eligibility rules.

The rule (docs/segments.md, "Classification"): profile-only, or a single event / several events within a
window under 24 hours, or ``inSegment`` of such: streaming; the same without multi-event sequences: edge;
everything else: batch. Refined with Adobe's published eligibility rules (May 2025):

1. ``evaluation: batch`` in the configuration forces batch.
2. Every *event query* (a ``select``/``exists``/``forall`` over ``xEvent``, a bracket filter,
   an aggregate, a ``chain``) must constrain each of its events' ``timestamp`` to a window of at
   most 24 hours before ``now``: a top-level conjunct of its condition such as
   ``X.timestamp occurs <= 24 hours before now``, ``timestamp occurs < 30 minutes before now``,
   ``occurs = 0 days before now``, ``occurs today``/``occurs on this hour`` or a chain step's
   ``WHEN(<= 24 hours before now)``. Otherwise (no window, a longer one, ``xEvent.a.b`` paths): batch.
   Adobe's own edge examples use ``<= 24 hours``, so a window of exactly 24 hours counts.
3. "The entire event cannot be a negation": a segment whose event queries are all negated
   (under ``not``, or a ``forall``) is batch.
4. ``inSegment`` of a batch segment is batch; an event query together with ``inSegment`` of a
   segment that is not profile-only is batch (Adobe: "single event AND inSegment" is only allowed
   when the inner audience is profile-only).
5. Otherwise the segment is streaming-eligible. It is ``edge`` unless it contains a multi-event
   sequence (a ``chain`` of two or more steps, or a ``select``/``exists`` with two or more clauses
   over ``xEvent``) or references a segment that is only ``streaming``; then it is ``streaming``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audience_activation.pql import ast as a
from audience_activation.pql.analysis import EVENTS, PROFILE, children, conjuncts, free_refs, segment_references
from audience_activation.pql.timeops import EXACT_UNITS
from audience_activation.pql.validation import ParsedSegment

#: The longest event window that is still edge/streaming eligible.
STREAMING_WINDOW = dt.timedelta(hours=24)

_SHORT_PERIODS = frozenset(
    {a.TimeUnit.MILLISECOND, a.TimeUnit.SECOND, a.TimeUnit.MINUTE, a.TimeUnit.HOUR, a.TimeUnit.DAY}
)


class EvaluationMethod(str, enum.Enum):
    """How Adobe would evaluate a segment (the batch job here evaluates all of them)."""

    EDGE = "edge"
    STREAMING = "streaming"
    BATCH = "batch"


@dataclass(frozen=True)
class Classification:
    """The evaluation method of a segment and why.

    Attributes:
        method: ``edge``, ``streaming`` or ``batch``.
        reason: A one-line explanation (names the construct and its position when it matters).
        profile_only: No ``xEvent``, directly or through ``inSegment``.
    """

    method: EvaluationMethod
    reason: str
    profile_only: bool

    def __str__(self) -> str:
        return f"{self.method.value} ({self.reason})"


@dataclass(frozen=True)
class EventQuery:
    """One use of ``xEvent`` in a segment.

    Attributes:
        node: The expression (a select, filter, aggregate, quantifier or chain).
        sequence: It relates several events in an order (chain of 2+ steps, 2+ ``xEvent`` clauses).
        windowed: Each of its events is constrained to at most 24 hours before ``now``.
        negated: It sits under ``not`` (or is a ``forall``), i.e. it tests an absence.
    """

    node: a.Node
    sequence: bool
    windowed: bool
    negated: bool


def _where(node: a.Node) -> str:
    return f"line {node.pos.line}, column {node.pos.column}"


def _is_short_window(test: a.Node) -> bool:
    """An ``occurs`` test that keeps an event within 24 hours before ``now``."""
    if isinstance(test, a.OccursWithin):
        if test.direction is not a.Direction.BEFORE or test.unit not in EXACT_UNITS:
            return False
        if not (isinstance(test.anchor, a.TimeConst) and test.anchor.kind is a.TimeConstKind.NOW):
            return False
        unit = EXACT_UNITS[test.unit]
        if test.op in (a.CompareOp.LT, a.CompareOp.LE):
            return test.amount * unit <= STREAMING_WINDOW
        if test.op is a.CompareOp.EQ:
            # The bucket of `= N units before now` reaches back N + 1 units at most.
            return (test.amount + 1) * unit <= STREAMING_WINDOW
        return False
    if isinstance(test, a.OccursOn):
        anchor = test.anchor
        if isinstance(anchor, a.TimeConst):
            return anchor.kind is a.TimeConstKind.TODAY
        if isinstance(anchor, a.CalendarPeriod):
            return anchor.relation is a.PeriodRelation.THIS and anchor.unit in _SHORT_PERIODS
        return False
    if isinstance(test, a.OccursRelative):
        # `occurs after yesterday` is today.
        anchor = test.anchor
        return (
            test.direction is a.Direction.AFTER
            and isinstance(anchor, a.TimeConst)
            and anchor.kind is a.TimeConstKind.YESTERDAY
        )
    return False


def _windowed(condition: a.Node | None, subject: a.FieldRef) -> bool:
    """Whether a top-level conjunct of ``condition`` is a short window on ``subject``."""
    if condition is None:
        return False
    return any(
        isinstance(part, a.Occurs) and part.subject == subject and _is_short_window(part.test)
        for part in conjuncts(condition)
    )


def event_source(node: a.Node) -> list[tuple[a.Node, a.FieldRef]] | None:
    """If ``node`` is a set of events, its conditions with the timestamp each one must window."""
    if isinstance(node, a.FieldRef):
        return [] if isinstance(node.root, a.EventsRoot) and not node.parts else None
    if isinstance(node, a.Filter):
        inner = event_source(node.source)
        if inner is None:
            return None
        return [*inner, (node.condition, a.FieldRef(a.ItemRoot(0), ("timestamp",)))]
    if isinstance(node, a.Select) and len(node.bindings) == 1:
        return _binding_source(node.bindings[0])
    return None


def _binding_source(binding: a.Binding) -> list[tuple[a.Node, a.FieldRef]] | None:
    inner = event_source(binding.source)
    if inner is None:
        return None
    if binding.condition is None:
        return inner
    return [*inner, (binding.condition, a.FieldRef(a.VariableRoot(binding.variable), ("timestamp",)))]


def _set_windowed(conditions: list[tuple[a.Node, a.FieldRef]]) -> bool:
    return any(_windowed(condition, subject) for condition, subject in conditions)


def _query(node: a.Node, negated: bool) -> EventQuery | None:
    """The event query rooted at ``node``, if ``node`` is one."""
    if isinstance(node, a.Chain):
        if EVENTS not in free_refs(node.source):
            return None
        source = event_source(node.source)
        order = a.FieldRef(a.ItemRoot(0), node.order_by)
        steps_windowed = all(
            (step.when is not None and _is_short_window(step.when)) or _windowed(step.what, order)
            for step in node.steps
        )
        windowed = source is not None and (steps_windowed or _set_windowed(source))
        return EventQuery(node, len(node.steps) > 1, windowed, negated)
    if isinstance(node, (a.Select, a.Quantifier, a.AggregateOver)):
        event_clauses = [binding for binding in node.bindings if EVENTS in free_refs(binding.source)]
        if not event_clauses:
            return None
        sources = [_binding_source(binding) for binding in event_clauses]
        if isinstance(node, a.Quantifier) and node.kind is a.QuantifierKind.FORALL:
            # forall X from xEvent where c: every event satisfies c, i.e. no event violates it.
            sources = [event_source(binding.source) for binding in event_clauses]
            negated = not negated
        windowed = all(source is not None and _set_windowed(source) for source in sources)
        return EventQuery(node, len(event_clauses) > 1, windowed, negated)
    if isinstance(node, (a.Filter, a.Aggregate)) and EVENTS in free_refs(node.source):
        source = event_source(node if isinstance(node, a.Filter) else node.source)
        if source is None:
            inner = node.source
            if isinstance(inner, (a.Select, a.Quantifier, a.AggregateOver, a.Chain)):
                return _query(inner, negated)
            return EventQuery(node, False, False, negated)
        return EventQuery(node, False, _set_windowed(source), negated)
    if isinstance(node, a.FieldRef) and isinstance(node.root, a.EventsRoot):
        return EventQuery(node, False, False, negated)
    return None


def event_queries(tree: a.Node) -> list[EventQuery]:
    """Every use of ``xEvent`` in a segment, with its polarity."""
    found: list[EventQuery] = []

    def visit(node: a.Node, negated: bool) -> None:
        if isinstance(node, a.Not):
            visit(node.operand, not negated)
            return
        query = _query(node, negated)
        if query is not None:
            found.append(query)
            return
        for child in children(node):
            visit(child, negated)

    visit(tree, False)
    return found


def classify(
    tree: a.Node,
    *,
    force_batch: bool = False,
    referenced: Mapping[str, Classification] | None = None,
) -> Classification:
    """Classify one segment.

    Args:
        tree: The parsed segment condition.
        force_batch: ``evaluation: batch`` in the configuration.
        referenced: The classification of every segment it reads with ``inSegment``.

    Returns:
        The evaluation method and the reason.
    """
    referenced = referenced or {}
    queries = event_queries(tree)
    references = list(dict.fromkeys(ref.segment_id for ref in segment_references(tree)))
    profile_only = not queries and all(referenced[ref].profile_only for ref in references if ref in referenced)
    if force_batch:
        return Classification(EvaluationMethod.BATCH, "evaluation: batch in the configuration", profile_only)
    for query in queries:
        if not query.windowed:
            return Classification(
                EvaluationMethod.BATCH,
                f"the event condition at {_where(query.node)} has no time window of at most 24 hours before now",
                profile_only,
            )
    if queries and all(query.negated for query in queries):
        return Classification(
            EvaluationMethod.BATCH,
            "the event condition is entirely a negation (absence of events)",
            profile_only,
        )
    streaming_only = False
    for ref in references:
        inner = referenced.get(ref)
        if inner is None:
            continue
        if inner.method is EvaluationMethod.BATCH:
            return Classification(EvaluationMethod.BATCH, f"inSegment('{ref}') of a batch segment", profile_only)
        if queries and not inner.profile_only:
            return Classification(
                EvaluationMethod.BATCH,
                f"an event condition together with inSegment('{ref}') of a segment that is not profile-only",
                profile_only,
            )
        streaming_only = streaming_only or inner.method is EvaluationMethod.STREAMING
    sequences = [query for query in queries if query.sequence]
    if sequences:
        return Classification(
            EvaluationMethod.STREAMING,
            f"a sequence of several events within 24 hours (at {_where(sequences[0].node)}) is not edge-eligible",
            profile_only,
        )
    if streaming_only:
        return Classification(EvaluationMethod.STREAMING, "inSegment of a streaming (not edge) segment", profile_only)
    if profile_only:
        reason = "profile attributes only" + (" (and inSegment of such)" if references else "")
    elif len(queries) == 1:
        reason = "a single event within 24 hours"
        if PROFILE in free_refs(tree):
            reason += " and profile attributes"
    else:
        reason = "several events, each within 24 hours, without a sequence"
    return Classification(EvaluationMethod.EDGE, reason, profile_only)


def classify_segments(segments: Sequence[ParsedSegment]) -> dict[str, Classification]:
    """Classify segments given in dependency order (referenced segments first).

    Args:
        segments: Parsed segments, referenced ones first (see ``validation.dependency_order``).

    Returns:
        Segment id -> classification, in the given order.
    """
    result: dict[str, Classification] = {}
    for segment in segments:
        result[segment.id] = classify(segment.tree, force_batch=segment.force_batch, referenced=result)
    return result
