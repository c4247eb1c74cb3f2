"""The order the suite's tests start in: the slow ones first, dealt evenly over the pytest-xdist workers.

Most of the suite is many short tests; about twenty take one to seven minutes each (real processes killed and
restarted, a standalone cluster, the notebook, property tests). In collection order they sat near the end of
their worker's share, and the last tests of a run took minutes: a long test's worker busy, the other idle.

``tests/durations.json`` keeps the seconds each slow test took (setup, call and teardown) in a recent run.
:func:`order` puts them first, longest first, and deals them round robin over the workers' shares; the other
tests follow in collection order. The shares match how ``--dist worksteal`` splits a collection at the start
(contiguous, ``remaining // workers_left`` each), so each worker starts on its own slow tests and work stealing
then evens out the short ones at the ends of the queues. With another scheduler the order is still valid, only
balanced less well. Refresh the file after tests are added or sped up:
``.venv/bin/pytest -n 2 --dist worksteal --store-durations`` (tests of at least :data:`KEPT_SECONDS`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TypeVar

DURATIONS = Path(__file__).with_name("durations.json")

#: Tests shorter than this are left in collection order (and out of the file).
KEPT_SECONDS = 15.0

Item = TypeVar("Item")


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    """``node id -> seconds`` from ``path``; empty when the file is missing."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_durations(seconds: Mapping[str, float], path: Path = DURATIONS) -> None:
    """Keep the tests of at least :data:`KEPT_SECONDS`, longest first, rounded to the second."""
    kept = sorted(((s, node) for node, s in seconds.items() if s >= KEPT_SECONDS), key=lambda p: (-p[0], p[1]))
    path.write_text(json.dumps({node: round(s) for s, node in kept}, indent=1) + "\n")


def order(
    items: Sequence[Item], node_id: Callable[[Item], str], durations: Mapping[str, float], workers: int
) -> list[Item]:
    """``items`` reordered: the known slow ones dealt longest first over ``workers`` contiguous shares, each share
    then filled with the other items in their order.

    ``node_id`` gives an item's pytest node id, the key of ``durations``.

    >>> order(["a", "b", "c", "d", "e", "f"], str, {"e": 9, "f": 5, "c": 7}, 2)
    ['e', 'f', 'a', 'c', 'b', 'd']
    """
    slow = sorted((item for item in items if node_id(item) in durations), key=lambda item: -durations[node_id(item)])
    rest = (item for item in items if node_id(item) not in durations)
    workers = max(1, workers)
    shares: list[list[Item]] = [slow[w::workers] for w in range(workers)]
    remaining = len(items)
    ordered: list[Item] = []
    for w, share in enumerate(shares):
        size = max(remaining // (workers - w), len(share))  # what worksteal sends worker ``w`` at the start
        share.extend(islice(rest, size - len(share)))
        ordered.extend(share)
        remaining -= len(share)
    ordered.extend(rest)
    return ordered
