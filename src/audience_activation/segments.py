"""The segment layer: configured PQL segments parsed, checked, classified, compiled and evaluated.

What the jobs and the CLI call (``docs/segments.md`` describes the language and the plan):

- :func:`parse_segments` (no Spark): syntax, ``inSegment`` of unknown ids, ``inSegment`` cycles;
- :func:`classify_segments` (no Spark): ``edge`` / ``streaming`` / ``batch`` per segment;
- :func:`segment_problems` / :func:`validate_segments`: everything above plus the checks against
  the input schemas (unknown attribute paths, type mismatches, aggregates over non-numbers,
  ``xEvent`` without an events table); builds Spark expressions but runs no job;
- :func:`compile_segments` -> :class:`~audience_activation.pql.compiler.CompiledSegments`, whose
  ``evaluate(profiles, events)`` returns ``person_id`` + one boolean column per segment, and whose
  ``classification`` is shown by the preview command.

Every error is a :class:`SegmentConfigError` (a :class:`~audience_activation.config.ConfigError`)
naming the segments file, the segment id, and the line and column in the PQL text with a caret::

    conf/segments.yaml: segment 'us-residents': unknown profile attribute `homeAddress.contry`; did you mean ...
    conf/segments.yaml: homeAddress.contry = "US"
    conf/segments.yaml:             ^
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from audience_activation.config import SEGMENTS_FILE, AppConfig, ConfigError, SegmentConfig, SegmentEvaluation
from audience_activation.pql import compiler
from audience_activation.pql.classify import Classification, EvaluationMethod
from audience_activation.pql.classify import classify_segments as _classify
from audience_activation.pql.compiler import CompiledSegments
from audience_activation.pql.time_dependence import TimeDependence, combined, time_dependence
from audience_activation.pql.validation import (
    ParsedSegment,
    SegmentDefinitionError,
    SegmentProblem,
    SegmentSource,
    prepare_segments,
)

__all__ = [
    "Classification",
    "CompiledSegments",
    "EvaluationMethod",
    "SegmentConfigError",
    "classify_segments",
    "compile_segments",
    "evaluate_segments",
    "parse_segments",
    "segment_problems",
    "segment_sources",
    "validate_segments",
]

#: Configured segments: the whole configuration, or a list of segments.
Segments = AppConfig | Sequence[SegmentConfig]


class SegmentConfigError(ConfigError):
    """Invalid segment definitions.

    ``str(err)`` has one block per problem, every line prefixed with the file that defines the
    segment: ``<file>: segment '<id>': <reason> (line L, column C)``, then the PQL line and a caret.

    Attributes:
        problems: Every problem, in configuration order.
        files: Segment id -> the file that defines it.
    """

    def __init__(self, problems: Sequence[SegmentProblem], files: Mapping[str, Path]) -> None:
        """Build the error.

        Args:
            problems: The problems (at least one).
            files: Segment id -> defining file (a missing id falls back to ``segments.yaml``).
        """
        self.problems = tuple(problems)
        self.files = dict(files)
        first = self.problems[0]
        self.file = self._file(first.segment_id)
        self.item = first.segment_id
        self.message = "\n".join(str(problem) for problem in self.problems)
        lines = [
            f"{self._file(problem.segment_id)}: {line}"
            for problem in self.problems
            for line in str(problem).splitlines()
        ]
        # ConfigError's constructor would prefix every line with one file; segments may come
        # from several files, so build the text here.
        ValueError.__init__(self, "\n".join(lines))

    def _file(self, segment_id: str) -> Path:
        return self.files.get(segment_id, Path(SEGMENTS_FILE))


def _configured(segments: Segments, files: Mapping[str, Path] | None) -> tuple[list[SegmentConfig], dict[str, Path]]:
    if isinstance(segments, AppConfig):
        return list(segments.segments), {**segments.segment_files, **(files or {})}
    return list(segments), dict(files or {})


def segment_sources(segments: Sequence[SegmentConfig]) -> list[SegmentSource]:
    """The compiler's view of configured segments (id, PQL text, forced batch).

    Args:
        segments: The configured segments.

    Returns:
        One :class:`SegmentSource` per segment, in order.
    """
    return [
        SegmentSource(
            segment.id,
            segment.expression.value,
            force_batch=segment.evaluation is SegmentEvaluation.batch,
        )
        for segment in segments
    ]


def parse_segments(segments: Segments, files: Mapping[str, Path] | None = None) -> list[ParsedSegment]:
    """Parse every configured segment and check the ``inSegment`` references (no Spark needed).

    Args:
        segments: The configuration, or a list of segments.
        files: Segment id -> defining file, for messages (taken from the configuration when given).

    Returns:
        The parsed segments, referenced segments first.

    Raises:
        SegmentConfigError: Syntax errors, unknown ``inSegment`` ids, ``inSegment`` cycles.
    """
    configured, paths = _configured(segments, files)
    try:
        return prepare_segments(segment_sources(configured))
    except SegmentDefinitionError as error:
        raise SegmentConfigError(error.problems, paths) from error


def classify_segments(segments: Segments, files: Mapping[str, Path] | None = None) -> dict[str, Classification]:
    """Classify every configured segment as ``edge``, ``streaming`` or ``batch`` (no Spark needed).

    Args:
        segments: The configuration, or a list of segments.
        files: Segment id -> defining file, for messages.

    Returns:
        Segment id -> classification, in configuration order.

    Raises:
        SegmentConfigError: As :func:`parse_segments`.
    """
    configured, _ = _configured(segments, files)
    result = _classify(parse_segments(segments, files))
    return {segment.id: result[segment.id] for segment in configured}


def streamed_time_dependence(segments: Segments) -> TimeDependence:
    """How the configured ``edge`` and ``streaming`` segments together depend on the time alone (no Spark
    needed; :mod:`audience_activation.pql.time_dependence`).

    Raises:
        SegmentConfigError: As :func:`parse_segments`.
    """
    parsed = parse_segments(segments)
    classes = _classify(parsed)
    streamed = [s for s in parsed if classes[s.id].method is not EvaluationMethod.BATCH]
    return combined(time_dependence(segment.tree) for segment in streamed)


def compile_segments(
    segments: Segments,
    profile_schema: StructType,
    event_schema: StructType | None,
    evaluation_time: dt.datetime,
    *,
    files: Mapping[str, Path] | None = None,
) -> CompiledSegments:
    """Compile the configured segments for one evaluation time.

    Needs an active SparkSession (Columns are built, nothing runs).

    Args:
        segments: The configuration, or a list of segments.
        profile_schema: Schema of the unified profiles (``person_id`` + attributes).
        event_schema: Schema of the events (``person_id`` + event columns), or None without events.
        evaluation_time: T (UTC; a naive datetime is taken as UTC).
        files: Segment id -> defining file, for messages.

    Returns:
        The compiled segments (see :class:`~audience_activation.pql.compiler.CompiledSegments`).

    Raises:
        SegmentConfigError: Every problem of every segment, located in its PQL text.
    """
    configured, paths = _configured(segments, files)
    try:
        return compiler.compile_segments(segment_sources(configured), profile_schema, event_schema, evaluation_time)
    except SegmentDefinitionError as error:
        raise SegmentConfigError(error.problems, paths) from error


def compile_consents(config: AppConfig, profile_schema: StructType, evaluation_time: dt.datetime) -> dict[str, Any]:
    """Each destination's consent condition compiled to a Column over the unified profile (None without one).

    Raises:
        ConfigError: naming destinations.yaml and the destination, with the PQL position.
    """
    sources = [(f"consent:{d.id}", d.consent) for d in config.destinations if d.consent]
    if not sources:
        return {}
    try:
        compiled = compiler.compile_segments(sources, profile_schema, None, evaluation_time)
    except SegmentDefinitionError as error:
        lines = [f"destination '{p.segment_id.removeprefix('consent:')}': consent: {p.error}" for p in error.problems]
        raise ConfigError(config.destinations_file, "\n".join(lines), item=error.problems[0].segment_id) from error
    return {d.id: compiled.columns.get(f"consent:{d.id}") for d in config.destinations}


def segment_problems(
    segments: Segments,
    profile_schema: StructType,
    event_schema: StructType | None,
    *,
    spark: SparkSession | None = None,
    evaluation_time: dt.datetime | None = None,
) -> list[SegmentProblem]:
    """Check the configured segments against the input schemas and return the problems.

    Args:
        segments: The configuration, or a list of segments.
        profile_schema: Schema of the unified profiles.
        event_schema: Schema of the events, or None when there is no events table.
        spark: When given, Spark also analyses each segment's plan over empty inputs (no job
            runs), which catches anything the compiler's own checks might let through.
        evaluation_time: T for the check (the current time by default; it does not change which
            segments are valid).

    Returns:
        Every problem found (empty when all segments are valid).
    """
    configured, _ = _configured(segments, None)
    when = evaluation_time or dt.datetime.now(dt.timezone.utc)
    try:
        compiled = compiler.compile_segments(segment_sources(configured), profile_schema, event_schema, when)
    except SegmentDefinitionError as error:
        return list(error.problems)
    if spark is None:
        return []
    texts = {segment.id: segment.expression.value for segment in configured}
    return compiled.analysis_problems(spark, profile_schema, event_schema, texts)


def validate_segments(
    segments: Segments,
    profile_schema: StructType,
    event_schema: StructType | None,
    *,
    files: Mapping[str, Path] | None = None,
    spark: SparkSession | None = None,
) -> dict[str, Classification]:
    """Validate the configured segments before any job runs.

    Args:
        segments: The configuration, or a list of segments.
        profile_schema: Schema of the unified profiles.
        event_schema: Schema of the events, or None when there is no events table.
        files: Segment id -> defining file, for messages.
        spark: See :func:`segment_problems`.

    Returns:
        The classification of every segment (valid segments only get here).

    Raises:
        SegmentConfigError: Every problem, each with file, segment id, line, column and caret.
    """
    problems = segment_problems(segments, profile_schema, event_schema, spark=spark)
    if problems:
        _, paths = _configured(segments, files)
        raise SegmentConfigError(problems, paths)
    return classify_segments(segments, files)


def evaluate_segments(
    segments: Segments,
    profiles: DataFrame,
    events: DataFrame | None,
    evaluation_time: dt.datetime,
    *,
    files: Mapping[str, Path] | None = None,
) -> DataFrame:
    """Compile against the inputs' schemas and evaluate every segment (a notebook convenience).

    Args:
        segments: The configuration, or a list of segments.
        profiles: One row per person: ``person_id`` + profile attributes.
        events: One row per event: ``person_id`` + event columns (de-duplicated, ``timestamp <= T``),
            or None when no segment reads ``xEvent``.
        evaluation_time: T.
        files: Segment id -> defining file, for messages.

    Returns:
        ``person_id`` and one boolean column per segment id.

    Raises:
        SegmentConfigError: As :func:`compile_segments`.
    """
    compiled = compile_segments(
        segments,
        profiles.schema,
        events.schema if events is not None else None,
        evaluation_time,
        files=files,
    )
    return compiled.evaluate(profiles, events)
