"""spark-submit.sh against a Spark standalone master and worker on 127.0.0.1, started with the Docker image's
entrypoint (docker/entrypoint.sh master|worker), so what runs inside the containers is tested outside them:
the package ships to the executors (they import it from the submitted zip), and the batch job writes its
outputs with each storage engine (delta-spark: the Delta jars are shipped with --jars)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import SparkSession

from audience_activation import app
from audience_activation.config import load_config
from conftest import selected_engines

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
AS_OF = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("standalone")
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(logs),
        "SPARK_WORKER_DIR": str(logs / "work"),
    }
    port, ui, worker_ui = free_port(), free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    master_env = {
        **env,
        "SPARK_MASTER_HOST": "127.0.0.1",
        "SPARK_MASTER_PORT": str(port),
        "SPARK_MASTER_WEBUI_PORT": str(ui),
    }
    worker_env = {
        **env,
        "SPARK_WORKER_HOST": "127.0.0.1",
        "SPARK_WORKER_CORES": "2",
        "SPARK_WORKER_MEMORY": "3g",
        "SPARK_WORKER_WEBUI_PORT": str(worker_ui),
    }
    processes = [
        subprocess.Popen(
            [str(ENTRYPOINT), "master"],
            env=master_env,
            stdout=(logs / "master.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        wait_for_port(port)
        processes.append(
            subprocess.Popen(
                [str(ENTRYPOINT), "worker", url],
                env=worker_env,
                stdout=(logs / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_for_port(worker_ui)
        time.sleep(3)  # the worker registers with the master
        yield url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def submit(master_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    return subprocess.run(
        [
            str(ROOT / "spark-submit.sh"),
            "--master",
            master_url,
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            "spark.sql.shuffle.partitions=4",
            "--conf",
            "spark.databricks.delta.snapshotPartitions=4",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_executors_import_the_shipped_package(master: str, tmp_path: Path) -> None:
    out = tmp_path / "where.txt"
    result = submit(master, str(ROOT / "tests" / "cluster_probe.py"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    paths = out.read_text().splitlines()
    assert paths and all("audience_activation.zip" in path for path in paths), paths


def test_batch_job_runs_on_the_cluster(
    spark: SparkSession, master: str, tmp_path: Path, conf: Path, engine: str
) -> None:
    lake = str(tmp_path / "lake")
    # The demo inputs are written here with the same engine (the demo-data job is tested through the CLI);
    # the batch job, whose executors read and write every table, runs on the cluster.
    config = load_config(conf)
    config = config.model_copy(update={"job": config.job.with_lake_root(lake)})
    app.write_demo_data(spark, config, persons=60, seed=42, as_of=AS_OF)
    common = ["--conf", str(conf), "--lake-root", lake]
    result = submit(master, "jobs/run.py", *common, "--evaluation-time", "2026-11-29T00:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch-20261129T000000Z: completed" in result.stdout
    runs = DeltaTable(f"{lake}/activation_runs").to_pyarrow_table().to_pylist()
    assert [(r["run_id"], r["status"]) for r in runs] == [("batch-20261129T000000Z", "completed")]
    assert runs[0]["storage_engine"] == engine
    assert f"(storage engine {engine})" in result.stderr + result.stdout
    hub = DeltaTable(f"{lake}/activation/cja/hub_batch").to_pyarrow_table().to_pylist()
    assert hub and {r["reason"] for r in hub} == {"backfill"}

    # The streaming job on the cluster: one new commit of events, then stream --trigger available-now. On the last
    # selected engine only (delta-spark by default: the jars shipped to executors); the stream runs on each
    # engine in-process in test_stream.py.
    if engine != selected_engines()[-1]:
        return
    events = DeltaTable(f"{lake}/experience_events")
    new = events.to_pyarrow_table().slice(0, 5).to_pylist()
    for k, row in enumerate(new):
        row["_id"], row["timestamp"] = f"streamed-{k}", AS_OF + dt.timedelta(minutes=5)
    write_deltalake(events, pa.Table.from_pylist(new, schema=pa.schema(events.schema().to_arrow())), mode="append")
    at = ["--evaluation-time", "2026-11-29T00:10:00Z", "--trigger", "available-now"]
    result = submit(master, "jobs/stream.py", *common, *at)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = DeltaTable(f"{lake}/activation_runs").to_pyarrow_table().to_pylist()
    streamed = [r for r in runs if r["kind"] == "streaming"]
    assert [(r["run_id"], r["status"]) for r in streamed] == [("streaming-20261129T001000Z-0", "completed")], (
        result.stdout[-2000:] + result.stderr[-3000:]
    )
    assert "stream stopped: 1 micro-batch(es)" in result.stdout + result.stderr
    assert dict(streamed[0]["counts"])["rows.experience_events.new"] == 5
