"""Compare the output tables of two lakes row by row (e.g. the same runs made by two versions of the code).

    .venv/bin/python benchmarks/compare_lakes.py LAKE_A LAKE_B

Every Delta table under each lake root is found (a folder holding ``_delta_log``); the input tables, the lease
and scratch folders are skipped. Each output table's rows at its latest version are compared as sorted lists;
for ``activation_runs`` the columns that depend on the moment or the machine (``started_at``, ``ended_at``,
``output_versions``) are left out, everything else (run ids, kinds, evaluation times, statuses, engines, input
versions, counts, mappings, errors) is compared. Reads with delta-rs only, so it compares lakes written by any
version of the project. Exit status 1 when a table differs or exists in one lake only. ``activation_state`` and
``activation_state_log`` are compared as stored: on lakes a stream ran on, the same state can be stored
differently (compare after a batch run, which writes it whole and empties the log).

``benchmarks/results/restructure-equivalence.md`` records a comparison of the batch job before and after the
pipeline restructure (how it was made is written there).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deltalake import DeltaTable

INPUTS = {"profile_fragments", "experience_events", "identity_graph", "region_information"}
SKIPPED_FOLDERS = {"_lease", "_scratch", "_checkpoints"}
RUN_LOG_VOLATILE = {"started_at", "ended_at", "output_versions"}


def tables(root: Path) -> list[str]:
    """Relative paths of the output tables under ``root``."""
    found = []
    for log in sorted(root.rglob("_delta_log")):
        relative = log.parent.relative_to(root).as_posix()
        if relative in INPUTS or relative.split("/")[0] in SKIPPED_FOLDERS:
            continue
        found.append(relative)
    return found


def rows(location: Path, name: str) -> list[str]:
    records = DeltaTable(str(location)).to_pyarrow_table().to_pylist()
    if name == "activation_runs":
        records = [{k: v for k, v in r.items() if k not in RUN_LOG_VOLATILE} for r in records]
    return sorted(repr(sorted(r.items())) for r in records)


def compare(a: Path, b: Path) -> list[str]:
    """The differences, one line each (empty when the lakes' outputs are equal)."""
    problems = []
    names_a, names_b = set(tables(a)), set(tables(b))
    for name in sorted(names_a ^ names_b):
        problems.append(f"{name}: only in {a if name in names_a else b}")
    for name in sorted(names_a & names_b):
        left, right = rows(a / name, name), rows(b / name, name)
        if left != right:
            only_left = len(set(left) - set(right))
            only_right = len(set(right) - set(left))
            problems.append(f"{name}: {len(left)} vs {len(right)} rows, {only_left} only in A, {only_right} only in B")
        else:
            print(f"{name}: {len(left)} rows, equal")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake_a", type=Path)
    parser.add_argument("lake_b", type=Path)
    args = parser.parse_args()
    problems = compare(args.lake_a, args.lake_b)
    for problem in problems:
        print(f"DIFFERENT {problem}")
    print("equal" if not problems else f"{len(problems)} table(s) differ")
    return 1 if problems else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # delta-rs' native threads can abort the interpreter's shutdown ("terminate called without an active
    # exception") after everything is done: leave without it, with the comparison's status.
    os._exit(code)
