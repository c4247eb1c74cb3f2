"""Malformed input stops a run before anything is written, naming table and column."""

from __future__ import annotations

import pytest
from pyspark.sql.types import StructField, StructType

from audience_activation.schemas import REQUIRED_COLUMNS, InputSchemaError, check_input_schemas, schema_problems

GOOD_FRAGMENTS = StructType.fromJson(
    {
        "type": "struct",
        "fields": [
            {"name": name, "type": data_type.jsonValue(), "nullable": True, "metadata": {}}
            for name, data_type in REQUIRED_COLUMNS["profile_fragments"].items()
        ]
        + [{"name": "loyalty", "type": {"type": "struct", "fields": []}, "nullable": True, "metadata": {}}],
    }
)


def test_good_schema_has_no_problems() -> None:
    assert schema_problems("profile_fragments", GOOD_FRAGMENTS) == []
    check_input_schemas({"profile_fragments": GOOD_FRAGMENTS, "experience_events": None, "identity_graph": None})


def test_missing_and_mistyped_columns_are_named() -> None:
    fields = [
        StructField(f.name, StructType([]) if f.name == "ingested_at" else f.dataType)  # ingested_at mistyped
        for f in GOOD_FRAGMENTS.fields
        if f.name != "dataset"
    ]
    schema = StructType(fields)
    with pytest.raises(InputSchemaError) as info:
        check_input_schemas({"profile_fragments": schema})
    message = str(info.value)
    assert "input table profile_fragments: column dataset: missing (required, type string)" in message
    assert "input table profile_fragments: column ingested_at: has type struct<>, expected timestamp" in message
    assert [(p.table, p.column) for p in info.value.problems] == [
        ("profile_fragments", "dataset"),
        ("profile_fragments", "ingested_at"),
    ]


def test_identity_map_must_be_the_xdm_shape() -> None:
    schema = StructType.fromJson(
        {
            "type": "struct",
            "fields": [
                {"name": "_id", "type": "string", "nullable": True, "metadata": {}},
                {"name": "timestamp", "type": "timestamp", "nullable": True, "metadata": {}},
                {"name": "eventType", "type": "string", "nullable": True, "metadata": {}},
                {
                    "name": "identityMap",
                    "type": {"type": "map", "keyType": "string", "valueType": "string", "valueContainsNull": True},
                    "nullable": True,
                    "metadata": {},
                },
            ],
        }
    )
    assert [str(p) for p in schema_problems("experience_events", schema)] == [
        "input table experience_events: column identityMap: has type map<string,string>, "
        "expected map<string,array<struct<id:string,primary:boolean>>>"
    ]


def test_missing_required_table_is_an_error_optional_is_not() -> None:
    with pytest.raises(InputSchemaError, match="input table profile_fragments: column \\*: the table does not exist"):
        check_input_schemas({"profile_fragments": None})
    check_input_schemas({"profile_fragments": GOOD_FRAGMENTS, "region_information": None})
