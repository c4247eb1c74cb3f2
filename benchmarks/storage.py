"""Storage engine benchmark: write and read each demo input table with delta-rs and with delta-spark.

    .venv/bin/python benchmarks/storage.py --persons 1000000

The demo inputs for N persons are generated once (with delta-rs, reused when present) under
``<lake>/source``. Then, for each engine in a fresh process of its own (same JVM start, same warm-up):

- **write**: ``overwrite`` of the table into ``<lake>/<engine>/<table>`` (a new table: data files plus the
  Delta commit). The time includes reading the source table's parquet files, the same for both engines;
  ``scan`` (reading the source once, all columns, nothing written) is reported as that common part;
- **read**: ``read`` of the written table and a full scan of every column (``format("noop")``), right after
  the write, then once more (*read again*: the engine's caches warm), plus the table's rows counted.

Results (time per table and engine, peak memory of the driver and its JVM) go to
``benchmarks/results/storage-<N>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _measure import demo_data_present, machine, peak_memory, spark_info, write_results

ENGINES = ("delta-rs", "delta-spark")
AS_OF = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)


def _config(lake: str, engine: str, driver_memory: str):  # type: ignore[no-untyped-def]
    from audience_activation.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "conf")
    job = config.job.with_lake_root(lake)
    spark_settings = job.spark.model_copy(update={"conf": {"spark.driver.memory": driver_memory}})
    storage = job.storage.model_copy(update={"engine": type(job.storage.engine)(engine)})
    return config.model_copy(update={"job": job.model_copy(update={"spark": spark_settings, "storage": storage})})


def measure_engine(lake: str, engine: str, driver_memory: str) -> dict[str, object]:
    """One engine, in this process: scan, write and read each input table."""
    from audience_activation import app
    from audience_activation.schemas import INPUT_TABLES
    from audience_activation.storage import open_storage

    config = _config(f"{lake}/source", engine, driver_memory)
    spark = app.session_for(config)
    spark.sparkContext.setLogLevel("ERROR")
    source = open_storage(spark, "delta-rs")
    store = open_storage(spark, engine)
    tables: dict[str, dict[str, float | int]] = {}
    with peak_memory() as memory:
        for table in INPUT_TABLES:
            location = f"{lake}/source/{table}"
            start = time.perf_counter()
            source.read(location).df.write.format("noop").mode("overwrite").save()
            scan = time.perf_counter() - start

            target = f"{lake}/{engine}/{table}"
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            store.overwrite(source.read(location).df, target)
            write = time.perf_counter() - start

            start = time.perf_counter()
            snapshot = store.read(target)
            snapshot.df.write.format("noop").mode("overwrite").save()
            read = time.perf_counter() - start
            start = time.perf_counter()
            store.read(target).df.write.format("noop").mode("overwrite").save()
            read_again = time.perf_counter() - start
            rows = snapshot.df.count()
            tables[table] = {"rows": rows, "scan_s": round(scan, 1), "write_s": round(write, 1)}
            tables[table].update(read_s=round(read, 1), read_again_s=round(read_again, 1))
            print(
                f"{engine} {table}: {rows:,} rows, scan {scan:.1f} s, write {write:.1f} s, read {read:.1f} s, "
                f"again {read_again:.1f} s"
            )
    return {
        "engine": engine,
        "spark": spark_info(spark, driver_memory),
        "tables": tables,
        "peak_memory_gib": memory.peak_gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="lake root (default /tmp/aa-bench-storage-<persons>)")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--engine", choices=ENGINES, help="measure one engine in this process (used internally)")
    args = parser.parse_args()
    lake = args.lake or f"/tmp/aa-bench-storage-{args.persons}"

    if args.engine:
        print("RESULT " + json.dumps(measure_engine(lake, args.engine, args.driver_memory)), flush=True)
        return

    from audience_activation import app
    from audience_activation.storage import open_storage

    config = _config(f"{lake}/source", "delta-rs", args.driver_memory)
    spark = app.session_for(config)
    store = open_storage(spark, "delta-rs")
    if not demo_data_present(store, config, seed=args.seed, persons=args.persons):
        app.write_demo_data(spark, config, persons=args.persons, seed=args.seed, as_of=AS_OF, progress=print)
    spark.stop()

    measured = {}
    for engine in ENGINES:
        command = [sys.executable, __file__, "--persons", str(args.persons), "--lake", lake, "--engine", engine]
        command += ["--driver-memory", args.driver_memory]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(output)
        measured[engine] = json.loads(output.split("RESULT ", 1)[1])

    results = {
        "benchmark": "storage",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "persons": args.persons,
        "engines": measured,
    }
    first = measured[ENGINES[0]]
    rows = []
    for table, numbers in first["tables"].items():
        other = measured[ENGINES[1]]["tables"][table]
        rows.append(
            f"| {table} | {numbers['rows']:,} | {numbers['scan_s']} s | {numbers['write_s']} s | {other['write_s']} s "
            f"| {numbers['read_s']} s | {other['read_s']} s | {numbers['read_again_s']} s | {other['read_again_s']} s |"
        )
    markdown = (
        f"# Storage engine benchmark, {args.persons:,} demo persons ({results['date']})\n\n"
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gib']} GiB; Spark "
        f"{first['spark']['version']} `{first['spark']['master']}`, driver memory {args.driver_memory}. Each engine "
        f"ran in a fresh process; peak memory (driver + JVM): delta-rs {measured['delta-rs']['peak_memory_gib']} GiB, "
        f"delta-spark {measured['delta-spark']['peak_memory_gib']} GiB.\n\n"
        "Write: a new table from the source table (its scan, the common part, in the *scan* column, is included). "
        "Read: the engine's `read()` and a scan of every column, right after the write and once more.\n\n"
        "| table | rows | scan | write delta-rs | write delta-spark | read delta-rs | read delta-spark "
        "| read again delta-rs | read again delta-spark |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    path = write_results(f"storage-{args.persons}", results, markdown)
    print(markdown)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
