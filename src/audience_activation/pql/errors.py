"""Errors raised for PQL text, each pointing at a line and column with a caret excerpt."""

from __future__ import annotations


def caret_excerpt(text: str, line: int, column: int) -> str:
    """Return the source line at ``line`` with a ``^`` under ``column``.

    Args:
        text: The whole PQL source.
        line: 1-based line number.
        column: 1-based column number; one past the end of the line points after its last character.

    Returns:
        Two lines: the source line and the caret line. Tabs before the column are kept in the
        caret line so that the caret stays aligned however the tabs are rendered.
    """
    # Split on "\n" only, as the lexer counts lines (splitlines() also splits on \f, \x85...).
    lines = text.split("\n")
    source_line = lines[min(max(line, 1), len(lines)) - 1].rstrip("\r")
    prefix = "".join("\t" if char == "\t" else " " for char in source_line[: max(column - 1, 0)])
    return f"{source_line}\n{prefix}^"


class PqlError(ValueError):
    """An error located in PQL text; the base of every PQL error.

    The segment compiler can subclass it for semantic errors (unknown field, type mismatch) and
    build it from a node's ``pos``.

    Attributes:
        reason: The message without the location and excerpt.
        text: The whole PQL source.
        line: 1-based line of the error.
        column: 1-based column of the error.
    """

    def __init__(self, reason: str, text: str, line: int, column: int) -> None:
        """Build the error.

        Args:
            reason: What is wrong, without the location.
            text: The whole PQL source.
            line: 1-based line of the error.
            column: 1-based column of the error.
        """
        self.reason = reason
        self.text = text
        self.line = line
        self.column = column
        super().__init__(f"{reason} (line {line}, column {column})\n{caret_excerpt(text, line, column)}")

    def __reduce__(self) -> tuple[type[PqlError], tuple[object, ...]]:
        # Keeps the error picklable (Spark ships exceptions between processes) despite the
        # four-argument constructor.
        return (type(self), (self.reason, self.text, self.line, self.column))


class PqlSyntaxError(PqlError):
    """The text is not valid PQL (or uses a construct wrongly, e.g. a bad argument count)."""


class PqlUnsupportedError(PqlSyntaxError):
    """The text uses a PQL construct outside the supported subset.

    Attributes:
        construct: The name of the rejected construct, e.g. ``"groupBy"``.
    """

    def __init__(self, construct: str, reason: str, text: str, line: int, column: int) -> None:
        """Build the error.

        Args:
            construct: The name of the rejected construct.
            reason: What is wrong, without the location; should name the construct.
            text: The whole PQL source.
            line: 1-based line of the error.
            column: 1-based column of the error.
        """
        self.construct = construct
        super().__init__(reason, text, line, column)

    def __reduce__(self) -> tuple[type[PqlError], tuple[object, ...]]:
        return (type(self), (self.construct, self.reason, self.text, self.line, self.column))
