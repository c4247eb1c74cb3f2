"""Values and operators: literals, attribute references, logic, arithmetic, ``if``, ``let``, maps.

Rules owned here (see ``docs/segments.md``, "Semantics decisions"):

- References resolve a dotted path against the profile, an events row, a bound variable, a ``let``
  value or an enclosing item (``^`` counts enclosing item scopes); an unknown name is a validation
  error at the position of the unknown part, with the closest field name as a hint.
- A dot after an array flattens (``xEvent.productListItems.SKU`` is every SKU of every event) and
  keeps the defined values only; the fields read from ``xEvent`` are recorded so the collected
  event list holds only them.
- ``and``/``or``/``not`` combine never-null conditions, so ``not`` is a plain negation.
- Arithmetic uses Spark's ``try_*`` functions: division by zero and overflow give a missing value
  whatever ``spark.sql.ansi.enabled`` says.
- List items and ``if`` branches must unify to one type; ``.get(k)`` on a map with a missing key
  is missing, never an error.
"""

from __future__ import annotations

import difflib

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    LongType,
    MapType,
    NullType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from audience_activation.pql import ast as a
from audience_activation.pql.base import CompilerBase
from audience_activation.pql.compiled import XEVENTS_COLUMN
from audience_activation.pql.logic import all_of, any_of, quote
from audience_activation.pql.scope import Env, LetRef, Table, Value
from audience_activation.pql.types import category_of, describe, is_numeric, numeric_result, unify


class ValuesMixin(CompilerBase):
    """Compiles literals, references, ``and``/``or``/``not``, arithmetic, ``if``, ``let`` and maps."""

    # --- literals ---------------------------------------------------------------------------------

    def _c_bool(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.BoolLit)
        return F.lit(node.value)

    def _v_string(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.StringLit)
        return Value(F.lit(node.value), StringType())

    def _v_int(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.IntLit)
        return Value(F.lit(node.value).cast(LongType()), LongType())

    def _v_double(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.DoubleLit)
        return Value(F.lit(node.value), DoubleType())

    def _v_list(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.ListLit)
        items = [self.value(item, env) for item in node.items]
        element = unify([item.type for item in items])
        if element is None:
            kinds = ", ".join(sorted({category_of(item.type) for item in items}))
            self._error(node, f"list items must all be of one kind (got {kinds})")
        if not items:
            return Value(F.array(), ArrayType(NullType()))
        return Value(F.array(*[self._cast_to(item, element) for item in items]), ArrayType(element))

    def _cast_to(self, value: Value, target: DataType) -> Column:
        if isinstance(target, TimestampType) and not isinstance(value.type, TimestampType):
            return value.col.cast(TimestampType())
        return value.col

    # --- references ------------------------------------------------------------------------------

    def _v_field_ref(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.FieldRef)
        root = node.root
        base: Value | Table
        if isinstance(root, a.ProfileRoot):
            assert not env.event_level, "profile reference inside a pushed-down event condition"
            if not node.parts:
                self._error(node, "the profile itself is not a value; name one of its attributes")
            base = self._profile
        elif isinstance(root, a.EventsRoot):
            assert not env.event_level, "xEvent inside a pushed-down event condition"
            base = self._xevents(node)
        elif isinstance(root, a.VariableRoot):
            bound = env.lookup(root.name)
            assert bound is not None, f"unbound variable {root.name}"
            base = self.value(bound.node, bound.env) if isinstance(bound, LetRef) else bound
        else:
            assert root.up < len(env.items), "item reference outside an item scope"
            base = env.items[-1 - root.up]
        return self._path(base, node.parts, node)

    def _xevents(self, node: a.Node) -> Value:
        if self._event_struct is None:
            self._error(node, "`xEvent` is used but there is no events table (experience_events)")
        self._xevents_used = True
        return Value(F.col(XEVENTS_COLUMN), ArrayType(self._event_struct))

    def _path(self, base: Value | Table, parts: tuple[str, ...], node: a.Node) -> Value:
        label = "attribute"
        if isinstance(base, Table):
            if not parts:
                # A whole event as a value (object comparison of select variables).
                return Value(F.struct(*[F.col(quote(f.name)) for f in base.schema.fields]), base.schema)
            label = f"{base.label} attribute"
            field = self._lookup(base.schema, parts, node, 0, label)
            current = Value(F.col(quote(parts[0])), field.dataType)
            start = 1
        else:
            current, start = base, 0
            element = current.type.elementType if isinstance(current.type, ArrayType) else current.type
            if element is self._event_struct:
                label = "event attribute"
                if not parts:
                    self._xevents_all = True
            elif isinstance(node, a.FieldRef) and isinstance(node.root, a.ProfileRoot):
                label = "profile attribute"
        for index in range(start, len(parts)):
            current = self._field(current, parts, index, node, label)
        return current

    def _lookup(self, schema: StructType, parts: tuple[str, ...], node: a.Node, index: int, label: str) -> StructField:
        name = parts[index]
        for field in schema.fields:
            if field.name == name:
                return field
        close = difflib.get_close_matches(name, schema.fieldNames(), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        where = self._part_position(node, index) if isinstance(node, a.FieldRef) else node.pos
        self._error(where, f"unknown {label} `{'.'.join(parts[: index + 1])}`{hint}")

    def _field(
        self, current: Value, parts: tuple[str, ...], index: int, node: a.Node, label: str = "attribute"
    ) -> Value:
        name = parts[index]
        data_type = current.type
        if isinstance(data_type, StructType):
            if data_type is self._event_struct:
                self._xevent_fields.add(name)
            field = self._lookup(data_type, parts, node, index, label)
            return Value(current.col.getField(name), field.dataType)
        if isinstance(data_type, ArrayType) and isinstance(data_type.elementType, StructType):
            element = data_type.elementType
            if element is self._event_struct:
                self._xevent_fields.add(name)
            field = self._lookup(element, parts, node, index, label)
            column = current.col.getField(name)
            # A dot after an array flattens: `xEvent.productListItems.SKU` is the list of all SKUs.
            if isinstance(field.dataType, ArrayType):
                # flatten() is null as soon as one inner array is: skip the missing ones.
                present = F.filter(column, lambda inner: inner.isNotNull())
                return Value(F.flatten(present), field.dataType)
            # The list holds the defined values only: `xEvent.commerce.order` is non-empty when
            # some event has an order, not whenever there are events.
            return Value(F.filter(column, lambda item: item.isNotNull()), ArrayType(field.dataType))
        where = self._part_position(node, index) if isinstance(node, a.FieldRef) else node.pos
        prefix = ".".join(parts[:index]) or self._pql(node)
        if isinstance(data_type, MapType):
            self._error(where, f'`{prefix}` is a map: read its entries with `.get("{name}")`')
        self._error(where, f"`{prefix}` is {describe(data_type)}; it has no field `{name}`")

    def _v_member(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Member)
        current = self.value(node.target, env)
        for index in range(len(node.parts)):
            current = self._field(current, node.parts, index, node)
        return current

    # --- operators -------------------------------------------------------------------------------

    def _c_and(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.And)
        return all_of([self.cond(operand, env) for operand in node.operands])

    def _c_or(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Or)
        return any_of([self.cond(operand, env) for operand in node.operands])

    def _c_not(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Not)
        # Two-valued logic: the operand is never null, so `not` is a plain negation.
        return ~self.cond(node.operand, env)

    def _v_arith(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Arith)
        left, right = self.value(node.left, env), self.value(node.right, env)
        for operand, value in ((node.left, left), (node.right, right)):
            if not is_numeric(value.type):
                self._error(
                    operand,
                    f"arithmetic `{node.op.value}` needs numbers, but `{self._pql(operand)}` is {describe(value.type)}",
                )
        # try_* functions: division by zero (and overflow) give a missing value, as in PQL,
        # whatever spark.sql.ansi.enabled says.
        function = {
            a.ArithOp.ADD: F.try_add,
            a.ArithOp.SUB: F.try_subtract,
            a.ArithOp.MUL: F.try_multiply,
            a.ArithOp.DIV: F.try_divide,
            a.ArithOp.MOD: F.try_mod,
        }[node.op]
        return Value(function(left.col, right.col), numeric_result(left.type, right.type, node.op))

    def _v_negate(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Negate)
        operand = self.value(node.operand, env)
        if not is_numeric(operand.type):
            self._error(node, f"`-` needs a number, but `{self._pql(node.operand)}` is {describe(operand.type)}")
        return Value(F.try_subtract(F.lit(0), operand.col), operand.type)

    def _v_if(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.If)
        test = self.cond(node.test, env)
        then, otherwise = self.value(node.then, env), self.value(node.otherwise, env)
        common = unify([then.type, otherwise.type])
        if common is None:
            self._error(
                node,
                f"the branches of `if` must be of one kind, got {describe(then.type)} and {describe(otherwise.type)}",
            )
        return Value(
            F.when(test, self._cast_to(then, common)).otherwise(self._cast_to(otherwise, common)),
            common,
        )

    def _v_let(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Let)
        return self.value(node.body, env.bind(node.name, LetRef(node.value, env)))

    def _v_map_get(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapGet)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.get(...)` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        key = self.value(node.key, env)
        if category_of(key.type) != category_of(target.type.keyType):
            self._error(
                node.key,
                f"the map's keys are {describe(target.type.keyType)}, but `{self._pql(node.key)}` is "
                f"{describe(key.type)}",
            )
        # try_element_at: a missing key is a missing value, never an error under ANSI mode.
        return Value(F.try_element_at(target.col, key.col), target.type.valueType)

    def _v_map_keys(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapKeys)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.keys()` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        return Value(F.map_keys(target.col), ArrayType(target.type.keyType))

    def _v_map_values(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.MapValues)
        target = self.value(node.map, env)
        if not isinstance(target.type, MapType):
            self._error(node, f"`.values()` reads a map, but `{self._pql(node.map)}` is {describe(target.type)}")
        return Value(F.map_values(target.col), ArrayType(target.type.valueType))

    def _v_distinct(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Distinct)
        source = self._array(node.operand, env, "(`.distinct()` needs an array)")
        return Value(F.array_distinct(source.col), source.type)
