"""spark-submit.sh against a Spark standalone master and worker on 127.0.0.1: the package ships to the
executors (they import it from the submitted zip) and the batch job writes its outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
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
    processes = [
        subprocess.Popen(
            [
                str(SPARK_CLASS),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            env=env,
            stdout=(logs / "master.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        wait_for_port(port)
        processes.append(
            subprocess.Popen(
                [
                    str(SPARK_CLASS),
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "2",
                    "--memory",
                    "3g",
                    "--webui-port",
                    str(worker_ui),
                ],
                env=env,
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


def test_batch_job_runs_on_the_cluster(master: str, tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    common = ["--conf", str(ROOT / "conf"), "--lake-root", lake]
    result = submit(master, "jobs/demo_data.py", *common, "--persons", "60", "--as-of", "2026-11-29T00:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]
    result = submit(master, "jobs/run.py", *common, "--evaluation-time", "2026-11-29T00:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch-20261129T000000Z: completed" in result.stdout
    runs = DeltaTable(f"{lake}/activation_runs").to_pyarrow_table().to_pylist()
    assert [(r["run_id"], r["status"]) for r in runs] == [("batch-20261129T000000Z", "completed")]
    assert runs[0]["storage_engine"] == "delta-rs"
    hub = DeltaTable(f"{lake}/activation/cja/hub_batch").to_pyarrow_table().to_pylist()
    assert hub and {r["reason"] for r in hub} == {"backfill"}
