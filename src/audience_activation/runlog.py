"""Runs: evaluation time, run ids (CONTRACT §1).

Every job run has an evaluation time ``T`` (UTC, whole seconds) and a ``run_id`` derived from ``T`` and the
job kind, e.g. ``batch-20261129T000000Z``, so re-running the same ``T`` replaces that run's outputs.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc


def parse_utc_time(text: str) -> dt.datetime:
    """Parse an ISO-8601 time such as ``2026-11-29T00:00:00Z``; a naive time is UTC. Truncated to the second.

    Raises:
        ValueError: the text is not an ISO-8601 time.
    """
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def default_evaluation_time() -> dt.datetime:
    """The current time, truncated to the second (UTC)."""
    return dt.datetime.now(UTC).replace(microsecond=0)


def run_id(kind: str, evaluation_time: dt.datetime) -> str:
    """``<kind>-<T as YYYYMMDDTHHMMSSZ>``, e.g. ``batch-20261129T000000Z``."""
    t = evaluation_time.astimezone(UTC) if evaluation_time.tzinfo else evaluation_time.replace(tzinfo=UTC)
    return f"{kind}-{t:%Y%m%dT%H%M%SZ}"


def as_utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (never as the machine's local time)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
