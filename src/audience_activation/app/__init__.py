"""The job layer: the only library code that reads tables, writes them and records runs.

Each job reads (:mod:`.state`), calls the pure pipeline (:mod:`audience_activation.pipeline`), writes every
output through storage in its table's mode (:mod:`.writer`) and records the run. The console command
(:mod:`audience_activation.cli`) and the ``jobs/*.py`` spark-submit scripts only parse arguments and call the
functions exported here.
"""

from __future__ import annotations

from .batch import preview_batch, recover, run_batch, undo_failed_attempt
from .context import OnCommit, Progress, session_for, storage_for
from .jobs import (
    IdentityRunSummary,
    InputReport,
    WrittenTable,
    run_identity_resolution,
    validate_inputs,
    write_demo_data,
)
from .state import RunOrderError, activation_state, input_locations, output_locations
from .stream import AVAILABLE_NOW, StreamStartError, StreamSummary, process_micro_batch, run_stream

__all__ = [
    "AVAILABLE_NOW",
    "StreamStartError",
    "StreamSummary",
    "process_micro_batch",
    "run_stream",
    "IdentityRunSummary",
    "InputReport",
    "OnCommit",
    "Progress",
    "RunOrderError",
    "WrittenTable",
    "activation_state",
    "input_locations",
    "output_locations",
    "preview_batch",
    "recover",
    "run_batch",
    "run_identity_resolution",
    "session_for",
    "storage_for",
    "undo_failed_attempt",
    "validate_inputs",
    "write_demo_data",
]
