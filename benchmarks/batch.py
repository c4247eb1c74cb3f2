"""Batch job benchmark (run by hand; results under benchmarks/results/).

    .venv/bin/python benchmarks/batch.py --persons 100000
    .venv/bin/python benchmarks/batch.py --persons 1000000 --skip-segment-scaling [--engine delta-rs]

For N demo persons (generated unless the lake already holds them): the time for Spark merely to scan the four
inputs once, the full batch run with 50 segments and the 7 shipped destinations (wall time per stage, peak
memory of the driver and the Spark JVM), and the cost of 10 vs 100 segments (previews: everything computed,
nothing written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from _measure import demo_data_present, machine, peak_memory, spark_info, write_results

from audience_activation import app
from audience_activation.config import load_config
from audience_activation.schemas import INPUT_TABLES

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)

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


def conf_dir(base: Path, lake: str, segment_count: int, driver_memory: str, engine: str = "auto") -> Path:
    """A configuration folder: the shipped namespaces/regions/destination types, ``segment_count`` segments."""
    conf = base / f"conf-{segment_count}"
    shutil.rmtree(conf, ignore_errors=True)
    conf.mkdir(parents=True)
    for name in ("namespaces.yaml", "regions.yaml"):
        shutil.copy(ROOT / "conf" / name, conf / name)
    job = {
        "lake": {"root": lake},
        "storage": {"engine": engine},
        "spark": {"conf": {"spark.driver.memory": driver_memory}},
    }
    (conf / "job.yaml").write_text(yaml.safe_dump(job))
    defined = segments(segment_count)
    (conf / "segments.yaml").write_text(yaml.safe_dump({"segments": defined}))
    shipped = yaml.safe_load((ROOT / "conf" / "destinations.yaml").read_text())["destinations"]
    ids = [s["id"] for s in defined]
    for index, destination in enumerate(shipped):
        destination["segments"] = ids[index :: len(shipped)] or ids[:1]
    (conf / "destinations.yaml").write_text(yaml.safe_dump({"destinations": shipped}))
    return conf


class StageClock:
    """Progress callback that records the wall time between progress messages (the job's stages)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
        self.marks.append((message, time.perf_counter()))

    def stages(self, end: float) -> list[tuple[str, float]]:
        times = [mark[1] for mark in self.marks[1:]] + [end]
        return [(message, round(stop - start, 1)) for (message, start), stop in zip(self.marks, times, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="lake root (default /tmp/aa-bench-<persons>)")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--skip-segment-scaling", action="store_true", help="skip the 10 vs 100 segment previews")
    parser.add_argument("--engine", default="auto", choices=("auto", "delta-spark", "delta-rs"))
    args = parser.parse_args()
    lake = args.lake or f"/tmp/aa-bench-{args.persons}"
    work = Path(tempfile.mkdtemp(prefix="aa-bench-conf-"))
    config = load_config(conf_dir(work, lake, 50, args.driver_memory, args.engine))
    spark = app.session_for(config)
    spark.sparkContext.setLogLevel("ERROR")
    store = app.storage_for(spark, config)

    if not demo_data_present(store, config, seed=args.seed, persons=args.persons):
        app.write_demo_data(spark, config, persons=args.persons, seed=args.seed, as_of=AS_OF, progress=print)
    for table in (
        "activation_runs",
        "segment_membership",
        "activation_state",
        "activation",
        "quarantine",
        "identity_clusters",
        "unified_profiles",
    ):
        shutil.rmtree(config.job.table_location(table), ignore_errors=True)  # every run starts as a first run

    rows = {}
    start = time.perf_counter()
    for table in INPUT_TABLES:
        df = store.read(config.job.table_location(table)).df
        df.write.format("noop").mode("overwrite").save()
        rows[table] = store.read(config.job.table_location(table)).df.count()
    scan_seconds = round(time.perf_counter() - start, 1)

    clock = StageClock()
    with peak_memory() as memory:
        start = time.perf_counter()
        summary = app.run_batch(spark, config, evaluation_time=AS_OF, progress=clock)
        end = time.perf_counter()
    run_seconds = round(end - start, 1)
    stages = clock.stages(end)

    scaling: dict[int, float] = {}
    if not args.skip_segment_scaling:
        for count in (10, 100):
            scaled = load_config(conf_dir(work, lake, count, args.driver_memory, args.engine))
            start = time.perf_counter()
            app.preview_batch(spark, scaled, evaluation_time=AS_OF, force=True)
            scaling[count] = round(time.perf_counter() - start, 1)

    changes = sum(summary.counts.changes.values())
    results = {
        "benchmark": "batch",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "spark": spark_info(spark, args.driver_memory),
        "engine": summary.engine,
        "persons": args.persons,
        "input_rows": rows,
        "segments": 50,
        "destinations": 7,
        "scan_inputs_seconds": scan_seconds,
        "run_seconds": run_seconds,
        "stages_seconds": stages,
        "peak_memory_gib": memory.peak_gib,
        "resolved_persons": summary.counts.persons,
        "change_rows": changes,
        "preview_seconds_by_segment_count": scaling,
    }
    stage_lines = "\n".join(f"| {message} | {seconds} s |" for message, seconds in stages)
    scaling_line = (
        f"Previews (everything computed, nothing written): 10 segments {scaling[10]} s, "
        f"100 segments {scaling[100]} s.\n"
        if scaling
        else ""
    )
    markdown = (
        f"# Batch benchmark, {args.persons:,} persons ({results['date']})\n\n"
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gib']} GiB; Spark {spark.version} "
        f"`{results['spark']['master']}`, driver memory {args.driver_memory}, storage engine {summary.engine}; "
        f"50 segments, 7 destinations.\n\n"
        f"Inputs: {', '.join(f'{k} {v:,}' for k, v in rows.items())}.\n\n"
        f"- Scanning the four inputs once: **{scan_seconds} s**\n"
        f"- Full batch run: **{run_seconds} s**, peak memory {memory.peak_gib} GiB (driver + JVM); "
        f"{summary.counts.persons:,} persons, {changes:,} change rows\n\n"
        f"| stage (from the progress output) | wall time |\n|---|---:|\n{stage_lines}\n\n{scaling_line}"
    )
    path = write_results(f"batch-{args.persons}", results, markdown)
    print(markdown)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
