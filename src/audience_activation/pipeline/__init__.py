"""The pure pipeline: input DataFrames and the previous run's state in, result DataFrames out.

:func:`evaluate` chains the stages of :mod:`audience_activation.pipeline.stages`; :func:`run_counts` gives the
run log's counts as a small DataFrame; :func:`batch_outputs` pairs each result with its table. Nothing here
reads or writes a table: :mod:`audience_activation.app` does, around these functions.

Example:
    >>> results = evaluate(Inputs(fragments, events, links, regions), PreviousState(), config, T)  # doctest: +SKIP
    >>> results.membership.where("status = 'realized'").groupBy("segment_id").count().show()  # doctest: +SKIP
"""

from __future__ import annotations

from .counts import micro_batch_counts, run_counts
from .micro_batch import STREAMING_METHOD, Changes, MicroBatchResults, evaluate_micro_batch
from .model import Barrier, Inputs, PreviousState, Results, no_barrier
from .outputs import ROUTES, Output, batch_outputs
from .stages import (
    BATCH_METHOD,
    Compiled,
    activation,
    compile_run,
    evaluate,
    identities,
    membership,
    person_events,
    profiles,
    routing,
    segments,
)

__all__ = [
    "BATCH_METHOD",
    "ROUTES",
    "STREAMING_METHOD",
    "Barrier",
    "Changes",
    "MicroBatchResults",
    "evaluate_micro_batch",
    "micro_batch_counts",
    "Compiled",
    "Inputs",
    "Output",
    "PreviousState",
    "Results",
    "activation",
    "batch_outputs",
    "compile_run",
    "evaluate",
    "identities",
    "membership",
    "no_barrier",
    "person_events",
    "profiles",
    "routing",
    "run_counts",
    "segments",
]
