"""Shared helpers of the hand-run benchmarks: machine description, peak memory sampling, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class PeakMemory:
    """Peak resident memory of this process and all its children (the Spark JVM), sampled every 0.2 s."""

    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.2)

    @property
    def peak_gib(self) -> float:
        return round(self.peak_bytes / 2**30, 2)


@contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    meter = PeakMemory()
    thread = threading.Thread(target=meter._sample, daemon=True)
    thread.start()
    try:
        yield meter
    finally:
        meter._stop.set()
        thread.join()


@dataclass
class MeasuredProcess:
    """A finished child process: wall time from its start, peak resident memory of it and its children."""

    returncode: int
    seconds: float
    peak_gib: float
    stdout: str


def measure_process(command: list[str]) -> MeasuredProcess:
    """Run ``command`` (stderr passes through), sampling the resident memory of its process tree every 0.2 s."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stdout.read() if process.stdout else ""))
    reader.start()
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        total = 0
        with suppress(psutil.Error):
            for member in [watched, *watched.children(recursive=True)]:
                with suppress(psutil.Error):
                    total += member.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    reader.join()
    return MeasuredProcess(process.returncode, seconds, round(peak / 2**30, 2), "".join(chunks))


def write_results(name: str, results: dict[str, object], markdown: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    return path


def event_log_conf(folder: str) -> dict[str, str]:
    """Spark settings for one uncompressed, unrolled event log per process under ``folder`` (created), as
    ``eventlog.py`` reads them."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": str(Path(folder).resolve()),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


def spark_info(spark: Any, driver_memory: str) -> dict[str, object]:
    """The Spark side of the measurement."""
    return {"version": spark.version, "master": spark.conf.get("spark.master"), "driver_memory": driver_memory}


def demo_data_present(store: Any, config: Any, *, seed: int, persons: int) -> bool:
    """Whether the lake already holds demo data written for this seed and size (then it is reused)."""
    from audience_activation.storage import TableNotFoundError

    try:
        last = store.history(config.job.table_location("profile_fragments"), 1)[0]
    except TableNotFoundError:
        return False
    return bool(last.get("seed") == str(seed) and last.get("persons") == str(persons))
