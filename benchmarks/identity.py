"""Identity resolution benchmark (run by hand; results under benchmarks/results/).

    .venv/bin/python benchmarks/identity.py --persons 1000000

Generates the demo inputs for N persons (unless the lake already holds them for that size and seed), then
runs the identity job at the demo anchor time and reports wall time per stage, connected-components
rounds and peak memory of the driver process plus the Spark JVM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from _measure import demo_data_present, machine, peak_memory, spark_info, write_results

from audience_activation import app
from audience_activation.config import load_config

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="lake root (default /tmp/aa-bench-<persons>)")
    parser.add_argument("--driver-memory", default="8g")
    args = parser.parse_args()
    lake = args.lake or f"/tmp/aa-bench-{args.persons}"
    config = load_config(ROOT / "conf")
    spark_settings = config.job.spark.model_copy(update={"conf": {"spark.driver.memory": args.driver_memory}})
    config = config.model_copy(
        update={"job": config.job.with_lake_root(lake).model_copy(update={"spark": spark_settings})}
    )
    spark = app.session_for(config)
    spark.sparkContext.setLogLevel("ERROR")
    store = app.storage_for(spark, config)

    generated_seconds = None
    if not demo_data_present(store, config, seed=args.seed, persons=args.persons):
        start = time.perf_counter()
        app.write_demo_data(spark, config, persons=args.persons, seed=args.seed, as_of=AS_OF, progress=print)
        generated_seconds = round(time.perf_counter() - start, 1)
    links = store.read(config.job.table_location("identity_graph")).df.count()
    with peak_memory() as memory:
        start = time.perf_counter()
        summary = app.run_identity_resolution(spark, config, evaluation_time=AS_OF, progress=print)
        seconds = round(time.perf_counter() - start, 1)
    results = {
        "benchmark": "identity",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "spark": spark_info(spark, args.driver_memory),
        "engine": summary.engine,
        "persons": args.persons,
        "explicit_links": links,
        "identities": summary.identities,
        "resolved_persons": summary.persons,
        "largest_graph": summary.largest_graph,
        "cc_rounds": summary.rounds,
        "quarantine": summary.quarantine,
        "demo_data_seconds": generated_seconds,
        "identity_seconds": seconds,
        "peak_memory_gib": memory.peak_gib,
    }
    markdown = (
        f"# Identity benchmark ({results['date']})\n\n"
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gib']} GiB; Spark {spark.version} "
        f"`{results['spark']['master']}`, driver memory {args.driver_memory}, storage engine {summary.engine}.\n\n"
        "| persons | explicit links | identities | persons resolved | largest graph | CC rounds | wall time "
        "| peak memory |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {args.persons:,} | {links:,} | {summary.identities:,} | {summary.persons:,} | {summary.largest_graph} | "
        f"{summary.rounds} | {seconds} s | {memory.peak_gib} GiB |\n\n"
        f"Quarantine: {summary.quarantine}. Demo data generation: {generated_seconds} s (None: reused).\n"
    )
    path = write_results(f"identity-{args.persons}", results, markdown)
    print(markdown)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
