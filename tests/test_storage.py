"""Storage engines: every behaviour of CONTRACT §2 on tiny hand-made tables.

Tables written by the delta-rs engine are also read back by ``deltalake.DeltaTable(...).to_pyarrow_table()``,
an independent reader, which must see identical rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable, TableFeatures, write_deltalake
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from audience_activation.storage import (
    ConcurrentWriteError,
    DeltaRsStorage,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    UnsupportedTableFeatureError,
    delta_spark_available,
    open_storage,
)

UTC = dt.timezone.utc

RICH_DDL = """
    part string,
    seq long,
    amount decimal(12,2),
    seen_at timestamp,
    birth date,
    identityMap map<string, array<struct<id: string, primary: boolean>>>,
    person struct<name: struct<firstName: string, lastName: string>, tags: array<string>>,
    prefs map<string, string>
"""

RICH_ROWS = [
    (
        "a b:c/d=e%",  # a partition value full of characters that need escaping in directory names
        1,
        Decimal("1234567890.12"),
        dt.datetime(2026, 11, 29, 10, 15, 30, 123456),
        dt.date(1980, 2, 29),
        {"ECID": [("12345678901234567890123456789012345678", True)], "Email": [("a@x.com", False)]},
        (("Ann", "Lee"), ["x", "y"]),
        {"k": "v"},
    ),
    ("p2", 2, Decimal("-0.01"), dt.datetime(1970, 1, 1, 0, 0, 0, 1), None, {}, (None, []), None),
    ("p2", 3, None, None, dt.date(2026, 1, 1), None, None, {}),
]


@pytest.fixture()
def store(spark: SparkSession) -> DeltaRsStorage:
    return DeltaRsStorage(spark)


def rich_df(spark: SparkSession):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(RICH_ROWS, RICH_DDL)


def arrow_rows(path: Path | str) -> list[dict]:
    """Rows as the independent delta-rs reader sees them, ordered by ``seq``."""
    table = DeltaTable(str(path)).to_pyarrow_table()
    return sorted(table.to_pylist(), key=lambda row: row["seq"])


def test_round_trip_is_exact_for_engine_and_independent_reader(
    spark: SparkSession, store: DeltaRsStorage, lake: Path
) -> None:
    location = str(lake / "rich")
    version = store.overwrite(rich_df(spark), location, partition_by=["part"])
    assert version == 0

    snapshot = store.read(location)
    assert snapshot.version == 0
    # Maps cannot be sorted by Spark, so order by the key column instead of ignore_row_order.
    assert_df_equality(snapshot.df.orderBy("seq"), rich_df(spark).orderBy("seq"), ignore_nullable=True)

    rows = arrow_rows(location)
    assert rows[0]["part"] == "a b:c/d=e%"
    assert rows[0]["amount"] == Decimal("1234567890.12")
    assert rows[0]["seen_at"] == dt.datetime(2026, 11, 29, 10, 15, 30, 123456, tzinfo=UTC)
    assert rows[0]["birth"] == dt.date(1980, 2, 29)
    assert sorted(rows[0]["identityMap"]) == [
        ("ECID", [{"id": "12345678901234567890123456789012345678", "primary": True}]),
        ("Email", [{"id": "a@x.com", "primary": False}]),
    ]
    assert rows[0]["person"] == {"name": {"firstName": "Ann", "lastName": "Lee"}, "tags": ["x", "y"]}
    assert rows[0]["prefs"] == [("k", "v")]
    assert rows[1] == {
        "part": "p2",
        "seq": 2,
        "amount": Decimal("-0.01"),
        "seen_at": dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "birth": None,
        "identityMap": [],
        "person": {"name": None, "tags": []},
        "prefs": None,
    }
    assert rows[2]["person"] is None and rows[2]["prefs"] == [] and rows[2]["identityMap"] is None


def test_timestamps_are_written_as_timestamp_micros(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = lake / "ts"
    store.overwrite(rich_df(spark).select("seq", "seen_at"), str(location))
    files = DeltaTable(str(location)).file_uris()
    import pyarrow.parquet as pq

    field = pq.read_schema(files[0]).field("seen_at")
    assert field.type == pa.timestamp("us", tz="UTC")


def test_append_versions_history_and_time_travel(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "t")
    assert not store.exists(location)
    df1 = spark.createDataFrame([(1, "a")], "k int, v string")
    df2 = spark.createDataFrame([(2, "b")], "k int, v string")
    assert store.append(df1, location, commit_info={"run_id": "r1"}) == 0
    assert store.append(df2, location, commit_info={"run_id": "r2"}) == 1
    assert store.exists(location)
    assert store.version(location) == 1

    latest = store.read(location)
    assert latest.version == 1
    assert sorted(latest.df.collect()) == [Row(k=1, v="a"), Row(k=2, v="b")]
    old = store.read(location, version=0)
    assert old.version == 0 and old.df.collect() == [Row(k=1, v="a")]

    history = store.history(location)
    assert [entry["version"] for entry in history] == [1, 0]
    assert [entry["run_id"] for entry in history] == ["r2", "r1"]
    assert all(entry["engine"] == "delta-rs" for entry in history)
    assert sorted(row["k"] for row in arrow_rows_any(location)) == [1, 2]


def arrow_rows_any(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def test_overwrite_replaces_everything(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,), (2,)], "k int"), location)
    assert store.overwrite(spark.createDataFrame([(3,)], "k int"), location) == 1
    assert store.read(location).df.collect() == [Row(k=3)]
    assert arrow_rows_any(location) == [{"k": 3}]


def test_replace_partitions_touches_only_the_matching_partition(
    spark: SparkSession, store: DeltaRsStorage, lake: Path
) -> None:
    location = str(lake / "runs")
    first = spark.createDataFrame([("r1", 1), ("r1", 2), ("r2", 3)], "run_id string, k int")
    store.append(first, location, partition_by=["run_id"])
    redo = spark.createDataFrame([("r1", 10)], "run_id string, k int")
    assert store.replace_partitions(redo, location, {"run_id": "r1"}) == 1
    expected = spark.createDataFrame([("r1", 10), ("r2", 3)], "run_id string, k int")
    assert_df_equality(store.read(location).df, expected, ignore_row_order=True, ignore_nullable=True)
    assert sorted((row["run_id"], row["k"]) for row in arrow_rows_any(location)) == [("r1", 10), ("r2", 3)]

    # A new partition can be written the same way (idempotent re-runs of a new run id).
    store.replace_partitions(spark.createDataFrame([("r3", 7)], "run_id string, k int"), location, {"run_id": "r3"})
    assert sorted(r.k for r in store.read(location).df.collect()) == [3, 7, 10]


def test_replace_partitions_rejects_rows_outside_the_predicate(
    spark: SparkSession, store: DeltaRsStorage, lake: Path
) -> None:
    location = str(lake / "runs")
    store.append(spark.createDataFrame([("r1", 1)], "run_id string, k int"), location, partition_by=["run_id"])
    bad = spark.createDataFrame([("r1", 5), ("r2", 6)], "run_id string, k int")
    with pytest.raises(Exception, match="outside the partition being replaced"):
        store.replace_partitions(bad, location, {"run_id": "r1"})
    assert store.version(location) == 0
    assert store.read(location).df.collect() == [Row(run_id="r1", k=1)]
    assert not [p for p in os.listdir(location) if p.startswith("write-") and p != _committed_dir(location)]
    with pytest.raises(ValueError, match="not partition columns"):
        store.replace_partitions(bad, location, {"k": 5})


def _committed_dir(location: str) -> str:
    return DeltaTable(location).get_add_actions(flatten=True).column("path")[0].as_py().split("/")[0]


def test_create_empty_table_and_schema(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "empty")
    schema = rich_df(spark).schema
    assert store.create(location, schema, partition_by=["part"]) == 0
    assert store.read(location).df.count() == 0
    assert [f.name for f in store.schema(location).fields] == [f.name for f in schema.fields]
    assert DeltaTable(location).metadata().partition_columns == ["part"]
    with pytest.raises(StorageError, match="already exists"):
        store.create(location, schema)


def test_schema_mismatch_is_refused(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1, "a")], "k int, v string"), location)
    with pytest.raises(SchemaMismatchError, match=r"column 'k' is string, table has int"):
        store.append(spark.createDataFrame([("x", "a")], "k string, v string"), location)
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['v'\]"):
        store.append(spark.createDataFrame([(1,)], "k int"), location)
    # Column order does not matter: columns are matched by name.
    store.append(spark.createDataFrame([("b", 2)], "v string, k int"), location)
    assert sorted(store.read(location).df.collect()) == [Row(k=1, v="a"), Row(k=2, v="b")]


def test_missing_table_is_a_clear_error(store: DeltaRsStorage, lake: Path) -> None:
    with pytest.raises(TableNotFoundError, match="no Delta table"):
        store.read(str(lake / "nope"))


def test_concurrent_commit_conflict_leaves_table_intact(
    spark: SparkSession, store: DeltaRsStorage, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    original = DeltaRsStorage._write_files

    def write_then_lose_the_race(self, df, staging, partition_columns):  # type: ignore[no-untyped-def]
        original(self, df, staging, partition_columns)
        # Another writer commits while our files are staged but not yet committed.
        write_deltalake(location, pa.table({"k": pa.array([99], pa.int32())}), mode="append")

    monkeypatch.setattr(DeltaRsStorage, "_write_files", write_then_lose_the_race)
    with pytest.raises(ConcurrentWriteError, match="another writer committed"):
        store.overwrite(spark.createDataFrame([(2,)], "k int"), location)
    monkeypatch.undo()

    assert store.version(location) == 1
    assert sorted(row["k"] for row in arrow_rows_any(location)) == [1, 99]
    assert sorted(r.k for r in store.read(location).df.collect()) == [1, 99]
    staged = [p for p in os.listdir(location) if p.startswith("write-")]
    assert len(staged) == 1  # only the first committed write's directory; the loser's files were deleted


def test_failed_write_is_invisible_and_removed(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    boom = spark.range(10).select(
        F.when(F.col("id") < 9, F.col("id")).otherwise(F.raise_error(F.lit("injected failure"))).cast("int").alias("k")
    )
    with pytest.raises(Exception, match="injected failure"):
        store.append(boom, location)
    assert store.version(location) == 0
    assert store.read(location).df.collect() == [Row(k=1)]
    assert len([p for p in os.listdir(location) if p.startswith("write-")]) == 1


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from audience_activation.session import build_session
    from audience_activation.storage import DeltaRsStorage

    location, marker = sys.argv[1], Path(sys.argv[2])
    spark = build_session("killed-writer", master="local[1]", shuffle_partitions=1,
                          extra_conf={"spark.ui.enabled": "false"})
    original = DeltaRsStorage._write_files

    def write_then_hang(self, df, staging, partition_columns):
        original(self, df, staging, partition_columns)
        marker.write_text(staging)
        time.sleep(600)  # killed here: files written, commit never made

    DeltaRsStorage._write_files = write_then_hang
    DeltaRsStorage(spark).append(spark.createDataFrame([(2,)], "k int"), location)
    """
)


def test_killed_write_is_ignored_by_readers_and_cleaned_up(
    spark: SparkSession, store: DeltaRsStorage, lake: Path, tmp_path: Path
) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    marker = tmp_path / "staged"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), location, str(marker)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before staging its files"
            assert time.monotonic() < deadline, "the writer did not stage its files in time"
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    staged_dir = Path(marker.read_text().removeprefix("file://"))
    assert any(staged_dir.rglob("*.parquet")), "the killed write left its data files"

    # Readers see only committed data.
    assert store.read(location).df.collect() == [Row(k=1)]
    assert arrow_rows_any(location) == [{"k": 1}]
    # A recent leftover may belong to a write still running: kept by default.
    assert store.cleanup(location) == []
    removed = store.cleanup(location, older_than=dt.timedelta(0))
    assert removed == [f"{os.path.abspath(location)}/{staged_dir.name}"]
    assert not staged_dir.exists()
    assert store.read(location).df.collect() == [Row(k=1)]
    assert store.cleanup(location, older_than=dt.timedelta(0)) == []


def test_unsupported_reader_feature_names_table_and_feature(store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "dv")
    write_deltalake(location, pa.table({"k": [1, 2]}))
    DeltaTable(location).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    with pytest.raises(
        UnsupportedTableFeatureError, match=r"table .*dv uses the Delta reader feature\(s\) deletionVectors"
    ):
        store.read(location)


def test_column_mapping_is_refused(store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "cm")
    write_deltalake(location, pa.table({"k": [1]}), configuration={"delta.columnMapping.mode": "name"})
    with pytest.raises(UnsupportedTableFeatureError, match="columnMapping"):
        store.read(location)


def test_reads_tables_written_by_delta_rs_itself(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    location = str(lake / "foreign")
    data = pa.table({"region": ["VA6", "OR2", "VA6"], "n": [1, 2, 3]})
    write_deltalake(location, data, partition_by=["region"])
    snapshot = store.read(location)
    expected = spark.createDataFrame([("VA6", 1), ("OR2", 2), ("VA6", 3)], "region string, n long")
    assert_df_equality(snapshot.df, expected, ignore_row_order=True, ignore_nullable=True)


def test_partition_type_must_be_supported(spark: SparkSession, store: DeltaRsStorage, lake: Path) -> None:
    df = spark.createDataFrame([(1.5, 1)], "d double, k int")
    with pytest.raises(SchemaMismatchError, match="partition column 'd' has type double"):
        store.append(df, str(lake / "t"), partition_by=["d"])


def test_auto_engine_logs_its_choice(spark: SparkSession, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="audience_activation.storage"):
        store = open_storage(spark, "auto")
    expected = "delta-spark" if delta_spark_available(spark) else "delta-rs"
    assert store.name == expected
    assert f"Storage engine: {expected} (auto: Delta Spark connector" in caplog.text
    with pytest.raises(ValueError, match="unknown storage engine"):
        open_storage(spark, "parquet")


def test_delta_spark_engine_contract(spark: SparkSession, lake: Path) -> None:
    """The same behaviours through the Delta Spark connector; needs its jars on the classpath."""
    if not delta_spark_available(spark):
        pytest.skip(
            "Delta Lake Spark jars are not on the classpath (no Maven access here); "
            "run with spark.jars.packages=io.delta:delta-spark_4.2_2.13:4.4.1 to include this test"
        )
    store = open_storage(spark, "delta-spark")
    location = str(lake / "ds")
    store.overwrite(rich_df(spark), location, partition_by=["part"])
    assert_df_equality(store.read(location).df.orderBy("seq"), rich_df(spark).orderBy("seq"), ignore_nullable=True)
    assert arrow_rows(location)[0]["part"] == "a b:c/d=e%"
    store.replace_partitions(rich_df(spark).where("part = 'p2'"), location, {"part": "p2"})
    assert store.read(location).df.count() == 3


def test_delta_spark_engine_unavailable_here_is_clear(spark: SparkSession) -> None:
    if delta_spark_available(spark):
        pytest.skip("the Delta Spark connector is on the classpath in this environment")
    with pytest.raises(StorageError, match="Delta Lake Spark connector is not on the classpath"):
        open_storage(spark, "delta-spark")


def test_partition_types_and_null_partition_values_round_trip(
    spark: SparkSession, store: DeltaRsStorage, lake: Path
) -> None:
    location = str(lake / "parts")
    df = spark.createDataFrame(
        [(dt.date(2026, 11, 29), 7, True, "x", 1), (dt.date(2026, 1, 1), -1, False, None, 2)],
        "d date, n int, b boolean, s string, v long",
    )
    store.overwrite(df, location, partition_by=["d", "n", "b", "s"])
    assert sorted(store.read(location).df.collect(), key=lambda r: r.v) == sorted(df.collect(), key=lambda r: r.v)
    assert sorted(arrow_rows_any(location), key=lambda r: r["v"]) == [
        {"d": dt.date(2026, 11, 29), "n": 7, "b": True, "s": "x", "v": 1},
        {"d": dt.date(2026, 1, 1), "n": -1, "b": False, "s": None, "v": 2},
    ]
    store.replace_partitions(
        df.where("v = 1").withColumn("v", F.lit(10).cast("long")),
        location,
        {"d": "2026-11-29", "n": 7, "b": True, "s": "x"},
    )
    assert sorted(r.v for r in store.read(location).df.collect()) == [2, 10]


def test_written_version_is_the_writes_own_commit(
    spark: SparkSession, store: DeltaRsStorage, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version returned is the commit carrying the write's id, not whatever is latest afterwards."""
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    original = DeltaRsStorage._committed_version

    def another_writer_commits_right_after(self, loc, write_id):  # type: ignore[no-untyped-def]
        write_deltalake(location, pa.table({"k": pa.array([5], pa.int32())}), mode="append")
        monkeypatch.setattr(DeltaRsStorage, "_committed_version", original)
        return original(self, loc, write_id)

    monkeypatch.setattr(DeltaRsStorage, "_committed_version", another_writer_commits_right_after)
    assert store.append(spark.createDataFrame([(2,)], "k int"), location) == 1
    assert store.version(location) == 2
