"""Batch job benchmark (run by hand on an otherwise idle machine; results under benchmarks/results/).

    .venv/bin/python benchmarks/batch.py --persons 100000 --label after
    .venv/bin/python benchmarks/batch.py --persons 1000000 --label after --skip-segment-scaling \
        [--engine delta-rs] [--event-log /tmp/aa-events]

For N demo persons (generated unless the lake already holds them), each measured in its **own process**, so
the wall time includes Python and JVM start exactly as a user's ``audience-activation run`` pays them:

- the time for Spark merely to scan the four inputs once;
- the first batch run at ``T1`` (every output starts empty) and the second at ``T2 = T1 + 1 day`` starting from
  the state of the first, with 50 segments and the 7 shipped destinations: wall time of the process, wall time
  per stage (from the job's progress messages), peak resident memory of the process and its children (the
  Spark JVM);
- unless ``--skip-segment-scaling``: previews (everything computed, nothing written) with 10 and 100 segments.

With ``--event-log DIR`` Spark writes an uncompressed event log per process and the results add, per stage,
what :mod:`eventlog` reads from it (jobs, task time, rows scanned, shuffle volume, recomputed input scans,
Python operators).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _measure import event_log_conf, machine, measure_process, write_results

ROOT = Path(__file__).resolve().parents[1]
T1 = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
T2 = T1 + dt.timedelta(days=1)

TEMPLATES = (
    'homeAddress.countryCode = "{country}"',
    "loyalty.points > {points}",
    'loyalty.tier in ["gold", "platinum"] and homeAddress.countryCode = "{country}"',
    "person.birthDate occurs before date({year}, 1, 1)",
    'consents.marketing.email.val = "y" and personalEmail.address.isNotNull() and loyalty.points > {points}',
    'select X from xEvent where X.eventType = "commerce.purchases" and X.timestamp occurs <= {days} days before now',
    'xEvent[eventType = "commerce.purchases"].sum(commerce.order.priceTotal) > {amount}',
    'xEvent[eventType = "web.webpagedetails.pageViews" and timestamp occurs <= {days} days before now].count() >= 2',
    'chain(xEvent, timestamp, [A: WHAT(eventType = "commerce.productViews"), '
    'B: WHAT(eventType = "commerce.productListAdds") WHEN(<= {days} days before now)])',
    'select X from xEvent where X.eventType = "application.launch" and X.timestamp occurs <= {days} days before now',
)
COUNTRIES = ("US", "CA", "GB", "FR", "DE", "IE", "IN", "JP", "AU", "SG")
OUTPUT_TABLES = (
    "activation_runs",
    "segment_membership",
    "activation_state",
    "activation_state_log",
    "activation",
    "quarantine",
    "identity_clusters",
    "unified_profiles",
)


def segments(count: int) -> list[dict]:
    """``count`` segment definitions: the templates above with varying parameters."""
    out = []
    for number in range(count):
        template = TEMPLATES[number % len(TEMPLATES)]
        value = template.format(
            country=COUNTRIES[number % len(COUNTRIES)],
            points=1000 * (1 + number % 40),
            year=1955 + number % 40,
            days=7 + number % 60,
            amount=50 * (1 + number % 20),
        )
        out.append(
            {
                "id": f"seg-{number:03d}",
                "name": f"Segment {number}",
                "expression": {"type": "PQL", "format": "pql/text", "value": value},
            }
        )
    return out


def conf_dir(base: Path, lake: str, segment_count: int, args: argparse.Namespace) -> Path:
    """A configuration folder: the shipped namespaces/regions/destination types, ``segment_count`` segments."""
    conf = base / f"conf-{segment_count}"
    shutil.rmtree(conf, ignore_errors=True)
    conf.mkdir(parents=True)
    for name in ("namespaces.yaml", "regions.yaml"):
        shutil.copy(ROOT / "conf" / name, conf / name)
    spark_conf: dict[str, str] = {"spark.driver.memory": args.driver_memory}
    if args.event_log:
        spark_conf.update(event_log_conf(args.event_log))
    job = {"lake": {"root": lake}, "storage": {"engine": args.engine}, "spark": {"conf": spark_conf}}
    (conf / "job.yaml").write_text(yaml.safe_dump(job))
    defined = segments(segment_count)
    (conf / "segments.yaml").write_text(yaml.safe_dump({"segments": defined}))
    shipped = yaml.safe_load((ROOT / "conf" / "destinations.yaml").read_text())["destinations"]
    ids = [s["id"] for s in defined]
    for index, destination in enumerate(shipped):
        destination["segments"] = ids[index :: len(shipped)] or ids[:1]
    (conf / "destinations.yaml").write_text(yaml.safe_dump({"destinations": shipped}))
    return conf


# -- the child processes ----------------------------------------------------------------------------------------


class StageClock:
    """Progress callback: records the wall time between progress messages (the job's stages) and tags the Spark
    jobs started meanwhile with the stage (local property ``aa.stage``, read back from the event log)."""

    def __init__(self, spark) -> None:  # noqa: ANN001 - pyspark imported in the child only
        self.spark = spark
        self.marks: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
        self.spark.sparkContext.setLocalProperty("aa.stage", message)
        self.marks.append((message, time.perf_counter()))

    def stages(self, end: float) -> list[tuple[str, float]]:
        times = [mark[1] for mark in self.marks[1:]] + [end]
        return [(message, round(stop - start, 1)) for (message, start), stop in zip(self.marks, times, strict=True)]


def child(args: argparse.Namespace) -> None:
    """One measured step in this process; prints its result as JSON on the last line of stdout."""
    from _measure import demo_data_present

    from audience_activation import app
    from audience_activation.config import load_config
    from audience_activation.schemas import INPUT_TABLES

    start = time.perf_counter()
    config = load_config(Path(args.conf))
    spark = app.session_for(config)
    spark.sparkContext.setLogLevel("ERROR")
    store = app.storage_for(spark, config)
    result: dict[str, object] = {"engine": store.name, "spark": spark.version, "master": spark.conf.get("spark.master")}
    if args.child == "prepare":
        if not demo_data_present(store, config, seed=args.seed, persons=args.persons):
            app.write_demo_data(spark, config, persons=args.persons, seed=args.seed, as_of=T1, progress=print)
        for table in OUTPUT_TABLES:  # the first measured run starts as a first run
            shutil.rmtree(config.job.table_location(table), ignore_errors=True)
        rows = {}
        for table in INPUT_TABLES:
            rows[table] = store.read(config.job.table_location(table)).df.count()
        result["input_rows"] = rows
    elif args.child == "scan":
        for table in INPUT_TABLES:
            store.read(config.job.table_location(table)).df.write.format("noop").mode("overwrite").save()
    elif args.child == "run":
        clock = StageClock(spark)
        clock("starting the JVM and the Spark session")
        clock.marks[0] = (clock.marks[0][0], start)
        summary = app.run_batch(spark, config, evaluation_time=dt.datetime.fromisoformat(args.at), progress=clock)
        result["stages_seconds"] = clock.stages(time.perf_counter())
        result["persons"] = summary.counts.persons
        result["change_rows"] = sum(summary.counts.changes.values())
        result["run_id"] = summary.run_id
    elif args.child == "preview":
        app.preview_batch(spark, config, evaluation_time=dt.datetime.fromisoformat(args.at), force=True)
    result["app_id"] = spark.sparkContext.applicationId
    spark.stop()  # closes the event log
    print(json.dumps(result, default=str))


# -- the parent: runs the children and reports ------------------------------------------------------------------


def _step(args: argparse.Namespace, step: str, conf: Path, at: dt.datetime = T1) -> dict:
    command = [sys.executable, __file__, "--child", step, "--conf", str(conf), "--at", at.isoformat()]
    command += ["--persons", str(args.persons), "--seed", str(args.seed)]
    if args.event_log:
        command += ["--event-log", args.event_log]
    print(f"== {step} {at.isoformat()} ==", file=sys.stderr, flush=True)
    measured = measure_process(command)
    if measured.returncode != 0:
        raise SystemExit(f"{step} failed with exit code {measured.returncode}")
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(measured.seconds, 1)
    result["peak_memory_gib"] = measured.peak_gib
    if args.event_log and step == "run":
        from eventlog import markdown, summarise

        log = next(Path(args.event_log).glob(f"{result['app_id']}*"))
        figures = summarise(log)
        result["event_log_table"] = markdown(figures, [name for name, _ in result.get("stages_seconds", [])])
    return result


def _run_markdown(title: str, run: dict) -> str:
    lines = "\n".join(f"| {message} | {seconds} s |" for message, seconds in run["stages_seconds"])
    text = (
        f"### {title}\n\n"
        f"**{run['process_seconds']} s** process wall time (Python and JVM start included), peak memory "
        f"{run['peak_memory_gib']} GiB (process + Spark JVM); {run['persons']:,} persons, "
        f"{run['change_rows']:,} change rows.\n\n"
        f"| stage (from the progress output) | wall time |\n|---|---:|\n{lines}\n"
    )
    if run.get("event_log_table"):
        note = "From the event log (tasks run on 2 cores, so task time can exceed wall time)"
        text += f"\n{note}:\n\n{run['event_log_table']}"
    return text


def render(results: dict) -> str:
    """The results file's markdown, from the results' JSON."""
    first, second, scaling = (
        results["first_run"],
        results["second_run"],
        results["preview_process_seconds_by_segment_count"],
    )
    label = results.get("label")
    scaling_line = (
        f"Previews at T2 (everything computed, nothing written; process wall time): 10 segments "
        f"{scaling['10']} s, 100 segments {scaling['100']} s.\n"
        if scaling
        else ""
    )
    rows = results["input_rows"]
    return (
        f"# Batch benchmark, {results['persons']:,} persons{' (' + label + ')' if label else ''} "
        f"({results['date']})\n\n"
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gib']} GiB; Spark "
        f"{first['spark']} `{first['master']}`, driver memory {results['spark']['driver_memory']}, storage engine "
        f"{first['engine']}; 50 segments, 7 destinations. Every figure is one process, measured from its start.\n\n"
        f"Inputs: {', '.join(f'{k} {v:,}' for k, v in rows.items())}.\n\n"
        f"- Scanning the four inputs once (process wall time): **{results['scan_inputs_process_seconds']} s**\n"
        f"- First run (T1 = {T1.isoformat()}, empty outputs): **{first['process_seconds']} s**, peak "
        f"{first['peak_memory_gib']} GiB\n"
        + (
            f"- Second run (T2 = {T2.isoformat()}, from the state of T1): **{second['process_seconds']} s**, peak "
            f"{second['peak_memory_gib']} GiB\n\n"
            if second
            else "- Second run: not measured (`--first-run-only`)\n\n"
        )
        + f"{scaling_line}\n{_run_markdown('First run (T1)', first)}"
        + (f"\n{_run_markdown('Second run (T2)', second)}" if second else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="lake root (default /tmp/aa-bench-<persons>)")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--skip-segment-scaling", action="store_true", help="skip the 10 vs 100 segment previews")
    parser.add_argument("--engine", default="auto", choices=("auto", "delta-spark", "delta-rs"))
    parser.add_argument("--label", default=None, help="results go to batch-<persons>[-<label>].{md,json}")
    parser.add_argument("--event-log", default=None, help="folder for uncompressed Spark event logs")
    parser.add_argument("--first-run-only", action="store_true", help="measure T1 only (no second run, no previews)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--conf", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--at", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    lake = args.lake or f"/tmp/aa-bench-{args.persons}"
    work = Path(tempfile.mkdtemp(prefix="aa-bench-conf-"))
    conf = conf_dir(work, lake, 50, args)
    prepared = _step(args, "prepare", conf)
    scan = _step(args, "scan", conf)
    first = _step(args, "run", conf, T1)
    second = None if args.first_run_only else _step(args, "run", conf, T2)
    scaling = {}
    if not (args.skip_segment_scaling or args.first_run_only):
        for count in (10, 100):
            scaling[count] = _step(args, "preview", conf_dir(work, lake, count, args), T2)["process_seconds"]

    results = {
        "benchmark": "batch",
        "label": args.label,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "spark": {"version": first["spark"], "master": first["master"], "driver_memory": args.driver_memory},
        "engine": first["engine"],
        "persons": args.persons,
        "input_rows": prepared["input_rows"],
        "segments": 50,
        "destinations": 7,
        "scan_inputs_process_seconds": scan["process_seconds"],
        "first_run": first,
        "second_run": second,
        "preview_process_seconds_by_segment_count": {str(k): v for k, v in scaling.items()},
    }
    suffix = f"-{args.label}" if args.label else ""
    markdown = render(results)
    path = write_results(f"batch-{args.persons}{suffix}", results, markdown)
    print(markdown)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
