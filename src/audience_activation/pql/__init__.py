"""Adobe Profile Query Language (``pql/text``): parser and typed AST.

``parse(text)`` returns the typed AST of :mod:`audience_activation.pql.ast` (normalised, every node
with its source ``pos``) or raises a :class:`PqlSyntaxError` (a ``ValueError``) carrying ``line``,
``column`` and a caret excerpt; constructs outside the subset raise :class:`PqlUnsupportedError`
naming the construct. ``to_pql(tree)`` prints the canonical text back (``parse(to_pql(t)) == t``).
The grammar is ``grammar.lark`` (LALR(1), no conflicts).

Supported subset
----------------
- Literals: strings in double quotes with escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``
  (others, e.g. ``\\w``, are errors: write ``\\\\w``); integers; doubles ``1000.0``, ``.45``,
  ``2.02E12``, ``2.02E-12``; ``true``/``false``; lists ``[a, b]``; ``date(y, m, d)`` with expression
  arguments.
- References: dotted paths (``_repo.modifyDate``, ``person1``); the profile is implicit, and
  ``profile.``, ``$1.`` and ``(Profile) => Profile.`` are accepted and stripped; ``xEvent``.
- Operators: ``= != < <= > >=`` (spaces optional), ``+ - * / %``, unary ``-``, ``and``, ``or``,
  ``not``/``!``, parentheses. Precedence, tightest first: postfix (``.f``, ``.m()``, ``[c]``),
  unary ``-``, ``* / %``, ``+ -``, comparisons / ``in`` / ``notIn`` / ``like`` / ``matches`` /
  ``occurs`` (not associative), ``not``, ``and``, ``or``.
- A bare reference (or array, or ``select``) in a Boolean position means "defined / non-empty"
  (:class:`~audience_activation.pql.ast.IsDefined`).
- ``in``/``notIn`` with a list literal, ``(["a", "b"])`` or an array field, a literal on the left;
  ``.intersects(arr)``, ``.includes(x)``, ``.distinct()``, ``.count()``.
- Strings: ``equals``, ``notEqualTo``, ``startsWith``, ``doesNotStartWith``, ``endsWith``,
  ``doesNotEndWith``, ``contains``, ``doesNotContain`` with an optional literal ``true``/``false``
  case flag (default case-sensitive); infix ``like``; ``matches`` infix and method.
- ``isNull()``, ``isNotNull()``; maps ``get(k)``, ``keys()``, ``values()``; ``if(t, a, b)``;
  ``inSegment("<id>")``; ``let S = (value) in (body)``.
- Time: ``now``, ``today``, ``yesterday``, ``tomorrow``; ``this|last|next <unit>`` (as an ``occurs``
  time); ``currentYear()``, ``currentMonth()``, ``currentDayOfMonth()``; ``getYear()``,
  ``getMonth()``, ``getDayOfMonth()``; the four ``occurs`` forms
  (``occurs <cmp> N <unit> before|after|from <time>``, ``occurs before|after|from <time>``,
  ``occurs [on] <time>``, ``occurs between <time> and <time>``) where a time may be any timestamp
  expression (``Order1.timestamp``); units ``millisecond(s)`` ... ``decade(s)``, ``century``,
  ``centuries``, ``millennium``, ``millennia`` (and SPEC-old's ``millenium``).
- Events and arrays: ``select V from src [where c], W from V.items [where c2]``; bracket filters
  ``arr[c]``, nested, with ``^`` up-references (``^^.person.gender``; ``^`` counts enclosing
  filters, and as many ``^`` as enclosing filters is the profile); ``.sum(e)``, ``.average(e)``,
  ``.min(e)``, ``.max(e)`` (``e`` relative to the item, or omitted for the items themselves);
  ``(sum|average|min|max e over V from src where c, ...)`` and ``sum V from src where c``;
  ``exists``/``forall V from src where c[, ...]`` and ``... : c``; ``arr.exists(c)``;
  ``chain(xEvent, timestamp, [A: WHAT(c) WHEN(<occurs test>) COUNT(n), B: ...])`` (or ``CHAIN``).

Decisions
---------
- ``select``, ``exists``/``forall``, keyword aggregates and ``let`` extend as far right as
  possible, so they need parentheses as operands (``a and (select ...)``, Adobe's own style); the
  error message says so.
- Keywords are reserved only where the grammar accepts them (contextual lexer): ``x.count``,
  ``x.day`` are plain fields; a profile field named like a keyword that can start an expression
  (``now``, ``select``, ``sum``...) is written ``$1.now``. ``profile`` and the lambda parameter
  always mean the profile, also inside filters; ``null`` is rejected (use ``isNull()``).
- Names resolve lexically: a bound variable, else ``xEvent``, else the profile aliases, else a
  field of the innermost item (inside ``[...]``, ``.exists(c)``, ``.sum(e)``..., chain ``WHAT``/
  ``WHEN``) or of the profile. An unbound name (the doc defect ``WHAT(var1.x = ...)``) is therefore
  a field path, left to schema validation to reject.
- ``occurs ... from <time>`` is kept as ``Direction.FROM`` (Adobe lists it without an example);
  the compiler decides its meaning.
- ``x.includes(v)`` is ``In(v, x)``; ``arr.exists(c)`` is ``IsDefined(Filter(arr, c))``;
  ``exists V from a : c`` is ``exists V from a where c``; ``sum V from a where c`` is
  ``sum V over V from a where c``.
- Upper-case ``AND``/``OR``/``NOT`` (only in Adobe's illustrative validation examples) are rejected
  by name. A chain step's ``WHERE(...)`` (one undocumented example) is rejected by name.
  ``COUNT(0)`` is an error (``COUNT(n)`` means at least n, n >= 1).
- ``if(t, a, b)`` is supported; a missing test takes ``b``.
- ``matches`` accepts any pattern syntactically (``matches "%John"``, a doc error, parses).

Unsupported (rejected by name): ``intersection``, ``subsetOf``, ``supersetOf``, ``groupBy``,
``filter(...)``, ``map(...)``, ``topN``, ``bottomN``, ``head``, ``regexGroup``, ``mapEntry``, object
literals ``{...}``, lambdas other than the leading ``(Profile) =>``.
"""

from __future__ import annotations

from audience_activation.pql import ast

# The compiler (needs pyspark): parsed segments -> Spark Columns over the unified profile and event aggregates.
from audience_activation.pql.compiler import CompiledSegments, compile_segments  # noqa: E402
from audience_activation.pql.errors import PqlError, PqlSyntaxError, PqlUnsupportedError
from audience_activation.pql.parser import parse
from audience_activation.pql.printer import to_pql

__all__ = [
    "CompiledSegments",
    "PqlError",
    "PqlSyntaxError",
    "PqlUnsupportedError",
    "ast",
    "compile_segments",
    "parse",
    "to_pql",
]
