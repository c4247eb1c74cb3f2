"""Job-level functions: read → transform → write, one per console subcommand.

These are the only library functions that do I/O, always through :mod:`audience_activation.storage`. The
console command (:mod:`audience_activation.cli`) and the ``jobs/*.py`` spark-submit scripts only parse
arguments, build the session and call them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from . import demo_data
from .config import AppConfig
from .schemas import INPUT_TABLES, check_input_schemas
from .session import build_session
from .storage import DeltaStorage, TableNotFoundError, open_storage

log = logging.getLogger(__name__)

#: Called with a one-line progress message while long work runs.
Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def session_for(config: AppConfig) -> SparkSession:
    """The Spark session with the settings of ``job.yaml``."""
    spark_settings = config.job.spark
    return build_session(
        spark_settings.app_name,
        master=spark_settings.master,
        shuffle_partitions=spark_settings.shuffle_partitions,
        extra_conf=spark_settings.conf,
    )


def storage_for(spark: SparkSession, config: AppConfig) -> DeltaStorage:
    """The storage engine of ``job.yaml`` (``storage.engine``)."""
    return open_storage(spark, config.job.storage.engine.value)


@dataclass(frozen=True)
class WrittenTable:
    """One table written by a job: where, which version, how many rows."""

    name: str
    location: str
    version: int
    rows: int


def write_demo_data(
    spark: SparkSession,
    config: AppConfig,
    *,
    persons: int,
    seed: int,
    as_of: dt.datetime,
    progress: Progress = _quiet,
) -> list[WrittenTable]:
    """Generate the demo inputs and write them (overwriting) to the configured input locations.

    Args:
        spark: the session.
        config: the configuration (lake root, table locations, storage engine).
        persons: how many persons to generate.
        seed: the generator seed.
        as_of: the anchor time of the generated timestamps.
        progress: receives a line per table.

    Returns:
        What was written, per table.
    """
    store = storage_for(spark, config)
    tables = demo_data.generate(spark, persons, seed=seed, as_of=as_of)
    written = []
    for name, df in tables.as_dict().items():
        location = config.job.table_location(name)
        progress(f"writing {name} to {location}")
        version = store.overwrite(df, location, commit_info={"job": "demo-data", "seed": str(seed)})
        rows = store.read(location, version).df.count()
        written.append(WrittenTable(name, location, version, rows))
        progress(f"wrote {name}: {rows:,} rows (version {version})")
    return written


@dataclass(frozen=True)
class InputReport:
    """What ``validate`` found: the storage engine and, per input table, its version (None if absent)."""

    engine: str
    versions: dict[str, int | None] = field(default_factory=dict)


def validate_inputs(spark: SparkSession, config: AppConfig) -> InputReport:
    """Check the input tables against CONTRACT §3 before any job runs.

    Raises:
        InputSchemaError: a required table is missing or a required column is missing or mistyped; the
            message names every table and column at fault.
        UnsupportedTableFeatureError: an input table needs a Delta reader feature the engine lacks.
    """
    store = storage_for(spark, config)
    schemas: dict[str, StructType | None] = {}
    versions: dict[str, int | None] = {}
    for name in INPUT_TABLES:
        location = config.job.table_location(name)
        try:
            snapshot = store.read(location)
        except TableNotFoundError:
            schemas[name], versions[name] = None, None
            continue
        schemas[name], versions[name] = snapshot.df.schema, snapshot.version
    check_input_schemas(schemas)
    return InputReport(engine=store.name, versions=versions)


__all__ = [
    "InputReport",
    "WrittenTable",
    "session_for",
    "storage_for",
    "validate_inputs",
    "write_demo_data",
]
