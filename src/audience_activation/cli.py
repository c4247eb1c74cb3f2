"""The ``audience-activation`` console command.

Subcommands parse their options, load the configuration (failing before any Spark work on a bad one),
build the session and call one function of :mod:`audience_activation.app`.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .config import AppConfig, ConfigError, load_config
from .schemas import InputSchemaError
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
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]


def parse_utc_time(text: str) -> dt.datetime:
    """Parse an ISO-8601 time (``2026-11-29T00:00:00Z``); naive times are UTC. Truncated to the second."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).replace(microsecond=0)


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
    _setup_logging(verbose)
    config = _load(conf, lake_root)
    console.print(
        f"Configuration OK: {len(config.segments)} segments, {len(config.destinations)} destinations ({conf})"
    )
    spark = app.session_for(config)
    try:
        report = app.validate_inputs(spark, config)
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
    console.print("[green]valid[/]: configuration and input schemas match the contract")


def main() -> None:
    """Console entry point (``audience-activation``)."""
    cli()


if __name__ == "__main__":
    main()
