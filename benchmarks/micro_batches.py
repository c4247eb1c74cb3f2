"""Where a streaming micro-batch's time goes: micro-batches of chosen sizes, one process, on a lake restored before
each run (run by hand on an otherwise idle machine; results under
``benchmarks/results/micro-batches-<persons>[-<label>].{md,json}``).

    .venv/bin/python benchmarks/micro_batches.py --persons 1000000 --events 7500 105000 105000
    .venv/bin/python benchmarks/micro_batches.py --persons 1000000 --events 7500 105000 --event-log /tmp/aa-events

Where ``benchmarks/stream.py`` measures latency under a steady writer, this measures the micro-batches
themselves, the same way each time, so that two versions of the code can be compared step by step:

1. A **base lake** of ``--persons`` persons with a completed batch run (``--base``, generated with the shipped
   configuration as ``stream.py`` does, unless it holds that many persons already), copied to ``--lake`` so that
   every measurement starts from the same state. A stream continues from the newest completed run: the copy is
   made fresh for each invocation.
2. For each ``--events`` size, in this process: one commit of that many events to ``experience_events`` and one
   commit of ``--others`` percent as many rows to each other input table (``stream.py``'s writer: copies of
   existing rows from a pool spread over each table, stamped now), then ``stream --trigger available-now`` in
   process (each call is a new stream: hubs found by an earlier micro-batch are not known, as after a restart).
   With ``--one-stream``, every size's commits are made first and one stream takes them, one size per
   micro-batch: what a running stream keeps between micro-batches (known hubs, settled persons) is then kept.
   With ``--compact TABLE ...``, those input tables are compacted after each size's commits (delta-rs
   ``optimize.compact()``: the small data files rewritten into fewer, the same rows), so the micro-batch also
   reads a compaction.
3. Per micro-batch: its wall time, the persons it revisited, and the time between its progress messages (the
   job's steps: resolution, profiles and events, segments, activation, the unchanged-table tests, each write).
   With ``--event-log DIR``, the Spark jobs are tagged with the step (local property ``aa.stage``) and the
   results add per step what ``eventlog.py`` reads (SQL executions, task time, rows read, shuffle, tables
   scanned). Peak memory: the RSS sum of this process and the JVM, every 0.2 s.

To compare with other code, run it with ``PYTHONPATH=<worktree>/src`` (a ``git worktree`` of that commit); to
compare a Spark setting, pass ``--conf KEY=VALUE`` (added to the copy's ``job.yaml``, ``spark.conf``).
"""

from __future__ import annotations

import argparse
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
from _measure import event_log_conf, machine, peak_memory, write_results
from deltalake import DeltaTable
from stream import OTHER_TABLES, SAMPLE_ROWS, Appender, conf_dir, prepare


def step_name(message: str) -> str:
    """A progress message without its numbers, ids and times, so that the same step of two micro-batches has one
    name (``activation_state: N changed row(s) appended to its log (N before)``)."""
    message = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", message)
    message = re.sub(r"\(checkpoint [^)]*\)", "", message)
    return re.sub(r"\d(?:[\d:,.TZ-]*[\dZ])?", "N", message).replace("  ", " ").strip()


class StepClock:
    """Progress callback: the time between progress messages, and the step as ``aa.stage`` on the Spark jobs
    started meanwhile (``mb<k>: <step>``, :func:`step_name`)."""

    def __init__(self, spark: Any, follow: bool = False) -> None:
        self.spark = spark
        self.batch = -1 if follow else 0
        self.follow = follow  # one stream: each ``micro-batch N:`` message starts the next batch
        self.marks: list[tuple[int, str, float]] = []

    def __call__(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
        if self.follow and re.match(r"micro-batch \d+: ", message):
            self.batch += 1
        step = step_name(message)
        self.spark.sparkContext.setLocalProperty("aa.stage", f"mb{self.batch}: {step}")
        self.marks.append((self.batch, step, time.perf_counter()))

    def steps(self, batch: int, end: float) -> list[tuple[str, float]]:
        """The steps of micro-batch ``batch`` with their seconds (the last one until ``end``)."""
        marks = [(m, t) for b, m, t in self.marks if b == batch]
        stops = [t for _, t in marks[1:]] + [end]
        return [(message, round(stop - start, 1)) for (message, start), stop in zip(marks, stops, strict=True)]


def _base_conf(base: Path, args: argparse.Namespace) -> Path:
    """The shipped configuration for the base lake (``stream.py``'s, with this benchmark's engine and memory)."""
    options = argparse.Namespace(
        engine=args.engine, driver_memory=args.driver_memory, identity_index=args.identity_index
    )
    return conf_dir(base, args.base, options)


def _work_conf(folder: Path, args: argparse.Namespace) -> Path:
    """The configuration of the copy, with the event log when asked for."""
    conf = _base_conf(folder, args)
    job = yaml.safe_load((conf / "job.yaml").read_text())
    job["lake"]["root"] = args.lake
    if args.event_log:
        job["spark"]["conf"].update(event_log_conf(args.event_log))
    job["spark"]["conf"].update(dict(setting.split("=", 1) for setting in args.conf))
    (conf / "job.yaml").write_text(yaml.safe_dump(job))
    return conf


def measure(conf: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Step 2 and 3 in this process."""
    from audience_activation import app
    from audience_activation.config import load_config

    config = load_config(conf)
    spark = app.session_for(config)
    spark.sparkContext.setLogLevel("ERROR")
    clock = StepClock(spark, follow=args.one_stream)
    events = Appender(args.lake, "experience_events", args.pool)
    others = [Appender(args.lake, name, args.pool) for name in OTHER_TABLES] if args.others else []
    with peak_memory() as peak:
        each = _one_stream if args.one_stream else _stream_per_size
        batches = each(spark, config, clock, events, others, args)
    result = {"batches": batches, "peak_rss_gib": peak.peak_gib, "app_id": spark.sparkContext.applicationId}
    result["spark"] = spark.version
    spark.stop()  # closes the event log
    return result


def _append(events: Appender, others: list[Appender], count: int, percent: float) -> None:
    """One size's commits: ``count`` events, then ``percent`` percent as many rows to each other table, all
    stamped now."""
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events.append(count, at)
    for other in others:
        other.append(max(1, round(count * percent / 100)), at)


def _stream_per_size(
    spark: Any, config: Any, clock: StepClock, events: Appender, others: list[Appender], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Each size's commits, then a new stream that takes them (nothing kept from the stream before)."""
    from audience_activation import app

    batches = []
    for k, count in enumerate(args.events):
        _append(events, others, count, args.others)
        for table in args.compact:  # OPTIMIZE after the appends: every small data file rewritten, same rows
            DeltaTable(str(Path(args.lake) / table)).optimize.compact()
        clock.batch = k
        start = time.perf_counter()
        summary = app.run_stream(spark, config, progress=clock)
        end = time.perf_counter()
        runs = summary.micro_batches
        batches.append(
            {
                "events": count,
                "seconds": round(end - start, 1),
                "persons": sum(r.counts.persons for r in runs),
                "micro_batches": [r.run_id for r in runs],
                "steps": clock.steps(k, end),
            }
        )
        print(f"micro-batch {k}: {count:,} events, {batches[-1]['seconds']} s", flush=True)
    return batches


def _one_stream(
    spark: Any, config: Any, clock: StepClock, events: Appender, others: list[Appender], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """``--one-stream``: every size's commits first, then one stream that takes one size per micro-batch (what a
    running stream keeps between its micro-batches — known hubs, settled persons — is then kept)."""
    from audience_activation import app

    for count in args.events:
        _append(events, others, count, args.others)
    summary = app.run_stream(spark, config, progress=clock, max_versions_per_trigger=1 + len(others))
    batches = []
    for k, (count, run) in enumerate(zip(args.events, summary.micro_batches, strict=False)):
        seconds = (run.ended_at - run.started_at).total_seconds()
        end = next((t for b, _, t in clock.marks if b == k + 1), time.perf_counter())
        steps = clock.steps(k, end)
        batches.append(
            {
                "events": count,
                "seconds": round(seconds, 1),
                "persons": run.counts.persons,
                "micro_batches": [run.run_id],
                "steps": steps,
            }
        )
        print(f"micro-batch {k}: {count:,} events, {batches[-1]['seconds']} s", flush=True)
    return batches


def _commit() -> str:
    """The commit of the code measured: the checkout the imported package comes from (``PYTHONPATH`` may point at
    another worktree), marked ``+changes`` when its ``src`` differs from that commit."""
    import audience_activation

    checkout = Path(audience_activation.__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "src") else "")


def render(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [
        f"# Micro-batches on {a['persons']:,} persons ({a['engine']})",
        "",
        f"Measured {result['measured_at']} on {result['machine']['cpus']} CPUs, {result['machine']['memory_gib']} GiB, "
        f"Spark {result['spark']}, driver memory {a['driver_memory']}, code {result['code']}. Each size: one commit "
        f"of events and {a['others']}% as many rows to each other input table, then `stream --trigger "
        + (
            "available-now` in process, once for all sizes (one stream, one size per micro-batch: known hubs and "
            "settled persons kept, "
            if a.get("one_stream")
            else "available-now` in process (each size a new stream: no known hubs, "
        )
        + f"identity index {'built in each' if a.get('identity_index') else 'off'})"
        + (f"; after the commits, {', '.join(a['compact'])} compacted (delta-rs OPTIMIZE)" if a.get("compact") else "")
        + (f"; Spark settings {', '.join(f'`{c}`' for c in a['conf'])}" if a.get("conf") else "")
        + ". Peak RSS (this process and the "
        f"JVM): {result['peak_rss_gib']} GiB.",
        "",
        "| micro-batch | events | persons revisited | seconds |",
        "|---:|---:|---:|---:|",
    ]
    for k, b in enumerate(result["batches"]):
        lines.append(f"| {k} | {b['events']:,} | {b['persons']:,} | {b['seconds']} |")
    lines += [
        "",
        "Seconds between the job's progress messages (its steps; numbers in a message shown as N; the step that "
        "starts with `micro-batch N` reads the new rows and plans):",
        "",
    ]
    header = "| step | " + " | ".join(f"mb {k}" for k in range(len(result["batches"]))) + " |"
    lines += [header, "|---|" + "---:|" * len(result["batches"])]
    names: list[str] = []
    for b in result["batches"]:
        names += [m for m, _ in b["steps"] if m not in names]
    for name in names:
        cells = [f"{sum(s for m, s in b['steps'] if m == name):.1f}" for b in result["batches"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("event_log_table"):
        lines += ["", "From the event log (tasks run on 2 cores, so task time can exceed wall time):", ""]
        lines.append(result["event_log_table"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, nargs="+", default=[7_500, 105_000, 105_000], help="events per commit")
    parser.add_argument("--others", type=float, default=2.0, help="percent of rows for each other input table")
    parser.add_argument("--pool", type=int, default=SAMPLE_ROWS, help="rows the appended rows are copied from")
    parser.add_argument("--engine", default="delta-rs", choices=["delta-rs", "delta-spark"])
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting for job.yaml (repeatable)"
    )
    parser.add_argument(
        "--identity-index", action="store_true", help="stream.identity_index: true (built in each micro-batch's stream)"
    )
    parser.add_argument("--base", default=None, help="base lake, kept (default /tmp/aa-mb-base-<persons>)")
    parser.add_argument("--lake", default=None, help="the copy measured on (default /tmp/aa-mb-<persons>)")
    parser.add_argument("--event-log", default=None, help="folder for uncompressed Spark event logs")
    parser.add_argument(
        "--one-stream",
        action="store_true",
        help="append every size first, then one stream taking one size per micro-batch (keeps what a running "
        "stream keeps between micro-batches)",
    )
    parser.add_argument(
        "--compact",
        nargs="+",
        default=[],
        metavar="TABLE",
        help="input tables compacted (delta-rs OPTIMIZE) after each size's commits, before its stream",
    )
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.compact and args.one_stream:
        parser.error("--compact adds commits between the sizes' own: measure it with a stream per size")
    args.base = args.base or f"/tmp/aa-mb-base-{args.persons}"
    args.lake = args.lake or f"/tmp/aa-mb-{args.persons}"

    with tempfile.TemporaryDirectory() as folder:
        base_conf = _base_conf(Path(folder) / "base", args)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        prepare(base_conf, args.base, argparse.Namespace(persons=args.persons), now)
        shutil.rmtree(args.lake, ignore_errors=True)
        shutil.copytree(args.base, args.lake, symlinks=True)
        result: dict[str, Any] = measure(_work_conf(Path(folder) / "work", args), args)
    result.update(
        args=vars(args),
        machine=machine(),
        code=_commit(),
        measured_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if args.event_log:
        from eventlog import markdown, summarise

        log = next(Path(args.event_log).glob(f"{result['app_id']}*"))
        order = [f"mb{k}: {m}" for k, b in enumerate(result["batches"]) for m, _ in b["steps"]]
        result["event_log_table"] = markdown(summarise(log), order)
    name = f"micro-batches-{args.persons}" + (f"-{args.label}" if args.label else "")
    path = write_results(name, result, render(result))
    print(render(result))
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
