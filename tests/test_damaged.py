"""Damaged tables (a data file missing or unreadable, a log entry truncated) give one clean message naming the
table and the file, on both storage engines, and the command exits non-zero with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from audience_activation.cli import cli
from audience_activation.storage import DamagedTableError, DeltaStorage

# The CLI builds its session through the factory, which re-applies job.yaml settings to the shared test
# session: put the test settings back afterwards.
pytestmark = pytest.mark.usefixtures("restore_spark_conf")


def data_files(table: Path) -> list[Path]:
    """The data files of the table's current version (not files no commit mentions)."""
    return sorted(Path(uri.removeprefix("file://")) for uri in DeltaTable(str(table)).file_uris())


def two_versions(spark: SparkSession, store: DeltaStorage, table: Path) -> None:
    store.overwrite(spark.createDataFrame([(1, "a"), (2, "b")], "n int, s string"), str(table))
    store.append(spark.createDataFrame([(3, "c")], "n int, s string"), str(table))


def test_a_missing_data_file_is_named(spark: SparkSession, store: DeltaStorage, tmp_path: Path) -> None:
    table = tmp_path / "t"
    two_versions(spark, store, table)
    victim = data_files(table)[0]
    victim.unlink()
    with pytest.raises(DamagedTableError) as error:
        store.read(str(table))
    message = str(error.value)
    assert f"table {table} is damaged: a data file of its current version is missing" in message
    assert victim.name in message and "\n" not in message


def test_a_data_file_missing_since_its_version_was_read_is_named(
    spark: SparkSession, store: DeltaStorage, tmp_path: Path
) -> None:
    """The delta-spark engine keeps the versions it read: reading one again still checks its data files."""
    table = tmp_path / "t"
    two_versions(spark, store, table)
    assert sorted(store.read(str(table), 1).df.collect()) == [(1, "a"), (2, "b"), (3, "c")]
    victim = data_files(table)[0]
    victim.unlink()
    with pytest.raises(DamagedTableError, match="a data file of its current version is missing") as error:
        store.read(str(table), 1)
    assert victim.name in str(error.value)


def test_a_truncated_log_entry_is_named(spark: SparkSession, store: DeltaStorage, tmp_path: Path) -> None:
    table = tmp_path / "t"
    two_versions(spark, store, table)
    entry = table / "_delta_log" / f"{1:020d}.json"
    entry.write_bytes(entry.read_bytes()[: len(entry.read_bytes()) // 2])
    with pytest.raises(DamagedTableError) as error:
        store.read(str(table))
    message = str(error.value)
    assert f"table {table} is damaged: an entry of its Delta log cannot be read: {entry}" in message
    assert "\n" not in message and "backtrace" not in message.lower()


@pytest.mark.parametrize("damage", ["missing data file", "unreadable data file"])
def test_run_on_a_damaged_input_exits_1_with_one_message(
    spark: SparkSession, conf: Path, tmp_path: Path, damage: str
) -> None:
    lake = tmp_path / "lake"
    runner = CliRunner()
    args = ["--conf", str(conf), "--lake-root", str(lake)]
    assert runner.invoke(cli, ["demo-data", *args, "--persons", "20", "--as-of", "2026-11-29T00:00:00Z"]).exit_code == 0
    victim = data_files(lake / "profile_fragments")[0]
    if damage == "missing data file":
        victim.unlink()
    else:
        victim.write_bytes(b"this is not parquet")
    result = runner.invoke(cli, ["run", *args, "--evaluation-time", "2026-11-29T00:00:00Z"])
    assert result.exit_code == 1, result.output
    assert "profile_fragments is damaged" in result.output and victim.name in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) <= 6, result.output
    # Nothing written (the run stopped before its first commit): only the released lease is new.
    inputs = ("profile_fragments", "experience_events", "identity_graph", "region_information")
    assert sorted(p.name for p in lake.iterdir() if p.name not in inputs) == ["_lease"]
