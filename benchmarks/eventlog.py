"""Where a run's time goes, from its Spark event log (run by hand; used by ``benchmarks/batch.py --event-log``).

    .venv/bin/python benchmarks/eventlog.py /tmp/aa-events/local-1234 [--markdown]

The benchmark tags every Spark job with the pipeline stage running at the time (local property ``aa.stage``,
set from the job's progress messages). Per stage this prints: the Spark jobs and SQL executions, the summed
task time, rows and bytes read from files, shuffle volume written, rows written, which input tables were
scanned (a table scanned in several stages or executions is recomputed work), and the Python operators in the
physical plans (``ArrowEvalPython``, ``BatchEvalPython``, ``FlatMapGroupsInPandas``...), i.e. rows that crossed
into Python.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

STAGE_PROPERTY = "aa.stage"
PYTHON_OPERATORS = ("ArrowEvalPython", "BatchEvalPython", "FlatMapGroupsInPandas", "MapInPandas", "PythonUDF")
_SCAN = re.compile(r"\) Scan [^\n]*\n(?:[^\n]+\n){0,4}?Location: \w+ \[([^\],]+)")
_INPUTS = ("profile_fragments", "experience_events", "identity_graph", "region_information")


@dataclass
class StageFigures:
    """What the Spark jobs of one pipeline stage did."""

    jobs: int = 0
    executions: set[int] = field(default_factory=set)
    task_seconds: float = 0.0
    input_rows: int = 0
    input_bytes: int = 0
    shuffle_write_bytes: int = 0
    shuffle_write_rows: int = 0
    output_rows: int = 0
    input_scans: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    python: set[str] = field(default_factory=set)
    shuffles: int = 0
    seconds_by_execution: dict[int, float] = field(default_factory=dict)


def _input_table(path: str) -> str | None:
    for table in _INPUTS:
        if f"/{table}" in path:
            return table
    return None


def summarise(log: Path) -> dict[str, StageFigures]:
    """Figures per ``aa.stage`` value (jobs without one are under ``(untagged)``)."""
    stage_of_job: dict[int, str] = {}
    stage_of_spark_stage: dict[int, str] = {}
    execution_stage: dict[int, str] = {}
    plans: dict[int, str] = {}
    figures: dict[str, StageFigures] = defaultdict(StageFigures)
    started: dict[int, int] = {}
    ended: dict[int, int] = {}
    with log.open() as lines:
        for line in lines:
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                props = event.get("Properties") or {}
                name = props.get(STAGE_PROPERTY, "(untagged)")
                stage_of_job[event["Job ID"]] = name
                figures[name].jobs += 1
                for stage_id in event["Stage IDs"]:
                    stage_of_spark_stage[stage_id] = name
                execution = props.get("spark.sql.execution.id")
                if execution is not None:
                    figures[name].executions.add(int(execution))
                    execution_stage.setdefault(int(execution), name)
            elif kind == "SparkListenerTaskEnd":
                name = stage_of_spark_stage.get(event["Stage ID"], "(untagged)")
                metrics = event.get("Task Metrics") or {}
                stats = figures[name]
                stats.task_seconds += metrics.get("Executor Run Time", 0) / 1000
                stats.input_rows += metrics.get("Input Metrics", {}).get("Records Read", 0)
                stats.input_bytes += metrics.get("Input Metrics", {}).get("Bytes Read", 0)
                shuffle = metrics.get("Shuffle Write Metrics", {})
                stats.shuffle_write_bytes += shuffle.get("Shuffle Bytes Written", 0)
                stats.shuffle_write_rows += shuffle.get("Shuffle Records Written", 0)
                stats.output_rows += metrics.get("Output Metrics", {}).get("Records Written", 0)
            elif kind.endswith("SparkListenerSQLExecutionStart"):
                plans[event["executionId"]] = event.get("physicalPlanDescription", "")
                started[event["executionId"]] = event["time"]
            elif kind.endswith("SparkListenerSQLExecutionEnd"):
                ended[event["executionId"]] = event["time"]
            elif kind.endswith("SparkListenerSQLAdaptiveExecutionUpdate"):
                plans[event["executionId"]] = event.get("physicalPlanDescription", plans.get(event["executionId"], ""))
    for execution, plan in plans.items():
        name = execution_stage.get(execution)
        if name is None:
            continue
        stats = figures[name]
        for match in _SCAN.finditer(plan):
            table = _input_table(match.group(1))
            if table is not None:
                stats.input_scans[table] += 1
        stats.python.update(op for op in PYTHON_OPERATORS if op in plan)
        stats.shuffles += len(re.findall(r"\(\d+\) (?:Exchange|ShuffleQueryStage)", plan))
        if execution in started and execution in ended:
            stats.seconds_by_execution[execution] = (ended[execution] - started[execution]) / 1000
    return dict(figures)


def markdown(figures: dict[str, StageFigures], order: list[str] | None = None) -> str:
    """A table of :func:`summarise`'s figures, stages in ``order`` (then the rest)."""
    names = [n for n in (order or []) if n in figures] + sorted(n for n in figures if n not in (order or []))
    rows = [
        "| stage | jobs | SQL executions | shuffles planned | task time | rows read from files | shuffle written |"
        " rows written | input tables scanned (times) | Python |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name in names:
        s = figures[name]
        scans = ", ".join(f"{t.split('_')[0]}×{n}" for t, n in sorted(s.input_scans.items())) or "–"
        rows.append(
            f"| {name} | {s.jobs} | {len(s.executions)} | {s.shuffles} | {s.task_seconds:.1f} s | {s.input_rows:,} "
            f"| {s.shuffle_write_bytes / 2**20:,.0f} MiB ({s.shuffle_write_rows:,} rows) | {s.output_rows:,} "
            f"| {scans} | {', '.join(sorted(s.python)) or '–'} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="an uncompressed Spark event log file")
    args = parser.parse_args()
    print(markdown(summarise(args.log)))


if __name__ == "__main__":
    main()
