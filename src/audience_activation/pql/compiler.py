"""Compile parsed PQL segments into native Spark Columns over profiles and event aggregates.

Data model (what the batch job produces, see ``docs/segments.md``):

- ``profiles``: one row per person, ``person_id`` plus every profile attribute column (nested
  structs, arrays, maps) of the unified profile;
- ``events``: one row per event, ``person_id`` plus the event columns (``timestamp``,
  ``eventType``...), already de-duplicated by ``_id`` and filtered to ``timestamp <= T``.

Plan of an evaluation:

1. Every event condition of every segment that reads only the event itself (``xEvent[c].count()``,
   ``select X from xEvent where c``, ``exists``/``forall``, ``sum/average/min/max``, a ``chain``
   whose steps only look at their event, ``I from X.productListItems`` inside one event) is
   *pushed down* into one ``groupBy("person_id").agg(...)`` over the events: ``count_if``,
   ``sum(when(...))``, ``avg``/``min``/``max`` and, for chains, ``collect_list`` of the matching
   events' (timestamp, step flags). Identical conditions of different segments (up to variable
   names) share one aggregate column.
2. Event conditions that relate several events (``select A from xEvent, B from xEvent where
   B.timestamp > A.timestamp``) or read profile attributes or other segments read one collected
   list of the needed event fields (``collect_list(struct(...))``, in the same aggregation) with
   higher-order functions (``exists``, ``forall``, ``filter``, ``transform``, ``aggregate``).
3. The aggregates are joined once (left join) to the profiles; persons without events get count 0,
   sum 0, missing average/min/max and empty lists. One boolean column per segment is computed
   over the joined row; ``inSegment`` substitutes the referenced segment's Column.

Logic is Adobe's two-valued logic: every condition compiles to a Column that is never null
(``coalesce(..., false)`` wherever a missing operand could reach it), so ``not`` is a plain
negation and ``!=``, ``notIn`` and ``doesNot*`` are false on missing operands. No Python UDF is
used anywhere.

Where each part lives:

- :mod:`~audience_activation.pql.types`: PQL categories of Spark types, result types, messages;
- :mod:`~audience_activation.pql.logic`: Column helpers of the two-valued logic;
- :mod:`~audience_activation.pql.scope`: compiled values, tables, environments, event sets;
- :mod:`~audience_activation.pql.base`: the state of one compilation, errors, dispatch;
- :mod:`~audience_activation.pql.values`: literals, references, operators, ``if``, ``let``, maps;
- :mod:`~audience_activation.pql.conditions`: comparisons, ``in``, string tests, ``like``,
  ``matches``, null checks, ``inSegment``;
- :mod:`~audience_activation.pql.occurs`: time constants, dates, ``occurs`` and its windows;
- :mod:`~audience_activation.pql.arrays`: filters, selects, quantifiers and aggregates over arrays
  (also step 2, over the collected event list);
- :mod:`~audience_activation.pql.chain`: ``chain`` (ordered sequences of events);
- :mod:`~audience_activation.pql.pushdown`: step 1 (event conditions -> aggregate columns);
- :mod:`~audience_activation.pql.compiled`: :class:`CompiledSegments`, which runs the aggregation,
  the join of step 3 and the segment columns;
- this module: the composed compiler and :func:`compile_segments`, the public entry point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import reduce

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from audience_activation.pql import ast as a
from audience_activation.pql.arrays import ArraysMixin
from audience_activation.pql.chain import ChainMixin
from audience_activation.pql.classify import classify_segments
from audience_activation.pql.compiled import AGGREGATE_PREFIX, XEVENTS_COLUMN, CompiledSegments, EventAggregate
from audience_activation.pql.conditions import ConditionsMixin
from audience_activation.pql.errors import PqlError
from audience_activation.pql.occurs import OccursMixin
from audience_activation.pql.pushdown import PushdownMixin
from audience_activation.pql.scope import Env
from audience_activation.pql.time_dependence import time_dependence
from audience_activation.pql.validation import (
    SegmentDefinitionError,
    SegmentInput,
    SegmentProblem,
    as_sources,
    dependency_order,
    parse_segments,
    reference_problems,
)
from audience_activation.pql.values import ValuesMixin

__all__ = ["AGGREGATE_PREFIX", "XEVENTS_COLUMN", "CompiledSegments", "EventAggregate", "compile_segments"]


class _Compiler(PushdownMixin, ChainMixin, OccursMixin, ValuesMixin, ArraysMixin, ConditionsMixin):
    """The segment compiler: every mixin composed, and the tables mapping node types to handlers.

    Push-down (first in the method resolution order) builds on chain and arrays, chain on the
    time tests and attribute paths, and every mixin on
    :class:`~audience_activation.pql.base.CompilerBase`.
    """

    def __init__(
        self,
        profile_schema: StructType,
        event_schema: StructType | None,
        evaluation_time: dt.datetime,
        *,
        pushdown: bool = True,
    ) -> None:
        super().__init__(profile_schema, event_schema, evaluation_time, pushdown=pushdown)
        self._conditions = {
            a.BoolLit: self._c_bool,
            a.And: self._c_and,
            a.Or: self._c_or,
            a.Not: self._c_not,
            a.IsDefined: self._c_is_defined,
            a.NullCheck: self._c_null_check,
            a.Compare: self._c_compare,
            a.In: self._c_in,
            a.Intersects: self._c_intersects,
            a.StringTest: self._c_string_test,
            a.Like: self._c_like,
            a.Matches: self._c_matches,
            a.Occurs: self._c_occurs,
            a.Quantifier: self._c_quantifier,
            a.Chain: self._c_chain,
            a.InSegment: self._c_in_segment,
        }
        self._values = {
            a.StringLit: self._v_string,
            a.IntLit: self._v_int,
            a.DoubleLit: self._v_double,
            a.ListLit: self._v_list,
            a.DateLit: self._v_date,
            a.TimeConst: self._v_time_const,
            a.CurrentDatePart: self._v_current_date_part,
            a.GetDatePart: self._v_get_date_part,
            a.CalendarPeriod: self._v_calendar_period,
            a.FieldRef: self._v_field_ref,
            a.Member: self._v_member,
            a.Arith: self._v_arith,
            a.Negate: self._v_negate,
            a.If: self._v_if,
            a.Let: self._v_let,
            a.MapGet: self._v_map_get,
            a.MapKeys: self._v_map_keys,
            a.MapValues: self._v_map_values,
            a.Distinct: self._v_distinct,
            a.Filter: self._v_filter,
            a.Select: self._v_select,
            a.Aggregate: self._v_aggregate,
            a.AggregateOver: self._v_aggregate_over,
        }


def compile_segments(
    segments: Iterable[SegmentInput],
    profile_schema: StructType,
    event_schema: StructType | None,
    evaluation_time: dt.datetime,
    *,
    pushdown: bool = True,
) -> CompiledSegments:
    """Parse, check and compile segment definitions.

    Building the Columns needs an active SparkSession (no job runs).

    Args:
        segments: ``SegmentSource`` objects, ``(id, pql_text)`` or ``(id, parsed_tree)`` pairs.
        profile_schema: The schema of the profiles DataFrame (``person_id`` + attributes).
        event_schema: The schema of the events DataFrame, or None when there is no events table.
        evaluation_time: T; ``now`` is T and ``today`` the start of T's UTC day. A naive datetime
            is taken as UTC.
        pushdown: Push per-event conditions into the aggregation (``count_if``, ``sum(when)``...).
            ``False`` evaluates every event condition with higher-order functions over the
            collected event list instead: slower, the same results (the tests compare both).

    Returns:
        The compiled segments.

    Raises:
        SegmentDefinitionError: Listing every syntax error, unknown ``inSegment`` id, cycle,
            unknown attribute and type mismatch, each with its segment id, line and column.
    """
    sources = as_sources(segments)
    parsed, problems = parse_segments(sources)
    problems += reference_problems(parsed, (source.id for source in sources))
    # Schema problems are reported together with syntax and reference problems, so a user
    # fixes everything in one round; segments that reference a broken one are skipped.
    failed = {problem.segment_id for problem in problems}
    compiler = _Compiler(profile_schema, event_schema, evaluation_time, pushdown=pushdown)
    for segment in dependency_order(parsed):
        if segment.id in failed or any(reference in failed for reference in segment.references):
            failed.add(segment.id)  # its own problems are reported; do not cascade
            continue
        try:
            compiler.compile(segment)
        except PqlError as error:
            problems.append(SegmentProblem(segment.id, error))
            failed.add(segment.id)
    if problems:
        order = {source.id: index for index, source in enumerate(sources)}
        raise SegmentDefinitionError(sorted(problems, key=lambda problem: order[problem.segment_id]))
    ids = tuple(source.id for source in sources)
    return CompiledSegments(
        segment_ids=ids,
        columns={segment_id: compiler.segment_columns[segment_id] for segment_id in ids},
        aggregates=tuple(compiler.aggregates()),
        classification=classify_segments(dependency_order(parsed)),
        evaluation_time=compiler.now,
        time_dependence={segment.id: time_dependence(segment.tree) for segment in parsed},
    )


def window_changes(timestamp: Column, windows: Sequence[a.Node], before: dt.datetime, after: dt.datetime) -> Column:
    """True for an event whose ``timestamp`` is inside one of ``windows`` (event windows found by
    :func:`audience_activation.pql.time_dependence.time_dependence`) at one of two evaluation times and outside
    it at the other. Each test is compiled by the segment compiler at ``before`` and at ``after``, so a window
    means here exactly what it means in a segment."""
    if not windows:
        return F.lit(False)
    then, now = (_Compiler(StructType([]), None, moment) for moment in (before, after))
    flips = [then._occurs_test(timestamp, test, Env()) != now._occurs_test(timestamp, test, Env()) for test in windows]
    return reduce(lambda x, y: x | y, flips)
