"""The batch evaluation as named stages: DataFrames in, DataFrames out.

Stages, in the order :func:`evaluate` runs them (each can be called on its own, and on a subset of persons:
give it the clusters, profiles or membership rows of those persons only):

1. :func:`compile_run` — segments and consent conditions compiled against the input schemas (fails before any
   Spark job on a bad definition);
2. :func:`identities` — the inputs as of ``T``, identity resolution (``identity_clusters``, quarantine);
3. :func:`person_events` and :func:`profiles` — events attributed and de-duplicated, fragments merged;
4. :func:`segments` — every segment in one pass over profiles (+ one aggregation of events);
5. :func:`membership` — the membership state after ``T``;
6. :func:`activation` — each destination's activated set diffed against the previous run;
7. :func:`routing` — each change routed to edge streaming or hub batch.

No stage reads or writes a table or runs a Spark action, with two deliberate exceptions owned by the caller's
``barrier`` (lineage cut at stage ends) and the convergence test between connected-components rounds (an
iterative algorithm must look at its data to know when to stop).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from .. import activation as activation_rules
from .. import identity, profile
from .. import membership as membership_rules
from ..as_of import AsOfInputs
from ..as_of import as_of as inputs_as_of
from ..config import AppConfig
from ..pql.compiler import CompiledSegments
from ..segments import compile_consents, compile_segments
from .model import Barrier, Inputs, PreviousState, Results, no_barrier

#: The evaluation method written to ``segment_membership`` by the batch job.
BATCH_METHOD = "batch"


@dataclass(frozen=True)
class Compiled:
    """Segments and consent conditions compiled for one ``T``."""

    segments: CompiledSegments
    consents: dict[str, Any]


def compile_run(config: AppConfig, inputs: Inputs, evaluation_time: dt.datetime) -> Compiled:
    """Compile every segment and consent condition against the schemas the run will evaluate them on.

    Raises:
        ConfigError: a bad segment or consent condition (file, item and PQL position named).
    """
    profiles_schema = profile.profile_schema(inputs.fragments.schema)
    events_schema = profile.event_schema(inputs.events.schema if inputs.events is not None else None)
    return Compiled(
        segments=compile_segments(config, profiles_schema, events_schema, evaluation_time),
        consents=compile_consents(config, profiles_schema, evaluation_time),
    )


def identities(
    inputs: Inputs, config: AppConfig, evaluation_time: dt.datetime, barrier: Barrier = no_barrier
) -> tuple[AsOfInputs, identity.IdentityResult]:
    """The inputs as of ``T`` and identity resolution on them (clusters materialised by ``barrier``)."""
    as_of = inputs_as_of(inputs.fragments, inputs.events, inputs.links, inputs.regions, evaluation_time)
    resolved = identity.resolve_identities(as_of, config.namespaces, config.job.identity, barrier)
    return as_of, identity.IdentityResult(
        clusters=barrier(resolved.clusters),
        quarantine=barrier(resolved.quarantine),
        rounds=resolved.rounds,
        records=resolved.records,
    )


def person_events(as_of: AsOfInputs, clusters: DataFrame) -> DataFrame | None:
    """Events as of ``T`` with ``person_id``, de-duplicated by ``_id``; None without events."""
    return None if as_of.events is None else profile.person_events(as_of.events, clusters)


def profiles(as_of: AsOfInputs, events: DataFrame | None, clusters: DataFrame, config: AppConfig) -> DataFrame:
    """Unified profiles of the persons in ``clusters`` (merge policy of ``job.yaml``)."""
    if as_of.fragments is None:  # pragma: no cover - profile_fragments is a required input
        raise ValueError("profile_fragments is required")
    return profile.unified_profiles(as_of.fragments, events, clusters, config.job.merge_policy, config.namespaces)


def segments(compiled: Compiled, profiles: DataFrame, events: DataFrame | None) -> DataFrame:
    """The profiles with one boolean column per segment (all segments in one pass)."""
    return compiled.segments.evaluate(profiles, events if compiled.segments.needs_events else None)


def membership(
    evaluated: DataFrame,
    segment_ids: list[str],
    previous: DataFrame | None,
    evaluation_time: dt.datetime,
    config: AppConfig,
    *,
    method: str = BATCH_METHOD,
) -> DataFrame:
    """The membership state after ``T`` (realized, exited, retention of exited rows)."""
    return membership_rules.update_membership(
        previous,
        membership_rules.qualifying_pairs(evaluated, segment_ids),
        evaluation_time,
        retention_days=config.job.membership.exited_retention_days,
        method=method,
    )


def activation(
    new_membership: DataFrame,
    profiles: DataFrame,
    previous: PreviousState,
    compiled: Compiled,
    config: AppConfig,
    evaluation_time: dt.datetime,
    barrier: Barrier = no_barrier,
) -> activation_rules.ActivationResult:
    """Each destination's activated set at ``T`` diffed against the previous run (reasons, identities, state);
    the comparison of the two sets is materialised once by ``barrier``."""
    spark = new_membership.sparkSession
    destinations = list(config.destinations)
    current = activation_rules.current_members(
        new_membership, profiles, destinations, compiled.consents, config.namespaces
    )
    previous_mappings = None
    if previous.run is not None:
        rows = [(d, s) for d, mapped in previous.mappings.items() for s in mapped]
        previous_mappings = spark.createDataFrame(rows, activation_rules.MAPPING_SCHEMA)
    return activation_rules.diff_activations(
        current,
        previous.activation_state,
        previous.membership,
        new_membership,
        activation_rules.mappings_frame(spark, destinations),
        previous_mappings,
        evaluation_time,
        barrier,
    )


def routing(
    changes: DataFrame,
    clusters: DataFrame,
    regions: DataFrame | None,
    previous_clusters: DataFrame | None,
    config: AppConfig,
    evaluation_time: dt.datetime,
    graphs_barrier: Barrier | None = None,
) -> DataFrame:
    """Change rows with ``route``, ``region`` and ``dcs_region_id`` (edge streaming or hub batch).

    ``graphs_barrier`` materialises the persons' graphs before they meet the region captures
    (:func:`audience_activation.activation.edge_regions`): a micro-batch's are small and then broadcast."""
    window = config.job.activation.edge_window_days
    regions_of = activation_rules.edge_regions(
        clusters, previous_clusters, regions, evaluation_time, window, graphs_barrier
    )
    return activation_rules.route_changes(changes, list(config.destinations), regions_of, config.regions)


def evaluate(
    inputs: Inputs,
    previous: PreviousState,
    config: AppConfig,
    evaluation_time: dt.datetime,
    *,
    barrier: Barrier = no_barrier,
    compiled: Compiled | None = None,
    progress: Any = None,
) -> Results:
    """Everything a batch run computes at ``T``, as DataFrames (nothing is written).

    Args:
        inputs: the input tables as read.
        previous: the previous completed run and its state.
        config: the configuration.
        evaluation_time: ``T``.
        barrier: where stage results are materialised (see :data:`Barrier`).
        compiled: :func:`compile_run`'s result when the caller compiled already.
        progress: called with a one-line message as each stage starts.
    """
    say = progress or (lambda _message: None)
    compiled = compiled or compile_run(config, inputs, evaluation_time)
    say("resolving identities")
    as_of, resolved = identities(inputs, config, evaluation_time, barrier)
    clusters = resolved.clusters

    say("merging profiles and attributing events")
    events = person_events(as_of, clusters)
    if events is not None:
        events = barrier(events)
    unified = barrier(profiles(as_of, events, clusters, config))

    segment_ids = list(compiled.segments.segment_ids)
    say(f"evaluating {len(segment_ids)} segments in one pass")
    evaluated = barrier(segments(compiled, unified, events))
    new_membership = barrier(membership(evaluated, segment_ids, previous.membership, evaluation_time, config))

    say(f"activating {len(config.destinations)} destinations")
    diff = activation(new_membership, unified, previous, compiled, config, evaluation_time, barrier)
    routed = routing(diff.changes, clusters, as_of.regions, previous.clusters, config, evaluation_time)
    changes = barrier(routed, partition_by=("destination_id", "route"))  # each output reads its own part
    return Results(
        as_of=as_of,
        clusters=clusters,
        profiles=unified,
        events=events,
        evaluated=evaluated,
        membership=new_membership,
        changes=changes,
        state=diff.state,
        exclusions=diff.exclusions,
        quarantine=resolved.quarantine,
        segment_ids=segment_ids,
        classification={
            k: getattr(v.method, "value", str(v.method)) for k, v in compiled.segments.classification.items()
        },
        cc_rounds=resolved.rounds,
        records=resolved.records,
    )
