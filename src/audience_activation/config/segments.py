"""``segments.yaml`` and ``segments/*.yaml``: segment (audience) definitions in Adobe's export shape.

``docs/configuration.md`` ("segments.yaml and segments/") describes every field.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import NonEmptyStr, _Model
from .errors import ConfigError, _read_mapping, _validate

SEGMENTS_FILE = "segments.yaml"
SEGMENTS_DIR = "segments"


class SegmentEvaluation(str, Enum):
    """Forced evaluation method of a segment."""

    batch = "batch"


class SegmentExpression(_Model):
    """The segment definition in Adobe's export shape: ``{type: PQL, format: pql/text, value: ...}``."""

    type: Literal["PQL"]
    format: Literal["pql/text"]
    value: NonEmptyStr


class SegmentConfig(_Model):
    """One segment (audience) definition.

    Attributes:
        id: Unique segment id (used by ``inSegment`` and destination mappings).
        name: Display name.
        description: Free text.
        expression: The PQL definition.
        evaluation: ``batch`` forces batch evaluation; None lets the classifier decide.
    """

    id: NonEmptyStr
    name: NonEmptyStr
    description: str | None = None
    expression: SegmentExpression
    evaluation: SegmentEvaluation | None = None


class _SegmentsFile(_Model):
    segments: list[SegmentConfig] = Field(default_factory=list)


def _load_segments(conf_dir: Path) -> tuple[list[SegmentConfig], dict[str, Path]]:
    """Reads ``segments.yaml``, then the ``segments/`` files by name; returns the segments and id -> file."""
    files: list[Path] = []
    if (conf_dir / SEGMENTS_FILE).is_file():
        files.append(conf_dir / SEGMENTS_FILE)
    folder = conf_dir / SEGMENTS_DIR
    if folder.is_dir():
        files.extend(sorted((p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")), key=lambda p: p.name))
    elif not files:
        raise ConfigError(conf_dir, f"no segment definitions: add {SEGMENTS_FILE} or a {SEGMENTS_DIR}/ folder")
    segments: list[SegmentConfig] = []
    sources: dict[str, Path] = {}
    for path in files:
        parsed: _SegmentsFile = _validate(_SegmentsFile, _read_mapping(path, "segments"), path)
        for segment in parsed.segments:
            if segment.id in sources:
                raise ConfigError(
                    path,
                    f"segment '{segment.id}': duplicate segment id, already defined in {sources[segment.id]}",
                    item=segment.id,
                )
            sources[segment.id] = path
            segments.append(segment)
    return segments, sources
