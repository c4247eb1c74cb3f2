"""Typed AST of PQL (``pql/text``), the input of the segment compiler.

Every node is a frozen dataclass. Nodes compare and hash structurally and **ignore their source
position** (``pos`` is excluded from ``==`` and ``hash``), so the compiler can de-duplicate identical
conditions written in different segments, and tests can compare against hand-built trees.

The tree is normalised by the parser so that one meaning has one shape:

- References are :class:`FieldRef` with an explicit :data:`Root`: the ``profile.`` root, the ``$1.``
  positional form and the ``(Profile) =>`` lambda parameter are stripped to :class:`ProfileRoot`;
  ``xEvent`` is :class:`EventsRoot`; ``select``/``exists``/``let`` variables are :class:`VariableRoot`;
  names inside a bracket filter (or an item-scoped method such as ``.sum(e)`` or a chain ``WHAT``)
  are :class:`ItemRoot` and ``^`` up-references count enclosing item scopes (reaching the profile
  gives :class:`ProfileRoot`).
- ``!x`` and ``not x`` are both :class:`Not`; ``and``/``or`` chains are flattened into n-ary
  :class:`And`/:class:`Or`.
- ``x matches p`` and ``x.matches(p)`` are both :class:`Matches`; ``chain(`` and ``CHAIN(`` are both
  :class:`Chain`; ``arr.includes(x)`` is ``In(x, arr)``; ``notEqualTo``/``doesNot*`` are
  :class:`StringTest` with ``negated=True``.
- Adobe's coercion to Boolean is explicit: a non-Boolean expression in a Boolean position (a bare
  reference, an array, a ``select``) is wrapped in :class:`IsDefined`. ``arr.exists(c)`` is therefore
  ``IsDefined(Filter(arr, c))``, the same tree as ``arr[c]`` in a Boolean position.
- ``sum X from arr where c`` (short keyword form) is ``AggregateOver(SUM, X, [X from arr where c])``;
  ``exists X from arr : c`` is ``Quantifier(EXISTS, [X from arr where c])``.
- A negative numeric literal is a literal (``-5`` is ``IntLit(-5)``, not ``Negate(IntLit(5))``).
- Defaults are explicit: the string case flag is ``case_sensitive=True`` unless ``false`` is written,
  a chain step without ``COUNT`` has ``count=1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The kinds nodes are built from; the compiler and the tests reach them here too (``ast.CompareOp``).
from .kinds import (
    AggregateFunction,
    ArithOp,
    CompareOp,
    DatePart,
    Direction,
    PeriodRelation,
    QuantifierKind,
    StringOp,
    TimeConstKind,
    TimeUnit,
)


@dataclass(frozen=True)
class Position:
    """A 1-based source position (line and column of the first character of a construct)."""

    line: int
    column: int


#: The position of nodes built by hand (tests, rewrites) rather than parsed.
NO_POSITION = Position(0, 0)


@dataclass(frozen=True)
class Node:
    """Base of every AST node.

    Attributes:
        pos: Where the construct starts in the source. Excluded from equality and hashing.
    """

    pos: Position = field(default=NO_POSITION, compare=False, repr=False, kw_only=True)

    def to_pql(self) -> str:
        """Return the canonical PQL text of this node; parsing it gives an equal tree."""
        # Imported here because the printer imports this module.
        from audience_activation.pql.printer import to_pql

        return to_pql(self)


# --- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRoot:
    """The person's unified profile (implicit, ``profile.``, ``$1.`` or the lambda parameter)."""


@dataclass(frozen=True)
class EventsRoot:
    """``xEvent``: the array of the person's ExperienceEvents."""


@dataclass(frozen=True)
class VariableRoot:
    """A variable bound by ``select``, ``exists``/``forall``, a keyword aggregate or ``let``.

    Attributes:
        name: The variable name as written.
    """

    name: str


@dataclass(frozen=True)
class ItemRoot:
    """The current item of an enclosing item scope (bracket filter, ``.sum(e)``, chain ``WHAT``).

    Attributes:
        up: How many item scopes to go out: 0 is the innermost (a bare name inside ``[...]``),
            1 is the next enclosing one (``^.`` inside a nested filter), and so on.
    """

    up: int = 0


#: What a :class:`FieldRef` starts from.
Root = ProfileRoot | EventsRoot | VariableRoot | ItemRoot


@dataclass(frozen=True)
class FieldRef(Node):
    """A dotted path from a root, e.g. ``homeAddress.countryCode`` or ``X.commerce.order``.

    A dot after an array field flattens (``xEvent.device.model`` is the list of all models).

    Attributes:
        root: Where the path starts.
        parts: The field names after the root; empty for a bare variable, ``xEvent`` or ``^``.
    """

    root: Root
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member(Node):
    """Field access on a computed value, e.g. ``m.get("ups").get(id).status``.

    Attributes:
        target: The value whose fields are read (never a :class:`FieldRef` or :class:`Member`).
        parts: The field names.
    """

    target: Node
    parts: tuple[str, ...]


# --- literals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StringLit(Node):
    """A double-quoted string literal, escapes decoded."""

    value: str


@dataclass(frozen=True)
class IntLit(Node):
    """An integer literal (possibly negative: ``-201``)."""

    value: int


@dataclass(frozen=True)
class DoubleLit(Node):
    """A floating-point literal: ``1000.0``, ``.45``, ``2.02E12``, ``2.02E-12``."""

    value: float


@dataclass(frozen=True)
class BoolLit(Node):
    """``true`` or ``false``."""

    value: bool


@dataclass(frozen=True)
class ListLit(Node):
    """A list literal ``[a, b, ...]`` (also ``([a, b])`` after ``in``)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class DateLit(Node):
    """``date(year, month, day)``: midnight UTC of that day; the parts may be expressions."""

    year: Node
    month: Node
    day: Node


# --- time -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeConst(Node):
    """``now``, ``today``, ``yesterday`` or ``tomorrow``."""

    kind: TimeConstKind


@dataclass(frozen=True)
class CalendarPeriod(Node):
    """``this|last|next <unit>``: a whole calendar unit; only valid as an ``occurs`` time."""

    relation: PeriodRelation
    unit: TimeUnit


@dataclass(frozen=True)
class CurrentDatePart(Node):
    """``currentYear()``, ``currentMonth()``, ``currentDayOfMonth()`` of T (UTC)."""

    part: DatePart


@dataclass(frozen=True)
class GetDatePart(Node):
    """``ts.getYear()``, ``ts.getMonth()``, ``ts.getDayOfMonth()`` (UTC)."""

    operand: Node
    part: DatePart


@dataclass(frozen=True)
class OccursWithin(Node):
    """``occurs <op> <amount> <unit> <direction> <anchor>``, e.g. ``< 8 days before now``.

    Attributes:
        op: The comparator of the distance between the timestamp and the anchor.
        amount: A non-negative integer.
        unit: The unit of ``amount``.
        direction: Whether the timestamp lies before or after the anchor.
        anchor: A time (:class:`TimeConst`, :class:`CalendarPeriod`, :class:`DateLit`) or any
            timestamp expression such as ``Order1.timestamp``.
    """

    op: CompareOp
    amount: int
    unit: TimeUnit
    direction: Direction
    anchor: Node


@dataclass(frozen=True)
class OccursRelative(Node):
    """``occurs before|after|from <anchor>``."""

    direction: Direction
    anchor: Node


@dataclass(frozen=True)
class OccursOn(Node):
    """``occurs [on] <anchor>``: within the anchor's day / calendar period."""

    anchor: Node


@dataclass(frozen=True)
class OccursBetween(Node):
    """``occurs between <start> and <end>``, inclusive at both ends."""

    start: Node
    end: Node


#: The right-hand side of ``occurs`` (and the content of a chain step's ``WHEN(...)``).
OccursTest = OccursWithin | OccursRelative | OccursOn | OccursBetween


@dataclass(frozen=True)
class Occurs(Node):
    """``<subject> occurs <test>``."""

    subject: Node
    test: OccursTest


# --- operators --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare(Node):
    """``left <op> right``; ``=``/``!=`` are false when either side is missing."""

    op: CompareOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Arith(Node):
    """``left <op> right``; missing if either side is missing or on division by zero."""

    op: ArithOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Negate(Node):
    """Unary minus of a non-literal expression."""

    operand: Node


@dataclass(frozen=True)
class And(Node):
    """Conjunction of two or more conditions (never directly nested)."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or(Node):
    """Disjunction of two or more conditions (never directly nested)."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    """``not x`` or ``!x``."""

    operand: Node


@dataclass(frozen=True)
class IsDefined(Node):
    """Adobe's coercion to Boolean of a non-Boolean value.

    True when the operand is defined (not missing) and, for an array or a ``select`` result,
    non-empty. Inserted by the parser around bare references and other non-Boolean expressions
    in Boolean positions (``homeAddress``, ``select X from xEvent``, ``xEvent[...]``).
    """

    operand: Node


@dataclass(frozen=True)
class NullCheck(Node):
    """``x.isNull()`` (``negated=False``) or ``x.isNotNull()`` (``negated=True``)."""

    operand: Node
    negated: bool = False


@dataclass(frozen=True)
class In(Node):
    """``value in collection`` / ``value notIn collection`` (also ``collection.includes(value)``).

    Both forms are false when either side is missing, so ``notIn`` is not ``not in``.
    """

    value: Node
    collection: Node
    negated: bool = False


@dataclass(frozen=True)
class Intersects(Node):
    """``left.intersects(right)``: the two arrays share at least one member."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Distinct(Node):
    """``arr.distinct()``."""

    operand: Node


@dataclass(frozen=True)
class StringTest(Node):
    """``s.startsWith(x[, caseSensitive])`` and its siblings.

    Attributes:
        op: The positive test.
        negated: ``notEqualTo``/``doesNotStartWith``/...: still false when an operand is missing.
        subject: The string tested.
        argument: The string searched for.
        case_sensitive: ``False`` only when ``false`` was written as the second argument.
    """

    op: StringOp
    negated: bool
    subject: Node
    argument: Node
    case_sensitive: bool = True


@dataclass(frozen=True)
class Like(Node):
    """``subject like pattern``: SQL ``%``/``_`` whole-string match, case-sensitive."""

    subject: Node
    pattern: Node


@dataclass(frozen=True)
class Matches(Node):
    """``subject matches pattern`` or ``subject.matches(pattern)``: Java regex, find semantics."""

    subject: Node
    pattern: Node


# --- arrays, events and sequences -------------------------------------------------------------


@dataclass(frozen=True)
class Binding(Node):
    """``<variable> from <source> [where <condition>]`` in ``select``, quantifiers and aggregates.

    The source and condition may use this variable (condition only) and those bound to its left.
    """

    variable: str
    source: Node
    condition: Node | None = None


@dataclass(frozen=True)
class Select(Node):
    """``select V1 from a where c1, V2 from b where c2, ...``: the set of matching tuples."""

    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class Quantifier(Node):
    """``exists|forall V from a where c[, ...]`` (the ``:`` form is the same tree)."""

    kind: QuantifierKind
    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class Filter(Node):
    """``source[condition]``; the condition is in a new item scope."""

    source: Node
    condition: Node


@dataclass(frozen=True)
class Aggregate(Node):
    """Method-form aggregate ``source.count()`` / ``source.sum(value)`` / ...

    Attributes:
        function: The aggregate.
        source: The array (or ``select`` result) aggregated.
        value: The per-item expression in a new item scope; ``None`` for ``count()`` and for
            ``sum()``/``average()``/``min()``/``max()`` of the items themselves.
    """

    function: AggregateFunction
    source: Node
    value: Node | None = None


@dataclass(frozen=True)
class AggregateOver(Node):
    """Keyword aggregate ``sum|average|min|max <value> over V from a where c[, ...]``."""

    function: AggregateFunction
    value: Node
    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class ChainStep(Node):
    """One labelled step ``L: WHAT(cond) [WHEN(<occurs test>)] [COUNT(n)]`` of a chain.

    Attributes:
        label: The step label (``A``, ``C0``...).
        what: Condition on the step's event (in a new item scope).
        when: Test of the step's event's ordering timestamp relative to T, or ``None``.
        count: Minimum number of matching events after the previous step (1 without ``COUNT``).
    """

    label: str
    what: Node
    when: OccursTest | None = None
    count: int = 1


@dataclass(frozen=True)
class Chain(Node):
    """``chain(source, orderField, [steps])``: the steps happen in strictly increasing order."""

    source: Node
    order_by: tuple[str, ...]
    steps: tuple[ChainStep, ...]


# --- segments, maps, let, if ------------------------------------------------------------------


@dataclass(frozen=True)
class InSegment(Node):
    """``inSegment("<id>")``: membership in another segment of the same run."""

    segment_id: str


@dataclass(frozen=True)
class MapGet(Node):
    """``map.get(key)``."""

    map: Node
    key: Node


@dataclass(frozen=True)
class MapKeys(Node):
    """``map.keys()``."""

    map: Node


@dataclass(frozen=True)
class MapValues(Node):
    """``map.values()``."""

    map: Node


@dataclass(frozen=True)
class Let(Node):
    """``let name = (value) in (body)``; ``body`` sees ``name`` as a :class:`VariableRoot`."""

    name: str
    value: Node
    body: Node


@dataclass(frozen=True)
class If(Node):
    """``if(test, then, otherwise)``; a missing test takes ``otherwise``."""

    test: Node
    then: Node
    otherwise: Node


#: Node types whose value is always a Boolean.
BOOLEAN_NODES: tuple[type[Node], ...] = (
    BoolLit,
    Compare,
    And,
    Or,
    Not,
    IsDefined,
    NullCheck,
    In,
    Intersects,
    StringTest,
    Like,
    Matches,
    Occurs,
    Quantifier,
    Chain,
    InSegment,
)


def as_condition(node: Node) -> Node:
    """Coerce an expression to a Boolean condition, as Adobe does in a Boolean position.

    Boolean nodes are returned unchanged; ``let`` and ``if`` pass the coercion to their results;
    anything else is wrapped in :class:`IsDefined`.

    Args:
        node: The expression.

    Returns:
        A node whose value is a Boolean.
    """
    if isinstance(node, BOOLEAN_NODES):
        return node
    if isinstance(node, Let):
        return Let(node.name, node.value, as_condition(node.body), pos=node.pos)
    if isinstance(node, If):
        return If(node.test, as_condition(node.then), as_condition(node.otherwise), pos=node.pos)
    return IsDefined(node, pos=node.pos)
