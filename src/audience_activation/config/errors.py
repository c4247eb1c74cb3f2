""":class:`ConfigError` and the YAML reading that points every error at its file and item.

Files are parsed with a strict loader (duplicate keys are errors); pydantic validation errors become one
:class:`ConfigError` whose lines name the item (a segment or destination id, or a dotted key such as
``storage.engine``) and what is wrong. ``docs/configuration.md`` ("Errors") shows the messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the environment
from pydantic import ValidationError

from .base import _Model


class ConfigError(ValueError):
    """An invalid configuration file.

    ``str(err)`` reads ``<file>: <message>``, e.g.
    ``conf/destinations.yaml: destination 'aam': segments: unknown segment id 'seg-x'``; several problems in
    one file give one such line each.

    Attributes:
        file: The offending file or directory, or None when not tied to a file.
        item: The item at fault: a segment or destination id, or a dotted key like ``storage.engine``
            (None for whole-file problems). With several problems, the first one's item.
        message: The description without the file name (one line per problem).
    """

    def __init__(self, file: str | Path | None, message: str, item: str | None = None) -> None:
        """Builds the error.

        Args:
            file: The offending file or directory.
            message: What is wrong, already prefixed with the item's label where useful.
            item: The segment/destination id or dotted key at fault.
        """
        self.file = Path(file) if file is not None else None
        self.item = item
        self.message = message
        prefix = f"{self.file}: " if self.file is not None else ""
        super().__init__("\n".join(prefix + line for line in message.splitlines()))


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(path, f"invalid YAML: {where}{exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"invalid YAML: {exc}") from exc


def _read_mapping(path: Path, key: str | None) -> dict[str, Any]:
    """Reads a YAML file whose top level must be a mapping (holding ``key`` when given)."""
    data = _read_yaml(path)
    if data is None:
        data = {}
    expected = f"a mapping with the key '{key}:'" if key else "a mapping"
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be {expected}, not a {type(data).__name__}")
    if key is not None and key not in data:
        raise ConfigError(path, f"missing the top-level key '{key}:'")
    return data


# List keys whose items carry an ``id``: errors name the item by id instead of by index.
_ITEM_KINDS = {"segments": "segment", "destinations": "destination"}


def _describe(loc: tuple[int | str, ...], data: Any) -> tuple[str | None, str | None, str | None]:
    """Maps a pydantic error location onto (item, item label, dotted key path), following the raw data."""
    item: str | None = None
    label: str | None = None
    parts: list[str] = []
    node: Any = data
    parent: Any = None
    for key in loc:
        if key == "[key]":
            continue
        if isinstance(key, int) and isinstance(node, list):
            element = node[key] if key < len(node) else None
            element_id = element.get("id") if isinstance(element, dict) else None
            if parent in _ITEM_KINDS and isinstance(element_id, str):
                item, label, parts = element_id, f"{_ITEM_KINDS[parent]} '{element_id}'", []
            elif parts:
                parts[-1] += f"[{key}]"
            else:
                parts.append(f"[{key}]")
            node = element
        elif isinstance(node, dict) and key in node:
            parts.append(str(key))
            node, parent = node[key], key
        elif isinstance(node, dict) and node.get("type") == key:
            continue  # the tag pydantic adds inside a discriminated union
        else:
            parts.append(str(key))
            node = None
    return item, label, ".".join(parts) or None


def _error_message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and kind != "value_error":
        message += f" (got {value!r})"
    return message


def _validate(model: type[_Model], data: dict[str, Any], path: Path) -> Any:
    """Validates raw YAML data, turning a pydantic ValidationError into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines: list[str] = []
        first_item: str | None = None
        for error in exc.errors():
            item, label, key_path = _describe(tuple(error["loc"]), data)
            if first_item is None:
                first_item = item or key_path
            lines.append(": ".join(p for p in (label, key_path, _error_message(error)) if p))
        raise ConfigError(path, "\n".join(lines), item=first_item) from exc
