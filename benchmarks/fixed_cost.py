"""The fixed cost of a batch run: the same run repeated in one process on a small lake (run by hand on an
otherwise idle machine; results under benchmarks/results/fixed-cost-<engine>[-<label>].{md,json}).

    .venv/bin/python benchmarks/fixed_cost.py --engine delta-rs
    .venv/bin/python benchmarks/fixed_cost.py --engine delta-spark --runs 4
    .venv/bin/python benchmarks/fixed_cost.py --engine delta-rs --codegen-cache 100 --label cache-100
    .venv/bin/python benchmarks/fixed_cost.py --engine delta-rs --dataframe-debugging true --label debugging

On a lake of a few hundred persons the data costs nothing, so what a run takes is what every run pays whatever
its size: starting the JVM, planning each Spark query, generating and compiling code, the JIT compiling that
code, scheduling tasks, committing tables. The script writes a demo lake, builds one session, then runs the
batch job ``--runs`` times at the same ``T`` (``force``), and reports per run:

- wall time, and wall time per stage (from the job's progress messages);
- Spark jobs started (a job group per run);
- CPU seconds of this Python process (building expressions, delta-rs commits) and of the JVM by thread group,
  read from ``jstack`` before and after the run: the JIT compilers (C1, C2), the driver threads (py4j: analysis,
  optimisation, planning of each query), the task threads, garbage collection, the rest.

The first run pays the cold JVM; the later ones show what stays when it is warm.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _measure import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
T = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
#: PySpark's DataFrame debugging (call sites recorded for error messages); the session factory turns it off.
DEBUGGING = "spark.python.sql.dataFrameDebugging.enabled"
THREAD = re.compile(r'^"([^"]+)".*? cpu=([\d.]+)ms', re.MULTILINE)


def thread_group(name: str) -> str:
    if name.startswith("C2 CompilerThread"):
        return "JIT C2"
    if name.startswith("C1 CompilerThread"):
        return "JIT C1"
    if name.startswith("Executor task"):
        return "tasks"
    if name.startswith("Thread-"):
        return "driver (py4j)"
    if name.startswith(("GC ", "G1 ")):
        return "GC"
    return "other JVM"


def jvm_cpu(pid: str) -> collections.Counter[str]:
    """CPU seconds per thread group of the JVM so far (threads that ended are not counted)."""
    dump = subprocess.run(["jstack", pid], capture_output=True, text=True, check=True).stdout
    groups: collections.Counter[str] = collections.Counter()
    for name, ms in THREAD.findall(dump):
        groups[thread_group(name)] += float(ms) / 1000
    return groups


def marks_to(marks: list[tuple[str, float]]) -> Any:
    """A progress callback recording each message with the time it arrived."""
    return lambda message: marks.append((message, time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="delta-rs", choices=("delta-rs", "delta-spark"))
    parser.add_argument("--persons", type=int, default=300)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--codegen-cache", type=int, default=None, help="spark.sql.codegen.cache.maxEntries")
    parser.add_argument(
        "--dataframe-debugging",
        choices=("true", "false"),
        default=None,
        help="spark.python.sql.dataFrameDebugging.enabled (default: the session factory's, false)",
    )
    parser.add_argument("--label", default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    from audience_activation import app
    from audience_activation.config import load_config
    from audience_activation.session import build_session

    work = Path(tempfile.mkdtemp(prefix="aa-fixed-cost-"))
    conf = work / "conf"
    shutil.copytree(ROOT / "conf", conf)
    job = yaml.safe_load((conf / "job.yaml").read_text())
    job.setdefault("storage", {})["engine"] = args.engine
    (conf / "job.yaml").write_text(yaml.safe_dump(job))
    config = load_config(conf)
    config = config.model_copy(update={"job": config.job.with_lake_root(str(work / "lake"))})
    extra = {} if args.codegen_cache is None else {"spark.sql.codegen.cache.maxEntries": str(args.codegen_cache)}
    if args.dataframe_debugging is not None:
        extra[DEBUGGING] = args.dataframe_debugging
    spark = build_session("fixed-cost", delta_connector=args.engine == "delta-spark", extra_conf=extra)
    spark.sparkContext.setLogLevel("ERROR")
    session_seconds = time.perf_counter() - started
    pid = str(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]
    app.write_demo_data(spark, config, persons=args.persons, seed=42, as_of=T)

    runs: list[dict[str, Any]] = []
    tracker = spark.sparkContext.statusTracker()
    before = jvm_cpu(pid)
    for index in range(args.runs):
        marks: list[tuple[str, float]] = []
        group = f"run-{index}"
        spark.sparkContext.setJobGroup(group, group)
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = app.run_batch(spark, config, evaluation_time=T, force=True, progress=marks_to(marks))
        wall = time.perf_counter() - t0
        python_cpu = time.process_time() - cpu0
        after = jvm_cpu(pid)
        stages: dict[str, float] = {}
        for (message, at), (_, until) in zip(marks, [*marks[1:], ("end", t0 + wall)], strict=True):
            key = "writing the outputs" if message.startswith("writing ") else re.sub(r"batch-\S+ ", "", message)
            stages[key] = round(stages.get(key, 0.0) + until - at, 2)
        runs.append(
            {
                "status": summary.status,
                "wall_seconds": round(wall, 2),
                "spark_jobs": len(tracker.getJobIdsForGroup(group)),
                "python_cpu_seconds": round(python_cpu, 2),
                "jvm_cpu_seconds": {k: round(after[k] - before[k], 2) for k in sorted(after)},
                "stage_seconds": stages,
            }
        )
        before = after
        print(f"run {index}: {wall:.1f} s, {runs[-1]['spark_jobs']} Spark jobs", file=sys.stderr)

    results = {
        "benchmark": "fixed_cost",
        "label": args.label,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "spark": {"version": spark.version, "master": spark.conf.get("spark.master")},
        "engine": args.engine,
        "persons": args.persons,
        "codegen_cache_entries": spark.conf.get("spark.sql.codegen.cache.maxEntries"),
        "dataframe_debugging": spark.conf.get(DEBUGGING),
        "python_and_session_start_seconds": round(session_seconds, 2),
        "runs": runs,
    }
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    suffix = f"-{args.label}" if args.label else ""
    path = write_results(f"fixed-cost-{args.engine}{suffix}", results, render(results))
    print(render(results))
    print(f"results written to {path}")


def render(results: dict[str, Any]) -> str:
    runs = results["runs"]
    m = results["machine"]
    groups = sorted({g for r in runs for g in r["jvm_cpu_seconds"]}, key=lambda g: -runs[0]["jvm_cpu_seconds"][g])
    stages = list(dict.fromkeys(s for r in runs for s in r["stage_seconds"]))
    header = "| | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |\n|---|" + "---:|" * len(runs)
    lines = [
        f"# Fixed cost of a batch run, {results['persons']} persons, {results['engine']} ({results['date']})",
        "",
        f"Machine: {m['cpus']} cores, {m['memory_gib']} GiB; Spark {results['spark']['version']} "
        f"`{results['spark']['master']}`; generated-code cache {results['codegen_cache_entries']} entries; "
        f"DataFrame debugging {results['dataframe_debugging']}. "
        f"The same run (`T` = {T.isoformat()}, forced) repeated in one process; Python and session start "
        f"took {results['python_and_session_start_seconds']} s before the first.",
        "",
        header,
        "| **wall time** | " + " | ".join(f"**{r['wall_seconds']:.1f} s**" for r in runs) + " |",
        "| Spark jobs | " + " | ".join(str(r["spark_jobs"]) for r in runs) + " |",
        "| CPU: Python process | " + " | ".join(f"{r['python_cpu_seconds']:.1f} s" for r in runs) + " |",
        *[
            f"| CPU: JVM {g} | " + " | ".join(f"{r['jvm_cpu_seconds'].get(g, 0):.1f} s" for r in runs) + " |"
            for g in groups
        ],
        *[f"| wall: {s} | " + " | ".join(f"{r['stage_seconds'].get(s, 0):.1f} s" for r in runs) + " |" for s in stages],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
