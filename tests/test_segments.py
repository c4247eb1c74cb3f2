"""Tests of the segment layer: configured segments parsed, checked, classified and evaluated.

Classification and parsing need no Spark; validation builds (never runs) Spark expressions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType

from audience_activation.config import SegmentConfig, load_config
from audience_activation.demo_data import EVENT_DDL, FRAGMENT_DDL
from audience_activation.pql.validation import PqlReferenceError
from audience_activation.schemas import FRAGMENT_SYSTEM_COLUMNS
from audience_activation.segments import (
    EvaluationMethod,
    SegmentConfigError,
    classify_segments,
    compile_segments,
    evaluate_segments,
    parse_segments,
    segment_problems,
    validate_segments,
)

SHIPPED_CONF = Path(__file__).resolve().parents[1] / "conf"
T = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def segment(segment_id: str, pql: str, *, batch: bool = False) -> SegmentConfig:
    data: dict[str, object] = {
        "id": segment_id,
        "name": segment_id,
        "expression": {"type": "PQL", "format": "pql/text", "value": pql},
    }
    if batch:
        data["evaluation"] = "batch"
    return SegmentConfig.model_validate(data)


def profile_schema() -> StructType:
    """The unified profile schema for the demo fragments: person_id + identityMap + attributes + count."""
    fragments = StructType.fromDDL(FRAGMENT_DDL)
    attributes = [field for field in fragments.fields if field.name not in FRAGMENT_SYSTEM_COLUMNS]
    return StructType(
        [
            StructField("person_id", StringType()),
            fragments["identityMap"],
            *attributes,
            StructField("fragment_count", LongType()),
        ]
    )


def event_schema() -> StructType:
    return StructType([StructField("person_id", StringType()), *StructType.fromDDL(EVENT_DDL).fields])


def write_segments(conf_dir: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = conf_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# --- the shipped configuration -------------------------------------------------------------------


def test_shipped_segments_are_classified() -> None:
    config = load_config(SHIPPED_CONF)
    methods = {segment_id: c.method.value for segment_id, c in classify_segments(config).items()}
    assert methods == {
        "us-residents": "edge",
        "loyalty-gold-platinum": "edge",
        "email-subscribers": "edge",
        "recent-purchasers": "batch",  # a 30-day window
        "recent-product-viewers": "edge",  # one event within 24 hours
        "view-then-add-to-cart": "batch",  # a 7-day sequence
        "high-value-customers": "batch",  # no window
        "engaged-app-users": "batch",  # a 14-day window
        "us-loyal-recent-buyers": "batch",  # evaluation: batch
    }


def test_shipped_segments_validate_against_the_demo_schemas(spark: SparkSession) -> None:
    config = load_config(SHIPPED_CONF)
    classification = validate_segments(config, profile_schema(), event_schema(), spark=spark)
    assert list(classification) == [s.id for s in config.segments]


def test_shipped_segments_without_events_table(spark: SparkSession) -> None:
    config = load_config(SHIPPED_CONF)
    problems = segment_problems(config, profile_schema(), None)
    ids = {problem.segment_id for problem in problems}
    # Every segment that reads xEvent is rejected; the one that depends on such a segment is skipped.
    assert ids == {
        "recent-purchasers",
        "recent-product-viewers",
        "view-then-add-to-cart",
        "high-value-customers",
        "engaged-app-users",
    }
    assert all("no events table" in problem.error.reason for problem in problems)


# --- errors name the file, the segment, the line and column -------------------------------------


def test_syntax_error_names_file_segment_and_position(tmp_path: Path) -> None:
    write_segments(
        tmp_path,
        {
            "segments.yaml": (
                "segments:\n"
                "  - id: fine\n"
                "    name: Fine\n"
                "    expression: {type: PQL, format: pql/text, value: 'loyalty.tier = \"gold\"'}\n"
                "  - id: broken\n"
                "    name: Broken\n"
                "    expression: {type: PQL, format: pql/text, value: 'loyalty.tier = = \"gold\"'}\n"
            )
        },
    )
    config = load_config(tmp_path)
    with pytest.raises(SegmentConfigError) as caught:
        parse_segments(config)
    error = caught.value
    path = tmp_path / "segments.yaml"
    assert error.file == path
    assert error.item == "broken"
    lines = str(error).splitlines()
    assert lines[0].startswith(f"{path}: segment 'broken': unexpected `=`")
    assert lines[0].endswith("(line 1, column 16)")
    assert lines[1] == f'{path}: loyalty.tier = = "gold"'
    assert lines[2] == f"{path}: " + " " * 15 + "^"


def test_errors_in_several_files_name_each_file(tmp_path: Path) -> None:
    write_segments(
        tmp_path,
        {
            "segments.yaml": (
                "segments:\n"
                "  - id: a\n"
                "    name: A\n"
                "    expression: {type: PQL, format: pql/text, value: 'inSegment(\"missing\")'}\n"
            ),
            "segments/extra.yaml": (
                "segments:\n"
                "  - id: b\n"
                "    name: B\n"
                "    expression: {type: PQL, format: pql/text, value: 'vip and inSegment(\"b\")'}\n"
            ),
        },
    )
    config = load_config(tmp_path)
    with pytest.raises(SegmentConfigError) as caught:
        parse_segments(config)
    text = str(caught.value)
    assert f"{tmp_path / 'segments.yaml'}: segment 'a': inSegment: unknown segment id 'missing'" in text
    assert f"{tmp_path / 'segments' / 'extra.yaml'}: segment 'b': inSegment cycle: 'b' -> 'b'" in text
    assert [problem.segment_id for problem in caught.value.problems] == ["a", "b"]
    assert all(isinstance(problem.error, PqlReferenceError) for problem in caught.value.problems)


def test_schema_errors_are_config_errors(spark: SparkSession, tmp_path: Path) -> None:
    segments = [
        segment("ok", 'homeAddress.countryCode = "US"'),
        segment("typo", 'homeAddress.contryCode = "US"'),
        segment("mismatch", "loyalty.tier > 3"),
    ]
    files = {s.id: tmp_path / "segments.yaml" for s in segments}
    with pytest.raises(SegmentConfigError) as caught:
        validate_segments(segments, profile_schema(), event_schema(), files=files)
    problems = caught.value.problems
    assert [(p.segment_id, p.error.line, p.error.column) for p in problems] == [("typo", 1, 13), ("mismatch", 1, 1)]
    assert "did you mean `countryCode`" in problems[0].error.reason
    assert "compares a string with a number" in problems[1].error.reason
    assert str(caught.value).startswith(f"{tmp_path / 'segments.yaml'}: segment 'typo': unknown profile attribute")


# --- classification rules -------------------------------------------------------------------------

WITHIN_24H = "X.timestamp occurs <= 24 hours before now"

CLASSIFICATION_CASES = [
    # profile-only: edge
    ('homeAddress.countryCode = "US"', "edge"),
    ('loyalty.tier in ["gold"] and person.birthDate.getYear() > 1990', "edge"),
    # a single event within 24 hours (+ profile attributes): edge
    (f'select X from xEvent where X.eventType = "commerce.purchases" and {WITHIN_24H}', "edge"),
    (f'homeAddress.countryCode = "US" and (select X from xEvent where X.eventType = "a" and {WITHIN_24H})', "edge"),
    ('xEvent[eventType = "a" and timestamp occurs < 30 minutes before now].count() > 0', "edge"),
    ('xEvent[eventType = "a" and timestamp occurs today]', "edge"),
    ("select X from xEvent where X.timestamp occurs this hour", "edge"),
    ('xEvent[timestamp occurs < 1 day before now][eventType = "a"]', "edge"),
    ('chain(xEvent, timestamp, [A: WHAT(eventType = "a") WHEN(today)])', "edge"),
    # several events within 24 hours, not a sequence: still edge (docs/segments.md)
    (
        'xEvent[eventType = "a" and timestamp occurs <= 24 hours before now] and '
        'xEvent[eventType = "b" and timestamp occurs <= 2 hours before now]',
        "edge",
    ),
    ('xEvent[eventType = "a" and timestamp occurs < 24 hours before now].count() >= 3', "edge"),
    # a negated event next to a positive one is allowed
    (
        'xEvent[eventType = "a" and timestamp occurs <= 24 hours before now] and '
        'not xEvent[eventType = "b" and timestamp occurs <= 24 hours before now]',
        "edge",
    ),
    # multi-event sequences within 24 hours: streaming, not edge
    (
        'chain(xEvent, timestamp, [A: WHAT(eventType = "a") WHEN(<= 24 hours before now), '
        'B: WHAT(eventType = "b") WHEN(<= 24 hours before now)])',
        "streaming",
    ),
    (
        'select A from xEvent where A.eventType = "a" and A.timestamp occurs < 24 hours before now, '
        'B from xEvent where B.eventType = "b" and B.timestamp occurs < 24 hours before now '
        "and B.timestamp > A.timestamp",
        "streaming",
    ),
    # no window, or a window over 24 hours: batch
    ('select X from xEvent where X.eventType = "a"', "batch"),
    ('select X from xEvent where X.eventType = "a" and X.timestamp occurs <= 2 days before now', "batch"),
    ('select X from xEvent where X.eventType = "a" and X.timestamp occurs < 25 hours before now', "batch"),
    ("select X from xEvent where X.timestamp occurs last week", "batch"),
    ('xEvent[eventType = "a"].sum(commerce.order.priceTotal) > 100', "batch"),
    ("xEvent.count() > 0", "batch"),
    ('xEvent.web.webPageDetails.name = "home"', "batch"),
    (
        'chain(xEvent, timestamp, [A: WHAT(eventType = "a") WHEN(<= 24 hours before now), B: WHAT(eventType = "b")])',
        "batch",
    ),
    # the window must constrain the event itself, not just appear somewhere
    ('select X from xEvent where X.eventType = "a" or X.timestamp occurs <= 1 hour before now', "batch"),
    # the whole event condition is a negation: batch
    (f'not (select X from xEvent where X.eventType = "a" and {WITHIN_24H})', "batch"),
    ('forall X from xEvent[timestamp occurs <= 24 hours before now] : X.eventType = "a"', "batch"),
]


@pytest.mark.parametrize(("pql", "method"), CLASSIFICATION_CASES, ids=[c[0] for c in CLASSIFICATION_CASES])
def test_classification_rule(pql: str, method: str) -> None:
    result = classify_segments([segment("s", pql)])["s"]
    assert result.method.value == method, result.reason


def test_classification_of_segments_of_segments() -> None:
    segments = [
        segment("profile", 'homeAddress.countryCode = "US"'),
        segment("event", f'select X from xEvent where X.eventType = "a" and {WITHIN_24H}'),
        segment(
            "sequence",
            'chain(xEvent, timestamp, [A: WHAT(eventType = "a") WHEN(<= 1 hour before now), '
            'B: WHAT(eventType = "b") WHEN(<= 1 hour before now)])',
        ),
        segment("old", 'select X from xEvent where X.eventType = "a"'),
        segment("forced", 'homeAddress.countryCode = "CA"', batch=True),
        segment("of-profile", 'inSegment("profile") and vip'),
        segment("of-event", 'inSegment("event") or inSegment("profile")'),
        segment("of-sequence", 'inSegment("sequence")'),
        segment("of-batch", 'inSegment("old")'),
        segment("of-forced", 'inSegment("forced")'),
        segment("event-and-profile-segment", f'inSegment("profile") and (select X from xEvent where {WITHIN_24H})'),
        segment("event-and-event-segment", f'inSegment("event") and (select X from xEvent where {WITHIN_24H})'),
        segment("of-of-profile", 'inSegment("of-profile")'),
    ]
    result = classify_segments(segments)
    methods = {segment_id: c.method for segment_id, c in result.items()}
    assert methods == {
        "profile": EvaluationMethod.EDGE,
        "event": EvaluationMethod.EDGE,
        "sequence": EvaluationMethod.STREAMING,
        "old": EvaluationMethod.BATCH,
        "forced": EvaluationMethod.BATCH,
        "of-profile": EvaluationMethod.EDGE,
        "of-event": EvaluationMethod.EDGE,
        "of-sequence": EvaluationMethod.STREAMING,
        "of-batch": EvaluationMethod.BATCH,
        "of-forced": EvaluationMethod.BATCH,
        "event-and-profile-segment": EvaluationMethod.EDGE,
        "event-and-event-segment": EvaluationMethod.BATCH,
        "of-of-profile": EvaluationMethod.EDGE,
    }
    assert result["profile"].profile_only and result["of-of-profile"].profile_only
    assert not result["of-event"].profile_only
    assert result["forced"].reason == "evaluation: batch in the configuration"
    assert "inSegment('old')" in result["of-batch"].reason
    assert "not profile-only" in result["event-and-event-segment"].reason


def test_classification_reason_points_at_the_event_condition() -> None:
    result = classify_segments(
        [
            segment(
                "s",
                'vip and\n  (select X from xEvent where X.eventType = "a" and X.timestamp occurs <= 2 days before now)',
            )
        ]
    )["s"]
    assert result.method is EvaluationMethod.BATCH
    assert "line 2, column 4" in result.reason


# --- evaluation through the segment layer ---------------------------------------------------------


def test_evaluate_configured_segments(spark: SparkSession) -> None:
    profiles = spark.createDataFrame(
        [("p1", ("US", "Springfield"), ("gold", 10, None)), ("p2", ("CA", "Toronto"), None)],
        "person_id string, homeAddress struct<countryCode: string, city: string>, "
        "loyalty struct<tier: string, points: bigint, lifetimeValue: decimal(12,2)>",
    )
    events = spark.createDataFrame(
        [
            ("p2", "e1", T - dt.timedelta(hours=2), "commerce.productViews"),
            ("p1", "e2", T - dt.timedelta(days=3), "commerce.productViews"),
        ],
        "person_id string, _id string, timestamp timestamp, eventType string",
    )
    segments = [
        segment("us", 'homeAddress.countryCode = "US"'),
        segment("viewer", f'select X from xEvent where X.eventType = "commerce.productViews" and {WITHIN_24H}'),
        segment("us-or-viewer", 'inSegment("us") or inSegment("viewer")'),
        segment("gold-viewer", 'loyalty.tier = "gold" and inSegment("viewer")'),
    ]
    result = evaluate_segments(segments, profiles, events, T)
    assert result.columns == ["person_id", "us", "viewer", "us-or-viewer", "gold-viewer"]
    rows = sorted(tuple(row) for row in result.collect())
    assert rows == [("p1", True, False, True, False), ("p2", False, True, True, False)]


def test_compiled_segments_expose_classification(spark: SparkSession) -> None:
    compiled = compile_segments(
        [
            segment("us", 'homeAddress.countryCode = "US"'),
            segment("old", 'select X from xEvent where X.eventType = "a"'),
        ],
        profile_schema(),
        event_schema(),
        T,
    )
    assert {k: v.method.value for k, v in compiled.classification.items()} == {"us": "edge", "old": "batch"}
    assert compiled.segment_ids == ("us", "old")
    assert compiled.needs_events
