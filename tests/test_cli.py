"""The console command: what users see for good and bad configuration and input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from audience_activation.cli import cli
from audience_activation.runlog import parse_utc_time, run_id
from audience_activation.storage import open_storage

CONF = Path(__file__).resolve().parents[1] / "conf"
runner = CliRunner()
# The commands build their session through the factory, which re-applies job.yaml settings.
pytestmark = pytest.mark.usefixtures("restore_spark_conf")


def test_demo_data_then_validate(spark: SparkSession, tmp_path: Path, conf: Path, engine: str) -> None:
    lake = tmp_path / "lake"
    result = runner.invoke(
        cli,
        [
            "demo-data",
            "--conf",
            str(conf),
            "--lake-root",
            str(lake),
            "--persons",
            "5",
            "--as-of",
            "2026-11-29T00:00:00Z",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "profile_fragments" in result.output and "region_information" in result.output
    result = runner.invoke(cli, ["validate", "--conf", str(conf), "--lake-root", str(lake)])
    assert result.exit_code == 0, result.output
    assert "valid: configuration (" in result.output and "segment definitions and input schemas" in result.output
    assert "Configuration OK" not in result.output  # success is claimed once, after every check
    assert f"storage engine {engine}" in result.output


def test_bad_configuration_exits_2_naming_file_and_item(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "destinations.yaml").read_text()
    (conf / "destinations.yaml").write_text(text.replace("segments: [us-residents,", "segments: [no-such-segment,", 1))
    result = runner.invoke(cli, ["validate", "--conf", str(conf), "--lake-root", str(tmp_path / "lake")])
    assert result.exit_code == 2
    assert "configuration error" in result.output
    assert "destinations.yaml" in result.output and "no-such-segment" in result.output


def test_malformed_input_exits_1_naming_table_and_column(
    spark: SparkSession, tmp_path: Path, conf: Path, engine: str
) -> None:
    lake = tmp_path / "lake"
    fragments = spark.createDataFrame(
        [({"ECID": [("1" * 38, True)]}, "web", "2026-11-01")],
        "identityMap map<string, array<struct<id: string, primary: boolean>>>, dataset string, ingested_at string",
    )
    open_storage(spark, engine).overwrite(fragments, str(lake / "profile_fragments"))
    result = runner.invoke(cli, ["validate", "--conf", str(conf), "--lake-root", str(lake)])
    assert result.exit_code == 1
    assert "input table profile_fragments: column ingested_at: has type string, expected timestamp" in result.output


def test_missing_required_table_is_reported(spark: SparkSession, tmp_path: Path, conf: Path) -> None:
    result = runner.invoke(cli, ["validate", "--conf", str(conf), "--lake-root", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "profile_fragments" in result.output and "does not exist" in result.output


def test_parse_utc_time() -> None:
    assert parse_utc_time("2026-11-29T00:00:00Z").isoformat() == "2026-11-29T00:00:00+00:00"
    assert parse_utc_time("2026-11-29T01:30:00.9+01:00").isoformat() == "2026-11-29T00:30:00+00:00"
    assert parse_utc_time("2026-11-29 12:00").isoformat() == "2026-11-29T12:00:00+00:00"
    with pytest.raises(ValueError):
        parse_utc_time("yesterday")


def test_run_id_is_derived_from_kind_and_time() -> None:
    assert run_id("batch", parse_utc_time("2026-11-29T00:00:00Z")) == "batch-20261129T000000Z"
    assert run_id("identity", parse_utc_time("2026-11-29T13:05:09+02:00")) == "identity-20261129T110509Z"


def test_identities_job_writes_clusters_and_quarantine_idempotently(
    spark: SparkSession, tmp_path: Path, conf: Path
) -> None:
    from deltalake import DeltaTable

    lake = tmp_path / "lake"
    args = ["--conf", str(conf), "--lake-root", str(lake)]
    assert runner.invoke(cli, ["demo-data", *args, "--persons", "30", "--as-of", "2026-11-29T00:00:00Z"]).exit_code == 0
    for _ in range(2):  # the second run of the same T replaces the first one's quarantine rows
        result = runner.invoke(cli, ["identities", *args, "--evaluation-time", "2026-11-29T00:00:00Z"])
        assert result.exit_code == 0, result.output
        assert "identity-20261129T000000Z" in result.output
    quarantine = DeltaTable(str(lake / "quarantine")).to_pyarrow_table().to_pylist()
    reasons = sorted((row["source_table"], row["reason"]) for row in quarantine)
    assert reasons == [
        ("experience_events", "bad_ecid"),
        ("experience_events", "no_valid_identity"),
        ("experience_events", "no_valid_identity"),
        ("experience_events", "reserved_value"),
        ("identity_graph", "hub_identity"),
        ("profile_fragments", "bad_ecid"),
        ("profile_fragments", "bad_email_sha256"),
        ("profile_fragments", "empty"),
        ("profile_fragments", "no_valid_identity"),
        ("profile_fragments", "reserved_value"),
        ("profile_fragments", "reserved_value"),
        ("profile_fragments", "reserved_value"),
        ("profile_fragments", "too_long"),
    ]
    assert {row["run_id"] for row in quarantine} == {"identity-20261129T000000Z"}
    clusters = DeltaTable(str(lake / "identity_clusters")).to_pyarrow_table().to_pylist()
    shared = [row for row in clusters if row["id"] == "9" * 38]
    # The shared browser went to the customer who logged in last (C000000002), not C000000001.
    assert [row["person_id"] for row in shared] == ["CRMID:C000000002"]
    hub = "00000000-0000-0000-0000-000000000000"
    assert [(r["person_id"], r["graph_size"]) for r in clusters if r["id"] == hub] == [(f"IDFA:{hub}", 1)]


def test_validate_rejects_a_segment_on_an_unknown_attribute(spark: SparkSession, tmp_path: Path, conf: Path) -> None:
    lake = tmp_path / "lake"
    args = ["--conf", str(conf), "--lake-root", str(lake)]
    assert runner.invoke(cli, ["demo-data", *args, "--persons", "5", "--as-of", "2026-11-29T00:00:00Z"]).exit_code == 0
    text = (conf / "segments.yaml").read_text()
    (conf / "segments.yaml").write_text(
        text.replace('value: homeAddress.countryCode = "US"', 'value: homeAddress.contryCode = "US"', 1)
    )
    result = runner.invoke(cli, ["validate", "--conf", str(conf), "--lake-root", str(lake)])
    assert result.exit_code == 2, result.output
    assert "segments.yaml" in result.output and "us-residents" in result.output and "contryCode" in result.output


def test_preview_writes_nothing_then_run_prints_the_summary(
    spark: SparkSession, tmp_path: Path, conf: Path, engine: str
) -> None:
    lake = tmp_path / "lake"
    args = ["--conf", str(conf), "--lake-root", str(lake)]
    assert runner.invoke(cli, ["demo-data", *args, "--persons", "20", "--as-of", "2026-11-29T00:00:00Z"]).exit_code == 0
    preview = runner.invoke(cli, ["preview", *args, "--evaluation-time", "2026-11-29T00:00:00Z"])
    assert preview.exit_code == 0, preview.output
    assert "Preview of batch-20261129T000000Z (nothing written)" in preview.output
    assert "Changes per destination" in preview.output
    # Only the inputs: no output table (the emptied scratch folder of the lineage barrier may remain).
    assert sorted(p.name for p in lake.iterdir() if p.name != "_scratch") == [
        "experience_events",
        "identity_graph",
        "profile_fragments",
        "region_information",
    ]
    assert not any((lake / "_scratch").rglob("*.parquet"))
    run = runner.invoke(cli, ["run", *args, "--evaluation-time", "2026-11-29T00:00:00Z"])
    assert run.exit_code == 0, run.output
    assert "Run batch-20261129T000000Z: completed" in run.output
    assert f"storage engine {engine}" in run.output
    older = runner.invoke(cli, ["run", *args, "--evaluation-time", "2026-11-28T00:00:00Z"])
    assert older.exit_code == 1 and "older than the newest completed run" in older.output
