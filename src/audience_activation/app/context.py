"""What every job starts from: the Spark session and the storage engine of ``job.yaml``, progress output."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession

from ..config import AppConfig
from ..session import build_session
from ..storage import DeltaStorage, open_storage

#: Called with a one-line progress message while long work runs.
Progress = Callable[[str], None]
#: Called with a table's name in the run log right after its commit (progress output; tests inject failures).
OnCommit = Callable[[str], None]


def quiet(_message: str) -> None:
    """A :data:`Progress` that says nothing."""
    return None


def no_hook(_table: str) -> None:
    """An :data:`OnCommit` that does nothing."""
    return None


def session_for(config: AppConfig) -> SparkSession:
    """The Spark session with the settings of ``job.yaml``."""
    spark_settings = config.job.spark
    return build_session(
        spark_settings.app_name,
        master=spark_settings.master,
        shuffle_partitions=spark_settings.shuffle_partitions,
        extra_conf=spark_settings.conf,
        delta_connector=config.job.storage.engine.value != "delta-rs",
    )


def storage_for(spark: SparkSession, config: AppConfig) -> DeltaStorage:
    """The storage engine of ``job.yaml`` (``storage.engine``)."""
    return open_storage(spark, config.job.storage.engine.value)
