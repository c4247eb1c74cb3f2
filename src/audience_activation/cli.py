"""The ``audience-activation`` console command.

Subcommands parse their options, load the configuration (failing before any Spark work on a bad one),
build the session and call one function of :mod:`audience_activation.app`.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pyspark.sql import SparkSession
from rich.console import Console
from rich.table import Table

from . import app, runlog
from .config import AppConfig, ConfigError, load_config
from .lease import LeaseHeldError, LeaseLostError
from .runlog import parse_utc_time
from .schemas import InputSchemaError
from .session import quiet_task_errors
from .storage import StorageError

cli = typer.Typer(
    name="audience-activation",
    help="Identity resolution, PQL audiences and edge/hub activation outputs on Spark + Delta Lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # never break paths and messages across lines

ConfOption = Annotated[Path, typer.Option("--conf", help="Configuration folder.", show_default=True)]
LakeRootOption = Annotated[
    str | None, typer.Option("--lake-root", help="Overrides lake.root of job.yaml (a folder or URI).")
]
#: Exit code of a run refused because another run holds the lake's lease (or took it over): retry later.
LAKE_IN_USE = 3

VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]


def _time_option(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_utc_time(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 time such as 2026-11-29T00:00:00Z") from exc


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # py4j logs every gateway call at INFO/DEBUG.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _load(conf: Path, lake_root: str | None) -> AppConfig:
    try:
        config = load_config(conf)
    except ConfigError as exc:
        console.print(f"[bold red]configuration error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    if lake_root:
        config = config.model_copy(update={"job": config.job.with_lake_root(lake_root)})
    return config


def _progress(message: str) -> None:
    console.print(f"[dim]…[/] {message}", highlight=False)


@cli.command("demo-data")
def demo_data_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    persons: Annotated[int, typer.Option("--persons", min=1, help="Number of persons to generate.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed and size give the same data.")] = 42,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Anchor time of the generated timestamps (default: today 00:00 UTC)."),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Generate the demo input tables (profile_fragments, experience_events, identity_graph, region_information)."""
    _setup_logging(verbose)
    config = _load(conf, lake_root)
    anchor = _time_option(as_of) or dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    console.print(f"Generating demo data: {persons:,} persons, seed {seed}, as of {anchor.isoformat()}")
    spark = app.session_for(config)
    if not verbose:
        quiet_task_errors(spark)
    try:
        written = app.write_demo_data(spark, config, persons=persons, seed=seed, as_of=anchor, progress=_progress)
    except StorageError as exc:
        console.print(f"[bold red]storage error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=1) from exc
    table = Table(title="Demo input tables")
    for column in ("table", "rows", "version", "location"):
        table.add_column(column, justify="right" if column in ("rows", "version") else "left")
    for item in written:
        table.add_row(item.name, f"{item.rows:,}", str(item.version), item.location)
    Console().print(table)


@cli.command("validate")
def validate_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Validate the configuration and check the input tables' schemas; writes nothing."""
    config, spark = _start(conf, lake_root, verbose)
    try:
        report = app.validate_inputs(spark, config)
    except ConfigError as exc:
        console.print(f"[bold red]configuration error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    except (InputSchemaError, StorageError) as exc:
        console.print(f"[bold red]input error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=1) from exc
    table = Table(title=f"Input tables (storage engine {report.engine})")
    table.add_column("table")
    table.add_column("version", justify="right")
    table.add_column("location")
    for name, version in report.versions.items():
        table.add_row(name, "absent" if version is None else str(version), config.job.table_location(name))
    Console().print(table)
    methods = Table(title="Segments (evaluation method)")
    methods.add_column("segment")
    methods.add_column("method")
    for segment_id, method in report.classification.items():
        methods.add_row(segment_id, method)
    Console().print(methods)
    console.print(
        f"[green]valid[/]: configuration ({conf}: {len(config.segments)} segments, {len(config.destinations)} "
        f"destinations), segment definitions and input schemas"
    )


EvaluationTimeOption = Annotated[
    str | None,
    typer.Option("--evaluation-time", help="Evaluation time T (UTC, ISO-8601); default: now, to the second."),
]


@cli.command("identities")
def identities_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    evaluation_time: EvaluationTimeOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Resolve identities as of T: write identity_clusters and the identity quarantine rows."""
    config, spark = _start(conf, lake_root, verbose)
    t = _time_option(evaluation_time) or runlog.default_evaluation_time()
    try:
        summary = app.run_identity_resolution(spark, config, evaluation_time=t, progress=_progress)
    except (LeaseHeldError, LeaseLostError) as exc:
        _run_errors(exc)
        raise typer.Exit(code=LAKE_IN_USE) from exc
    except (InputSchemaError, StorageError) as exc:
        console.print(f"[bold red]error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=1) from exc
    out = Console()
    table = Table(title=f"Identity resolution {summary.run_id} (storage engine {summary.engine})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("evaluation time", summary.evaluation_time.isoformat())
    for name, version in summary.input_versions.items():
        table.add_row(f"input {name} version", "absent" if version is None else str(version))
    table.add_row("identities", f"{summary.identities:,}")
    table.add_row("persons", f"{summary.persons:,}")
    table.add_row("largest graph", str(summary.largest_graph))
    table.add_row("connected-components rounds", str(summary.rounds))
    for reason, count in summary.quarantine.items():
        table.add_row(f"quarantined: {reason}", f"{count:,}")
    out.print(table)


ForceOption = Annotated[bool, typer.Option("--force", help="Run a T older than the newest completed run.")]


def _print_summary(summary: runlog.RunSummary, title: str) -> None:
    out = Console()
    head = Table(title=title, show_header=False)
    head.add_column("what")
    head.add_column("value")
    head.add_row("run id", summary.run_id)
    head.add_row("evaluation time", summary.evaluation_time.isoformat())
    head.add_row("storage engine", summary.engine)
    head.add_row("previous run", summary.previous_run or "none")
    head.add_row(
        "input versions", ", ".join(f"{k}={'absent' if v is None else v}" for k, v in summary.input_versions.items())
    )
    head.add_row("connected-components rounds", str(summary.cc_rounds))
    if summary.started_at and summary.ended_at:
        head.add_row("duration", f"{(summary.ended_at - summary.started_at).total_seconds():.1f} s")
    out.print(head)
    counts = summary.counts
    segments = Table(title="Segments")
    for column in ("segment", "method", "members"):
        segments.add_column(column, justify="right" if column == "members" else "left")
    for segment_id, method in summary.classification.items():
        segments.add_row(segment_id, method, f"{counts.members.get(segment_id, 0):,}")
    out.print(segments)
    changes = Table(title="Changes per destination (route, reason)")
    for column in ("destination", "route", "reason", "rows"):
        changes.add_column(column, justify="right" if column == "rows" else "left")
    for key, rows in counts.changes.items():
        changes.add_row(key.destination_id, key.route, key.reason, f"{rows:,}")
    out.print(changes)
    other = Table(title="Inputs, quarantine and exclusions")
    other.add_column("count")
    other.add_column("value", justify="right")
    for table, categories in counts.rows.items():
        for category, rows in categories.items():
            other.add_row(f"rows of {table}: {category}", f"{rows:,}")
    for reason, identities in counts.quarantine.items():
        other.add_row(f"quarantined identities: {reason}", f"{identities:,}")
    for (destination, reason), persons in counts.exclusions.items():
        other.add_row(f"not activated on {destination}: {reason}", f"{persons:,}")
    other.add_row("persons", f"{counts.persons:,}")
    out.print(other)


def _start(conf: Path, lake_root: str | None, verbose: bool) -> tuple[AppConfig, SparkSession]:
    """Logging, the configuration (exit 2 when bad) and the session of a job."""
    _setup_logging(verbose)
    config = _load(conf, lake_root)
    spark = app.session_for(config)
    if not verbose:
        quiet_task_errors(spark)
    return config, spark


def _run_errors(exc: Exception) -> None:
    console.print(f"[bold red]{type(exc).__name__}[/]\n{exc}", highlight=False)


def _batch(
    job: Callable[..., runlog.RunSummary],
    conf: Path,
    lake_root: str | None,
    evaluation_time: str | None,
    force: bool,
    verbose: bool,
) -> runlog.RunSummary:
    """Shared by ``run`` and ``preview``: load, build the session, call ``job``, map errors to exit codes."""
    config, spark = _start(conf, lake_root, verbose)
    t = _time_option(evaluation_time) or runlog.default_evaluation_time()
    try:
        return job(spark, config, evaluation_time=t, force=force, progress=_progress)
    except ConfigError as exc:
        console.print(f"[bold red]configuration error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    except (LeaseHeldError, LeaseLostError) as exc:
        _run_errors(exc)
        raise typer.Exit(code=LAKE_IN_USE) from exc
    except (InputSchemaError, StorageError, app.RunOrderError) as exc:
        _run_errors(exc)
        raise typer.Exit(code=1) from exc


@cli.command("run")
def run_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    evaluation_time: EvaluationTimeOption = None,
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run the batch job at T: identities, profiles, segments, membership and every destination's outputs."""
    summary = _batch(app.run_batch, conf, lake_root, evaluation_time, force, verbose)
    _print_summary(summary, f"Run {summary.run_id}: {summary.status}")


@cli.command("preview")
def preview_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    evaluation_time: EvaluationTimeOption = None,
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Per-segment member counts and per-destination change counts at T; writes nothing."""
    summary = _batch(app.preview_batch, conf, lake_root, evaluation_time, force, verbose)
    _print_summary(summary, f"Preview of {summary.run_id} (nothing written)")


TriggerOption = Annotated[
    str,
    typer.Option(
        "--trigger",
        help='"available-now" (process what is there, then stop) or an interval such as "30 seconds" (run until '
        "stopped; Ctrl-C stops after the current micro-batch).",
        show_default=True,
    ),
]
CheckpointOption = Annotated[
    str | None, typer.Option("--checkpoint", help="The stream's checkpoint (default <lake>/_checkpoints/stream).")
]
MaxVersionsOption = Annotated[
    int | None,
    typer.Option("--max-versions-per-trigger", min=1, help="At most this many input commits per micro-batch."),
]


@cli.command("stream")
def stream_command(
    conf: ConfOption = Path("conf"),
    lake_root: LakeRootOption = None,
    evaluation_time: EvaluationTimeOption = None,
    trigger: TriggerOption = app.AVAILABLE_NOW,
    checkpoint: CheckpointOption = None,
    max_versions_per_trigger: MaxVersionsOption = None,
    verbose: VerboseOption = False,
) -> None:
    """The streaming job: each micro-batch evaluates the streamed segments for the persons new input rows affect.

    --evaluation-time pins every micro-batch's T (tests, backfills); by default each micro-batch's T is its
    planning time."""
    config, spark = _start(conf, lake_root, verbose)
    try:
        summary = app.run_stream(
            spark,
            config,
            trigger=trigger,
            evaluation_time=_time_option(evaluation_time),
            checkpoint=checkpoint,
            max_versions_per_trigger=max_versions_per_trigger,
            progress=_progress,
        )
    except ConfigError as exc:
        console.print(f"[bold red]configuration error[/]\n{exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    except LeaseLostError as exc:
        _run_errors(exc)
        raise typer.Exit(code=LAKE_IN_USE) from exc
    except (app.StreamStartError, InputSchemaError, StorageError, app.RunOrderError) as exc:
        _run_errors(exc)
        raise typer.Exit(code=1) from exc
    for micro in summary.micro_batches:
        _print_summary(micro, f"Micro-batch {micro.run_id}: {micro.status}")
    skipped = f", {len(summary.skipped)} replayed and skipped" if summary.skipped else ""
    console.print(f"stream stopped: {len(summary.micro_batches)} micro-batch(es){skipped}", highlight=False)


def main() -> None:
    """Console entry point (``audience-activation``)."""
    cli()


if __name__ == "__main__":
    main()
