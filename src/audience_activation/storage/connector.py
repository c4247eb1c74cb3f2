"""The Delta Lake Spark connector: which one matches this install, where its jars are, how a session loads it.

Rules, in the order :func:`find_delta_jars` applies them:

1. **The coordinate follows the installed packages.** Delta publishes one connector per Spark minor version,
   ``io.delta:delta-spark_<spark major.minor>_2.13:<delta version>``; the pip packages ``pyspark`` and
   ``delta-spark`` pin both halves (the pip package's own ``configure_spark_with_delta_pip`` builds the same
   name). ``jars/pom.xml`` pins the same versions, which a test checks.
2. **Where the jars are.** ``$AUDIENCE_ACTIVATION_JARS`` (a folder; ``none`` disables the connector), else
   ``jars/lib/`` of the source checkout the package runs from, where ``jars/fetch.sh`` (``make setup``) puts
   them.
3. **Only a complete fetch counts.** The folder must hold the ``.complete`` list that ``jars/fetch.sh`` writes
   last, every jar on it, and a ``delta-spark`` jar of the expected version; otherwise the connector is not
   used and :func:`find_delta_jars` says why (``storage.engine: auto`` then falls back to delta-rs).

A session created by :func:`audience_activation.session.build_session` gets :func:`connector_conf` (the jars in
``spark.jars`` and Delta's SQL extension and catalog). Under ``spark-submit`` the jars come from
``spark-submit.sh`` (``--jars`` or ``--packages``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable naming the folder of the connector's jars (``none``: do not load them).
JARS_ENV = "AUDIENCE_ACTIVATION_JARS"
#: Written last by ``jars/fetch.sh``: the names of the jars of a complete fetch, one per line.
COMPLETE_MARKER = ".complete"
SCALA_BINARY_VERSION = "2.13"

#: Static SQL settings the connector needs (``DeltaTable``, ``RESTORE``, SQL on ``delta.`path```).
DELTA_SQL_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def delta_spark_coordinate() -> str:
    """The Maven coordinate of the connector matching the installed ``pyspark`` and ``delta-spark``.

    Example:
        >>> delta_spark_coordinate()  # doctest: +SKIP
        'io.delta:delta-spark_4.2_2.13:4.4.0'
    """
    spark_minor = ".".join(metadata.version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_BINARY_VERSION}:{metadata.version('delta-spark')}"


def default_jars_dir() -> Path:
    """``jars/lib`` of the source checkout this package is imported from (an editable install)."""
    return Path(__file__).resolve().parents[3] / "jars" / "lib"


@dataclass(frozen=True)
class DeltaJars:
    """The outcome of looking for the connector's jars.

    Attributes:
        jars: absolute paths of the jars to put on the classpath; empty when none are usable.
        reason: where they were found, or why none are used (shown by ``storage.engine: auto``).
    """

    jars: tuple[str, ...]
    reason: str

    def __bool__(self) -> bool:
        return bool(self.jars)


def find_delta_jars(environ: Mapping[str, str] | None = None) -> DeltaJars:
    """The connector's jars for this install (see the module docstring for the rules)."""
    env = os.environ if environ is None else environ
    configured = env.get(JARS_ENV)
    if configured is not None and configured.strip().lower() in ("", "none"):
        return DeltaJars((), f"${JARS_ENV} is {configured!r}: the Delta Lake Spark connector is not loaded")
    folder = Path(configured) if configured else default_jars_dir()
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        hint = "run `make jars` (needs Maven Central)" if not configured else f"check ${JARS_ENV}"
        return DeltaJars((), f"no fetched Delta Lake Spark jars in {folder} ({hint})")
    names = [line.strip() for line in marker.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        return DeltaJars((), f"{folder} is incomplete, missing {', '.join(missing)}; run `make jars` again")
    _, artifact, version = delta_spark_coordinate().split(":")
    expected = f"{artifact}-{version}.jar"
    if expected not in names:
        found = ", ".join(name for name in names if name.startswith("delta-spark_")) or "none"
        return DeltaJars(
            (),
            f"{folder} holds a different Delta connector ({found}) than the installed packages need "
            f"({expected}); run `make jars` again",
        )
    return DeltaJars(tuple(str(folder / name) for name in names), f"{len(names)} jars in {folder}")


def connector_conf(jars: DeltaJars, existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings that load the connector: the jars and Delta's SQL extension and catalog.

    Settings already present in ``existing`` (e.g. from ``job.yaml``) are extended, not replaced: other
    jars and other SQL extensions stay.
    """
    existing = existing or {}
    conf: dict[str, str] = {}

    def merged(key: str, values: list[str]) -> str:
        current = [v for v in (existing.get(key) or "").split(",") if v]
        return ",".join(current + [v for v in values if v not in current])

    conf["spark.jars"] = merged("spark.jars", list(jars.jars))
    conf["spark.sql.extensions"] = merged("spark.sql.extensions", [DELTA_SQL_CONF["spark.sql.extensions"]])
    conf["spark.sql.catalog.spark_catalog"] = existing.get(
        "spark.sql.catalog.spark_catalog", DELTA_SQL_CONF["spark.sql.catalog.spark_catalog"]
    )
    return conf
