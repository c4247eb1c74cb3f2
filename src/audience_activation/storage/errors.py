"""The errors the storage engines raise (re-exported by :mod:`audience_activation.storage.base`)."""

from __future__ import annotations


class StorageError(RuntimeError):
    """A table could not be read or written."""


class TableNotFoundError(StorageError):
    """The location holds no Delta table."""


class UnsupportedTableFeatureError(StorageError):
    """A table uses a Delta reader feature the chosen engine cannot honour (reading it would be wrong)."""


class ConcurrentWriteError(StorageError):
    """Another writer committed to the table between this write's read and its commit."""


class DamagedTableError(StorageError):
    """A table's log or data files are missing or unreadable; the message names the table and the file."""


class SchemaMismatchError(StorageError):
    """The data written does not have the table's schema."""


def damaged(location: str, path: str, what: str) -> DamagedTableError:
    """The one-paragraph error for a damaged table."""
    return DamagedTableError(
        f"table {location} is damaged: {what}: {path}. Nothing was written. Restore the file from a backup or "
        f"the table to an earlier version (RESTORE TABLE ... TO VERSION AS OF n), or re-create the table."
    )


def lost_race(location: str, read_version: int | None, detail: str) -> ConcurrentWriteError:
    """The error of a write whose commit lost to another writer's (the same message under both engines)."""
    return ConcurrentWriteError(
        f"{location}: another writer committed to this table after version "
        f"{read_version if read_version is not None else '(new table)'} was read; this write was not "
        f"committed and the table is unchanged by it ({detail})"
    )


def created_meanwhile(location: str) -> ConcurrentWriteError:
    """The error of a write that was to create a table another writer created first."""
    return ConcurrentWriteError(
        f"{location}: another writer created this table while this write was running; this write was not committed"
    )
