"""One writer per lake: the lease a run holds while it reads state and writes outputs.

The lease is a one-row Delta table, ``<lake root>/_lease``. Every change to it is a compare-and-swap commit
(:meth:`DeltaStorage.swap`): the new row is committed only if the table is still as the writer read it, and
every change increments ``epoch``. So when two runs try to take the lease at once, Delta's commit protocol
lets exactly one of them through.

Rules, in the order :meth:`LakeLease.acquire` applies them:

1. The lease is **free** when there is no row yet, when its ``state`` is ``released`` or ``abandoned``, when
   ``expires_at`` has passed, or when its holder ran on this host and its process is gone (pid not running,
   or running with another start time: a reused pid).
2. A lease that is not free is **refused at once**, with a :class:`LeaseHeldError` naming the holder's run,
   attempt, host, pid and times. Nothing has been read or written at that point.
3. A free lease is taken with a new ``attempt`` id. If the previous holder did not release it cleanly (it was
   killed, or gave up while rolling back), its attempt — and the attempts it had itself still to undo — go
   into ``pending``: the new holder must roll back their commits before it reads any state
   (:mod:`audience_activation.recovery`), then calls :meth:`LakeLease.settle`.
4. While held, a background thread **renews** the lease every ``timeout / 5`` (``expires_at = now +
   timeout``). If a renewal finds the lease taken by someone else (the holder was paused longer than the
   timeout), the lease is **lost**: :meth:`LakeLease.check`, called before each commit, raises
   :class:`LeaseLostError` and the run stops.
5. At the end the holder **releases** it (``state = released``) — or marks it ``abandoned`` when it could
   not undo its own commits, so that the next run does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from .storage import DeltaStorage, StorageError, TableNotFoundError

log = logging.getLogger(__name__)

RUNNING = "running"
RELEASED = "released"
ABANDONED = "abandoned"

LEASE_SCHEMA = (
    "lake string, epoch bigint, state string, run_id string, attempt string, host string, pid int, "
    "process_start string, acquired_at timestamp, renewed_at timestamp, expires_at timestamp, "
    "pending array<string>"
)


class LeaseHeldError(RuntimeError):
    """Another run holds the lake's lease."""


class LeaseLostError(RuntimeError):
    """This run's lease expired and was taken by another run; it must stop writing."""


def lease_location(lake_root: str) -> str:
    """Where a lake's lease table lives."""
    return f"{lake_root.rstrip('/')}/_lease"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _utc(value: dt.datetime) -> dt.datetime:
    """A collected timestamp (naive, in the driver's local zone) or an aware one, as aware UTC."""
    if value.tzinfo is None:
        value = value.astimezone()  # naive local time, as PySpark returns timestamps
    return value.astimezone(dt.timezone.utc)


def process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot (``/proc/<pid>/stat`` field 22), or ``""``.

    Together with the pid it identifies a process: a pid reused by a later process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            # The command name (field 2) may contain spaces and parentheses: split after its closing one.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, start: str) -> bool:
    """Whether the process ``pid`` (started at ``start``, if known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    return not start or process_start(pid) in ("", start)


@dataclass(frozen=True)
class LeaseRecord:
    """The lease row as read."""

    epoch: int
    state: str
    run_id: str
    attempt: str
    host: str
    pid: int
    process_start: str
    acquired_at: dt.datetime
    renewed_at: dt.datetime
    expires_at: dt.datetime
    pending: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> LeaseRecord:
        return cls(
            epoch=int(row["epoch"]),
            state=row["state"],
            run_id=row["run_id"],
            attempt=row["attempt"],
            host=row["host"],
            pid=int(row["pid"]),
            process_start=row["process_start"] or "",
            acquired_at=_utc(row["acquired_at"]),
            renewed_at=_utc(row["renewed_at"]),
            expires_at=_utc(row["expires_at"]),
            pending=tuple(row["pending"] or ()),
        )

    def free_reason(self, now: dt.datetime, host: str) -> str | None:
        """Why the lease is free (rule 1), or None while its holder may still be running."""
        if self.state != RUNNING:
            return f"{self.state} by {self.run_id}"
        if now >= self.expires_at:
            return f"expired at {self.expires_at.isoformat()} (holder {self.run_id} stopped renewing it)"
        if self.host == host and not process_alive(self.pid, self.process_start):
            return f"its holder {self.run_id} (pid {self.pid} on this host) is no longer running"
        return None

    def describe(self) -> str:
        return (
            f"run {self.run_id} (attempt {self.attempt[:8]}, pid {self.pid} on host {self.host}, "
            f"lease taken {self.acquired_at.isoformat()}, renewed {self.renewed_at.isoformat()}, "
            f"expires {self.expires_at.isoformat()})"
        )


@dataclass
class LakeLease:
    """The lease of one lake for one run attempt (see the module docstring for the rules).

    Args:
        spark: the session (the lease row is a one-row DataFrame).
        store: the storage engine.
        lake_root: the lake root; the lease lives in ``<root>/_lease``.
        run_id: the run taking the lease (named in the refusal other runs get).
        timeout_seconds: how long the lease outlives its last renewal.
    """

    spark: SparkSession
    store: DeltaStorage
    lake_root: str
    run_id: str
    timeout_seconds: int = 300
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Attempts whose commits this holder must roll back before reading state (rule 3).
    pending: tuple[str, ...] = ()
    #: The lease as it was before this attempt took it (None for a new lake).
    previous: LeaseRecord | None = None
    _record: LeaseRecord | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lost: str | None = None

    @property
    def location(self) -> str:
        return lease_location(self.lake_root)

    @property
    def held(self) -> bool:
        return self._record is not None and self._record.state == RUNNING and self._lost is None

    # -- reading and swapping ------------------------------------------------------------------------
    def read(self) -> tuple[int | None, LeaseRecord | None]:
        """The lease table's version and row (``(None, None)`` before any run took it)."""
        try:
            snapshot = self.store.read(self.location)
        except TableNotFoundError:
            return None, None
        rows = snapshot.df.collect()
        if len(rows) != 1:
            raise StorageError(f"{self.location}: the lease table must hold one row, found {len(rows)}")
        return snapshot.version, LeaseRecord.from_row(rows[0])

    def _row(self, epoch: int, state: str, acquired_at: dt.datetime, pending: tuple[str, ...]) -> LeaseRecord:
        now = _now()
        pid = os.getpid()
        return LeaseRecord(
            epoch=epoch,
            state=state,
            run_id=self.run_id,
            attempt=self.attempt,
            host=socket.gethostname(),
            pid=pid,
            process_start=process_start(pid),
            acquired_at=acquired_at,
            renewed_at=now,
            expires_at=now + dt.timedelta(seconds=self.timeout_seconds),
            pending=pending,
        )

    def _swap(self, version: int | None, current: LeaseRecord | None, new: LeaseRecord) -> bool:
        df = self.spark.createDataFrame(
            [
                (
                    "lake",
                    new.epoch,
                    new.state,
                    new.run_id,
                    new.attempt,
                    new.host,
                    new.pid,
                    new.process_start,
                    new.acquired_at,
                    new.renewed_at,
                    new.expires_at,
                    list(new.pending),
                )
            ],
            LEASE_SCHEMA,
        )
        swapped = self.store.swap(
            df, self.location, version=version, column="epoch", expected=current.epoch if current else None
        )
        if swapped:
            self._record = new
        return swapped

    # -- the life of a lease -------------------------------------------------------------------------
    def acquire(self) -> LakeLease:
        """Take the lease (rules 1–3) and start renewing it.

        Raises:
            LeaseHeldError: another run holds it, or took it at the same moment.
        """
        version, current = self.read()
        host = socket.gethostname()
        if current is not None:
            reason = current.free_reason(_now(), host)
            if reason is None:
                raise LeaseHeldError(self._refusal(current))
            log.info("lake lease free: %s", reason)
        pending: tuple[str, ...] = ()
        if current is not None and current.state != RELEASED:
            pending = tuple(dict.fromkeys((*current.pending, current.attempt)))
        new = self._row((current.epoch if current else 0) + 1, RUNNING, _now(), pending)
        with self._lock:
            swapped = self._swap(version, current, new)
        if not swapped:
            _, winner = self.read()
            raise LeaseHeldError(self._refusal(winner) if winner else f"{self.location}: the lease changed meanwhile")
        self.previous, self.pending = current, pending
        log.info("lake lease taken by %s (attempt %s, epoch %d)", self.run_id, self.attempt, new.epoch)
        self._thread = threading.Thread(target=self._renew_loop, name="lake-lease", daemon=True)
        self._thread.start()
        return self

    def _refusal(self, holder: LeaseRecord) -> str:
        return (
            f"the lake {self.lake_root} is in use by {holder.describe()}; {self.run_id} was not started. "
            f"Wait for that run to finish; if its process is gone for good, its lease expires "
            f"{self.timeout_seconds} s after its last renewal (lease.timeout_seconds in job.yaml)."
        )

    def _renew_loop(self) -> None:
        interval = max(self.timeout_seconds / 5, 1)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLostError:
                return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried; expiry is the backstop
                log.warning("could not renew the lake lease (retrying in %.0f s): %s", interval, exc)

    def renew(self) -> None:
        """Push ``expires_at`` forward (rule 4). Raises :class:`LeaseLostError` if another run took the lease."""
        with self._lock:
            record = self._record
            if record is None or record.state != RUNNING or self._lost is not None:
                return
            version, current = self.read()
            if current is None or current.attempt != self.attempt or current.epoch != record.epoch:
                self._lost = current.describe() if current else "(the lease table is gone)"
                log.error("lake lease lost: now held by %s", self._lost)
                raise LeaseLostError(self._lost_message())
            renewed = self._row(record.epoch + 1, RUNNING, record.acquired_at, record.pending)
            if not self._swap(version, current, renewed):
                self._lost = "a concurrent run"
                raise LeaseLostError(self._lost_message())

    def _lost_message(self) -> str:
        return (
            f"the lease on {self.lake_root} of {self.run_id} expired and is now held by {self._lost}; "
            f"this run stopped before its next commit"
        )

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost (called before every commit)."""
        if self._lost is not None:
            raise LeaseLostError(self._lost_message())

    def settle(self) -> None:
        """Record that the pending attempts have been rolled back (they are no longer this holder's debt)."""
        self._update(pending=())

    def release(self, *, abandoned: bool = False) -> None:
        """Stop renewing and set ``state`` to ``released`` (or ``abandoned``: the next run rolls back this
        attempt's commits). Best effort: a lease that cannot be released expires."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._lost is not None or self._record is None:
            return
        try:
            # Released means settled: nothing of this attempt or of the ones it inherited is left to undo.
            self._update(state=ABANDONED if abandoned else RELEASED, pending=None if abandoned else ())
        except Exception as exc:  # noqa: BLE001 - the run's own outcome is what matters to the caller
            log.warning("could not release the lake lease (it expires by itself): %s", exc)

    def _update(self, *, state: str | None = None, pending: tuple[str, ...] | None = None) -> None:
        with self._lock:
            record = self._record
            if record is None:
                return
            version, current = self.read()
            if current is None or current.attempt != self.attempt:
                self._lost = current.describe() if current else "(the lease table is gone)"
                raise LeaseLostError(self._lost_message())
            new = self._row(
                record.epoch + 1,
                state or record.state,
                record.acquired_at,
                record.pending if pending is None else pending,
            )
            if not self._swap(version, current, new):
                self._lost = "a concurrent run"
                raise LeaseLostError(self._lost_message())

    def __enter__(self) -> LakeLease:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()
