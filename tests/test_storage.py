"""Storage engines: every behaviour of docs/storage.md on tiny hand-made tables, on both engines.

Each test takes the ``store`` fixture and runs once with the delta-rs engine and once with the delta-spark
engine. Every table is also read back by ``deltalake.DeltaTable(...).to_pyarrow_table()``, an independent
reader, which must see identical rows. Tests of one engine's own behaviour say so in their name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
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
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from audience_activation.storage import (
    ConcurrentWriteError,
    DeltaStorage,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    UnsupportedTableFeatureError,
    delta_spark,
    files,
    open_storage,
)
from audience_activation.storage.base import (
    CHANGE_DATA_FEED,
    LocalCheckpoint,
    added_file_names,
    commit_versions,
    uncommitted_data_files,
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


def rich_df(spark: SparkSession):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(RICH_ROWS, RICH_DDL)


def arrow_rows(path: Path | str) -> list[dict]:
    """Rows as the independent delta-rs reader sees them, ordered by ``seq``."""
    table = DeltaTable(str(path)).to_pyarrow_table()
    return sorted(table.to_pylist(), key=lambda row: row["seq"])


def test_round_trip_is_exact_for_engine_and_independent_reader(
    spark: SparkSession, store: DeltaStorage, lake: Path
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


def test_timestamps_are_written_as_timestamp_micros(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = lake / "ts"
    store.overwrite(rich_df(spark).select("seq", "seen_at"), str(location))
    files = DeltaTable(str(location)).file_uris()
    import pyarrow.parquet as pq

    field = pq.read_schema(files[0]).field("seen_at")
    assert field.type == pa.timestamp("us", tz="UTC")


def test_append_versions_history_and_time_travel(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
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
    assert all(entry["engine"] == store.name for entry in history)
    assert sorted(row["k"] for row in arrow_rows_any(location)) == [1, 2]


def test_a_table_deleted_and_created_again_is_read_anew(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    """Versions read are kept by the delta-spark engine; a new table at the same place has new versions."""
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1, "a")], "k int, v string"), location)
    assert store.read(location, 0).df.collect() == [Row(k=1, v="a")]
    shutil.rmtree(location)
    store.append(spark.createDataFrame([(2, "b"), (3, "c")], "k int, v string"), location)
    assert sorted(store.read(location, 0).df.collect()) == [Row(k=2, v="b"), Row(k=3, v="c")]


def test_delta_spark_engine_reads_a_version_once_per_session(spark: SparkSession, lake: Path) -> None:
    """A version of a Delta table never changes: the engines a job opens share one read of it (a Delta snapshot
    costs a Spark job), the latest version too; a new version is read anew."""
    location = str(lake / "t")
    first = open_storage(spark, "delta-spark")
    first.append(spark.createDataFrame([(1, "a")], "k int, v string"), location)
    read = first.read(location)
    assert open_storage(spark, "delta-spark").read(location, 0).df is read.df
    first.append(spark.createDataFrame([(2, "b")], "k int, v string"), location)
    latest = first.read(location)
    assert latest.version == 1 and latest.df is not read.df
    assert first.read(location, 0).df is read.df
    for k in range(2, 6):  # at most four versions of one table are kept: the least recently read go first
        first.append(spark.createDataFrame([(k, "c")], "k int, v string"), location)
        first.read(location)
    kept = sorted(key[2] for key in delta_spark.DeltaSparkStorage._kept if key[1] == location)
    assert kept == [2, 3, 4, 5]


def test_swap_replaces_the_row_only_while_it_is_as_read(
    spark: SparkSession, store: DeltaStorage, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compare-and-swap of a one-row table: the row is replaced, every value exact (a timestamp to the
    microsecond, an empty list, a null), only while the swap column holds the value read; a swap based on an
    older read changes nothing and says so — also where Delta records an UPDATE that matches no row as an empty
    commit. The driver's local time is Berlin's, on the night its 02:30 comes twice: a time passed through local
    time would move by an hour."""
    location = str(lake / "lease")
    ddl = "epoch bigint, holder string, at timestamp, pending array<string>, note string"
    first_0230 = dt.datetime(2026, 10, 25, 0, 30, 0, 123456, tzinfo=UTC)  # 02:30 CEST
    second_0230 = dt.datetime(2026, 10, 25, 1, 30, 0, 654321, tzinfo=UTC)  # 02:30 CET
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert store.swap(
            spark.createDataFrame([(1, "a", None, ["x"], "n")], ddl),
            location,
            version=None,
            column="epoch",
            expected=None,
        )
        read = store.read(location)
        for epoch, at in ((2, first_0230), (3, second_0230)):
            new = spark.createDataFrame([(epoch, "b", at, [], None)], ddl)
            assert store.swap(new, location, version=store.version(location), column="epoch", expected=epoch - 1)
            assert arrow_rows_any(location) == [{"epoch": epoch, "holder": "b", "at": at, "pending": [], "note": None}]
        landed = store.version(location)
        spark.conf.set("spark.databricks.delta.skipRecordingEmptyCommits", "false")
        stale = spark.createDataFrame([(2, "c", first_0230, ["y"], "late")], ddl)
        assert not store.swap(stale, location, version=read.version, column="epoch", expected=1)
    finally:
        spark.conf.unset("spark.databricks.delta.skipRecordingEmptyCommits")
        monkeypatch.undo()
        time.tzset()
    assert arrow_rows_any(location) == [{"epoch": 3, "holder": "b", "at": second_0230, "pending": [], "note": None}]
    assert store.version(location) in (landed, landed + 1)  # delta-spark: an empty commit, or none


def test_changes_between_versions_are_the_rows_of_added_and_removed_files(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    """What a micro-batch of the streaming job reads: rows of the files a version range added and removed,
    partition values included, from an empty start or from a version; an overwrite shows both sides. A
    partition value has a colon (escaped in the partition folder's URI)."""
    location = str(lake / "t")
    ddl = "k int, v string, part string"
    store.append(spark.createDataFrame([(1, "a", "x:1")], ddl), location, partition_by=["part"])  # v0
    store.append(spark.createDataFrame([(2, "b", "x:1"), (3, "c", "y")], ddl), location, partition_by=["part"])  # v1
    store.append(spark.createDataFrame([(4, "d", "y")], ddl), location, partition_by=["part"])  # v2

    everything = store.read_changes(location, None)
    assert (everything.since, everything.version) == (None, 2)
    assert sorted(everything.added.collect()) == [
        Row(k=1, v="a", part="x:1"),
        Row(k=2, v="b", part="x:1"),
        Row(k=3, v="c", part="y"),
        Row(k=4, v="d", part="y"),
    ]
    assert everything.removed.collect() == []
    assert everything.removes is False

    later = store.read_changes(location, 0, 1)
    assert (later.since, later.version) == (0, 1)
    assert sorted(later.added.collect()) == [Row(k=2, v="b", part="x:1"), Row(k=3, v="c", part="y")]
    assert later.removed.collect() == []
    assert later.removes is False  # appends only: known without reading
    assert store.read_changes(location, 2).added.collect() == []  # nothing new

    store.overwrite(spark.createDataFrame([(5, "e", "x:1")], ddl), location, partition_by=["part"])  # v3
    rewritten = store.read_changes(location, 1)
    assert rewritten.version == 3
    assert rewritten.added.collect() == [Row(k=5, v="e", part="x:1")]
    assert rewritten.removes is True
    assert sorted(rewritten.removed.collect()) == [
        Row(k=1, v="a", part="x:1"),
        Row(k=2, v="b", part="x:1"),
        Row(k=3, v="c", part="y"),
    ]
    with pytest.raises(ValueError, match="after version 3 up to the older 1"):
        store.read_changes(location, 3, 1)


def arrow_rows_any(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def test_a_folder_name_with_a_space_is_taken_as_it_is(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    """A table under ``/Users/Jane Doe/lake``: writes, reads, the log's versions, changes and cleanup work as
    anywhere else (a local path is no URI, so its space is no syntax error)."""
    location = str(lake / "Jane Doe" / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    store.append(spark.createDataFrame([(2,)], "k int"), location)
    assert store.version(location) == 1 and commit_versions(location) == [0, 1]
    assert sorted(store.read(location).df.collect()) == [Row(k=1), Row(k=2)]
    assert store.read_changes(location, 0).added.collect() == [Row(k=2)]
    assert [entry["version"] for entry in store.history(location)] == [1, 0]
    leftovers = uncommitted_data_files(location)  # (Spark may write an empty file that Delta does not commit)
    assert uncommitted_data_files(f"file:{location}").keys() == leftovers.keys()  # a Hadoop URI, not encoded
    committed = {Path(file).name for file in store._files(location, 1)}
    assert committed and not committed & leftovers.keys()
    store.cleanup(location, older_than=dt.timedelta(0))
    assert uncommitted_data_files(location) == {}
    assert sorted(store.read(location).df.collect()) == [Row(k=1), Row(k=2)]


def test_overwrite_replaces_everything(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,), (2,)], "k int"), location)
    assert store.overwrite(spark.createDataFrame([(3,)], "k int"), location) == 1
    assert store.read(location).df.collect() == [Row(k=3)]
    assert arrow_rows_any(location) == [{"k": 3}]


def test_replace_partitions_touches_only_the_matching_partition(
    spark: SparkSession, store: DeltaStorage, lake: Path
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
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    location = str(lake / "runs")
    store.append(spark.createDataFrame([("r1", 1)], "run_id string, k int"), location, partition_by=["run_id"])
    bad = spark.createDataFrame([("r1", 5), ("r2", 6)], "run_id string, k int")
    with pytest.raises(Exception, match="outside the partition being replaced"):
        store.replace_partitions(bad, location, {"run_id": "r1"})
    assert store.version(location) == 0
    assert store.read(location).df.collect() == [Row(run_id="r1", k=1)]
    assert arrow_rows_any(location) == [{"run_id": "r1", "k": 1}]
    store.cleanup(location, older_than=dt.timedelta(0))
    assert uncommitted_data_files(location) == {}
    with pytest.raises(ValueError, match="not partition columns"):
        store.replace_partitions(bad, location, {"k": 5})


def test_create_empty_table_and_schema(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = str(lake / "empty")
    schema = rich_df(spark).schema
    assert store.create(location, schema, partition_by=["part"]) == 0
    assert store.read(location).df.count() == 0
    assert [f.name for f in store.schema(location).fields] == [f.name for f in schema.fields]
    assert DeltaTable(location).metadata().partition_columns == ["part"]
    with pytest.raises(StorageError, match="already exists"):
        store.create(location, schema)


def test_schema_mismatch_is_refused(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1, "a")], "k int, v string"), location)
    with pytest.raises(SchemaMismatchError, match=r"column 'k' is string, table has int"):
        store.append(spark.createDataFrame([("x", "a")], "k string, v string"), location)
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['v'\]"):
        store.append(spark.createDataFrame([(1,)], "k int"), location)
    # Column order does not matter: columns are matched by name.
    store.append(spark.createDataFrame([("b", 2)], "v string, k int"), location)
    assert sorted(store.read(location).df.collect()) == [Row(k=1, v="a"), Row(k=2, v="b")]


def test_missing_table_is_a_clear_error(store: DeltaStorage, lake: Path) -> None:
    with pytest.raises(TableNotFoundError, match="no Delta table"):
        store.read(str(lake / "nope"))


def concurrent_append_during_write(location: str, marker: Path):  # type: ignore[no-untyped-def]
    """A column function whose first evaluation (on an executor, while this write's data files are being
    written, after the write read the table) makes another writer append to the table with delta-rs."""

    def race(k):  # type: ignore[no-untyped-def] # no hints: a plain Python UDF, not a pandas one
        if not marker.exists():
            marker.write_text("done")
            write_deltalake(location, pa.table({"k": pa.array([99], pa.int32())}), mode="append")
        return k

    return F.udf(race, "int")


def test_concurrent_commit_conflict_leaves_table_intact(
    spark: SparkSession, store: DeltaStorage, lake: Path, tmp_path: Path
) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    race = concurrent_append_during_write(location, tmp_path / "raced")
    losing_write = spark.createDataFrame([(2,)], "k int").select(race(F.col("k")).alias("k"))
    with pytest.raises(ConcurrentWriteError, match=r"another writer committed to this table after version 0") as info:
        store.overwrite(losing_write, location)
    if store.name == "delta-spark":
        # Caught as one of Delta's conflict exception classes, not by matching a message.
        import delta.exceptions

        assert isinstance(info.value.__cause__, delta.exceptions.ConcurrentAppendException)

    assert store.version(location) == 1
    assert sorted(row["k"] for row in arrow_rows_any(location)) == [1, 99]
    assert sorted(r.k for r in store.read(location).df.collect()) == [1, 99]
    # The loser's files are not part of the table; cleanup() removes whatever it left behind.
    store.cleanup(location, older_than=dt.timedelta(0))
    assert uncommitted_data_files(location) == {}
    assert sorted(r.k for r in store.read(location).df.collect()) == [1, 99]


def test_failed_write_is_invisible_and_removed(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    boom = spark.range(10).select(
        F.when(F.col("id") < 9, F.col("id")).otherwise(F.raise_error(F.lit("injected failure"))).cast("int").alias("k")
    )
    with pytest.raises(Exception, match="injected failure"):
        store.append(boom, location)
    assert store.version(location) == 0
    assert store.read(location).df.collect() == [Row(k=1)]
    assert arrow_rows_any(location) == [{"k": 1}]
    store.cleanup(location, older_than=dt.timedelta(0))
    assert uncommitted_data_files(location) == {}


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pyspark.sql import functions as F
    from audience_activation.session import build_session
    from audience_activation.storage import open_storage

    engine, location, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    spark = build_session("killed-writer", master="local[1]", shuffle_partitions=1,
                          extra_conf={"spark.ui.enabled": "false"})

    def hang_in_the_second_task(k):
        if k == 3:  # the first task has written its data file by now; this one never finishes
            marker.write_text("hanging")
            time.sleep(600)
        return k

    hang = F.udf(hang_in_the_second_task, "int")
    # Two tasks, run one after the other (local[1]): k = 2 in the first, k = 3 in the second.
    data = spark.range(0, 2, 1, numPartitions=2).select(hang((F.col("id") + 2).cast("int")).alias("k"))
    open_storage(spark, engine).append(data, location)
    """
)


def test_killed_write_is_ignored_by_readers_and_cleaned_up(
    spark: SparkSession, store: DeltaStorage, lake: Path, tmp_path: Path
) -> None:
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    marker = tmp_path / "hanging"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), store.name, location, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the Python driver and its Spark JVM die together
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before writing its first data file"
            assert time.monotonic() < deadline, "the writer did not write its data files in time"
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not uncommitted_data_files(location):
            assert time.monotonic() < deadline, "the killed write left no data file"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9: no shutdown hook of Spark gets to tidy up
        proc.wait()
    leftovers = uncommitted_data_files(location)

    # Readers see only committed data.
    assert store.read(location).df.collect() == [Row(k=1)]
    assert arrow_rows_any(location) == [{"k": 1}]
    # A recent leftover may belong to a write still running: kept by default.
    assert store.cleanup(location) == []
    assert uncommitted_data_files(location).keys() == leftovers.keys()
    removed = store.cleanup(location, older_than=dt.timedelta(0))
    assert removed and all(path.startswith(f"{os.path.abspath(location)}/") for path in removed)
    assert uncommitted_data_files(location) == {}
    assert store.read(location).df.collect() == [Row(k=1)]
    assert store.cleanup(location, older_than=dt.timedelta(0)) == []


def dv_and_column_mapping_table(spark: SparkSession, location: str) -> None:
    """An input table as Databricks writes them: deletion vectors and column mapping, made with Delta SQL."""
    table = f"delta.`{location}`"
    spark.sql(
        f"CREATE TABLE {table} (k INT, v STRING) USING delta TBLPROPERTIES ("
        "'delta.enableDeletionVectors' = 'true', 'delta.columnMapping.mode' = 'name')"
    )
    spark.sql(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    spark.sql(f"DELETE FROM {table} WHERE k IN (2, 4)")  # marks rows deleted in a deletion vector
    spark.sql(f"ALTER TABLE {table} RENAME COLUMN v TO label")  # physical names differ from logical ones


def test_deletion_vectors_and_column_mapping_read_correctly_under_delta_spark(spark: SparkSession, lake: Path) -> None:
    location = str(lake / "dv_cm")
    dv_and_column_mapping_table(spark, location)
    adds = [
        json.loads(line)["add"]
        for commit in sorted(Path(location, "_delta_log").glob("*.json"))
        for line in commit.read_text().splitlines()
        if '"add"' in line
    ]
    assert any(add.get("deletionVector") for add in adds), "DELETE wrote a deletion vector"
    snapshot = open_storage(spark, "delta-spark").read(location)
    assert sorted(snapshot.df.collect()) == [Row(k=1, label="a"), Row(k=3, label="c")]


def test_changes_see_rows_deleted_and_restored_in_place_by_deletion_vectors(
    spark: SparkSession, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete on a table with deletion vectors keeps the data file and hides rows beside it, and a restore shows
    them again: the file lists of two versions are the same, yet the rows differ. They are changes all the same:
    a deleted row is removed, a restored one added, each once, partition values and renamed columns included, with
    an append in the same range read as before."""
    location = str(lake / "dv")
    table = f"delta.`{location}`"
    spark.sql(
        f"CREATE TABLE {table} (k INT, v STRING, part STRING) USING delta PARTITIONED BY (part) TBLPROPERTIES ("
        "'delta.enableDeletionVectors' = 'true', 'delta.columnMapping.mode' = 'name')"
    )
    spark.sql(f"INSERT INTO {table} VALUES (1, 'a', 'x:1'), (2, 'b', 'x:1'), (3, 'c', 'y'), (4, 'd', 'y')")  # v1
    spark.sql(f"ALTER TABLE {table} RENAME COLUMN v TO label")  # v2
    spark.sql(f"DELETE FROM {table} WHERE k IN (2, 3)")  # v3: deletion vectors, no file removed
    spark.sql(f"INSERT INTO {table} VALUES (5, 'e', 'y')")  # v4
    store = open_storage(spark, "delta-spark")
    assert store._files(location, 2) <= store._files(location, 3)  # the delete removed no file

    deleted = store.read_changes(location, 2, 4)
    assert sorted(deleted.added.collect()) == [Row(k=5, label="e", part="y")]
    assert sorted(deleted.removed.collect()) == [Row(k=2, label="b", part="x:1"), Row(k=3, label="c", part="y")]
    assert deleted.removes is True  # a file changed in place, none removed
    assert store.read_changes(location, 3).removed.collect() == []  # before the range: not removed again
    assert store.read_changes(location, 3).removes is False

    spark.sql(f"RESTORE TABLE {table} TO VERSION AS OF 2")  # v5: the same files again, without the vectors
    restored = store.read_changes(location, 4, 5)
    assert sorted(restored.added.collect()) == [Row(k=2, label="b", part="x:1"), Row(k=3, label="c", part="y")]
    assert restored.removed.collect() == [Row(k=5, label="e", part="y")]
    # Compared with a version before the delete, the restored files show the same rows: no change.
    assert store.read_changes(location, 2, 5).added.collect() == []
    assert store.read_changes(location, 2, 5).removed.collect() == []

    # Commits of the range gone (log cleanup): every kept file's rows are compared, with the same result.
    assert added_file_names(location, 4, 6) is None
    monkeypatch.setattr(delta_spark, "added_file_names", lambda *_: None)
    assert sorted(store.read_changes(location, 2, 4).removed.collect()) == sorted(deleted.removed.collect())
    assert store.read_changes(location, 2, 5).removed.collect() == []


def same_named_files_in_two_folders(spark: SparkSession, location: str, part: str) -> DeltaStorage:
    """Version 0 of a table partitioned by ``part``: rows 1 and 3 in folder ``part``, 2 and 4 in folder ``b``, written
    by a plain parquet writer (the delta-rs engine's: one task, two partitions), which names both files alike.
    Returns the delta-spark engine."""
    rows = spark.createDataFrame([(1, part), (3, part), (2, "b"), (4, "b")], "k int, part string").coalesce(1)
    open_storage(spark, "delta-rs").append(rows, location, partition_by=["part"])
    store = open_storage(spark, "delta-spark")
    assert len({Path(file).name for file in store._files(location, 0)}) == 1  # one name, two folders
    return store


def test_rows_deleted_in_place_are_told_apart_from_a_same_named_file_in_another_partition(
    spark: SparkSession, lake: Path
) -> None:
    """A plain parquet writer (here the delta-rs engine's: one task, two partitions) names the files of both
    partition folders alike. A row a deletion vector hides in one is still a removed row, although the other file
    keeps a row at the same position."""
    location = str(lake / "t")
    store = same_named_files_in_two_folders(spark, location, "a")
    table = f"delta.`{location}`"
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")  # v1
    spark.sql(f"DELETE FROM {table} WHERE k = 1")  # v2: a row of part=a hidden, its file kept
    assert store._files(location, 1) == store._files(location, 2)
    changes = store.read_changes(location, 1, 2)
    assert changes.removed.collect() == [Row(k=1, part="a")]
    assert changes.added.collect() == []


def test_the_rows_of_a_removed_file_leave_out_a_same_named_file_in_another_partition(
    spark: SparkSession, lake: Path
) -> None:
    """The rows of the files a commit removed are those files' rows only, although a plain parquet writer gave a
    file of another partition folder the same name (a folder name escaped on disk: ``x%3Ay z``)."""
    location = str(lake / "t")
    store = same_named_files_in_two_folders(spark, location, "x:y z")
    spark.sql(f"DELETE FROM delta.`{location}` WHERE part = 'x:y z'")  # v1: that folder's file removed whole
    changes = store.read_changes(location, 0, 1)
    assert sorted(changes.removed.collect()) == [Row(k=1, part="x:y z"), Row(k=3, part="x:y z")]
    assert changes.added.collect() == []


def test_rows_deleted_in_place_beside_a_removed_same_named_file_count_once(spark: SparkSession, lake: Path) -> None:
    """In one range of commits, a file of one partition folder is removed whole while deletion vectors hide a row of
    the same-named file of another folder: each row removed counts once (the removed file's rows are not also
    taken for rows of the file changed in place)."""
    location = str(lake / "t")
    store = same_named_files_in_two_folders(spark, location, "x:y z")
    table = f"delta.`{location}`"
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")  # v1
    spark.sql(f"DELETE FROM {table} WHERE part = 'x:y z'")  # v2: that folder's file removed whole
    spark.sql(f"DELETE FROM {table} WHERE k = 2")  # v3: a row of part=b hidden, its file kept
    assert len(store._files(location, 3)) == 1
    changes = store.read_changes(location, 1, 3)
    assert sorted(changes.removed.collect()) == [Row(k=1, part="x:y z"), Row(k=2, part="b"), Row(k=3, part="x:y z")]
    assert changes.added.collect() == []


def test_the_files_a_range_of_commits_adds_again_leave_out_adds_that_change_no_row(tmp_path: Path) -> None:
    """``added_file_names``: the names of the files the commits of a range add (unescaped, partition folders
    dropped), but not those of adds marked ``dataChange: false`` (statistics recomputed: no row changed); None
    when a commit of the range is gone."""
    log_dir = tmp_path / "t" / "_delta_log"
    log_dir.mkdir(parents=True)
    commits = [
        [{"add": {"path": "p=a%3Ab/f1.parquet", "dataChange": True}}],
        [
            {"commitInfo": {"operation": "ANALYZE", "operationParameters": {"note": '"add" inside a string'}}},
            {"add": {"path": "p=a%3Ab/f1.parquet", "dataChange": False}},
            {"add": {"path": "f2.parquet", "dataChange": True, "deletionVector": {"cardinality": 1}}},
            {"remove": {"path": "f0.parquet", "dataChange": True}},
        ],
    ]
    for version, actions in enumerate(commits):
        (log_dir / f"{version:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    location = str(tmp_path / "t")
    assert added_file_names(location, 0, 1) == {"f1.parquet", "f2.parquet"}
    assert added_file_names(location, 1, 1) == {"f2.parquet"}
    assert added_file_names(location, 1, 2) is None


def test_delta_rs_engine_refuses_deletion_vectors_and_column_mapping_by_name(spark: SparkSession, lake: Path) -> None:
    location = str(lake / "dv_cm")
    dv_and_column_mapping_table(spark, location)
    with pytest.raises(UnsupportedTableFeatureError) as info:
        open_storage(spark, "delta-rs").read(location)
    message = str(info.value)
    assert f"table {location} uses the Delta reader feature(s)" in message
    assert "columnMapping" in message and "deletionVectors" in message


def test_delta_rs_engine_refuses_deletion_vectors_written_by_delta_rs(spark: SparkSession, lake: Path) -> None:
    location = str(lake / "dv")
    write_deltalake(location, pa.table({"k": [1, 2]}))
    DeltaTable(location).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    with pytest.raises(
        UnsupportedTableFeatureError, match=r"table .*dv uses the Delta reader feature\(s\) deletionVectors"
    ):
        open_storage(spark, "delta-rs").read(location)


def test_reads_tables_written_by_delta_rs_itself(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    location = str(lake / "foreign")
    data = pa.table({"region": ["VA6", "OR2", "VA6"], "n": [1, 2, 3]})
    write_deltalake(location, data, partition_by=["region"])
    snapshot = store.read(location)
    expected = spark.createDataFrame([("VA6", 1), ("OR2", 2), ("VA6", 3)], "region string, n long")
    assert_df_equality(snapshot.df, expected, ignore_row_order=True, ignore_nullable=True)


def test_partition_type_must_be_supported(spark: SparkSession, store: DeltaStorage, lake: Path) -> None:
    df = spark.createDataFrame([(1.5, 1)], "d double, k int")
    with pytest.raises(SchemaMismatchError, match="partition column 'd' has type double"):
        store.append(df, str(lake / "t"), partition_by=["d"])


def test_auto_engine_picks_delta_spark_when_the_jars_are_loaded(
    spark: SparkSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="audience_activation.storage"):
        store = open_storage(spark, "auto")
    assert store.name == "delta-spark"
    assert "Storage engine: delta-spark (auto: Delta Spark connector found)" in caplog.text
    with pytest.raises(ValueError, match="unknown storage engine"):
        open_storage(spark, "parquet")


WITHOUT_JARS = textwrap.dedent(
    """
    import logging, sys
    from audience_activation.session import build_session
    from audience_activation.storage import StorageError, open_storage

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stdout)
    spark = build_session("no-jars", master="local[1]", shuffle_partitions=1,
                          extra_conf={"spark.ui.enabled": "false"})
    print("auto ->", open_storage(spark, "auto").name)
    try:
        open_storage(spark, "delta-spark")
    except StorageError as exc:
        print("delta-spark ->", exc)
    """
)


def test_without_the_jars_auto_falls_back_to_delta_rs_and_says_why(tmp_path: Path) -> None:
    script = tmp_path / "no_jars.py"
    script.write_text(WITHOUT_JARS)
    missing = tmp_path / "no-such-folder"
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "AUDIENCE_ACTIVATION_JARS": str(missing)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"Delta Lake Spark connector: not loaded: no fetched Delta Lake Spark jars in {missing}" in out
    assert (
        "Storage engine: delta-rs (auto: Delta Spark connector not usable, its jars are not on the classpath; "
        f"no fetched Delta Lake Spark jars in {missing} (check $AUDIENCE_ACTIVATION_JARS))"
    ) in out
    assert "auto -> delta-rs" in out
    assert "delta-spark -> storage.engine is delta-spark but the Delta Lake Spark connector is not usable" in out
    assert "--packages io.delta:delta-spark_4.2_2.13:4.4.0" in out


def test_partition_types_and_null_partition_values_round_trip(
    spark: SparkSession, store: DeltaStorage, lake: Path
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
    spark: SparkSession, store: DeltaStorage, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version returned is the commit carrying the write's id, not whatever is latest afterwards."""
    location = str(lake / "t")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    engine_class = type(store)
    original = engine_class._committed_version  # type: ignore[attr-defined]

    def another_writer_commits_right_after(self, loc, write_id):  # type: ignore[no-untyped-def]
        write_deltalake(location, pa.table({"k": pa.array([5], pa.int32())}), mode="append")
        monkeypatch.setattr(engine_class, "_committed_version", original)
        return original(self, loc, write_id)

    monkeypatch.setattr(engine_class, "_committed_version", another_writer_commits_right_after)
    assert store.append(spark.createDataFrame([(2,)], "k int"), location) == 1
    assert store.version(location) == 2


ENGINE_PAIRS = [("delta-rs", "delta-spark"), ("delta-spark", "delta-rs")]


@pytest.mark.parametrize(("writer", "reader"), ENGINE_PAIRS, ids=["delta-rs-to-delta-spark", "delta-spark-to-delta-rs"])
def test_a_table_written_by_one_engine_reads_identically_with_the_other(
    spark: SparkSession, lake: Path, writer: str, reader: str
) -> None:
    location = str(lake / "rich")
    write, read = open_storage(spark, writer), open_storage(spark, reader)
    write.overwrite(rich_df(spark), location, partition_by=["part"])
    assert_df_equality(read.read(location).df.orderBy("seq"), rich_df(spark).orderBy("seq"), ignore_nullable=True)
    # The other engine continues the table: appends, replaces a partition; both read the same rows.
    read.append(rich_df(spark).where("seq = 3").withColumn("seq", F.lit(4).cast("long")), location)
    write.replace_partitions(rich_df(spark).where("seq = 2"), location, {"part": "p2"})
    expected = rich_df(spark).where("seq <> 3").orderBy("seq")
    assert_df_equality(write.read(location).df.orderBy("seq"), expected, ignore_nullable=True)
    assert_df_equality(read.read(location).df.orderBy("seq"), expected, ignore_nullable=True)
    assert [row["seq"] for row in arrow_rows(location)] == [1, 2]
    assert [entry["engine"] for entry in write.history(location)] == [writer, reader, writer]


def test_commit_keys_named_like_delta_commit_info_fields_do_not_break_the_other_engine(
    spark: SparkSession, lake: Path
) -> None:
    """Caller keys such as ``job`` (a struct in Delta's ``commitInfo``) stay inside ``userMetadata``: Delta Lake for
    Spark reads a table delta-rs wrote with them (the demo generator records ``job: demo-data``), and both
    engines' history shows them."""
    location = str(lake / "demo")
    delta_rs, delta_spark = open_storage(spark, "delta-rs"), open_storage(spark, "delta-spark")
    info = {"job": "demo-data", "notebook": "n1", "readVersion": "x", "seed": "42"}
    delta_rs.overwrite(spark.createDataFrame([(1,)], "k int"), location, commit_info=info)
    assert [row["k"] for row in delta_spark.read(location).df.collect()] == [1]
    delta_spark.append(spark.createDataFrame([(2,)], "k int"), location)
    for store in (delta_rs, delta_spark):
        first = store.history(location)[-1]
        assert (first["seed"], first["engine"]) == ("42", "delta-rs")
    assert sorted(row["k"] for row in delta_rs.read(location).df.collect()) == [1, 2]


def test_change_data_feed_reads_back_each_writes_inserts_and_deletes(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    location = str(lake / "changes")
    schema = "run_id string, person_id string, status string"
    store.replace_partitions(
        spark.createDataFrame([("r1", "p1", "realized"), ("r1", "p2", "realized")], schema),
        location,
        {"run_id": "r1"},
        partition_by=["run_id"],
        properties=CHANGE_DATA_FEED,
    )
    store.replace_partitions(  # a re-run of r1 replaces its rows
        spark.createDataFrame([("r1", "p1", "realized")], schema),
        location,
        {"run_id": "r1"},
        properties=CHANGE_DATA_FEED,
    )
    store.replace_partitions(
        spark.createDataFrame([("r2", "p2", "exited")], schema), location, {"run_id": "r2"}, properties=CHANGE_DATA_FEED
    )
    assert store.properties(location)["delta.enableChangeDataFeed"] == "true"
    expected = [
        (0, "insert", "r1", "p1", "realized"),
        (0, "insert", "r1", "p2", "realized"),
        (1, "delete", "r1", "p1", "realized"),
        (1, "delete", "r1", "p2", "realized"),
        (1, "insert", "r1", "p1", "realized"),
        (2, "insert", "r2", "p2", "exited"),
    ]
    feed = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(location)
    assert (
        sorted(
            (r["_commit_version"], r["_change_type"], r["run_id"], r["person_id"], r["status"]) for r in feed.collect()
        )
        == expected
    )
    # delta-rs reads the same feed.
    rs_feed = pa.table(DeltaTable(location).load_cdf(starting_version=0).read_all()).to_pylist()
    assert (
        sorted((r["_commit_version"], r["_change_type"], r["run_id"], r["person_id"], r["status"]) for r in rs_feed)
        == expected
    )


def test_change_data_feed_is_switched_on_for_an_existing_table(
    spark: SparkSession, store: DeltaStorage, lake: Path
) -> None:
    location = str(lake / "older")
    store.append(spark.createDataFrame([(1,)], "k int"), location)
    assert "delta.enableChangeDataFeed" not in store.properties(location)
    version = store.append(spark.createDataFrame([(2,)], "k int"), location, properties=CHANGE_DATA_FEED)
    assert version == 2  # version 1 switched the feed on
    assert store.properties(location)["delta.enableChangeDataFeed"] == "true"
    feed = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 2).load(location)
    assert [(r["k"], r["_change_type"]) for r in feed.collect()] == [(2, "insert")]


def test_both_engines_refuse_the_same_bad_writes_with_the_same_message_and_commit_nothing(
    spark: SparkSession, lake: Path
) -> None:
    """The checks of every write, ``swap`` and ``restore`` live once on ``DeltaStorage``: both engines refuse
    the same calls with the same error, before any commit (not even the table properties a write asked for)."""
    location = str(lake / "runs")
    engines = [open_storage(spark, name) for name in ("delta-rs", "delta-spark")]
    engines[0].append(spark.createDataFrame([("r1", 1)], "run_id string, k int"), location, partition_by=["run_id"])
    rows = spark.createDataFrame([("r1", 5)], "run_id string, k int")
    cdf = CHANGE_DATA_FEED
    bad_calls = {
        "a predicate on a data column": lambda store: store.replace_partitions(
            rows, location, {"k": 5}, properties=cdf
        ),
        "a predicate on a column a new table is not partitioned by": lambda store: store.replace_partitions(
            rows, str(lake / "new"), {"run_id": "r1"}, properties=cdf
        ),
        "an empty predicate": lambda store: store.replace_partitions(rows, location, {}, properties=cdf),
        "a null partition value": lambda store: store.replace_partitions(rows, location, {"run_id": None}),
        "partition columns other than the table's": lambda store: store.replace_partitions(
            rows, location, {"run_id": "r1"}, partition_by=["k"], properties=cdf
        ),
        "data of another schema": lambda store: store.replace_partitions(
            rows.withColumn("k", F.col("k").cast("string")), location, {"run_id": "r1"}, properties=cdf
        ),
        "a reserved commit_info key": lambda store: store.append(
            rows, location, commit_info={"writeId": "mine"}, properties=cdf
        ),
        "a swap column missing from the data": lambda store: store.swap(
            rows, location, version=0, column="epoch", expected=1
        ),
        "a swap expecting null": lambda store: store.swap(rows, location, version=0, column="k", expected=None),
        "a restore to a version not yet written": lambda store: store.restore(location, 3),
        "a restore with a reserved commit_info key": lambda store: store.restore(
            location, 0, commit_info={"engine": "x"}
        ),
    }
    for what, call in bad_calls.items():
        refusals = []
        for store in engines:
            with pytest.raises((ValueError, StorageError)) as info:
                call(store)
            refusals.append((type(info.value), str(info.value)))
        assert refusals[0] == refusals[1], what
    assert refusals[0] == (ValueError, "commit_info keys ['engine'] are reserved by the storage engines")
    with pytest.raises(ValueError, match=r"runs: \['k'\] are not partition columns of the table \(\['run_id'\]\)"):
        bad_calls["a predicate on a data column"](engines[1])
    with pytest.raises(ValueError, match=r"new: \['run_id'\] are not partition columns of the table \(\[\]\)"):
        bad_calls["a predicate on a column a new table is not partitioned by"](engines[1])

    for store in engines:
        assert store.version(location) == 0
        assert "delta.enableChangeDataFeed" not in store.properties(location)
        assert not store.exists(str(lake / "new"))
    assert arrow_rows_any(location) == [{"run_id": "r1", "k": 1}]


def test_local_checkpoint_keeps_the_rows_serialized_cuts_the_lineage_and_releases_its_blocks(
    spark: SparkSession,
) -> None:
    persisted = spark.sparkContext._jsc.sc().getPersistentRDDs()  # noqa: SLF001 - the JVM's block registry
    before = persisted.size()
    barrier = LocalCheckpoint()
    source = spark.createDataFrame([(1, "a"), (2, "b"), (3, "a")], "n int, k string")
    grouped = barrier(source.groupBy("k").agg(F.sum("n").alias("total")))
    assert "Aggregate" not in grouped._jdf.queryExecution().analyzed().toString()  # noqa: SLF001
    assert sorted(map(tuple, grouped.collect())) == [("a", 4), ("b", 2)]
    assert barrier(grouped.where("total > 2")).collect() == [Row(k="a", total=4)]
    assert spark.sparkContext._jsc.sc().getPersistentRDDs().size() == before + 2  # noqa: SLF001
    levels = [rdd.getStorageLevel() for rdd in barrier._blocks]  # noqa: SLF001 - serialized, spilling to disk
    assert [(level.deserialized(), level.useMemory(), level.useDisk()) for level in levels] == [(False, True, True)] * 2
    # Spark's "cannot be recomputed after unpersisting" warnings are silenced while releasing; afterwards the
    # RDD loggers have no setting of their own again (they follow the root level).
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j  # noqa: SLF001
    loggers = log4j.core.LoggerContext.getContext(False).getConfiguration().getLoggers()
    names = sorted({rdd.getClass().getName() for rdd in barrier._blocks})  # noqa: SLF001
    assert names and not any(loggers.containsKey(name) for name in names)
    barrier.cleanup()
    assert spark.sparkContext._jsc.sc().getPersistentRDDs().size() == before  # noqa: SLF001
    loggers = log4j.core.LoggerContext.getContext(False).getConfiguration().getLoggers()
    assert not any(loggers.containsKey(name) for name in names)
    barrier.cleanup()  # nothing left to release


def test_local_checkpoint_marks_small_results_for_broadcast_and_leaves_large_ones(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpointed part is sized by its stored blocks, not by the estimate of the plan that made it: a small
    one (or an empty one) is broadcast in a join with a big input, which is then not shuffled; one above
    ``BROADCAST_BYTES`` is left to the planner; ``autoBroadcastJoinThreshold=-1`` turns the marking off. Spark's
    warnings about hints a plan cannot use are silenced while the barrier's results are in use, then restored."""
    big = spark.range(200_000).select((F.col("id") % 50_000).alias("k"), "id")
    derived = big.groupBy("k").count().where("k < 10")  # planned as big as its source

    def plan(df: DataFrame) -> str:
        return big.join(df, on="k", how="left_semi")._jdf.queryExecution().executedPlan().toString()  # noqa: SLF001

    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    barrier = LocalCheckpoint()
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j  # noqa: SLF001
    try:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "1k")  # the planner broadcasts no side of its own
        assert "SortMergeJoin" in plan(derived)
        small = barrier(derived)
        empty = barrier(derived.where("k < 0"))
        assert barrier.broadcast == 2
        assert "BroadcastHashJoin" in plan(small) and "BroadcastHashJoin" in plan(empty)
        assert sorted(r["k"] for r in big.join(small, on="k", how="left_semi").select("k").distinct().collect()) == [
            *range(10)
        ]
        assert log4j.LogManager.getLogger(files.HINT_LOGGER).getLevel().toString() == "ERROR"
        monkeypatch.setattr(files, "BROADCAST_BYTES", 16)
        assert "SortMergeJoin" in plan(barrier(derived))
        monkeypatch.setattr(files, "BROADCAST_BYTES", 16 << 20)
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
        barrier(derived)
        assert barrier.broadcast == 2 and barrier.writes == 4
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)
        barrier.cleanup()
    loggers = log4j.core.LoggerContext.getContext(False).getConfiguration().getLoggers()
    assert not loggers.containsKey(files.HINT_LOGGER)
