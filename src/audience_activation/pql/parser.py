"""Parse PQL text with the lark grammar and translate lark's errors into located PQL errors."""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from audience_activation.pql import ast as a
from audience_activation.pql.build_base import UPPERCASE_OPERATORS, unsupported_reason
from audience_activation.pql.build_calls import UNSUPPORTED_FUNCTIONS, UNSUPPORTED_METHODS
from audience_activation.pql.builder import Builder
from audience_activation.pql.errors import PqlSyntaxError, PqlUnsupportedError

#: Keywords that start the open forms; where these are not allowed the contextual lexer reads
#: them as plain names, so an error right after one is almost always a missing parenthesis.
_OPEN_FORM_KEYWORDS = frozenset({"select", "exists", "forall", "sum", "average", "min", "max", "let"})

_TYPOGRAPHIC_QUOTES = frozenset("\u201c\u201d\u201e\u201f\u2018\u2019\u00ab\u00bb")

_TERMINAL_DESCRIPTIONS = {
    "NAME": "name",
    "STRING": "string",
    "INT": "integer",
    "DOUBLE": "number",
    "POSITIONAL": "`$1`",
    "UP": "`^`",
    "LAMBDA_HEAD": "`(Profile) =>`",
    "$END": "the end of the expression",
}

#: Show the expected tokens only when there are few enough to be helpful.
_MAX_EXPECTED_SHOWN = 12

# A string literal (skipped, possibly unterminated) or a name directly followed by `(`.
_CALL_RE = re.compile(r'"(?:[^"\\\n\r]|\\.)*"?|([A-Za-z_][A-Za-z0-9_]*)(?=\s*\()')
_LAST_WORD_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files("audience_activation.pql").joinpath("grammar.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse(text: str, *, condition: bool = True) -> a.Node:
    """Parse PQL text into the typed AST.

    Args:
        text: A ``pql/text`` expression (a segment definition).
        condition: Coerce the result to a Boolean condition as Adobe does for a segment: a bare
            reference, array or ``select`` becomes :class:`~audience_activation.pql.ast.IsDefined`.
            Pass ``False`` to get the value of an expression such as ``orders.count()`` as is.

    Returns:
        The root node of the AST.

    Raises:
        PqlUnsupportedError: The text uses a PQL construct outside the supported subset.
        PqlSyntaxError: The text is not valid PQL; ``line``/``column`` locate the problem.
    """
    if not isinstance(text, str):
        raise TypeError(f"PQL text must be a str, not {type(text).__name__}")
    if not text.strip():
        raise PqlSyntaxError("empty PQL expression", text, 1, 1)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as error:
        raise _translate(error, text) from None
    return Builder(text).build_start(tree, condition=condition)


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _translate(error: UnexpectedInput, text: str) -> PqlSyntaxError:
    """Turn a lark error into a :class:`PqlSyntaxError` (or the unsupported construct behind it)."""
    if isinstance(error, UnexpectedToken) and error.token.type == "$END":
        offset = len(text.rstrip())
    else:
        offset = error.pos_in_stream if error.pos_in_stream is not None else len(text)
    # An unsupported construct often breaks the syntax (`.map((K, G) => ...)`, `{...}` objects):
    # name it rather than the token it tripped on.
    unsupported = _unsupported_call_before(text, offset)
    if unsupported is not None:
        return unsupported
    line, column = _line_column(text, offset)

    if isinstance(error, UnexpectedCharacters):
        char = text[offset]
        if char == '"':
            reason = "unterminated string literal"
        elif char in _TYPOGRAPHIC_QUOTES:
            reason = f'typographic quote `{char}`: PQL strings use straight double quotes `"`'
        elif char == "'":
            reason = 'single quotes are not PQL: strings use double quotes `"`'
        elif char == "{":
            return PqlUnsupportedError(
                "object literal", "object literals `{...}` are not supported", text, line, column
            )
        else:
            reason = f"unexpected character `{char}`"
        return PqlSyntaxError(reason, text, line, column)

    assert isinstance(error, UnexpectedToken)
    token = error.token
    if token.type == "$END":
        reason = "unexpected end of the expression"
    else:
        if str(token) in UPPERCASE_OPERATORS:
            return PqlUnsupportedError(
                str(token),
                f"upper-case `{token}` is not PQL (it only appears in Adobe's illustrative "
                f"examples); write `{str(token).lower()}`",
                text,
                line,
                column,
            )
        reason = f"unexpected {_describe_token(token)}"
    reason += _expected(error.expected)
    previous = _LAST_WORD_RE.search(text, 0, offset)
    if previous is not None and previous.group(1) in _OPEN_FORM_KEYWORDS:
        reason += (
            f"; `{previous.group(1)} ...` must be in parentheses here (it extends to the end "
            f"of its enclosing parentheses)"
        )
    return PqlSyntaxError(reason, text, line, column)


def _unsupported_call_before(text: str, offset: int) -> PqlUnsupportedError | None:
    for match in _CALL_RE.finditer(text):
        if match.start() > offset:
            break
        name = match.group(1)
        if name is None:
            continue
        advice = UNSUPPORTED_METHODS.get(name, UNSUPPORTED_FUNCTIONS.get(name))
        if advice is not None:
            line, column = _line_column(text, match.start())
            return PqlUnsupportedError(name, unsupported_reason(name, advice), text, line, column)
    return None


def _describe_token(token: Token) -> str:
    if token.type in ("NAME", "STRING", "INT", "DOUBLE"):
        return f"{_TERMINAL_DESCRIPTIONS[token.type]} `{token}`"
    return f"`{token}`"


def _expected(names: set[str]) -> str:
    if not names or len(names) > _MAX_EXPECTED_SHOWN:
        return ""
    terminals = {terminal.name: terminal for terminal in _lark().terminals}
    shown = []
    for name in names:
        terminal = terminals.get(name)
        if name in _TERMINAL_DESCRIPTIONS:
            shown.append(_TERMINAL_DESCRIPTIONS[name])
        elif terminal is not None and isinstance(terminal.pattern, PatternStr):
            shown.append(f"`{terminal.pattern.value}`")
        else:
            shown.append(name)
    return "; expected " + ", ".join(sorted(shown))
