"""Shared pytest fixtures: one local SparkSession for the whole test session.

Every setting is chosen for small, fast, deterministic test runs (splink's conftest is the model):
the session is built by the project's own factory so the settings the outputs depend on (UTC, TIMESTAMP_MICROS,
AQE) are the ones users get, and only speed-related settings differ.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from audience_activation.session import build_session

# Keep the Python workers on the interpreter running the tests (the venv), whatever PATH says.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# PySpark converts naive datetimes with the process's local time zone; the hand-written expected values are
# UTC, so the tests pin the process to UTC whatever the machine's zone is.
os.environ["TZ"] = "UTC"
time.tzset()

TEST_CONF = {
    # Two cores on CI: two local threads, and as many shuffle partitions, so tiny DataFrames are not split
    # into 200 tasks.
    "spark.default.parallelism": "2",
    # No web UI and no console progress bars: faster start, no port clashes, readable pytest output.
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Broadcast joins for the tiny test tables are fine, but keep the plans the same as with real data
    # sizes where a test inspects them.
    "spark.sql.autoBroadcastJoinThreshold": "10485760",
    # Small, fixed driver memory: tests must not depend on a big heap.
    "spark.driver.memory": "2g",
    # Less JVM work per task for tiny inputs.
    "spark.sql.files.openCostInBytes": "1048576",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    # Python workers are reused between tasks (applyInPandas tests) instead of forked each time.
    "spark.python.worker.reuse": "true",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The test session: ``local[2]``, 2 shuffle partitions, warehouse and checkpoints under a temp dir."""
    base = tmp_path_factory.mktemp("spark")
    session = build_session(
        "audience-activation-tests",
        master="local[2]",
        shuffle_partitions=2,
        extra_conf={**TEST_CONF, "spark.sql.warehouse.dir": str(base / "warehouse")},
    )
    session.sparkContext.setCheckpointDir(str(base / "checkpoints"))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def lake(tmp_path):  # type: ignore[no-untyped-def]
    """A fresh lake root folder per test."""
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture()
def restore_spark_conf(spark: SparkSession) -> Iterator[None]:
    """For tests that build sessions through the factory (which re-applies job.yaml settings): put the
    test session's runtime SQL settings back afterwards."""
    keys = ["spark.sql.shuffle.partitions", "spark.sql.session.timeZone", "spark.sql.adaptive.enabled"]
    saved = {key: spark.conf.get(key) for key in keys}
    yield
    for key, value in saved.items():
        spark.conf.set(key, value)
