"""Fault injection: kill batch runs at random moments, run again, compare the lake with a clean one.

    .venv/bin/python benchmarks/faults.py --trials 20 --engine delta-rs

Set-up: demo inputs for ``--persons`` persons (as of T1), a run at T1, then a **reference** lake where T2 ran
once without interruption. Each trial (seeded):

1. copies the lake as it was after T1;
2. starts ``audience-activation run --evaluation-time T2`` in a process of its own and kills it (SIGKILL, the
   whole process group, JVM included) at a random moment: a number ``k`` of its commits is drawn uniformly
   from 0 to the number an uninterrupted run makes; for ``k = 0`` the kill comes after a delay drawn uniformly
   over the time before the first commit (starting, taking the lease, computing), else at a random moment
   within 2 s after the ``k``-th commit landed (between commits, or during the next write);
3. runs T2 again (in this process), which must undo whatever the killed run left and complete;
4. checks the lake equals the reference (every output table's rows; the run log's run ids, statuses and counts),
   that no uncommitted data file and no scratch folder is left, and that the lease is released.

Results (per trial: the delay, how many commits of the killed run had landed, the outcome) go to
``benchmarks/results/faults-<engine>.{json,md}``. Exit status 1 if any trial found a difference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from audience_activation import app  # noqa: E402
from audience_activation.config import load_config  # noqa: E402
from audience_activation.storage.base import commit_info, commit_versions, uncommitted_data_files  # noqa: E402

CLI = str(Path(sys.executable).parent / "audience-activation")
T1 = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
RUN2 = "batch-20261130T000000Z"


def configure(conf: Path, engine: str) -> Path:
    folder = conf / "conf"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "conf", folder)
    job = folder / "job.yaml"
    job.write_text(job.read_text().replace("  engine: auto\n", f"  engine: {engine}\n", 1))
    return folder


def outputs(config: Any) -> dict[str, list[str]]:
    from deltalake import DeltaTable

    root = config.job.lake.root
    out = {}
    for location in app.output_locations(config):
        if not DeltaTable.is_deltatable(location):  # the activation state's log: written by streams only
            continue
        rows = DeltaTable(location).to_pyarrow_table().to_pylist()
        if location.endswith("activation_runs"):
            out["activation_runs"] = sorted(repr((r["run_id"], r["status"], sorted(r["counts"]))) for r in rows)
        else:
            out[location.removeprefix(root)] = sorted(repr(sorted(r.items())) for r in rows)
    return out


def commits_of(config: Any, run_id: str) -> int:
    total = 0
    for location in app.output_locations(config):
        total += sum(1 for v in commit_versions(location) if commit_info(location, v).get("run_id") == run_id)
    return total


def write_results(
    args: argparse.Namespace, duration: float, total_commits: int, first_commit: float, trials: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Write the results so far (after every trial: an interrupted campaign keeps its trials)."""
    failures = [t for t in trials if t["outcome"] != "ok"]
    result = {
        "date": dt.date.today().isoformat(),
        "engine": args.engine,
        "persons": args.persons,
        "seed": args.seed,
        "reference_run_s": round(duration, 1),
        "trials": trials,
        "failures": len(failures),
    }
    out = ROOT / "benchmarks" / "results" / f"faults-{args.engine}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Fault injection, {args.engine} ({result['date']})",
        "",
        f"{len(trials)} of {args.trials} trials done, seed {args.seed}, {args.persons:,} demo persons; an "
        f"uninterrupted T2 run took {duration:.1f} s (process wall time, 2 cores) and made {total_commits} commits, "
        f"the first after {first_commit:.1f} s. Each trial killed a T2 run (SIGKILL to its process group) after the "
        "k-th commit (k drawn from 0 to all; k = 0: before any), ran T2 again and compared the lake with the "
        "reference.",
        "",
        "| trial | k | killed after | killed? | commits of the killed run landed | rerun | outcome |",
        "|---:|---:|---:|---|---:|---:|---|",
        *(
            f"| {t['trial']} | {t['kill_after_commit']} | {t['kill_after_s']} s | "
            f"{'yes' if t['killed'] else 'no (finished)'} | "
            f"{t['commits_landed']} | {t['rerun_s']} s | {t['outcome']} |"
            for t in trials
        ),
        "",
        f"**{len(trials) - len(failures)} of {len(trials)} trials ended with the lake equal to the reference.**",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--persons", type=int, default=300)
    parser.add_argument("--engine", choices=["delta-rs", "delta-spark"], default="delta-rs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/aa-faults"))
    args = parser.parse_args()

    work = args.work / args.engine
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    conf = configure(work, args.engine)
    base = load_config(conf)

    def at(lake: Path) -> Any:
        return base.model_copy(update={"job": base.job.with_lake_root(str(lake))})

    spark = app.session_for(base)
    spark.sparkContext.setLogLevel("ERROR")
    after_t1 = work / "after-t1"
    app.write_demo_data(spark, at(after_t1), persons=args.persons, seed=1, as_of=T1)
    app.run_batch(spark, at(after_t1), evaluation_time=T1)
    reference = work / "reference"
    shutil.copytree(after_t1, reference)
    started = time.monotonic()
    clean = subprocess.Popen(
        [CLI, "run", "--conf", str(conf), "--lake-root", str(reference), "--evaluation-time", T2.isoformat()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_commit = None
    while clean.poll() is None:
        if first_commit is None and commits_of(at(reference), RUN2) > 0:
            first_commit = time.monotonic() - started
        time.sleep(0.3)
    if clean.returncode != 0:
        raise SystemExit("the reference run failed")
    duration = time.monotonic() - started
    total_commits = commits_of(at(reference), RUN2)
    first_commit = first_commit or duration
    expected = outputs(at(reference))
    print(
        f"reference run of T2: {duration:.1f} s (process wall time), {total_commits} commits, the first after "
        f"{first_commit:.1f} s",
        flush=True,
    )

    rng = random.Random(args.seed)
    trials = []
    for trial in range(args.trials):
        lake = work / f"trial-{trial:02d}"
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(after_t1, lake)
        target = rng.randint(0, total_commits)
        jitter = rng.uniform(0, first_commit) if target == 0 else rng.uniform(0, 2)
        start = time.monotonic()
        with (work / f"trial-{trial:02d}.log").open("wb") as log:
            process = subprocess.Popen(
                [CLI, "run", "--conf", str(conf), "--lake-root", str(lake), "--evaluation-time", T2.isoformat()],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while target and process.poll() is None and commits_of(at(lake), RUN2) < target:
            time.sleep(0.2)
        time.sleep(jitter)
        finished = process.poll() is not None
        if not finished:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        delay = time.monotonic() - start
        landed = commits_of(at(lake), RUN2)
        rerun_start = time.monotonic()
        summary = app.run_batch(spark, at(lake), evaluation_time=T2)
        rerun = time.monotonic() - rerun_start
        got = outputs(at(lake))
        leftovers = {
            loc: sorted(files) for loc in app.output_locations(at(lake)) if (files := uncommitted_data_files(loc))
        }
        problems = []
        if got != expected:
            problems.append("tables differ: " + ", ".join(sorted(k for k in expected if got.get(k) != expected[k])))
        if leftovers:
            problems.append(f"uncommitted files left: {leftovers}")
        if (lake / "_scratch").exists():
            problems.append("scratch folder left")
        if summary.status != "completed":
            problems.append(f"rerun status {summary.status}")
        outcome = "ok" if not problems else "; ".join(problems)
        trials.append(
            {
                "trial": trial,
                "kill_after_commit": target,
                "kill_after_s": round(delay, 1),
                "killed": not finished,
                "commits_landed": landed,
                "rerun_s": round(rerun, 1),
                "outcome": outcome,
            }
        )
        write_results(args, duration, total_commits, first_commit, trials)
        print(
            f"trial {trial:2d}: kill after {delay:5.1f} s ({'killed' if not finished else 'had finished'}), "
            f"{landed:2d} commit(s) of the killed run landed, rerun {rerun:.1f} s: {outcome}",
            flush=True,
        )
        shutil.rmtree(lake, ignore_errors=True)

    failures = write_results(args, duration, total_commits, first_commit, trials)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
