"""Tests of the PQL (pql/text) parser: exact ASTs, precedence, error positions, round trips.

Expected trees are written with the small constructors below; node equality ignores source
positions, which have their own tests.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from importlib import resources

import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_activation.pql import PqlSyntaxError, PqlUnsupportedError, parse, to_pql
from audience_activation.pql.ast import (
    Aggregate,
    AggregateFunction,
    AggregateOver,
    And,
    Arith,
    ArithOp,
    Binding,
    BoolLit,
    CalendarPeriod,
    Chain,
    ChainStep,
    Compare,
    CompareOp,
    CurrentDatePart,
    DateLit,
    DatePart,
    Direction,
    Distinct,
    DoubleLit,
    EventsRoot,
    FieldRef,
    Filter,
    GetDatePart,
    If,
    In,
    InSegment,
    Intersects,
    IntLit,
    IsDefined,
    ItemRoot,
    Let,
    Like,
    ListLit,
    MapGet,
    MapKeys,
    MapValues,
    Matches,
    Member,
    Negate,
    Node,
    Not,
    NullCheck,
    Occurs,
    OccursBetween,
    OccursOn,
    OccursRelative,
    OccursTest,
    OccursWithin,
    Or,
    PeriodRelation,
    Position,
    ProfileRoot,
    Quantifier,
    QuantifierKind,
    Select,
    StringLit,
    StringOp,
    StringTest,
    TimeConst,
    TimeConstKind,
    TimeUnit,
    VariableRoot,
    as_condition,
)
from audience_activation.pql.errors import PqlError

# --- compact constructors for expected trees --------------------------------------------------


def P(*parts: str) -> FieldRef:
    """A profile path."""
    return FieldRef(ProfileRoot(), parts)


def I(*parts: str, up: int = 0) -> FieldRef:  # noqa: E743 - reads as "item"
    """A path from the current item (``up`` enclosing item scopes out)."""
    return FieldRef(ItemRoot(up), parts)


def V(name: str, *parts: str) -> FieldRef:
    """A path from a variable."""
    return FieldRef(VariableRoot(name), parts)


def E(*parts: str) -> FieldRef:
    """``xEvent`` (with an optional flattened path)."""
    return FieldRef(EventsRoot(), parts)


S, N, D, B = StringLit, IntLit, DoubleLit, BoolLit


def _compare(op: str) -> Callable[[Node, Node], Compare]:
    return lambda left, right: Compare(CompareOp(op), left, right)


eq, ne, lt, le, gt, ge = (_compare(op) for op in ("=", "!=", "<", "<=", ">", ">="))


def and_(*operands: Node) -> And:
    return And(operands)


def or_(*operands: Node) -> Or:
    return Or(operands)


def arith(op: str, left: Node, right: Node) -> Arith:
    return Arith(ArithOp(op), left, right)


def date(year: int, month: int, day: int) -> DateLit:
    return DateLit(N(year), N(month), N(day))


NOW, TODAY = TimeConst(TimeConstKind.NOW), TimeConst(TimeConstKind.TODAY)
YESTERDAY, TOMORROW = TimeConst(TimeConstKind.YESTERDAY), TimeConst(TimeConstKind.TOMORROW)


def period(relation: str, unit: str) -> CalendarPeriod:
    return CalendarPeriod(PeriodRelation(relation), TimeUnit(unit))


def within(op: str, amount: int, unit: str, direction: str, anchor: Node) -> OccursWithin:
    return OccursWithin(CompareOp(op), amount, TimeUnit(unit), Direction(direction), anchor)


def relative(direction: str, anchor: Node) -> OccursRelative:
    return OccursRelative(Direction(direction), anchor)


def stest(
    op: StringOp, subject: Node, argument: Node, *, negated: bool = False, case_sensitive: bool = True
) -> StringTest:
    return StringTest(op, negated, subject, argument, case_sensitive)


def bind(variable: str, source: Node, condition: Node | None = None) -> Binding:
    return Binding(variable, source, condition)


def count(source: Node) -> Aggregate:
    return Aggregate(AggregateFunction.COUNT, source)


def exists_in(source: Node, condition: Node) -> IsDefined:
    """``source.exists(condition)``, the same tree as ``source[condition]`` in a condition."""
    return IsDefined(Filter(source, condition))


def step(label: str, what: Node, when: OccursTest | None = None, count: int = 1) -> ChainStep:
    return ChainStep(label, what, when, count)


def chain(*steps: ChainStep) -> Chain:
    return Chain(E(), ("timestamp",), steps)


# --- valid expressions with their exact trees --------------------------------------------------

VALID: list[tuple[str, Node]] = [
    # Literals, paths and comparisons (PQLDOC overview, comparison-functions; QUERIES Q1-Q4).
    ('homeAddress.stateProvinceISO="CA"', eq(P("homeAddress", "stateProvinceISO"), S("CA"))),
    ('homeAddress.countryISO = "US"', eq(P("homeAddress", "countryISO"), S("US"))),
    ("homeAddress", IsDefined(P("homeAddress"))),
    ("homeAddress.countryISO", IsDefined(P("homeAddress", "countryISO"))),
    (
        "homeAddress.countryISO = workAddress.countryISO",
        eq(P("homeAddress", "countryISO"), P("workAddress", "countryISO")),
    ),
    (
        "homeAddress.stateProvinceISO != workAddress.stateProvinceISO",
        ne(P("homeAddress", "stateProvinceISO"), P("workAddress", "stateProvinceISO")),
    ),
    ('X.commerce.order.purchaseId != ""', ne(P("X", "commerce", "order", "purchaseId"), S(""))),
    ("person.birthYear = -201", eq(P("person", "birthYear"), N(-201))),
    ("person.age>=21", ge(P("person", "age"), N(21))),
    ("person.age<=65", le(P("person", "age"), N(65))),
    ("person.age<0", lt(P("person", "age"), N(0))),
    ("person.age >412", gt(P("person", "age"), N(412))),
    ("a.b = 3.14", eq(P("a", "b"), D(3.14))),
    ("a.b = .45", eq(P("a", "b"), D(0.45))),
    ("a.b = 2.02E12", eq(P("a", "b"), D(2.02e12))),
    ("a.b = 2.02E-12", eq(P("a", "b"), D(2.02e-12))),
    ("a.b = 1000.0", eq(P("a", "b"), D(1000.0))),
    ("a.b = 1e3", eq(P("a", "b"), D(1000.0))),
    ("a.flag = true", eq(P("a", "flag"), B(True))),
    ("a.flag != false", ne(P("a", "flag"), B(False))),
    (r'a.s = "say \"hi\" \\ \/ \t\n \u00e9"', eq(P("a", "s"), S('say "hi" \\ / \t\n é'))),
    ("person1.x = 1", eq(P("person1", "x"), N(1))),
    (
        '_experience.analytics.customDimensions.eVars.eVar1 = "a"',
        eq(P("_experience", "analytics", "customDimensions", "eVars", "eVar1"), S("a")),
    ),
    # Optional profile roots (PQLDOC overview; AJO decision rules).
    ('$1.homeAddress.stateProvince = "CA"', eq(P("homeAddress", "stateProvince"), S("CA"))),
    (
        '(Profile) => Profile.homeAddress.stateProvince = "CA"',
        eq(P("homeAddress", "stateProvince"), S("CA")),
    ),
    (
        'profile.person.name.firstName.equals("Joe", false)',
        stest(StringOp.EQUALS, P("person", "name", "firstName"), S("Joe"), case_sensitive=False),
    ),
    # Keywords are reserved only where the grammar accepts them.
    ("x.count > 1", gt(P("x", "count"), N(1))),
    ("a.day = b.sum", eq(P("a", "day"), P("b", "sum"))),
    ("a.b > min", gt(P("a", "b"), P("min"))),
    # Arithmetic and precedence.
    (
        "person.birthYear + 18 <= currentYear()",
        le(arith("+", P("person", "birthYear"), N(18)), CurrentDatePart(DatePart.YEAR)),
    ),
    (
        "currentYear() - person.birthYear >= 21",
        ge(arith("-", CurrentDatePart(DatePart.YEAR), P("person", "birthYear")), N(21)),
    ),
    (
        "a * b - c / d % e > 0",
        gt(
            arith("-", arith("*", P("a"), P("b")), arith("%", arith("/", P("c"), P("d")), P("e"))),
            N(0),
        ),
    ),
    ("1 - 2 - 3 = x", eq(arith("-", arith("-", N(1), N(2)), N(3)), P("x"))),
    ("-a.b < -0.5", lt(Negate(P("a", "b")), D(-0.5))),
    # Boolean logic (PQLDOC boolean-functions; SPEC).
    (
        "person.birthYear = 1980 and (homeAddress.countryCode != workAddress.countryCode or "
        'homeAddress.countryCode = "US")',
        and_(
            eq(P("person", "birthYear"), N(1980)),
            or_(
                ne(P("homeAddress", "countryCode"), P("workAddress", "countryCode")),
                eq(P("homeAddress", "countryCode"), S("US")),
            ),
        ),
    ),
    (
        'homeAddress.countryISO = "CA" and person.birthYear = 1985',
        and_(eq(P("homeAddress", "countryISO"), S("CA")), eq(P("person", "birthYear"), N(1985))),
    ),
    (
        'homeAddress.countryISO = "CA" or person.birthYear = 1985',
        or_(eq(P("homeAddress", "countryISO"), S("CA")), eq(P("person", "birthYear"), N(1985))),
    ),
    ('not (homeAddress.countryISO = "CA")', Not(eq(P("homeAddress", "countryISO"), S("CA")))),
    ('not(homeAddress.countryISO = "CA")', Not(eq(P("homeAddress", "countryISO"), S("CA")))),
    ('!(  homeAddress.countryISO = "CA" )', Not(eq(P("homeAddress", "countryISO"), S("CA")))),
    ("not homeAddress", Not(IsDefined(P("homeAddress")))),
    (
        'countryISO = "US" and\nstateProvinceISO = "CA" and\nageBetween25And35 = "Y"',
        and_(
            eq(P("countryISO"), S("US")),
            eq(P("stateProvinceISO"), S("CA")),
            eq(P("ageBetween25And35"), S("Y")),
        ),
    ),
    # Lists and sets (PQLDOC array-functions; AJO).
    ("person.birthMonth in [3, 6, 9]", In(P("person", "birthMonth"), ListLit((N(3), N(6), N(9))))),
    (
        "person.birthMonth notIn [3, 6, 9]",
        In(P("person", "birthMonth"), ListLit((N(3), N(6), N(9))), negated=True),
    ),
    (
        'homeAddress.countryISO = "US" and homeAddress.stateProvinceISO in ["CA", "OR"]',
        and_(
            eq(P("homeAddress", "countryISO"), S("US")),
            In(P("homeAddress", "stateProvinceISO"), ListLit((S("CA"), S("OR")))),
        ),
    ),
    ('x in ["SJC","DAL"]', In(P("x"), ListLit((S("SJC"), S("DAL"))))),
    ('"London" in citiesVisited', In(S("London"), P("citiesVisited"))),
    (
        'segmentMembership.get("ups").get("5c4d-e6").status in (["realized","existing"])',
        In(
            Member(MapGet(MapGet(P("segmentMembership"), S("ups")), S("5c4d-e6")), ("status",)),
            ListLit((S("realized"), S("existing"))),
        ),
    ),
    (
        'person.favoriteColors.intersects(["red", "blue", "green"])',
        Intersects(P("person", "favoriteColors"), ListLit((S("red"), S("blue"), S("green")))),
    ),
    ('person.favoriteColors.includes("red")', In(S("red"), P("person", "favoriteColors"))),
    (
        "person.orders.storeId.distinct().count() > 1",
        gt(count(Distinct(P("person", "orders", "storeId"))), N(1)),
    ),
    # Strings (PQLDOC string-functions; SPEC 3.3.4).
    (
        'workEmail.address.startsWith("joe")',
        stest(StringOp.STARTS_WITH, P("workEmail", "address"), S("joe")),
    ),
    (
        'workEmail.address.startsWith("joe", false)',
        stest(StringOp.STARTS_WITH, P("workEmail", "address"), S("joe"), case_sensitive=False),
    ),
    (
        'workEmail.address.startsWith("joe", true)',
        stest(StringOp.STARTS_WITH, P("workEmail", "address"), S("joe")),
    ),
    (
        'person.name.doesNotStartWith("Joe")',
        stest(StringOp.STARTS_WITH, P("person", "name"), S("Joe"), negated=True),
    ),
    (
        'person.emailAddress.endsWith(".com")',
        stest(StringOp.ENDS_WITH, P("person", "emailAddress"), S(".com")),
    ),
    (
        'person.emailAddress.doesNotEndWith(".com")',
        stest(StringOp.ENDS_WITH, P("person", "emailAddress"), S(".com"), negated=True),
    ),
    (
        'person.emailAddress.contains("2010@gm")',
        stest(StringOp.CONTAINS, P("person", "emailAddress"), S("2010@gm")),
    ),
    (
        'person.emailAddress.doesNotContain("2010@gm", false)',
        stest(
            StringOp.CONTAINS,
            P("person", "emailAddress"),
            S("2010@gm"),
            negated=True,
            case_sensitive=False,
        ),
    ),
    ('person.name.equals("John")', stest(StringOp.EQUALS, P("person", "name"), S("John"))),
    (
        'person.name.notEqualTo("John")',
        stest(StringOp.EQUALS, P("person", "name"), S("John"), negated=True),
    ),
    (
        "workAddress.country.equals(homeAddress.country)",
        stest(StringOp.EQUALS, P("workAddress", "country"), P("homeAddress", "country")),
    ),
    ('city like "%es%"', Like(P("city"), S("%es%"))),
    ('workEmail.address like "%.edu"', Like(P("workEmail", "address"), S("%.edu"))),
    ('person.name.matches("(?i)^John")', Matches(P("person", "name"), S("(?i)^John"))),
    ('firstName matches "John"', Matches(P("firstName"), S("John"))),
    ('person.firstName matches "%John"', Matches(P("person", "firstName"), S("%John"))),
    (r'emailAddress.matches("@(\\w+)")', Matches(P("emailAddress"), S(r"@(\w+)"))),
    # Nulls (PQLDOC object-functions).
    ("person.homeAddress.isNull()", NullCheck(P("person", "homeAddress"))),
    ("person.homeAddress.isNotNull()", NullCheck(P("person", "homeAddress"), negated=True)),
    # Date and time (PQLDOC datetime-functions; QUERIES).
    ("person.birthMonth = currentMonth()", eq(P("person", "birthMonth"), CurrentDatePart(DatePart.MONTH))),
    ("person.birthdate.getMonth() = 6", eq(GetDatePart(P("person", "birthdate"), DatePart.MONTH), N(6))),
    ("product.saleYear = currentYear()", eq(P("product", "saleYear"), CurrentDatePart(DatePart.YEAR))),
    (
        "person.birthday.getYear() in [1991, 1992, 1993, 1994, 1995]",
        In(
            GetDatePart(P("person", "birthday"), DatePart.YEAR),
            ListLit(tuple(N(year) for year in range(1991, 1996))),
        ),
    ),
    (
        "person.birthDay = currentDayOfMonth()",
        eq(P("person", "birthDay"), CurrentDatePart(DatePart.DAY_OF_MONTH)),
    ),
    (
        "product.sale.getDayOfMonth() <= 15",
        le(GetDatePart(P("product", "sale"), DatePart.DAY_OF_MONTH), N(15)),
    ),
    ("product.saleDate occurs last week", Occurs(P("product", "saleDate"), OccursOn(period("last", "week")))),
    (
        "product.saleDate occurs between date(2015, 1, 8) and date(2017, 7, 1)",
        Occurs(P("product", "saleDate"), OccursBetween(date(2015, 1, 8), date(2017, 7, 1))),
    ),
    (
        "product.saleDate occurs between last month and last week",
        Occurs(P("product", "saleDate"), OccursBetween(period("last", "month"), period("last", "week"))),
    ),
    (
        "product.saleDate occurs = 3 hours before now",
        Occurs(P("product", "saleDate"), within("=", 3, "hour", "before", NOW)),
    ),
    (
        "person.birthday occurs = 3 days before today",
        Occurs(P("person", "birthday"), within("=", 3, "day", "before", TODAY)),
    ),
    (
        "_repo.lastModifiedDate occurs <= 30 minutes before now",
        Occurs(P("_repo", "lastModifiedDate"), within("<=", 30, "minute", "before", NOW)),
    ),
    (
        "_repo.modifyDate occurs after date(2019, 4, 1)",
        Occurs(P("_repo", "modifyDate"), relative("after", date(2019, 4, 1))),
    ),
    ("timestamp occurs on date(2019,12,31)", Occurs(P("timestamp"), OccursOn(date(2019, 12, 31)))),
    ("timestamp occurs date(2017,10,1)", Occurs(P("timestamp"), OccursOn(date(2017, 10, 1)))),
    ("person.birthday occurs this month", Occurs(P("person", "birthday"), OccursOn(period("this", "month")))),
    ("x.ts occurs next year", Occurs(P("x", "ts"), OccursOn(period("next", "year")))),
    ("x.ts occurs yesterday", Occurs(P("x", "ts"), OccursOn(YESTERDAY))),
    ("x.ts occurs before tomorrow", Occurs(P("x", "ts"), relative("before", TOMORROW))),
    ("x.ts occurs from now", Occurs(P("x", "ts"), relative("from", NOW))),
    ("x.ts occurs > 10 seconds before now", Occurs(P("x", "ts"), within(">", 10, "second", "before", NOW))),
    ("x.ts occurs >= 1 millisecond after now", Occurs(P("x", "ts"), within(">=", 1, "millisecond", "after", NOW))),
    ("x.ts occurs != 2 decades from today", Occurs(P("x", "ts"), within("!=", 2, "decade", "from", TODAY))),
    ("x.ts occurs < 1 century before now", Occurs(P("x", "ts"), within("<", 1, "century", "before", NOW))),
    ("x.ts occurs < 3 centuries before now", Occurs(P("x", "ts"), within("<", 3, "century", "before", NOW))),
    ("x.ts occurs < 2 millennia before now", Occurs(P("x", "ts"), within("<", 2, "millennium", "before", NOW))),
    ("x.ts occurs < 1 millenium before now", Occurs(P("x", "ts"), within("<", 1, "millennium", "before", NOW))),
    (
        "person.birthDate occurs after date(currentYear() - 1, 10, 1)",
        Occurs(
            P("person", "birthDate"),
            relative(
                "after",
                DateLit(arith("-", CurrentDatePart(DatePart.YEAR), N(1)), N(10), N(1)),
            ),
        ),
    ),
    (
        "Order2.timestamp occurs < 2 weeks after Order1.timestamp",
        Occurs(P("Order2", "timestamp"), within("<", 2, "week", "after", P("Order1", "timestamp"))),
    ),
    # Events: select (SPEC 3.2; QUERIES Q5-Q11).
    (
        "select Order1 from xEvent where Order1.commerce.order, Order2 from xEvent where "
        "Order2.commerce.order and Order2.timestamp occurs < 2 weeks after Order1.timestamp",
        IsDefined(
            Select(
                (
                    bind("Order1", E(), IsDefined(V("Order1", "commerce", "order"))),
                    bind(
                        "Order2",
                        E(),
                        and_(
                            IsDefined(V("Order2", "commerce", "order")),
                            Occurs(
                                V("Order2", "timestamp"),
                                within("<", 2, "week", "after", V("Order1", "timestamp")),
                            ),
                        ),
                    ),
                )
            )
        ),
    ),
    (
        "select PV from xEvent where PV.metrics.commerce.productListViews.value > 0, "
        'Item from PV.productListItems where Item.SKU = "PS"',
        IsDefined(
            Select(
                (
                    bind("PV", E(), gt(V("PV", "metrics", "commerce", "productListViews", "value"), N(0))),
                    bind("Item", V("PV", "productListItems"), eq(V("Item", "SKU"), S("PS"))),
                )
            )
        ),
    ),
    (
        "select X from xEvent where X.commerce.order",
        IsDefined(Select((bind("X", E(), IsDefined(V("X", "commerce", "order"))),))),
    ),
    (
        "select\n    X from xEvent where X.timestamp occurs before today,\n"
        '    I from X.productListItems where I.SKU = "PS"',
        IsDefined(
            Select(
                (
                    bind("X", E(), Occurs(V("X", "timestamp"), relative("before", TODAY))),
                    bind("I", V("X", "productListItems"), eq(V("I", "SKU"), S("PS"))),
                )
            )
        ),
    ),
    (
        "(select X from xEvent where X.productListItems.count() > 2).count() > 5",
        gt(count(Select((bind("X", E(), gt(count(V("X", "productListItems")), N(2))),))), N(5)),
    ),
    (
        'countryISO = "US" \nand\nstateProvinceISO = "CA" \nand (\n  select\n'
        '    F1 from xEvent where F1.type = "FLIGHT",\n'
        '    F2 from xEvent where F2.type = "FLIGHT" and F1 != F2 and F2.ts_flight occurs <= 30 '
        "days after F1.ts_flight\n)",
        and_(
            eq(P("countryISO"), S("US")),
            eq(P("stateProvinceISO"), S("CA")),
            IsDefined(
                Select(
                    (
                        bind("F1", E(), eq(V("F1", "type"), S("FLIGHT"))),
                        bind(
                            "F2",
                            E(),
                            and_(
                                eq(V("F2", "type"), S("FLIGHT")),
                                ne(V("F1"), V("F2")),
                                Occurs(
                                    V("F2", "ts_flight"),
                                    within("<=", 30, "day", "after", V("F1", "ts_flight")),
                                ),
                            ),
                        ),
                    )
                )
            ),
        ),
    ),
    (
        'stateProvinceISO="MO" and (select X from xEvent where X.timestamp occurs <= 1 month before today)',
        and_(
            eq(P("stateProvinceISO"), S("MO")),
            IsDefined(
                Select((bind("X", E(), Occurs(V("X", "timestamp"), within("<=", 1, "month", "before", TODAY))),))
            ),
        ),
    ),
    (
        "select _Any1 from xEvent, _Any1__Product_list_items1 from _Any1.productListItems "
        'where _Any1__Product_list_items1.SKU = "PS"',
        IsDefined(
            Select(
                (
                    bind("_Any1", E()),
                    bind(
                        "_Any1__Product_list_items1",
                        V("_Any1", "productListItems"),
                        eq(V("_Any1__Product_list_items1", "SKU"), S("PS")),
                    ),
                )
            )
        ),
    ),
    (
        'select X from xEvent where (select I from X.productListItems where I.SKU = "PS")',
        IsDefined(
            Select(
                (
                    bind(
                        "X",
                        E(),
                        IsDefined(Select((bind("I", V("X", "productListItems"), eq(V("I", "SKU"), S("PS"))),))),
                    ),
                )
            )
        ),
    ),
    ("xEvent.metrics.commerce.abandons.value > 0", gt(E("metrics", "commerce", "abandons", "value"), N(0))),
    # Bracket filters and the up operator (PQLDOC filter-functions; CA).
    (
        'xEvent[(timestamp occurs < 7 days before now) and eventType="download"].count() > 2',
        gt(
            count(
                Filter(
                    E(),
                    and_(
                        Occurs(I("timestamp"), within("<", 7, "day", "before", NOW)),
                        eq(I("eventType"), S("download")),
                    ),
                )
            ),
            N(2),
        ),
    ),
    (
        'xEvent[productListItems[SKU="PS"]]',
        IsDefined(Filter(E(), IsDefined(Filter(I("productListItems"), eq(I("SKU"), S("PS")))))),
    ),
    (
        'xEvent[productListItems[SKU="PS" or ^^.person.gender="female"]]',
        IsDefined(
            Filter(
                E(),
                IsDefined(
                    Filter(
                        I("productListItems"),
                        or_(eq(I("SKU"), S("PS")), eq(P("person", "gender"), S("female"))),
                    )
                ),
            )
        ),
    ),
    (
        'xEvent[productListItems[SKU="PS" and ^.eventType="purchase"]]',
        IsDefined(
            Filter(
                E(),
                IsDefined(
                    Filter(
                        I("productListItems"),
                        and_(eq(I("SKU"), S("PS")), eq(I("eventType", up=1), S("purchase"))),
                    )
                ),
            )
        ),
    ),
    ('xEvent[^person.gender = "f"]', IsDefined(Filter(E(), eq(P("person", "gender"), S("f"))))),
    # Aggregates (SPEC keyword forms; PQLDOC aggregation-functions).
    (
        '(sum X.commerce.order.priceTotal over X from xEvent where X.commerce.order.currencyCode = "USD") > 1000',
        gt(
            AggregateOver(
                AggregateFunction.SUM,
                V("X", "commerce", "order", "priceTotal"),
                (bind("X", E(), eq(V("X", "commerce", "order", "currencyCode"), S("USD"))),),
            ),
            N(1000),
        ),
    ),
    (
        "(sum X from integerArray where X > 0) > 10",
        gt(
            AggregateOver(AggregateFunction.SUM, V("X"), (bind("X", P("integerArray"), gt(V("X"), N(0))),)),
            N(10),
        ),
    ),
    (
        '(average X.price * X.quantity over X from xEvent where X.eventType = "buy") >= 50.0',
        ge(
            AggregateOver(
                AggregateFunction.AVERAGE,
                arith("*", V("X", "price"), V("X", "quantity")),
                (bind("X", E(), eq(V("X", "eventType"), S("buy"))),),
            ),
            D(50.0),
        ),
    ),
    (
        "(min X.p over X from xEvent) < (max Y.p over Y from xEvent)",
        lt(
            AggregateOver(AggregateFunction.MIN, V("X", "p"), (bind("X", E()),)),
            AggregateOver(AggregateFunction.MAX, V("Y", "p"), (bind("Y", E()),)),
        ),
    ),
    (
        "orders.sum(order.price) > orders.average(order.price) + orders.min() - orders.max(price)",
        gt(
            Aggregate(AggregateFunction.SUM, P("orders"), I("order", "price")),
            arith(
                "-",
                arith(
                    "+",
                    Aggregate(AggregateFunction.AVERAGE, P("orders"), I("order", "price")),
                    Aggregate(AggregateFunction.MIN, P("orders")),
                ),
                Aggregate(AggregateFunction.MAX, P("orders"), I("price")),
            ),
        ),
    ),
    # Quantifiers (PQLDOC logical-quantifiers).
    (
        'exists E from xEvent where (E.commerce.item.price > 50), I from E.productListItems where I.SKU = "PS"',
        Quantifier(
            QuantifierKind.EXISTS,
            (
                bind("E", E(), gt(V("E", "commerce", "item", "price"), N(50))),
                bind("I", V("E", "productListItems"), eq(V("I", "SKU"), S("PS"))),
            ),
        ),
    ),
    (
        'forall E from xEvent where (E.commerce.item.price > 50), I from E.productListItems where I.SKU = "PS"',
        Quantifier(
            QuantifierKind.FORALL,
            (
                bind("E", E(), gt(V("E", "commerce", "item", "price"), N(50))),
                bind("I", V("E", "productListItems"), eq(V("I", "SKU"), S("PS"))),
            ),
        ),
    ),
    (
        'exists X from xEvent : X.eventType = "purchase"',
        Quantifier(QuantifierKind.EXISTS, (bind("X", E(), eq(V("X", "eventType"), S("purchase"))),)),
    ),
    (
        "forall X from person.orders : X.total > 0",
        Quantifier(QuantifierKind.FORALL, (bind("X", P("person", "orders"), gt(V("X", "total"), N(0))),)),
    ),
    (
        'productListItems.exists(name.equals("iPhone 15 Pro", false))',
        exists_in(P("productListItems"), stest(StringOp.EQUALS, I("name"), S("iPhone 15 Pro"), case_sensitive=False)),
    ),
    (
        'externalSegmentMapProperty.values().exists(stringProperty="active")',
        exists_in(MapValues(P("externalSegmentMapProperty")), eq(I("stringProperty"), S("active"))),
    ),
    # Sequences (EDGE-UI, STREAM, platform-learn tutorials).
    (
        'chain(xEvent, timestamp, [A: WHAT(eventType = "addToCart")])',
        chain(step("A", eq(I("eventType"), S("addToCart")))),
    ),
    (
        'homeAddress.countryCode = "US" and chain(xEvent, timestamp, [A: WHAT(eventType = "homePageView")])',
        and_(eq(P("homeAddress", "countryCode"), S("US")), chain(step("A", eq(I("eventType"), S("homePageView"))))),
    ),
    (
        'not(chain(xEvent, timestamp, [A: WHAT(eventType = "homePageView")]))',
        Not(chain(step("A", eq(I("eventType"), S("homePageView"))))),
    ),
    (
        'chain(xEvent, timestamp, [X: WHAT(eventType = "homePageView") WHEN(< 24 hours before now)])',
        chain(step("X", eq(I("eventType"), S("homePageView")), within("<", 24, "hour", "before", NOW))),
    ),
    (
        'chain(xEvent, timestamp, [A: WHAT(eventType = "homePageView") WHEN(< 24 hours before now) COUNT(5) ] )',
        chain(step("A", eq(I("eventType"), S("homePageView")), within("<", 24, "hour", "before", NOW), 5)),
    ),
    (
        'inSegment("e3be6d7f-1727-401f-a41e-c296b45f607a") and \n'
        'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.checkouts", false)) \n'
        "WHEN(<= 24 hours before now)])",
        and_(
            InSegment("e3be6d7f-1727-401f-a41e-c296b45f607a"),
            chain(
                step(
                    "C0",
                    stest(StringOp.EQUALS, I("eventType"), S("commerce.checkouts"), case_sensitive=False),
                    within("<=", 24, "hour", "before", NOW),
                )
            ),
        ),
    ),
    (
        'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])',
        chain(
            step(
                "C0",
                stest(StringOp.EQUALS, I("eventType"), S("commerce.checkouts"), case_sensitive=False),
                OccursOn(TODAY),
            )
        ),
    ),
    (
        'person.gender in ["male"] and CHAIN(xEvent, timestamp, [C0: WHAT(productListItems.exists('
        'name.equals("MONTANA WIND JACKET", false)))])',
        and_(
            In(P("person", "gender"), ListLit((S("male"),))),
            chain(
                step(
                    "C0",
                    exists_in(
                        I("productListItems"),
                        stest(StringOp.EQUALS, I("name"), S("MONTANA WIND JACKET"), case_sensitive=False),
                    ),
                )
            ),
        ),
    ),
    (
        'CHAIN(xEvent, timestamp, [C0: WHAT(web.webPageDetails.name.equals("equipment", false) and '
        '_experienceplatform.demoEnvironment.brandName.contains("luma", false))])',
        chain(
            step(
                "C0",
                and_(
                    stest(StringOp.EQUALS, I("web", "webPageDetails", "name"), S("equipment"), case_sensitive=False),
                    stest(
                        StringOp.CONTAINS,
                        I("_experienceplatform", "demoEnvironment", "brandName"),
                        S("luma"),
                        case_sensitive=False,
                    ),
                ),
            )
        ),
    ),
    (
        'chain(xEvent, timestamp, [\n  A: WHAT(eventType = "addToCart") WHEN(< 8 days before now),\n'
        '  B: WHAT(eventType = "checkout" and ^.person.vip = true) COUNT(2)\n])',
        chain(
            step("A", eq(I("eventType"), S("addToCart")), within("<", 8, "day", "before", NOW)),
            step("B", and_(eq(I("eventType"), S("checkout")), eq(P("person", "vip"), B(True))), count=2),
        ),
    ),
    # Segments, maps, let, if.
    ('inSegment("existing segment")', InSegment("existing segment")),
    (
        'homeAddress.countryCode = "US" and inSegment("existing segment")',
        and_(eq(P("homeAddress", "countryCode"), S("US")), InSegment("existing segment")),
    ),
    (
        'let S = (sum X.commerce.order.priceTotal over X from xEvent where X.commerce.order.currencyCode = "USD") '
        "in (S > 100 and S < 1000)",
        Let(
            "S",
            AggregateOver(
                AggregateFunction.SUM,
                V("X", "commerce", "order", "priceTotal"),
                (bind("X", E(), eq(V("X", "commerce", "order", "currencyCode"), S("USD"))),),
            ),
            and_(gt(V("S"), N(100)), lt(V("S"), N(1000))),
        ),
    ),
    ('identityMap.get("example@example.com")', IsDefined(MapGet(P("identityMap"), S("example@example.com")))),
    ('identityMap.keys().includes("Email")', In(S("Email"), MapKeys(P("identityMap")))),
    (
        'if (homeAddress.countryISO = "CA", 1, 2) = 1',
        eq(If(eq(P("homeAddress", "countryISO"), S("CA")), N(1), N(2)), N(1)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[text[:60] for text, _ in VALID])
def test_valid_expression_gives_exact_tree(text: str, expected: Node) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[text[:60] for text, _ in VALID])
def test_canonical_text_round_trips(text: str, expected: Node) -> None:
    canonical = to_pql(parse(text))
    assert parse(canonical) == expected
    # The canonical form is a fixed point.
    assert to_pql(parse(canonical)) == canonical


def test_at_least_eighty_valid_expressions() -> None:
    assert len(VALID) >= 80


VALUES: list[tuple[str, Node]] = [
    # Computed-attribute expressions (CA) are values, not conditions.
    (
        'xEvent[(timestamp occurs < 7 days before now) and eventType="download"].count()',
        count(
            Filter(
                E(),
                and_(
                    Occurs(I("timestamp"), within("<", 7, "day", "before", NOW)),
                    eq(I("eventType"), S("download")),
                ),
            )
        ),
    ),
    (
        'xEvent[eventType="transaction"].sum(commerce.order.priceTotal)',
        Aggregate(
            AggregateFunction.SUM,
            Filter(E(), eq(I("eventType"), S("transaction"))),
            I("commerce", "order", "priceTotal"),
        ),
    ),
    ("orders.count()", count(P("orders"))),
    ("homeAddress", P("homeAddress")),
    (
        "sum X from integerArray where X > 0",
        AggregateOver(AggregateFunction.SUM, V("X"), (bind("X", P("integerArray"), gt(V("X"), N(0))),)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALUES, ids=[text[:60] for text, _ in VALUES])
def test_value_expression_is_not_coerced(text: str, expected: Node) -> None:
    assert parse(text, condition=False) == expected
    assert parse(text) == as_condition(expected)


# --- precedence --------------------------------------------------------------------------------

PRECEDENCE: list[tuple[str, str]] = [
    # (text, the same text fully parenthesised)
    ("a = 1 or b = 2 and c = 3", "(a = 1) or ((b = 2) and (c = 3))"),
    ("a = 1 and b = 2 or c = 3", "((a = 1) and (b = 2)) or (c = 3)"),
    ("not a = 1 and b = 2", "(not (a = 1)) and (b = 2)"),
    ("!a = 1 or b", "(!(a = 1)) or b"),
    ("not not a", "not (not a)"),
    ("a + b * c = d - e / f", "(a + (b * c)) = (d - (e / f))"),
    ("a - b - c > 0", "((a - b) - c) > 0"),
    ("a / b * c > 0", "((a / b) * c) > 0"),
    ("-a.b * c = 0", "((-(a.b)) * c) = 0"),
    ("a + 1 in [2] and b", "((a + 1) in [2]) and b"),
    ('a like "x" or b matches "y"', '(a like "x") or (b matches "y")'),
    ("a occurs before now and b", "(a occurs before now) and b"),
    ("x.ts occurs between a and b and c", "(x.ts occurs between a and b) and c"),
    ("a.count() + 1 > b.sum(c) * 2", "((a.count()) + 1) > ((b.sum(c)) * 2)"),
    ("a = 1 or b = 2 or c = 3", "(a = 1) or ((b = 2) or (c = 3))"),
]


@pytest.mark.parametrize(("text", "parenthesised"), PRECEDENCE)
def test_precedence(text: str, parenthesised: str) -> None:
    assert parse(text) == parse(parenthesised)


def test_precedence_shapes() -> None:
    assert parse("a = 1 or b = 2 and c = 3") == or_(eq(P("a"), N(1)), and_(eq(P("b"), N(2)), eq(P("c"), N(3))))
    assert parse("not a = 1 and b") == and_(Not(eq(P("a"), N(1))), IsDefined(P("b")))
    # `!x` and `not x` are the same node; `CHAIN` and `chain` too; infix and method `matches` too.
    assert parse("!(a = 1)") == parse("not (a = 1)")
    assert parse("CHAIN(xEvent, timestamp, [A: WHAT(a = 1)])") == parse("chain(xEvent, timestamp, [A: WHAT(a = 1)])")
    assert parse('x matches "y"') == parse('x.matches("y")')
    assert parse("exists X from a : X.b") == parse("exists X from a where X.b")
    assert parse("xEvent.exists(a = 1)") == parse("xEvent[a = 1]")


def test_comparisons_are_not_associative() -> None:
    with pytest.raises(PqlSyntaxError) as caught:
        parse("a = b = c")
    assert (caught.value.line, caught.value.column) == (1, 7)


# --- positions ---------------------------------------------------------------------------------


def test_nodes_carry_source_positions() -> None:
    text = 'person.age > 21 and\n  homeAddress.countryCode in ["US", "CA"]'
    tree = parse(text)
    assert isinstance(tree, And)
    assert tree.pos == Position(1, 1)
    first, second = tree.operands
    assert isinstance(first, Compare) and isinstance(second, In)
    assert first.left.pos == Position(1, 1)
    assert first.right.pos == Position(1, 14)
    assert second.pos == Position(2, 3)
    assert isinstance(second.collection, ListLit)
    assert second.collection.pos == Position(2, 30)
    assert second.collection.items[1].pos == Position(2, 37)


def test_chain_positions_span_lines() -> None:
    text = 'chain(xEvent, timestamp, [\n  A: WHAT(eventType = "x")\n     WHEN(< 8 days before now)])'
    tree = parse(text)
    assert isinstance(tree, Chain)
    (only,) = tree.steps
    assert only.pos == Position(2, 3)
    assert only.what.pos == Position(2, 11)
    assert only.when is not None and only.when.pos == Position(3, 11)


def test_positions_are_ignored_by_equality_and_hash() -> None:
    spaced, tight = parse('  a.b = "x"'), parse('a.b="x"')
    assert spaced == tight and hash(spaced) == hash(tight)
    assert spaced.pos != tight.pos
    # Identical conditions from different segments de-duplicate in a set.
    assert len({parse("a = 1 and b = 2"), parse("a=1 and b=2")}) == 1


# --- malformed expressions ---------------------------------------------------------------------

ERRORS: list[tuple[str, int, int, str]] = [
    # (text, line, column, part of the message)
    ('stateProvinceISO = “CA"', 1, 20, "typographic quote"),
    (
        'countryISO = "US" \nand\nstateProvinceISO = “CA" \nand (select X from xEvent)',
        3,
        20,
        "typographic quote",
    ),
    ('inSegment("7deb246a-948) and homeAddress.x = 1', 1, 11, "unterminated string"),
    ('"abc', 1, 1, "unterminated string"),
    ("a = 'x'", 1, 5, "single quotes"),
    (
        'xEvent[(timestamp occurs < 7 days before now and eventType="download"].count()',
        1,
        70,
        "unexpected `]`",
    ),
    ("xEvent[(a = 1)", 1, 15, "unexpected end"),
    ("a = 1 and", 1, 10, "unexpected end"),
    ("a = 1 and\n\n", 1, 10, "unexpected end"),
    ("a.b.", 1, 5, "unexpected end"),
    ("a = = 1", 1, 5, "unexpected `=`"),
    ("a = 1 b = 2", 1, 7, "unexpected name `b`"),
    ("a = 1 and\n  (b = 2 or\n   c = )", 3, 8, "unexpected `)`"),
    ("a and select X from xEvent where X.b", 1, 14, "must be in parentheses"),
    ("a in", 1, 5, "unexpected end"),
    ("", 1, 1, "empty"),
    ("   \n ", 1, 1, "empty"),
    ('State.equals("VT", "NH")', 1, 20, "case-sensitivity flag"),
    ('State.equals("VT", "NH", false)', 1, 7, "takes 1 to 2 argument(s), got 3"),
    ("x occurs < 3 fortnights before now", 1, 14, "unexpected name `fortnights`"),
    ("x occurs < -3 days before now", 1, 12, "unexpected `-`"),
    ("x occurs < 3 days now", 1, 19, "unexpected `now`"),
    ("chain(xEvent, timestamp, [A: WHEN(< 8 days before now)])", 1, 27, "has no `WHAT(...)`"),
    ("chain(xEvent, timestamp, [A: WHAT(a = 1) COUNT(0)])", 1, 42, "n >= 1"),
    ("chain(xEvent, timestamp, [A: WHAT(a = 1) WHAT(b = 1)])", 1, 42, "given twice"),
    ("chain(xEvent, timestamp, [A: WHAT(a = 1), A: WHAT(b = 1)])", 1, 43, "used twice"),
    ("chain(xEvent, 1, [A: WHAT(a = 1)])", 1, 15, "ordering field"),
    ("chain(xEvent, timestamp, [A: what(a = 1)])", 1, 30, "unexpected name `what`"),
    ("select X from xEvent where X.a = 1, X from xEvent", 1, 37, "already bound"),
    ("select xEvent from xEvent", 1, 8, "reserved"),
    ("let xEvent = (1) in (xEvent = 1)", 1, 5, "reserved"),
    ("^.a = 1", 1, 1, "outside `[...]`"),
    ("xEvent[^^.a = 1]", 1, 8, "goes above the profile"),
    ("$2.a = 1", 1, 1, "`$1` is the profile"),
    ('a.b.startWith("x")', 1, 5, "did you mean `startsWith`"),
    ("foo(1) = 2", 1, 1, "unknown function `foo`"),
    ("a.count(1) > 2", 1, 3, "takes 0 argument(s), got 1"),
    ("date(2020, 1) = a", 1, 1, "takes 3 argument(s), got 2"),
    ("inSegment(a.b)", 1, 11, "string literal"),
    ('x.name = "a\\qb"', 1, 12, "unknown escape `\\q`"),
    ("sum X.a from xEvent", 1, 5, "needs a variable name"),
    ("1e999 = x", 1, 1, "out of range"),
    ("a # b", 1, 3, "unexpected character `#`"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), ERRORS, ids=[e[0][:50] for e in ERRORS])
def test_malformed_expression_reports_position(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(PqlSyntaxError) as caught:
        parse(text)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert message in error.reason
    assert error.text == text
    assert isinstance(error, ValueError)


def test_error_message_has_caret_excerpt() -> None:
    text = 'countryISO = "US"\nand stateProvinceISO = “CA"'
    with pytest.raises(PqlSyntaxError) as caught:
        parse(text)
    assert str(caught.value).splitlines() == [
        'typographic quote `“`: PQL strings use straight double quotes `"` (line 2, column 24)',
        'and stateProvinceISO = “CA"',
        "                       ^",
    ]


def test_caret_keeps_tabs_aligned() -> None:
    with pytest.raises(PqlSyntaxError) as caught:
        parse("a = 1 and\n\tb = = 2")
    assert str(caught.value).splitlines()[1:] == ["\tb = = 2", "\t    ^"]


def test_errors_pickle() -> None:
    for text in ("a = = 1", "orders.groupBy(x)"):
        with pytest.raises(PqlError) as caught:
            parse(text)
        clone = pickle.loads(pickle.dumps(caught.value))
        assert type(clone) is type(caught.value)
        assert str(clone) == str(caught.value)
        assert (clone.line, clone.column) == (caught.value.line, caught.value.column)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        parse(b"a = 1")  # type: ignore[arg-type]


# --- unsupported constructs, rejected by name ---------------------------------------------------

UNSUPPORTED: list[tuple[str, str, int, int]] = [
    # (text, construct, line, column)
    (
        'person1.favoriteColors.intersection(person2.favoriteColors) = ["red", "blue", "green"]',
        "intersection",
        1,
        24,
    ),
    ("person.favoriteCities.subsetOf(person.visitedCities)", "subsetOf", 1, 23),
    ('person.eatenFoods.supersetOf(["sushi", "pizza"])', "supersetOf", 1, 19),
    ("orders.groupBy(storeId)", "groupBy", 1, 8),
    ("person.filter(age >= 21)", "filter", 1, 8),
    ("numbers.map(square)", "map", 1, 9),
    ("orders.topN(price, 5).head()", "topN", 1, 8),
    ("orders.bottomN(price, 5)", "bottomN", 1, 8),
    ("orders.head()", "head", 1, 8),
    ('emailAddress.regexGroup("@(\\\\w+)", 1) = "adobe"', "regexGroup", 1, 14),
    ("xEvent.groupBy(product).map((K, G) => mapEntry(K, G.count()))", "groupBy", 1, 8),
    ('xEvent.map({"timestamp": timestamp, "value": producedBy})', "map", 1, 8),
    ("mapEntry(a, b)", "mapEntry", 1, 1),
    ('{"a": 1}', "object literal", 1, 1),
    ("a = 1 AND b = 2", "AND", 1, 7),
    ("a = 1 OR b = 2", "OR", 1, 7),
    ("NOT (a = 1)", "NOT", 1, 1),
    ('State.equals("VT") AND NOT(b)', "AND", 1, 20),
    ("x = null", "null", 1, 5),
    (
        'chain(xEvent, timestamp, [A: WHAT(eventType = "addToCart") '
        'WHERE(externalSegmentMapProperty.values().exists(stringProperty="active"))])',
        "WHERE",
        1,
        60,
    ),
]


@pytest.mark.parametrize(("text", "construct", "line", "column"), UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_unsupported_construct_is_rejected_by_name(text: str, construct: str, line: int, column: int) -> None:
    with pytest.raises(PqlUnsupportedError) as caught:
        parse(text)
    error = caught.value
    assert error.construct == construct
    assert construct.split()[0] in error.reason
    assert (error.line, error.column) == (line, column)


# --- the grammar itself --------------------------------------------------------------------------


def test_grammar_is_lalr_without_conflicts() -> None:
    # lark resolves shift/reduce conflicts silently (as shift) and only logs them in debug mode;
    # a conflict would mean some expression silently parses one of two ways.
    grammar = resources.files("audience_activation.pql").joinpath("grammar.lark").read_text("utf-8")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    lark.logger.addHandler(handler)
    previous = lark.logger.level
    lark.logger.setLevel(logging.DEBUG)
    try:
        lark.Lark(grammar, parser="lalr", debug=True)
    finally:
        lark.logger.removeHandler(handler)
        lark.logger.setLevel(previous)
    assert "conflict" not in stream.getvalue().lower()


def test_to_pql_method_and_unprintable_trees() -> None:
    tree = parse('a.b = "x" and c')
    assert tree.to_pql() == 'a.b = "x" and c'
    with pytest.raises(ValueError, match="IsDefined"):
        to_pql(eq(IsDefined(P("a")), B(True)))
    with pytest.raises(ValueError, match="no PQL spelling"):
        to_pql(IsDefined(Filter(E(), IsDefined(I()))))


def test_printer_disambiguates_shadowed_profile_fields() -> None:
    # A profile field named like a bound variable or a keyword is written with `$1.`.
    tree = IsDefined(Select((bind("X", E(), eq(P("X", "a"), V("X", "a"))),)))
    assert to_pql(tree) == "select X from xEvent where $1.X.a = X.a"
    assert parse(to_pql(tree)) == tree
    assert parse(to_pql(eq(P("now"), N(1)))) == eq(P("now"), N(1))


# --- property: random trees survive print -> parse ----------------------------------------------

_FIELDS = st.sampled_from(["a", "b", "person", "homeAddress", "_repo", "eVar1", "count", "day"])
_VARIABLES = ["X", "Y", "Z"]
_LABELS = ["A", "B", "C0"]


class _Ctx:
    def __init__(self, variables: tuple[str, ...] = (), depth: int = 0) -> None:
        self.variables, self.depth = variables, depth

    def bind(self, name: str) -> _Ctx:
        return _Ctx((*self.variables, name), self.depth)

    def item(self) -> _Ctx:
        return _Ctx(self.variables, self.depth + 1)


@st.composite
def _paths(draw: st.DrawFn, ctx: _Ctx) -> Node:
    options = ["profile", "events"]
    if ctx.depth:
        options += ["item", "up"]
    if ctx.variables:
        options.append("variable")
    kind = draw(st.sampled_from(options))
    parts = tuple(draw(st.lists(_FIELDS, min_size=1, max_size=3)))
    if kind == "profile":
        return FieldRef(ProfileRoot(), parts)
    if kind == "events":
        return FieldRef(EventsRoot(), parts[: draw(st.integers(0, 1))])
    if kind == "item":
        return FieldRef(ItemRoot(0), parts)
    if kind == "up" and ctx.depth > 1:
        return FieldRef(ItemRoot(draw(st.integers(1, ctx.depth - 1))), parts[: draw(st.integers(0, 2))])
    if kind == "up":
        return FieldRef(ProfileRoot(), parts)
    return FieldRef(VariableRoot(draw(st.sampled_from(ctx.variables))), parts[: draw(st.integers(0, 2))])


_LEAF_VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(IntLit),
    st.floats(allow_nan=False, allow_infinity=False).map(DoubleLit),
    st.text(max_size=6).map(StringLit),
    st.booleans().map(BoolLit),
    st.sampled_from(list(TimeConstKind)).map(TimeConst),
    st.sampled_from(list(DatePart)).map(CurrentDatePart),
)


@st.composite
def _bindings(draw: st.DrawFn, ctx: _Ctx, budget: int) -> tuple[tuple[Binding, ...], _Ctx]:
    names = draw(st.lists(st.sampled_from(_VARIABLES), min_size=1, max_size=2, unique=True))
    bindings = []
    for name in names:
        source = draw(_paths(ctx))
        ctx = ctx.bind(name)
        condition = draw(st.none() | _conditions(ctx, budget - 1))
        bindings.append(Binding(name, source, condition))
    return tuple(bindings), ctx


@st.composite
def _values(draw: st.DrawFn, ctx: _Ctx, budget: int) -> Node:
    if budget <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(_LEAF_VALUES, _paths(ctx)))
    kind = draw(st.integers(0, 11))
    smaller = _values(ctx, budget - 1)
    if kind == 0:
        return Arith(draw(st.sampled_from(list(ArithOp))), draw(smaller), draw(smaller))
    if kind == 1:
        return Negate(draw(_paths(ctx)))
    if kind == 2:
        return ListLit(tuple(draw(st.lists(smaller, max_size=3))))
    if kind == 3:
        return DateLit(draw(smaller), draw(smaller), draw(smaller))
    if kind == 4:
        return GetDatePart(draw(_paths(ctx)), draw(st.sampled_from(list(DatePart))))
    if kind == 5:
        got = MapGet(draw(_paths(ctx)), StringLit(draw(st.text(max_size=4))))
        return Member(got, ("status",)) if draw(st.booleans()) else got
    if kind == 6:
        return draw(st.sampled_from([MapKeys, MapValues, Distinct]))(draw(_paths(ctx)))
    if kind == 7:
        function = draw(st.sampled_from(list(AggregateFunction)))
        value = None
        if function is not AggregateFunction.COUNT:
            value = draw(st.none() | _values(ctx.item(), budget - 1))
        source = draw(st.one_of(_paths(ctx), st.builds(Filter, _paths(ctx), _conditions(ctx.item(), budget - 1))))
        return Aggregate(function, source, value)
    if kind == 8:
        return Select(draw(_bindings(ctx, budget))[0])
    if kind == 9:
        bindings, inner = draw(_bindings(ctx, budget))
        function = draw(st.sampled_from([f for f in AggregateFunction if f is not AggregateFunction.COUNT]))
        return AggregateOver(function, draw(_values(inner, budget - 1)), bindings)
    if kind == 10:
        return If(draw(_conditions(ctx, budget - 1)), draw(smaller), draw(smaller))
    return Filter(draw(_paths(ctx)), draw(_conditions(ctx.item(), budget - 1)))


@st.composite
def _anchors(draw: st.DrawFn, ctx: _Ctx, budget: int) -> Node:
    return draw(
        st.one_of(
            st.sampled_from(list(TimeConstKind)).map(TimeConst),
            st.builds(CalendarPeriod, st.sampled_from(list(PeriodRelation)), st.sampled_from(list(TimeUnit))),
            st.builds(date, st.integers(1900, 2100), st.integers(1, 12), st.integers(1, 28)),
            _paths(ctx),
        )
    )


@st.composite
def _occurs_tests(draw: st.DrawFn, ctx: _Ctx, budget: int) -> OccursTest:
    anchor = _anchors(ctx, budget)
    return draw(
        st.one_of(
            st.builds(
                OccursWithin,
                st.sampled_from(list(CompareOp)),
                st.integers(0, 1000),
                st.sampled_from(list(TimeUnit)),
                st.sampled_from(list(Direction)),
                anchor,
            ),
            st.builds(OccursRelative, st.sampled_from(list(Direction)), anchor),
            st.builds(OccursOn, anchor),
            st.builds(OccursBetween, anchor, anchor),
        )
    )


def _flat(kind: type[And] | type[Or], operands: list[Node]) -> Node:
    flat: list[Node] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return kind(tuple(flat))


@st.composite
def _conditions(draw: st.DrawFn, ctx: _Ctx, budget: int) -> Node:
    value = _values(ctx, budget - 1)
    kind = draw(st.integers(0, 11 if budget <= 0 else 20))
    if kind == 0:
        return Compare(draw(st.sampled_from(list(CompareOp))), draw(value), draw(value))
    if kind == 1:
        collection = st.one_of(_paths(ctx), st.lists(value, max_size=3).map(lambda items: ListLit(tuple(items))))
        return In(draw(value), draw(collection), draw(st.booleans()))
    if kind == 2:
        return StringTest(
            draw(st.sampled_from(list(StringOp))),
            draw(st.booleans()),
            draw(_paths(ctx)),
            draw(value),
            draw(st.booleans()),
        )
    if kind == 3:
        return draw(st.sampled_from([Like, Matches]))(draw(_paths(ctx)), StringLit(draw(st.text(max_size=5))))
    if kind == 4:
        return NullCheck(draw(_paths(ctx)), draw(st.booleans()))
    if kind == 5:
        return IsDefined(draw(_paths(ctx)))
    if kind == 6:
        return InSegment(draw(st.text(max_size=8)))
    if kind == 7:
        return BoolLit(draw(st.booleans()))
    if kind == 8:
        return Occurs(draw(_paths(ctx)), draw(_occurs_tests(ctx, budget)))
    if kind == 9:
        return Intersects(draw(_paths(ctx)), draw(value))
    if kind in (10, 11):
        return Compare(CompareOp.GT, draw(_values(ctx, budget)), IntLit(0))
    smaller = _conditions(ctx, budget - 1)
    if kind in (12, 13):
        return _flat(And, draw(st.lists(smaller, min_size=2, max_size=3)))
    if kind == 14:
        return _flat(Or, draw(st.lists(smaller, min_size=2, max_size=3)))
    if kind == 15:
        return Not(draw(smaller))
    if kind == 16:
        return IsDefined(Filter(draw(_paths(ctx)), draw(_conditions(ctx.item(), budget - 1))))
    if kind == 17:
        bindings = draw(_bindings(ctx, budget))[0]
        if draw(st.booleans()):
            return IsDefined(Select(bindings))
        return Quantifier(draw(st.sampled_from(list(QuantifierKind))), bindings)
    if kind == 18:
        labels = draw(st.lists(st.sampled_from(_LABELS), min_size=1, max_size=3, unique=True))
        steps = tuple(
            ChainStep(
                label,
                draw(_conditions(ctx.item(), budget - 1)),
                draw(st.none() | _occurs_tests(ctx.item(), budget - 1)),
                draw(st.integers(1, 5)),
            )
            for label in labels
        )
        return Chain(E(), ("timestamp",), steps)
    if kind == 19:
        return Let("S", draw(value), draw(_conditions(ctx.bind("S"), budget - 1)))
    return If(draw(smaller), draw(smaller), as_condition(draw(value)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_conditions(_Ctx(), 3))
def test_random_trees_round_trip_through_text(tree: Node) -> None:
    text = to_pql(tree)
    assert parse(text) == tree, text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values(_Ctx(), 3))
def test_random_values_round_trip_through_text(tree: Node) -> None:
    text = to_pql(tree)
    assert parse(text, condition=False) == tree, text


_TOKENS = st.sampled_from(
    [
        "a", "X", ".", ",", "(", ")", "[", "]", ":", "=", "!=", "<", ">=", "+", "-", "*", "%", "!", "^", "^^",
        "$1", "$2", '"s"', '"', "“", "1", "2.5", "and", "or", "not", "in", "notIn", "like", "matches",
        "occurs", "before", "on", "between", "days", "last", "now", "today", "select", "from", "where",
        "exists", "forall", "sum", "over", "let", "chain", "CHAIN", "WHAT", "WHEN", "COUNT", "WHERE",
        "xEvent", "count", "exists", "equals", "isNull", "get", "date", "inSegment", "if", "groupBy",
        "map", "{", "AND", "null", "(P) =>", "\n",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(_TOKENS, max_size=14).map(" ".join))
def test_any_text_parses_or_raises_a_located_pql_error(text: str) -> None:
    try:
        tree = parse(text)
    except PqlError as error:
        assert 1 <= error.line <= text.count("\n") + 1
        assert error.column >= 1
    else:
        assert parse(to_pql(tree)) == tree
