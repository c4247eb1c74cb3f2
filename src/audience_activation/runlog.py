"""Runs: evaluation time, run ids and the run log's rows (docs/batch.md, "Run log").

Every job run has an evaluation time ``T`` (UTC, whole seconds) and a ``run_id`` derived from ``T`` and the
job kind, e.g. ``batch-20261129T000000Z``, so re-running the same ``T`` replaces that run's outputs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field

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


def stream_run_id(evaluation_time: dt.datetime, batch_id: int) -> str:
    """A micro-batch's run id: ``streaming-<T>-<micro-batch id>``, e.g. ``streaming-20261129T000312Z-42``."""
    return f"{run_id(STREAMING, evaluation_time)}-{batch_id}"


def as_utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (never as the machine's local time)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- the run log (activation_runs) -----------------------------------------------------------------------------

BATCH = "batch"
STREAMING = "streaming"
IDENTITY = "identity"
COMPLETED = "completed"
FAILED = "failed"


def evaluation_time_of(run: str, kind: str) -> dt.datetime | None:
    """``T`` of a run id of ``kind`` (the inverse of :func:`run_id` and, for ``streaming``, of
    :func:`stream_run_id`), or None for another kind or a malformed id."""
    if not run.startswith(f"{kind}-"):
        return None
    stamp = run.removeprefix(f"{kind}-")
    if kind == STREAMING and "-" in stamp:
        stamp = stamp.rpartition("-")[0]
    try:
        return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class ChangeKey:
    """Which change rows a count is of: a destination's route and reason."""

    destination_id: str
    route: str
    reason: str


@dataclass
class RunCounts:
    """Every count a run records, typed; :meth:`as_map` renders the run log's ``counts`` map.

    Attributes:
        persons: unified profiles.
        rows: input table -> category (``total``, ``after_t``, ``missing_timestamp``, ``no_valid_identity``,
            ``invalid_link``, ``ignored_by_merge_policy``, ``duplicate_id``, ``used``) -> rows; ``total`` is the
            sum of the others.
        quarantine: reason -> quarantined identities.
        members: segment -> realized members (every evaluated segment, 0 included).
        changes: (destination, route, reason) -> change rows written.
        exclusions: (destination, reason) -> persons qualified for a mapped segment but not activated.
    """

    persons: int = 0
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine: dict[str, int] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)
    changes: dict[ChangeKey, int] = field(default_factory=dict)
    exclusions: dict[tuple[str, str], int] = field(default_factory=dict)

    def as_map(self) -> dict[str, int]:
        """The run log's ``counts`` map: ``persons``, ``rows.<table>.<category>``, ``quarantine.<reason>``,
        ``members.<segment>``, ``changes.<destination>.<route>.<reason>``, ``exclusions.<destination>.<reason>``;
        sorted by key."""
        out: dict[str, int] = {"persons": self.persons}
        for table, categories in self.rows.items():
            out.update({f"rows.{table}.{category}": n for category, n in categories.items()})
        out.update({f"quarantine.{reason}": n for reason, n in self.quarantine.items()})
        out.update({f"members.{segment}": n for segment, n in self.members.items()})
        out.update({f"changes.{k.destination_id}.{k.route}.{k.reason}": n for k, n in self.changes.items()})
        out.update({f"exclusions.{d}.{reason}": n for (d, reason), n in self.exclusions.items()})
        return dict(sorted(out.items()))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, object]], segment_ids: Iterable[str]) -> RunCounts:
        """From the rows of :func:`audience_activation.pipeline.run_counts` (``measure, subject, detail,
        reason, count``); segments without members count 0."""
        counts = cls(members=dict.fromkeys(segment_ids, 0))
        for row in rows:
            measure, subject, detail, reason = (row[k] for k in ("measure", "subject", "detail", "reason"))
            n = int(row["count"] or 0)  # type: ignore[call-overload]
            if measure == "persons":
                counts.persons = n
            elif measure == "rows":
                counts.rows.setdefault(str(subject), {})[str(reason)] = n
            elif measure == "quarantine":
                counts.quarantine[str(reason)] = n
            elif measure == "members":
                counts.members[str(subject)] = n
            elif measure == "changes":
                counts.changes[ChangeKey(str(subject), str(detail), str(reason))] = n
            elif measure == "exclusions":
                counts.exclusions[(str(subject), str(reason))] = n
            else:  # pragma: no cover - the pipeline emits only the measures above
                raise ValueError(f"unknown count measure {measure!r}")
        counts.rows = {t: dict(sorted(c.items())) for t, c in sorted(counts.rows.items())}
        counts.quarantine = dict(sorted(counts.quarantine.items()))
        counts.changes = dict(sorted(counts.changes.items(), key=lambda i: astuple(i[0])))
        counts.exclusions = dict(sorted(counts.exclusions.items()))
        return counts


@dataclass(frozen=True)
class PreviousRun:
    """The newest completed run older than ``T``: where the state before this run is."""

    run_id: str
    evaluation_time: dt.datetime
    output_versions: dict[str, int]
    mappings: dict[str, list[str]]
    #: The input versions it read (where a micro-batch's changes start).
    input_versions: dict[str, int] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a run (or a preview) did; printed at the end and stored as its ``activation_runs`` row."""

    run_id: str
    evaluation_time: dt.datetime
    engine: str
    kind: str = BATCH
    status: str = COMPLETED
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    previous_run: str | None = None
    input_versions: dict[str, int | None] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    counts: RunCounts = field(default_factory=RunCounts)
    classification: dict[str, str] = field(default_factory=dict)
    cc_rounds: int = 0

    def as_row(self, mappings: Mapping[str, Sequence[str]], error: str | None) -> tuple[object, ...]:
        """The ``activation_runs`` row (:data:`audience_activation.tables.RUNS` column order)."""
        return (
            self.run_id,
            self.kind,
            self.evaluation_time,
            self.started_at,
            self.ended_at,
            self.status,
            self.engine,
            {k: v for k, v in self.input_versions.items() if v is not None},
            self.output_versions,
            self.counts.as_map(),
            {k: list(v) for k, v in mappings.items()},
            error,
        )

    def as_json(self) -> str:
        """The summary as JSON (for logs and notebooks); counts as the run log's map."""
        data = {**self.__dict__, "counts": self.counts.as_map()}
        return json.dumps(data, default=str, indent=2, sort_keys=True)
