"""Shared pytest fixtures: one local SparkSession for the whole test session, and the storage engines.

Every setting is chosen for small, fast, deterministic test runs (splink's conftest is the model):
the session is built by the project's own factory so the settings the outputs depend on (UTC, TIMESTAMP_MICROS,
AQE) are the ones users get, and only speed-related settings differ.

**Both storage engines.** The session loads the Delta Lake Spark connector (the jars ``make setup`` fetched
into ``jars/lib/``), so one session serves both engines. Every test that touches storage takes the ``engine``
parameter (or the ``store`` fixture) and runs once per engine: ``test_x[delta-rs]`` and ``test_x[delta-spark]``.
Without the jars the run stops at once and says how to fetch them: no test is skipped for a missing engine.
``AUDIENCE_ACTIVATION_TEST_ENGINES=delta-rs`` (or ``delta-spark``) restricts a run to one engine on purpose.
The end of the run prints how many tests ran on each engine.

**Two processes.** ``make test`` runs the suite in two pytest-xdist workers (``-n 2 --dist worksteal``), each
with its own session from the fixture below: on two cores that took 32.6 min where one process took 38.0 (the
tests are CPU-bound, so each runs ~1.8 times slower next to the other, but the cores are never idle while one
waits on a subprocess, a JVM start or a commit). Nothing here is shared between the workers: lakes, checkpoints
and warehouses live under each test's own temp dir, and the cluster test picks free ports. The slow tests start
first, dealt over the two workers (``slow_first.py``, durations kept in ``tests/durations.json``), so that neither
worker is left alone with a long test at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from audience_activation.session import build_session
from audience_activation.storage import DeltaStorage, open_storage
from audience_activation.storage.connector import find_delta_jars
from slow_first import order, read_durations, write_durations

ENGINES_ENV = "AUDIENCE_ACTIVATION_TEST_ENGINES"
ALL_ENGINES = ("delta-rs", "delta-spark")


def selected_engines() -> tuple[str, ...]:
    """The storage engines this run tests: both unless ``AUDIENCE_ACTIVATION_TEST_ENGINES`` narrows it."""
    value = os.environ.get(ENGINES_ENV, "")
    engines = tuple(e.strip() for e in value.split(",") if e.strip()) or ALL_ENGINES
    unknown = [e for e in engines if e not in ALL_ENGINES]
    if unknown:
        raise pytest.UsageError(f"{ENGINES_ENV}: unknown engine(s) {unknown}; expected {', '.join(ALL_ENGINES)}")
    return engines


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
    # Small, fixed driver memory: tests must not depend on a big heap. 3g, not 2g: one session runs the whole
    # suite, and its 2g heap was found full (G1 with no young regions left) by the time the streaming tests ran,
    # late in the suite; what fills it is not yet pinned down (the class histogram showed mostly long[] arrays).
    "spark.driver.memory": "3g",
    # Less JVM work per task for tiny inputs.
    "spark.sql.files.openCostInBytes": "1048576",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    # Python workers are reused between tasks (applyInPandas tests) instead of forked each time.
    "spark.python.worker.reuse": "true",
    # Delta rebuilds a table's state with this many tasks after each commit (50 by default): tiny test
    # tables need two.
    "spark.databricks.delta.snapshotPartitions": "2",
}


def pytest_configure(config: pytest.Config) -> None:
    engines = selected_engines()
    if "delta-spark" in engines:
        jars = find_delta_jars()
        if not jars:
            raise pytest.UsageError(
                f"the delta-spark storage engine cannot be tested: {jars.reason}.\n"
                f"Fetch the Delta Lake Spark jars with `make jars` (needs Maven Central), or test only the "
                f"delta-rs engine on purpose with {ENGINES_ENV}=delta-rs."
            )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``engine`` (and so ``store``) parametrizes a test over the selected storage engines; ``first, then`` over
    the ordered pairs of two different selected engines."""
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", selected_engines())
    if {"first", "then"} <= set(metafunc.fixturenames):  # a lake started on one engine, continued on the other
        engines = selected_engines()
        pairs = [(a, b) for a in engines for b in engines if a != b]
        reason = f"needs both storage engines ({ENGINES_ENV} selects one on purpose)"
        metafunc.parametrize(
            ("first", "then"), pairs or [pytest.param(None, None, marks=pytest.mark.skip(reason=reason))]
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help="write the slow tests' durations to tests/durations.json: the order later runs start them in",
    )


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture scope
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests start first, dealt over the xdist workers (``slow_first``); each engine-parametrized test
    carries its engine as a user property: its reports bring it to the terminal summary, also from the worker
    processes of a parallel run (``pytest -n``, where the controlling process collects nothing)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = order(items, lambda item: item.nodeid, read_durations(), workers)
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "engine" in callspec.params:
            item.user_properties.append((_ENGINE_PROPERTY, callspec.params["engine"]))


_ENGINE_PROPERTY = "storage_engine"
_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _SECONDS[report.nodeid] = _SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``--store-durations``: the run's slow tests (setup, call and teardown) to ``tests/durations.json``, written
    by the controlling process only, and only after a run in which every test passed."""
    config = session.config
    if config.getoption("--store-durations") and not hasattr(config, "workerinput") and exitstatus == 0:
        write_durations(_SECONDS)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """One line per storage engine: how many engine-parametrized tests passed, failed or were skipped."""
    tally: dict[str, dict[str, int]] = {engine: {} for engine in selected_engines()}
    seen = False
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            engine = dict(getattr(report, "user_properties", ())).get(_ENGINE_PROPERTY)
            seen = seen or engine is not None
            if engine is not None and (report.when == "call" or outcome != "passed"):
                tally[engine][outcome] = tally[engine].get(outcome, 0) + 1
    if not seen:
        return
    terminalreporter.section("storage engines")
    for engine, counts in tally.items():
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no tests"
        terminalreporter.write_line(f"{engine}: {summary}")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The test session: ``local[2]``, 2 shuffle partitions, warehouse and checkpoints under a temp dir."""
    base = tmp_path_factory.mktemp("spark")
    session = build_session(
        "audience-activation-tests",
        master="local[2]",
        shuffle_partitions=2,
        extra_conf={**TEST_CONF, "spark.sql.warehouse.dir": str(base / "warehouse")},
        delta_connector="delta-spark" in selected_engines(),
    )
    session.sparkContext.setCheckpointDir(str(base / "checkpoints"))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def store(spark: SparkSession, engine: str) -> DeltaStorage:
    """The storage engine under test (the test runs once per engine)."""
    return open_storage(spark, engine)


REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture()
def conf(tmp_path: Path, engine: str) -> Path:
    """A copy of the repository's ``conf/`` whose ``job.yaml`` selects the storage engine under test."""
    folder = tmp_path / "conf"
    shutil.copytree(REPO_CONF, folder)
    job = folder / "job.yaml"
    text = job.read_text()
    assert "  engine: auto\n" in text
    job.write_text(text.replace("  engine: auto\n", f"  engine: {engine}\n", 1))
    return folder


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
    keys = [
        "spark.sql.shuffle.partitions",
        "spark.sql.session.timeZone",
        "spark.sql.adaptive.enabled",
        "spark.databricks.delta.snapshotPartitions",
    ]
    saved = {key: spark.conf.get(key, None) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)
