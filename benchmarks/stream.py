"""Streaming latency and throughput: a writer appends events at a fixed rate while ``audience-activation stream``
runs (run by hand on an otherwise idle machine; results under
``benchmarks/results/stream-<persons>-<rate>[-<label>].{md,json}``).

    .venv/bin/python benchmarks/stream.py --persons 1000000 --rate 1500 --duration 900
    .venv/bin/python benchmarks/stream.py --persons 10000 --rate 100 --duration 240 --label smoke

Steps:

1. A demo lake of ``--persons`` persons (generated unless the lake already holds them) with the shipped
   configuration, and a batch run (the state the stream continues from) unless one completed already.
2. ``audience-activation stream --trigger "<--trigger>"`` in its own process (a fresh checkpoint), its peak
   memory (process tree, every 0.2 s: PSS, which counts a page shared by processes once, and the RSS sum).
3. This process appends ``--rate`` events per second to ``experience_events`` in one commit every
   ``--commit-seconds`` (copies of existing events with a new ``_id`` and the commit's wall-clock time, so the
   events belong to existing persons and fall inside the 24-hour windows; taken in turn from a pool of ``--pool``
   events spread evenly over the table, which caps the persons they reach), each commit followed by one commit
   to each of ``profile_fragments``, ``identity_graph`` and ``region_information`` of ``--others`` percent as many
   rows (copies of existing rows, taken the same way, stamped with the same time: a profile update, a link seen
   again — which makes its persons' identities resolved again — and a fresh regional capture, which routes the
   person's changes to the edge), for ``--duration`` seconds; then it stops the stream with Ctrl-C (SIGINT: it
   ends after the current micro-batch) and waits for it.
4. **Latency** of a commit: from its commit time to the commit of the activation rows it causes — the last
   commit of a destination's edge or hub table by the first micro-batch whose input versions include it (the
   commit's time in that table's Delta log; a micro-batch that changed no destination: its ``ended_at``).
   Percentiles over the commits processed, all tables together and per table. Also recorded: the latency to that
   micro-batch's end (``ended_at`` in the run log: its state tables and run-log row committed too; the measure of
   the rows before 7 December, when the stream committed the state tables first). **Backlog**: the commits no
   micro-batch that had ended took when the writer stopped.
   The rate is *sustained* when that backlog is at most two micro-batches' worth of commits and the last
   micro-batch kept pace: it took in at least as many events per second of its run as the writer appends (one
   slower than the writer leaves a larger next one; a stream whose micro-batches grow each time had a backlog
   within two of its long micro-batches and was called sustained before this second test).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import yaml
from _measure import machine, write_results
from deltalake import DeltaTable, write_deltalake

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "audience-activation")
#: How many existing events the writer copies (round robin), taken evenly over the table.
#: The writer's default pool of events to copy (``--pool``): a pool caps the persons the appended events reach.
SAMPLE_ROWS = 100_000


def conf_dir(base: Path, lake: str, args: argparse.Namespace) -> Path:
    """The shipped configuration with the lake, the engine and the driver memory of the benchmark."""
    conf = base / "conf"
    shutil.copytree(ROOT / "conf", conf)
    job = yaml.safe_load((conf / "job.yaml").read_text())
    job["lake"]["root"] = lake
    job["storage"]["engine"] = args.engine
    job.setdefault("spark", {})["conf"] = {"spark.driver.memory": args.driver_memory}
    job.setdefault("stream", {})["identity_index"] = args.identity_index
    (conf / "job.yaml").write_text(yaml.safe_dump(job))
    return conf


def cli(*args: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] audience-activation {' '.join(args)}", flush=True)
    subprocess.run([CLI, *args], check=True)


def prepare(conf: Path, lake: str, args: argparse.Namespace, now: dt.datetime) -> None:
    """Step 1: demo data and a completed run, reused when present. Demo data written again (the lake's last
    ``profile_fragments`` commit is not the demo's: an earlier run's writer appended to it) gets a batch run of its
    own: without one the stream would continue from the old run and begin by reprocessing every row."""
    fragments = f"{lake}/profile_fragments"
    present = DeltaTable.is_deltatable(fragments) and json.loads(
        DeltaTable(fragments).history(1)[0].get("userMetadata") or "{}"
    ).get("persons") == str(args.persons)
    if not present:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        cli("demo-data", "--conf", str(conf), "--persons", str(args.persons), "--as-of", _iso(midnight))
    runs = f"{lake}/activation_runs"
    completed = DeltaTable.is_deltatable(runs) and "completed" in (
        DeltaTable(runs).to_pyarrow_table(columns=["status"])["status"].to_pylist()
    )
    if not present or not completed:
        cli("run", "--conf", str(conf), "--evaluation-time", _iso(now))


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The input tables the writer appends to besides ``experience_events`` (``--others``), in commit order.
OTHER_TABLES = ("profile_fragments", "identity_graph", "region_information")


def _stamped(name: str, rows: pa.Table, at: dt.datetime, first: int) -> pa.Table:
    """``rows`` (copies of existing rows of input table ``name``) as new rows at ``at``: events get a new ``_id``
    (``bench-<n>``, numbered from ``first``) and ``timestamp``, fragments ``ingested_at``, links ``last_seen_at``,
    and region rows a capture of each of their regions at ``at``."""
    count = rows.num_rows

    def stamp(column: str) -> pa.Table:
        field = rows.schema.field(column)
        return rows.set_column(rows.schema.get_field_index(column), field, pa.array([at] * count, type=field.type))

    if name == "experience_events":
        ids = pa.array([f"bench-{first + k}" for k in range(count)])
        rows = rows.set_column(rows.schema.get_field_index("_id"), "_id", ids)
        return stamp("timestamp")
    if name == "profile_fragments":
        return stamp("ingested_at")
    if name == "identity_graph":
        return stamp("last_seen_at")
    if name == "region_information":
        index = rows.schema.get_field_index("userActivityRegions")
        regions = rows.column(index).combine_chunks()
        captured = regions.type.item_type.field("captureTimestamp")
        items = pa.StructArray.from_arrays([pa.array([at] * len(regions.items), type=captured.type)], fields=[captured])
        recaptured = pa.MapArray.from_arrays(regions.offsets, regions.keys, items, mask=regions.is_null())
        return rows.set_column(index, rows.schema.field(index), recaptured.cast(regions.type))
    raise ValueError(f"the writer does not append to {name}")


class Appender:
    """Copies of existing rows of one input table, taken in turn from a pool spread evenly over the table, each
    append one commit of re-stamped copies (:func:`_stamped`)."""

    def __init__(self, lake: str, name: str, pool: int) -> None:
        self.name = name
        self.table = DeltaTable(f"{lake}/{name}")
        self.schema = pa.schema(self.table.schema().to_arrow())
        # Rows spread over the whole table, so the appended rows belong to many persons (a sample from its head, as
        # before, gave every appended event to the same ~1,300 persons, whose histories then grew with each run on a
        # reused lake).
        dataset = self.table.to_pyarrow_dataset()
        rows = dataset.count_rows()
        self.sample = dataset.take(list(range(0, rows, max(1, rows // pool)))[:pool])
        self._next = 0

    def rows(self, count: int, at: dt.datetime) -> pa.Table:
        """The next ``count`` copies, stamped ``at``."""
        taken = self.sample.take([(self._next + k) % self.sample.num_rows for k in range(count)])
        first, self._next = self._next, self._next + count
        return _stamped(self.name, taken, at, first).cast(self.schema)

    def append(self, count: int, at: dt.datetime) -> dict[str, Any]:
        """Commit the next ``count`` copies; the commit's table, version, time (UTC) and rows."""
        write_deltalake(self.table, self.rows(count, at), mode="append")
        self.table.update_incremental()
        committed = dt.datetime.now(dt.timezone.utc)
        return {"table": self.name, "version": self.table.version(), "committed_at": committed, "rows": count}


class Writer:
    """Step 3: one commit of copied events every ``commit_seconds``, each followed by one commit of copied rows of
    each other input table (``others_percent`` of the events' count each; none at 0)."""

    def __init__(self, lake: str, rate: int, commit_seconds: float, pool: int, others_percent: float) -> None:
        self.events = Appender(lake, "experience_events", pool)
        self.per_commit = max(1, round(rate * commit_seconds))
        self.others_per_commit = round(self.per_commit * others_percent / 100)
        self.others = [Appender(lake, name, pool) for name in OTHER_TABLES] if self.others_per_commit else []
        self.commit_seconds = commit_seconds
        self.commits: list[dict[str, Any]] = []  # table, version, committed_at (UTC), rows
        self._stop = threading.Event()

    def run(self, duration: float) -> None:
        end = time.monotonic() + duration
        tick = time.monotonic()
        while time.monotonic() < end and not self._stop.is_set():
            at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            self.commits.append(self.events.append(self.per_commit, at))
            self.commits.extend(other.append(self.others_per_commit, at) for other in self.others)
            tick += self.commit_seconds
            time.sleep(max(0.0, tick - time.monotonic()))


def _kind(process: psutil.Process, root: int) -> str:
    """What a process of the stream's tree is: the JVM, the stream's Python driver, or a Python worker."""
    if process.pid == root:
        return "python driver"
    return "jvm" if process.name() == "java" else "python workers"


def sample_memory(pid: int, peak: dict[str, Any], stop: threading.Event) -> None:
    """Every 0.2 s the memory of the stream's process tree; ``peak`` keeps the highest proportional set size
    (PSS: a page shared by several processes counted once, split among them) with its parts by kind at that
    moment, and the highest sum of resident set sizes (RSS), which counts shared pages in every process that maps
    them — a worker that the JVM forks carries the JVM's whole resident heap until it execs, so that sum can
    briefly show almost twice the JVM."""
    watched = psutil.Process(pid)
    while not stop.is_set():
        parts: dict[str, int] = {}
        rss = 0
        with suppress(psutil.Error):
            for member in [watched, *watched.children(recursive=True)]:
                with suppress(psutil.Error):
                    memory = member.memory_full_info()
                    kind = _kind(member, pid)
                    parts[kind] = parts.get(kind, 0) + memory.pss
                    rss += memory.rss
        total = sum(parts.values())
        if total > peak["total"]:
            peak.update(total=total, parts=parts)
        peak["rss"] = max(peak["rss"], rss)
        time.sleep(0.2)


def micro_batches(lake: str, since: dt.datetime) -> list[dict[str, Any]]:
    """The streaming run-log rows that started after ``since``, by start."""
    rows = DeltaTable(f"{lake}/activation_runs").to_pyarrow_table().to_pylist()
    out = [r for r in rows if r["kind"] == "streaming" and r["started_at"] and _utc(r["started_at"]) >= since]
    return sorted(out, key=lambda r: r["started_at"])


def activation_commits(lake: str) -> dict[str, dt.datetime]:
    """Per run id, the time of its last commit to a destination's edge or hub table (from their Delta logs)."""
    last: dict[str, dt.datetime] = {}
    for table in sorted(Path(lake, "activation").glob("*/*/_delta_log")):
        for commit in DeltaTable(str(table.parent)).history():
            run_id = json.loads(commit.get("userMetadata") or "{}").get("run_id")
            if run_id:
                at = dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.timezone.utc)
                last[run_id] = max(at, last.get(run_id, at))
    return last


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 1)


def measure(conf: Path, lake: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steps 2-4 for one rate."""
    checkpoint = tempfile.mkdtemp(prefix="aa-stream-checkpoint-")
    started = dt.datetime.now(dt.timezone.utc)
    command = [CLI, "stream", "--conf", str(conf), "--trigger", args.trigger, "--checkpoint", checkpoint]
    log = Path(checkpoint + ".log")
    with log.open("wb") as out:
        stream = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    peak: dict[str, Any] = {"total": 0, "parts": {}, "rss": 0}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(stream.pid, peak, stop), daemon=True)
    sampler.start()
    writer = Writer(lake, args.rate, args.commit_seconds, args.pool, args.others)
    time.sleep(args.warmup)  # the stream's first (catch-up) micro-batch, not measured
    first = len(micro_batches(lake, started))
    writer.run(args.duration)
    writer_stopped = dt.datetime.now(dt.timezone.utc)
    stream.send_signal(signal.SIGINT)  # Ctrl-C: stops after the current micro-batch
    stream.wait(timeout=3600)
    stop.set()
    sampler.join()
    batches = micro_batches(lake, started)[first:]
    activated = activation_commits(lake)
    latencies: dict[str, list[float]] = {}
    to_end: list[float] = []
    processed = 0
    for commit in writer.commits:
        table, version = commit["table"], commit["version"]
        taking = next((b for b in batches if dict(b["input_versions"]).get(table, -1) >= version), None)
        if taking is not None:
            ended = _utc(taking["ended_at"])
            latency = (activated.get(taking["run_id"], ended) - commit["committed_at"]).total_seconds()
            latencies.setdefault(table, []).append(latency)
            to_end.append((ended - commit["committed_at"]).total_seconds())
            processed += 1
    every = [latency for values in latencies.values() for latency in values]
    durations = [(_utc(b["ended_at"]) - _utc(b["started_at"])).total_seconds() for b in batches]
    ended = [dict(b["input_versions"]) for b in batches if _utc(b["ended_at"]) <= writer_stopped]
    tables = ("experience_events", *OTHER_TABLES)
    taken = {table: max((v.get(table, -1) for v in ended), default=-1) for table in tables}
    lag = sum(1 for c in writer.commits if c["version"] > taken[c["table"]])
    appended: dict[str, int] = {}
    for commit in writer.commits:
        appended[commit["table"]] = appended.get(commit["table"], 0) + commit["rows"]
    # Commits per micro-batch's worth of time (each cycle of the writer: one commit per table it appends to).
    cycle = 1 + len(writer.others)
    per_batch = max(1, round(statistics.mean(durations) / args.commit_seconds)) * cycle if durations else 0
    sizes = [
        {
            "events": dict(b["counts"]).get("rows.experience_events.new", 0),
            "other_rows": sum(dict(b["counts"]).get(f"rows.{table}.new", 0) for table in OTHER_TABLES),
            "persons": dict(b["counts"]).get("persons", 0),
            "seconds": round(seconds, 1),
        }
        for b, seconds in zip(batches, durations, strict=True)
    ]
    return {
        "rate_events_per_second": args.rate,
        "commit_seconds": args.commit_seconds,
        "commits": len(writer.commits),
        "events_appended": appended.get("experience_events", 0),
        "others_percent": args.others,
        "rows_appended": appended,
        "micro_batches": len(batches),
        "micro_batch_seconds": {
            "mean": round(statistics.mean(durations), 1) if durations else None,
            "max": round(max(durations), 1) if durations else None,
        },
        "latency_seconds": _latency(every),
        "latency_to_micro_batch_end_seconds": _latency(to_end),
        "micro_batches_without_activation_commit": sum(1 for b in batches if b["run_id"] not in activated),
        "latency_seconds_by_table": {table: _latency(values) for table, values in sorted(latencies.items())},
        "micro_batch_sizes": sizes,
        "largest_micro_batch_events_per_second": max(
            (round(b["events"] / b["seconds"]) for b in sizes if b["seconds"]), default=0
        ),
        "commits_processed_by_the_end": processed,
        "commits_not_processed_when_the_writer_stopped": lag,
        "last_micro_batch_events_per_second": round(sizes[-1]["events"] / sizes[-1]["seconds"])
        if sizes and sizes[-1]["seconds"]
        else 0,
        "sustained": bool(every) and lag <= 2 * per_batch and keeps_pace(sizes, args.rate),
        "stream_peak_pss_gib": round(peak["total"] / 2**30, 2),
        "stream_peak_pss_parts_gib": {kind: round(v / 2**30, 2) for kind, v in sorted(peak["parts"].items())},
        "stream_peak_rss_gib": round(peak["rss"] / 2**30, 2),
        "stream_exit_code": stream.returncode,
        "stream_log_tail": log.read_text(errors="replace")[-1500:],
    }


def _latency(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and max of ``values`` (None when there is none)."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "max": round(max(values), 1)}


def keeps_pace(sizes: list[dict[str, Any]], rate: float) -> bool:
    """Whether the last micro-batch took in at least ``rate`` events per second of its run."""
    return bool(sizes) and sizes[-1]["seconds"] > 0 and sizes[-1]["events"] / sizes[-1]["seconds"] >= rate


def markdown(results: dict[str, Any]) -> str:
    r = results["result"]
    sizes = "; ".join(
        f"{b['events']:,}, {b.get('other_rows', 0):,}, {b['persons']:,}, {b['seconds']} s"
        for b in r["micro_batch_sizes"]
    )
    lines = [
        f"# Streaming latency: {results['persons']:,} persons, {r['rate_events_per_second']} events/s "
        f"({results['engine']})",
        "",
        f"Machine: {results['machine']}. Trigger `{results['trigger']}`, one commit every {r['commit_seconds']} s, "
        f"{results['duration_seconds']} s of writing after {results['warmup_seconds']} s of warm-up. "
        f"Driver memory (JVM heap, local mode): {results.get('driver_memory', 'not recorded')}. "
        f"Identity index (`stream.identity_index`): {results.get('identity_index', 'not recorded')}. "
        f"Writer's pool of events to copy: {results.get('pool', SAMPLE_ROWS):,}. "
        f"Rows of each other input table per commit of events: {r.get('others_percent', 0)}% as many.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| commits / events appended | {r['commits']} / {r['events_appended']:,} |",
        f"| rows appended per table | "
        f"{', '.join(f'{t} {n:,}' for t, n in r.get('rows_appended', {}).items()) or 'not recorded'} |",
        "| latency p50 / p95 / max per table | "
        + "; ".join(
            f"{t}: {v['p50']} / {v['p95']} / {v['max']} s" for t, v in r.get("latency_seconds_by_table", {}).items()
        )
        + " |",
        f"| micro-batches | {r['micro_batches']} (mean {r['micro_batch_seconds']['mean']} s, max "
        f"{r['micro_batch_seconds']['max']} s) |",
        f"| latency p50 / p95 / max (every commit) | {r['latency_seconds']['p50']} / {r['latency_seconds']['p95']} / "
        f"{r['latency_seconds']['max']} s |",
        "| latency p50 / p95 / max to the micro-batch's end (state and run log committed too) | "
        + (
            " / ".join(f"{r['latency_to_micro_batch_end_seconds'][q]}" for q in ("p50", "p95", "max")) + " s |"
            if "latency_to_micro_batch_end_seconds" in r
            else "the same (rows before 7 December measured to the end) |"
        ),
        f"| micro-batches that changed no destination (latency to their end) | "
        f"{r.get('micro_batches_without_activation_commit', 'not recorded')} |",
        f"| micro-batches (events, rows of the other tables, persons, seconds) | {sizes} |",
        f"| largest micro-batch's throughput | {r['largest_micro_batch_events_per_second']:,} events/s |",
        f"| commits not processed when the writer stopped (no micro-batch that had ended took them) | "
        f"{r['commits_not_processed_when_the_writer_stopped']} of {r['commits']} |",
        f"| last micro-batch's throughput | {r['last_micro_batch_events_per_second']:,} events/s |",
        f"| sustained (that backlog within two micro-batches' worth of commits, and the last micro-batch as fast "
        f"as the writer) | {'yes' if r['sustained'] else 'no'} |",
        f"| stream peak memory (PSS: shared pages once) | {r.get('stream_peak_pss_gib', 'not recorded')} GiB |",
        f"| its parts at that moment | "
        f"{', '.join(f'{k} {v} GiB' for k, v in r.get('stream_peak_pss_parts_gib', {}).items()) or 'not recorded'} |",
        f"| stream peak RSS summed over its processes (shared pages in each) | {r['stream_peak_rss_gib']} GiB |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--engine", default="delta-rs", choices=["delta-rs", "delta-spark"])
    parser.add_argument("--rate", type=int, default=1500, help="events appended per second")
    parser.add_argument("--commit-seconds", type=float, default=5.0, help="seconds between two commits")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of writing")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds for the stream to start and catch up")
    parser.add_argument("--trigger", default="5 seconds")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--lake", default=None, help="lake root (default /tmp/aa-stream-<persons>)")
    parser.add_argument(
        "--restore",
        default=None,
        metavar="BASE",
        help="copy the lake BASE (a lake after a completed batch run, e.g. micro_batches.py's base) to --lake first, "
        "so that every run starts from the same state (otherwise a lake an earlier writer appended to is generated "
        "again)",
    )
    parser.add_argument("--identity-index", action="store_true", help="stream.identity_index: true")
    parser.add_argument(
        "--pool",
        type=int,
        default=SAMPLE_ROWS,
        help="events taken evenly over the table for the writer to copy: the persons it can reach (throughput runs "
        "need one as large as the events a micro-batch takes, or they measure the pool)",
    )
    parser.add_argument(
        "--others",
        type=float,
        default=2.0,
        help="rows appended to each of profile_fragments, identity_graph and region_information after each commit of "
        "events, in percent of the events per commit (0: events only, as before 6 December)",
    )
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    lake = args.lake or f"/tmp/aa-stream-{args.persons}"
    if args.restore:
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(args.restore, lake, symlinks=True)
        print(f"[{time.strftime('%H:%M:%S')}] {lake}: restored from {args.restore}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="aa-stream-bench-"))
    conf = conf_dir(work, lake, args)
    prepare(conf, lake, args, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    result = measure(conf, lake, args)
    results = {
        "persons": args.persons,
        "engine": args.engine,
        "trigger": args.trigger,
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "driver_memory": args.driver_memory,
        "identity_index": args.identity_index,
        "pool": args.pool,
        "machine": machine(),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "result": result,
    }
    name = f"stream-{args.persons}-{args.rate}" + (f"-{args.label}" if args.label else "")
    print(write_results(name, results, markdown(results)))
    print(markdown(results))


if __name__ == "__main__":
    main()
