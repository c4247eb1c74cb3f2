"""Segment-level checks that need no input schema: parsing, ``inSegment`` ids and cycles, order.

The schema checks (unknown attribute paths, type mismatches) happen while compiling
(:func:`audience_activation.pql.compiler.compile_segments`), which builds but never runs Spark
expressions; both report :class:`PqlValidationError` located at the offending construct.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from audience_activation.pql import ast as a
from audience_activation.pql.analysis import segment_references
from audience_activation.pql.errors import PqlError
from audience_activation.pql.parser import parse


class PqlValidationError(PqlError):
    """A well-formed expression that does not fit the schemas or the other segments.

    Unknown attribute paths, type mismatches (a string compared with a number, arithmetic on
    strings, ``occurs`` on a non-time value), aggregates over non-numeric values, ``xEvent``
    without an events table.
    """


class PqlReferenceError(PqlValidationError):
    """``inSegment`` of an unknown segment id, or a cycle of ``inSegment`` references."""


@dataclass(frozen=True)
class SegmentSource:
    """One segment definition as written.

    Attributes:
        id: The segment id (what ``inSegment`` refers to).
        text: The ``pql/text`` expression.
        force_batch: ``evaluation: batch`` in the configuration.
    """

    id: str
    text: str
    force_batch: bool = False


@dataclass(frozen=True)
class ParsedSegment:
    """A parsed segment definition.

    Attributes:
        id: The segment id.
        text: The PQL source (for error excerpts).
        tree: The parsed condition.
        force_batch: ``evaluation: batch`` in the configuration.
        references: The ids of the segments it reads with ``inSegment``, without repeats.
    """

    id: str
    text: str
    tree: a.Node
    force_batch: bool = False
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegmentProblem:
    """One error in one segment definition.

    Attributes:
        segment_id: The segment at fault.
        error: The located error (line, column and a caret excerpt).
    """

    segment_id: str
    error: PqlError

    def __str__(self) -> str:
        return f"segment '{self.segment_id}': {self.error}"


class SegmentDefinitionError(ValueError):
    """One or more segment definitions are invalid.

    Attributes:
        problems: Every problem found, in segment order.
    """

    def __init__(self, problems: Sequence[SegmentProblem]) -> None:
        """Build the error.

        Args:
            problems: The problems (at least one).
        """
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


#: What the segment functions accept: sources, ``(id, pql_text)`` pairs or ``(id, parsed_tree)`` pairs.
SegmentInput = SegmentSource | tuple[str, str] | tuple[str, a.Node]


def as_sources(segments: Iterable[SegmentInput]) -> list[SegmentSource]:
    """Accept ``SegmentSource`` objects, ``(id, pql_text)`` or ``(id, tree)`` pairs.

    A tree is printed as canonical PQL (which parses back to an equal tree), so error positions
    refer to that text.
    """
    sources = []
    for item in segments:
        if isinstance(item, SegmentSource):
            sources.append(item)
        else:
            segment_id, definition = item
            text = definition.to_pql() if isinstance(definition, a.Node) else definition
            sources.append(SegmentSource(segment_id, text))
    return sources


def parse_segments(sources: Sequence[SegmentSource]) -> tuple[list[ParsedSegment], list[SegmentProblem]]:
    """Parse every definition, collecting syntax errors instead of stopping at the first.

    Args:
        sources: The definitions.

    Returns:
        The parsed segments (those that parse) and the problems of the others.
    """
    parsed: list[ParsedSegment] = []
    problems: list[SegmentProblem] = []
    seen: set[str] = set()
    for source in sources:
        if source.id in seen:
            problems.append(SegmentProblem(source.id, PqlValidationError("duplicate segment id", source.text, 1, 1)))
            continue
        seen.add(source.id)
        try:
            tree = parse(source.text)
        except PqlError as error:
            problems.append(SegmentProblem(source.id, error))
            continue
        references = tuple(dict.fromkeys(ref.segment_id for ref in segment_references(tree)))
        parsed.append(ParsedSegment(source.id, source.text, tree, source.force_batch, references))
    return parsed, problems


def reference_problems(segments: Sequence[ParsedSegment], known_ids: Iterable[str]) -> list[SegmentProblem]:
    """Find ``inSegment`` references to unknown segments and ``inSegment`` cycles.

    Args:
        segments: The parsed segments.
        known_ids: Every configured segment id (including those that failed to parse, so that a
            syntax error is not reported a second time as an unknown reference).

    Returns:
        One problem per unknown reference and one per cycle (at the reference that closes it).
    """
    known = set(known_ids)
    by_id = {segment.id: segment for segment in segments}
    problems: list[SegmentProblem] = []
    for segment in segments:
        for ref in segment_references(segment.tree):
            if ref.segment_id not in known:
                problems.append(
                    SegmentProblem(
                        segment.id,
                        PqlReferenceError(
                            f"inSegment: unknown segment id '{ref.segment_id}'",
                            segment.text,
                            ref.pos.line,
                            ref.pos.column,
                        ),
                    )
                )
    # Depth-first search; a reference to a segment still on the stack closes a cycle.
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(segment_id: str) -> None:
        state[segment_id] = 1
        stack.append(segment_id)
        segment = by_id[segment_id]
        for ref in segment_references(segment.tree):
            target = ref.segment_id
            if target not in by_id:
                continue
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                problems.append(
                    SegmentProblem(
                        segment_id,
                        PqlReferenceError(
                            "inSegment cycle: " + " -> ".join(f"'{item}'" for item in cycle),
                            segment.text,
                            ref.pos.line,
                            ref.pos.column,
                        ),
                    )
                )
            elif target not in state:
                visit(target)
        stack.pop()
        state[segment_id] = 2

    for segment in segments:
        if segment.id not in state:
            visit(segment.id)
    return problems


def dependency_order(segments: Sequence[ParsedSegment]) -> list[ParsedSegment]:
    """Order segments so that every segment comes after those it references (input order otherwise).

    Args:
        segments: Parsed segments free of reference cycles.

    Returns:
        The same segments, referenced ones first.
    """
    by_id = {segment.id: segment for segment in segments}
    done: set[str] = set()
    ordered: list[ParsedSegment] = []

    def visit(segment: ParsedSegment) -> None:
        done.add(segment.id)
        for target in segment.references:
            if target in by_id and target not in done:
                visit(by_id[target])
        ordered.append(segment)

    for segment in segments:
        if segment.id not in done:
            visit(segment)
    return ordered


def prepare_segments(segments: Iterable[SegmentInput]) -> list[ParsedSegment]:
    """Parse the definitions and check their ``inSegment`` references (no schema needed).

    Args:
        segments: ``SegmentSource`` objects, ``(id, pql_text)`` or ``(id, tree)`` pairs.

    Returns:
        The parsed segments in dependency order (referenced segments first).

    Raises:
        SegmentDefinitionError: Listing every syntax error, unknown ``inSegment`` id and cycle.
    """
    sources = as_sources(segments)
    parsed, problems = parse_segments(sources)
    problems += reference_problems(parsed, (source.id for source in sources))
    if problems:
        order = {source.id: index for index, source in enumerate(sources)}
        problems.sort(key=lambda problem: order.get(problem.segment_id, len(order)))
        raise SegmentDefinitionError(problems)
    return dependency_order(parsed)
