"""One writer per lake, and killed runs leave nothing, with real processes on both storage engines.

A run (``audience-activation run``, a process of its own) holds the lease; runs started meanwhile (the CLI in
the test's process) for the same ``T``, an older one and a newer one fail at once naming it (exit code 3) and
touch nothing; the holder is then killed with SIGKILL after some of its commits; the next run undoes them
before reading any state, and the lake ends equal to one where the killed run never happened (a serial run,
computed once).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from audience_activation import app
from audience_activation.cli import cli
from audience_activation.config import load_config
from audience_activation.storage.base import commit_info, commit_versions, uncommitted_data_files

# The CLI builds its session through the factory, which re-applies job.yaml settings to the shared test
# session: put the test settings back afterwards.
pytestmark = pytest.mark.usefixtures("restore_spark_conf")

CLI = str(Path(sys.executable).parent / "audience-activation")
T1, T2, T3 = "2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"
RUN2 = "batch-20261130T000000Z"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def demo_lake(conf: Path, lake: Path) -> None:
    result = CliRunner().invoke(
        cli, ["demo-data", "--conf", str(conf), "--lake-root", str(lake), "--persons", "150", "--as-of", T1]
    )
    assert result.exit_code == 0, result.output


def outputs(conf: Path, lake: Path) -> dict[str, list[str]]:
    """Every output table's rows (the run log without its times), for comparing lakes; a table no run wrote (the
    activation state's log, written by streams only) is left out."""
    config = load_config(conf)
    config = config.model_copy(update={"job": config.job.with_lake_root(str(lake))})
    out = {}
    for location in app.output_locations(config):
        if not DeltaTable.is_deltatable(location):
            continue
        rows = DeltaTable(location).to_pyarrow_table().to_pylist()
        if location.endswith("activation_runs"):
            out["activation_runs"] = sorted(repr((r["run_id"], r["status"], sorted(r["counts"]))) for r in rows)
        else:
            out[location.removeprefix(str(lake))] = sorted(repr(sorted(r.items())) for r in rows)
    return out


@pytest.fixture(scope="module")
def serial() -> dict[str, dict[str, list[str]]]:
    """The lake after T1 then T3 with nothing in between, computed by the first engine that needs it."""
    return {}


def cli_process(conf: Path, lake: Path, t: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [CLI, "run", "--conf", str(conf), "--lake-root", str(lake), "--evaluation-time", t],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches its JVM too
        )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def lease_holder(lake: Path) -> tuple[str, str] | None:
    try:
        row = DeltaTable(str(lake / "_lease")).to_pyarrow_table().to_pylist()[0]
    except Exception:  # noqa: BLE001 - not created yet, or being committed
        return None
    return row["run_id"], row["state"]


def committed_by(location: Path, run_id: str) -> bool:
    return any(commit_info(str(location), v).get("run_id") == run_id for v in commit_versions(str(location)))


def test_one_writer_per_lake_and_a_killed_run_leaves_nothing(
    spark: SparkSession, conf: Path, tmp_path: Path, serial: dict[str, dict[str, list[str]]]
) -> None:
    config = load_config(conf)
    lake = tmp_path / "lake"
    demo_lake(conf, lake)
    at = config.model_copy(update={"job": config.job.with_lake_root(str(lake))})
    assert app.run_batch(spark, at, evaluation_time=utc(T1)).status == "completed"

    # The holder: a run of T2 in its own process.
    holder = cli_process(conf, lake, T2, tmp_path / "holder.log")
    try:
        wait_for(lambda: lease_holder(lake) == (RUN2, "running"), "the T2 run to take the lease")
        # Started meanwhile: the same T, an older one, a newer one. Each fails at once naming the holder.
        # (The CLI in this process, not three more JVMs competing with the holder for the two cores: the
        # holder is the other process, which is what the lease has to keep out.)
        for t in (T2, T1, T3):
            other = CliRunner().invoke(
                cli, ["run", "--conf", str(conf), "--lake-root", str(lake), "--evaluation-time", t]
            )
            assert other.exit_code == 3, other.output
            assert "LeaseHeldError" in other.output and f"in use by run {RUN2}" in other.output, other.output
        # Kill the holder after some of its commits.
        wait_for(lambda: committed_by(lake / "unified_profiles", RUN2), "the T2 run's first commits")
        os.killpg(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=60) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert committed_by(lake / "identity_clusters", RUN2)  # the killed run's commits are there...
    assert lease_holder(lake) == (RUN2, "running")  # ... and it still "holds" the lease

    # The next run (another T) finds the holder's process gone, undoes its commits, sweeps its files.
    summary = app.run_batch(spark, at, evaluation_time=utc(T3))
    assert summary.status == "completed" and summary.previous_run == "batch-20261129T000000Z"
    assert lease_holder(lake) == ("batch-20261201T000000Z", "released")
    assert not (lake / "_scratch").exists()
    for location in app.output_locations(at):
        assert uncommitted_data_files(location) == {}, location
    runs = {r["run_id"]: r for r in DeltaTable(str(lake / "activation_runs")).to_pyarrow_table().to_pylist()}
    assert runs[RUN2]["status"] == "failed" and "did not complete" in runs[RUN2]["error"]

    # The lake equals one where T3 followed T1 directly (but for the killed run's failed row in the run log).
    got = outputs(conf, lake)
    got["activation_runs"] = [r for r in got["activation_runs"] if RUN2 not in r]
    if not serial:
        reference = tmp_path / "serial"
        demo_lake(conf, reference)
        clean = config.model_copy(update={"job": config.job.with_lake_root(str(reference))})
        for t in (T1, T3):
            app.run_batch(spark, clean, evaluation_time=utc(t))
        serial["lake"] = outputs(conf, reference)
    assert got == serial["lake"]
