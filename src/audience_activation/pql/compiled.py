"""The result of a compilation, and how it is evaluated over the profiles and events DataFrames.

- :class:`EventAggregate`: one column of the aggregation over the events, with its default for
  persons without events.
- :class:`CompiledSegments`: the segment Columns and the aggregates they read. It runs the one
  ``groupBy(person_id).agg(...)`` over the events, left-joins it to the profiles once (persons
  without events get the defaults) and projects one never-null boolean column per segment; it
  can also let Spark analyse every segment's plan over empty inputs.

The naming conventions of the joined row (:data:`XEVENTS_COLUMN`, :data:`AGGREGATE_PREFIX`) are
defined here, where the row is built. Segments are compiled by
:func:`audience_activation.pql.compiler.compile_segments`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructType

from audience_activation.pql.classify import Classification
from audience_activation.pql.time_dependence import TimeDependence
from audience_activation.pql.validation import PqlValidationError, SegmentProblem

#: Column of the joined profile row holding the collected event list (only when needed).
XEVENTS_COLUMN = "__pql_xevents"
#: Prefix of the event aggregate columns.
AGGREGATE_PREFIX = "__pql_agg_"
PERSON_ID = "person_id"


@dataclass(frozen=True, eq=False)
class EventAggregate:
    """One column of the aggregation over the events.

    Attributes:
        name: The column name (``__pql_agg_<n>`` or :data:`XEVENTS_COLUMN`).
        expression: The aggregate expression over the events table.
        default: The value for persons without events (None: stays missing).
        type: The Spark type of the column.
    """

    name: str
    expression: Column
    default: Column | None
    type: DataType


@dataclass(frozen=True, eq=False)
class CompiledSegments:
    """Segments compiled for one evaluation time.

    Attributes:
        segment_ids: The segment ids, in the order given.
        columns: Segment id -> boolean Column over a profile row joined with the event
            aggregates (see :meth:`with_event_aggregates`); never null.
        aggregates: The columns of the one aggregation over the events.
        classification: Segment id -> evaluation method (edge, streaming, batch) and reason.
        evaluation_time: T (aware, UTC).
        time_dependence: Segment id -> how its result depends on the time alone
            (:mod:`audience_activation.pql.time_dependence`).
    """

    segment_ids: tuple[str, ...]
    columns: dict[str, Column]
    aggregates: tuple[EventAggregate, ...]
    classification: dict[str, Classification]
    evaluation_time: dt.datetime
    time_dependence: dict[str, TimeDependence] = field(default_factory=dict)

    @property
    def needs_events(self) -> bool:
        """Whether any segment reads ``xEvent`` (then :meth:`evaluate` needs the events)."""
        return bool(self.aggregates)

    def event_aggregates(self, events: DataFrame) -> DataFrame:
        """Compute every event condition of every segment in one aggregation over the events.

        Args:
            events: One row per event: ``person_id`` and the event columns, de-duplicated by
                ``_id`` and filtered to ``timestamp <= T``.

        Returns:
            One row per person with events: ``person_id`` and one column per aggregate.
        """
        return events.groupBy(PERSON_ID).agg(*[spec.expression.alias(spec.name) for spec in self.aggregates])

    def with_event_aggregates(self, profiles: DataFrame, events: DataFrame | None) -> DataFrame:
        """Join the event aggregates to the profiles (persons without events get the defaults).

        Args:
            profiles: One row per person: ``person_id`` and the profile attributes.
            events: The events (see :meth:`event_aggregates`); may be None when no segment
                reads ``xEvent``.

        Returns:
            The profiles with the aggregate columns added (unchanged when none is needed).

        Raises:
            ValueError: ``events`` is None but a segment reads ``xEvent``, or a profile column
                clashes with an aggregate column name.
        """
        if not self.aggregates:
            return profiles
        if events is None:
            raise ValueError("the segments read xEvent but no events DataFrame was given")
        names = [spec.name for spec in self.aggregates]
        clash = sorted(set(names) & set(profiles.columns))
        if clash:
            raise ValueError(f"profile columns clash with the event aggregate columns: {', '.join(clash)}")
        # groupBy makes person_id unique on the right: the join cannot multiply profile rows.
        joined = profiles.join(self.event_aggregates(events), on=PERSON_ID, how="left")
        defaults = {
            spec.name: F.coalesce(F.col(spec.name), spec.default)
            for spec in self.aggregates
            if spec.default is not None
        }
        return joined.withColumns(defaults) if defaults else joined

    def evaluate(self, profiles: DataFrame, events: DataFrame | None = None) -> DataFrame:
        """Evaluate every segment for every person.

        Args:
            profiles: One row per person: ``person_id`` and the profile attributes.
            events: One row per event with ``person_id`` (None when no segment reads ``xEvent``).

        Returns:
            ``person_id`` and one non-null boolean column per segment id.
        """
        joined = self.with_event_aggregates(profiles, events)
        return joined.select(
            F.col(PERSON_ID),
            *[F.coalesce(self.columns[segment_id], F.lit(False)).alias(segment_id) for segment_id in self.segment_ids],
        )

    def analysis_problems(
        self,
        spark: SparkSession,
        profile_schema: StructType,
        event_schema: StructType | None,
        texts: dict[str, str],
    ) -> list[SegmentProblem]:
        """Let Spark analyse each segment's plan over empty inputs (no job runs).

        A safety net behind the compiler's own type checks: any expression Spark would reject
        at run time is reported now, per segment.

        Args:
            spark: The session (only used to build empty DataFrames).
            profile_schema: The profile schema.
            event_schema: The event schema, or None.
            texts: Segment id -> PQL text (for the error excerpt).

        Returns:
            One problem per segment Spark rejects.
        """
        profiles = spark.createDataFrame([], profile_schema)
        events = spark.createDataFrame([], event_schema) if event_schema is not None else None
        try:
            _ = self.evaluate(profiles, events).schema
            return []
        except Exception:  # noqa: BLE001 - Spark raises several analysis error types; bisect below
            pass
        problems = []
        joined = self.with_event_aggregates(profiles, events) if self.needs_events else profiles
        for segment_id in self.segment_ids:
            try:
                _ = joined.select(self.columns[segment_id].alias("x")).schema
            except Exception as error:  # noqa: BLE001 - reported to the user with Spark's message
                message = str(error).split("\n")[0]
                rejected = PqlValidationError(f"Spark rejects this segment: {message}", texts[segment_id], 1, 1)
                problems.append(SegmentProblem(segment_id, rejected))
        return problems
