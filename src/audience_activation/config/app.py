"""The whole configuration: :class:`AppConfig` and :func:`load_config`, which reads a configuration directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from .base import _Model
from .destinations import DESTINATIONS_FILE, REGIONS_FILE, DestinationConfig, RegionsConfig, _load_destinations
from .errors import ConfigError, _read_mapping, _validate
from .job import JOB_FILE, JobConfig
from .namespaces import NAMESPACES_FILE, NamespacesConfig
from .segments import SegmentConfig, _load_segments

# The logger of the whole configuration layer, as before the split into modules.
logger = logging.getLogger(__package__)


class AppConfig(_Model):
    """Everything loaded from one configuration directory (use :func:`load_config`).

    Attributes:
        conf_dir: The configuration directory.
        job: ``job.yaml``.
        namespaces: ``namespaces.yaml`` merged with the defaults.
        regions: ``regions.yaml`` merged with the defaults.
        segments: All segments, ``segments.yaml`` first, then ``segments/`` files by name.
        segment_files: Segment id -> the file that defines it (for error messages).
        destinations: ``destinations.yaml``.
    """

    conf_dir: Path
    job: JobConfig = Field(default_factory=JobConfig)
    namespaces: NamespacesConfig = Field(default_factory=NamespacesConfig)
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    segments: list[SegmentConfig] = Field(default_factory=list)
    segment_files: dict[str, Path] = Field(default_factory=dict)
    destinations: list[DestinationConfig] = Field(default_factory=list)

    @property
    def destinations_file(self) -> Path:
        """The path of ``destinations.yaml`` (for error messages about consent conditions)."""
        return self.conf_dir / DESTINATIONS_FILE

    def segment(self, segment_id: str) -> SegmentConfig:
        """Returns a segment by id, or raises KeyError."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise KeyError(segment_id)

    def destination(self, destination_id: str) -> DestinationConfig:
        """Returns a destination by id, or raises KeyError."""
        for destination in self.destinations:
            if destination.id == destination_id:
                return destination
        raise KeyError(destination_id)


def load_config(conf_dir: str | Path) -> AppConfig:
    """Loads and validates a configuration directory.

    Args:
        conf_dir: The directory holding ``job.yaml``, ``segments.yaml``, ...

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The directory is missing, a file is invalid, or files disagree (a destination maps an
            unknown segment).
    """
    conf_dir = Path(conf_dir)
    if not conf_dir.is_dir():
        raise ConfigError(conf_dir, "configuration directory not found")

    def optional(name: str, model: type[_Model], key: str | None) -> Any:
        path = conf_dir / name
        if not path.is_file():
            logger.info("%s not found: using defaults", path)
            return model()
        return _validate(model, _read_mapping(path, key), path)

    job: JobConfig = optional(JOB_FILE, JobConfig, None)
    namespaces: NamespacesConfig = optional(NAMESPACES_FILE, NamespacesConfig, "namespaces")
    regions: RegionsConfig = optional(REGIONS_FILE, RegionsConfig, "regions")
    segments, segment_files = _load_segments(conf_dir)
    destinations = _load_destinations(conf_dir / DESTINATIONS_FILE, set(segment_files), namespaces)
    return AppConfig(
        conf_dir=conf_dir,
        job=job,
        namespaces=namespaces,
        regions=regions,
        segments=segments,
        segment_files=segment_files,
        destinations=destinations,
    )
