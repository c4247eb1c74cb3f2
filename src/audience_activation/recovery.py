"""Undoing runs that did not complete: roll their commits back, sweep their scratch files.

Every commit a run makes to an output table carries the run's ``attempt`` id in its commit metadata. Under
the lake lease (:mod:`audience_activation.lease`) no other run writes, so the commits of one attempt form the
newest stretch of each table's history. Rolling an attempt back therefore means, for every output table:

1. walk the table's commits from the newest back while they belong to the attempts being undone;
2. if any did, ``RESTORE`` the table to the version just before them — or, when the attempts created the
   table, remove it;
3. delete data files no commit mentions (writes killed before their commit).

This runs at once when a run fails, and in the next run (before it reads any state) when a run was killed.
Restores are themselves commits of the attempt doing them, so a run killed while rolling back is rolled
back in turn by the next one, from the same starting point.

Scratch space: each run's lineage barrier writes under ``<lake root>/_scratch/<attempt>``; the holder of the
lease deletes every other run's scratch folder (previews' once they are an hour old) and the ``_scratch``
folder itself when it is empty.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping

from .storage import DeltaStorage, StorageError
from .storage.base import arrow_filesystem, commit_info, commit_versions

log = logging.getLogger(__name__)

#: Commit metadata key naming the run attempt that made a commit.
ATTEMPT_KEY = "attempt"
SCRATCH = "_scratch"
PREVIEW_PREFIX = "preview-"


def recovery_tag(attempt: str) -> str:
    """The ``attempt`` of the commits with which an attempt undoes the attempts it inherited."""
    return f"{attempt}/recovery"


def rollback_tag(attempt: str) -> str:
    """The ``attempt`` of the commits with which a failed attempt undoes its own (and records its failure)."""
    return f"{attempt}/rollback"


def child_folders(location: str) -> list[str]:
    """The names of the folders directly under ``location`` (empty when it does not exist)."""
    import pyarrow.fs as pafs  # noqa: PLC0415

    filesystem, path = arrow_filesystem(location.rstrip("/"))
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def attempt_tail(location: str, attempts: Iterable[str]) -> tuple[int | None, list[int]] | None:
    """The newest commits of a table made by ``attempts``, and the version to go back to.

    Returns:
        None when the newest commit is not theirs (nothing to undo); else ``(target, undone)``: the version
        before their commits (None when they created the table) and the versions to undo.
    """
    wanted = set(attempts)
    versions = commit_versions(location)
    undone: list[int] = []
    for version in reversed(versions):
        if commit_info(location, version).get(ATTEMPT_KEY) not in wanted:
            return (version, undone) if undone else None
        undone.append(version)
    if not undone:
        return None
    first = versions[0]
    # Every retained commit is theirs: the table is theirs, unless older commits were cleaned from the log.
    return (first - 1 if first > 0 else None), undone


def rollback(
    store: DeltaStorage,
    locations: Iterable[str],
    attempts: Iterable[str],
    *,
    commit_info_: Mapping[str, str],
    sweep_files: bool = False,
) -> dict[str, int | None]:
    """Restore every table in ``locations`` to its version before the commits of ``attempts``.

    Args:
        store: the storage engine.
        locations: output tables (absent ones are skipped).
        attempts: the attempt ids whose commits are undone.
        commit_info_: metadata of the restore commits (the restoring run and attempt).
        sweep_files: also delete uncommitted data files (after a killed run: its writes in flight).

    Returns:
        Per restored table, the version restored (None: the table was removed).
    """
    attempts = list(attempts)
    restored: dict[str, int | None] = {}
    for location in locations:
        if not store.exists(location):
            continue
        tail = attempt_tail(location, attempts)
        if tail is not None:
            target, undone = tail
            if target is None:
                store.drop(location)
            else:
                store.restore(location, target, commit_info=commit_info_)
            restored[location] = target
            log.info("%s: undid version(s) %s of a run that did not complete", location, sorted(undone))
        if sweep_files and store.exists(location):
            store.cleanup(location, older_than=dt.timedelta(0))
    return restored


def scratch_folder(lake_root: str, name: str) -> str:
    """``<lake root>/_scratch/<name>``."""
    return f"{lake_root.rstrip('/')}/{SCRATCH}/{name}"


def sweep_scratch(lake_root: str, keep: str, *, preview_age: dt.timedelta = dt.timedelta(hours=1)) -> list[str]:
    """Delete the scratch folders of other runs (called by the lease holder; previews only once old).

    Returns:
        The deleted folders.
    """
    import pyarrow.fs as pafs  # noqa: PLC0415

    root = f"{lake_root.rstrip('/')}/{SCRATCH}"
    filesystem, path = arrow_filesystem(root)
    deleted = []
    deadline_ns = time.time_ns() - int(preview_age.total_seconds() * 1e9)
    for info in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type != pafs.FileType.Directory or info.base_name == keep:
            continue
        if info.base_name.startswith(PREVIEW_PREFIX) and (info.mtime_ns is None or info.mtime_ns > deadline_ns):
            continue  # a preview may still be running (previews take no lease)
        try:
            filesystem.delete_dir(info.path)
            deleted.append(f"{root}/{info.base_name}")
        except (OSError, StorageError) as exc:
            log.warning("could not delete the scratch folder %s: %s", info.path, exc)
    if deleted:
        log.info("swept %d scratch folder(s) of earlier runs", len(deleted))
    remove_if_empty(root)
    return deleted


def remove_if_empty(folder: str) -> None:
    """Delete ``folder`` if it exists and holds nothing."""
    import pyarrow.fs as pafs  # noqa: PLC0415

    filesystem, path = arrow_filesystem(folder)
    try:
        empty = not filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if empty and filesystem.get_file_info(path).type == pafs.FileType.Directory:
            filesystem.delete_dir(path)
    except OSError as exc:
        log.debug("could not remove %s: %s", folder, exc)
