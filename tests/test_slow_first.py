"""The suite's start order (``slow_first``): slow tests first, longest first, dealt over the workers' shares."""

from __future__ import annotations

import json
from pathlib import Path

from slow_first import order, read_durations, write_durations


def test_the_slow_tests_lead_each_workers_share_and_the_rest_keep_their_order() -> None:
    items = list("abcdefgh")
    durations = {"g": 9.0, "c": 7.0, "h": 5.0, "a": 3.0}
    ordered = order(items, str, durations, workers=2)
    # worksteal sends worker 1 the first 8 // 2 = 4 items, worker 2 the other 4
    assert ordered[:4] == ["g", "h", "b", "d"]
    assert ordered[4:] == ["c", "a", "e", "f"]


def test_one_worker_runs_the_slow_tests_first_then_the_others_in_order() -> None:
    ordered = order(list("abcde"), str, {"d": 2.0, "b": 8.0}, workers=1)
    assert ordered == ["b", "d", "a", "c", "e"]


def test_more_slow_tests_than_a_share_holds_keeps_every_item_once() -> None:
    items = list("abcde")
    ordered = order(items, str, {name: float(k) for k, name in enumerate(items)}, workers=3)
    assert sorted(ordered) == items and len(ordered) == 5
    assert ordered == ["e", "b", "d", "a", "c"]  # shares of 2, 2 and 1: the slow tests overfill the first two


def test_durations_keep_the_slow_tests_longest_first(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    assert read_durations(path) == {}
    write_durations({"t::fast": 1.2, "t::slow": 30.4, "t::slower": 90.6}, path)
    assert list(json.loads(path.read_text()).items()) == [("t::slower", 91), ("t::slow", 30)]
    assert read_durations(path) == {"t::slower": 91, "t::slow": 30}
