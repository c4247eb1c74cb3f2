"""The session factory applies the settings outputs depend on."""

from __future__ import annotations

import logging
import os

import pytest
from pyspark.sql import SparkSession

from audience_activation.session import REQUIRED_CONF, build_session, session_conf


def test_required_settings_hold_in_the_session(spark: SparkSession) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    # A static setting of the factory's defaults: it holds only if the factory started the session.
    assert spark.conf.get("spark.sql.codegen.cache.maxEntries") == "2000"
    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"


def test_user_settings_override_defaults_but_not_required(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        conf = session_conf(
            shuffle_partitions=None,
            extra_conf={"spark.sql.session.timeZone": "Europe/Paris", "spark.driver.memory": "4g", "x.flag": True},
            local=True,
        )
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.driver.memory"] == "4g"
    assert conf["x.flag"] == "true"
    assert int(conf["spark.sql.shuffle.partitions"]) >= 4
    # Delta's state reconstruction: one task per core locally, the shuffle partitions when those are given.
    assert conf["spark.databricks.delta.snapshotPartitions"] == str(os.cpu_count() or 1)
    assert session_conf(shuffle_partitions=6, local=True)["spark.databricks.delta.snapshotPartitions"] == "6"
    assert "spark.sql.session.timeZone" in caplog.text
    assert {k: conf[k] for k in REQUIRED_CONF} == REQUIRED_CONF
    assert "spark.sql.shuffle.partitions" not in session_conf(local=False)
    assert (
        session_conf(extra_conf={"spark.sql.codegen.cache.maxEntries": 100})["spark.sql.codegen.cache.maxEntries"]
        == "100"
    )
    debugging = "spark.python.sql.dataFrameDebugging.enabled"
    assert session_conf(extra_conf={debugging: True})[debugging] == "true"


def test_existing_session_gets_required_runtime_settings_back(spark: SparkSession) -> None:
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        same = build_session("again", master="local[2]", shuffle_partitions=2)
        assert same is spark
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
