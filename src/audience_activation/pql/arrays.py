"""Collections: bracket filters, ``select``, ``exists``/``forall``, ``.count()`` and aggregates.

Everything here compiles to higher-order functions over an array Column (``filter``,
``transform``, ``exists``, ``forall``, ``aggregate``), which is also how event conditions that
cannot be pushed down are evaluated over the collected event list (see ``docs/segments.md``,
"How evaluation is planned"). Rules owned here:

- A missing array behaves as an empty one: it filters to nothing, counts 0, sums to 0.
- A select of several variables is a set of tuples: it can be tested, counted, or aggregated with
  ``<function> <value> over V1 from ..., V2 from ...``, not used as a list.
- A select or filter in a condition is true when it has a match.
- ``sum``/``average`` take numbers, ``min``/``max`` numbers or timestamps; missing items are
  skipped; integer sums stay exact (long), the rest is summed as doubles.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, LongType, NullType

from audience_activation.pql import ast as a
from audience_activation.pql.base import CompilerBase
from audience_activation.pql.logic import all_of, false_if_null, nonnull_array
from audience_activation.pql.scope import Env, Value
from audience_activation.pql.types import accumulator_type, describe, is_numeric, is_temporal


class ArraysMixin(CompilerBase):
    """Compiles filters, selects, quantifiers and aggregates over arrays with higher-order functions."""

    # --- arrays and selects (generic: higher-order functions) ----------------------------------

    def _v_filter(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Filter)
        source = self._array(node.source, env, "(`[...]` filters an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType
        column = F.filter(
            nonnull_array(source.col),
            lambda item: self.cond(node.condition, env.push_item(Value(item, element))),
        )
        return Value(column, source.type)

    def _v_select(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Select)
        if len(node.bindings) > 1:
            self._error(
                node,
                "a select of several variables is a set of tuples: it can only be tested "
                "(in a condition) or counted with `.count()`",
            )
        binding = node.bindings[0]
        source = self._array(binding.source, env, "(`select ... from` needs an array)")
        assert isinstance(source.type, ArrayType)
        if binding.condition is None:
            return source
        element = source.type.elementType
        condition = binding.condition
        column = F.filter(
            nonnull_array(source.col),
            lambda item: self.cond(condition, env.bind(binding.variable, Value(item, element))),
        )
        return Value(column, source.type)

    def _tuples(
        self,
        bindings: tuple[a.Binding, ...],
        env: Env,
        leaf: Callable[[Env], Value],
        index: int = 0,
    ) -> Value:
        """The list of ``leaf`` values of every tuple of ``V1 from s1 where c1, V2 from ...``."""
        binding = bindings[index]
        source = self._array(binding.source, env, "(`from` needs an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType
        column = nonnull_array(source.col)
        if binding.condition is not None:
            condition = binding.condition
            column = F.filter(
                column, lambda item: self.cond(condition, env.bind(binding.variable, Value(item, element)))
            )
        result_type: list[DataType] = []

        def each(item: Column) -> Column:
            inner = env.bind(binding.variable, Value(item, element))
            value = leaf(inner) if index + 1 == len(bindings) else self._tuples(bindings, inner, leaf, index + 1)
            result_type.append(value.type)
            return value.col

        mapped = F.transform(column, each)
        if index + 1 == len(bindings):
            return Value(mapped, ArrayType(result_type[0]))
        inner_type = result_type[0]
        assert isinstance(inner_type, ArrayType)
        return Value(F.flatten(mapped), inner_type)

    def _tuple_test(self, bindings: tuple[a.Binding, ...], env: Env, forall: bool, index: int = 0) -> Column:
        """``exists``/``forall V1 from s1 where c1, ...`` with nested higher-order functions."""
        binding = bindings[index]
        source = self._array(binding.source, env, "(`from` needs an array)")
        assert isinstance(source.type, ArrayType)
        element = source.type.elementType

        def body(item: Column) -> Column:
            inner = env.bind(binding.variable, Value(item, element))
            parts = []
            if binding.condition is not None:
                parts.append(self.cond(binding.condition, inner))
            if index + 1 < len(bindings):
                parts.append(self._tuple_test(bindings, inner, forall, index + 1))
            return all_of(parts)

        function = F.forall if forall else F.exists
        return false_if_null(function(source.col, body))

    def _c_is_defined(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.IsDefined)
        operand, operand_env = self._deref(node.operand, env)
        if isinstance(operand, a.Select):
            return self._tuple_test(operand.bindings, operand_env, forall=False)
        if isinstance(operand, a.Filter):
            source = self._array(operand.source, operand_env, "(`[...]` filters an array)")
            assert isinstance(source.type, ArrayType)
            element = source.type.elementType
            condition = operand.condition
            return false_if_null(
                F.exists(source.col, lambda item: self.cond(condition, operand_env.push_item(Value(item, element))))
            )
        return self._truthy(self.value(operand, operand_env))

    def _c_quantifier(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Quantifier)
        return self._tuple_test(node.bindings, env, forall=node.kind is a.QuantifierKind.FORALL)

    def _reduce(self, function: a.AggregateFunction, values: Value, node: a.Node) -> Value:
        """``sum``/``average``/``min``/``max`` of a list of values (missing items are skipped)."""
        assert isinstance(values.type, ArrayType)
        element = values.type.elementType
        self._check_aggregable(function, element, node)
        present = F.filter(nonnull_array(values.col), lambda item: item.isNotNull())
        if function is a.AggregateFunction.MIN:
            return Value(F.array_min(present), element)
        if function is a.AggregateFunction.MAX:
            return Value(F.array_max(present), element)
        accumulator = accumulator_type(element)
        total = F.aggregate(
            present,
            F.lit(0).cast(accumulator),
            lambda acc, item: (acc + item.cast(accumulator)).cast(accumulator),
        )
        if function is a.AggregateFunction.SUM:
            return Value(total, accumulator)
        return Value(F.try_divide(total, F.size(present)), DoubleType())

    def _check_aggregable(self, function: a.AggregateFunction, element: DataType, node: a.Node) -> None:
        if is_numeric(element) or isinstance(element, NullType):
            return
        if function in (a.AggregateFunction.MIN, a.AggregateFunction.MAX) and is_temporal(element):
            return
        extremes = function in (a.AggregateFunction.MIN, a.AggregateFunction.MAX)
        wanted = "numbers or timestamps" if extremes else "numbers"
        self._error(node, f"`{function.value}` aggregates {wanted}, but the values are {describe(element)}")

    def _v_aggregate(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.Aggregate)
        source_node, source_env = self._deref(node.source, env)
        if isinstance(source_node, a.Select) and len(source_node.bindings) > 1:
            if node.function is not a.AggregateFunction.COUNT:
                self._error(
                    node,
                    f"`.{node.function.value}(...)` of a select of several variables is ambiguous; "
                    f"write `{node.function.value} <value> over V1 from ..., V2 from ...`",
                )
            tuples = self._tuples(source_node.bindings, source_env, lambda _: Value(F.lit(1), LongType()))
            return Value(F.size(tuples.col).cast(LongType()), LongType())
        source = self._array(node.source, env, f"(`.{node.function.value}()` aggregates an array)")
        assert isinstance(source.type, ArrayType)
        if node.function is a.AggregateFunction.COUNT:
            return Value(F.size(nonnull_array(source.col)).cast(LongType()), LongType())
        if node.value is None:
            return self._reduce(node.function, source, node)
        element = source.type.elementType
        value_node = node.value
        result_type: list[DataType] = []

        def each(item: Column) -> Column:
            value = self.value(value_node, env.push_item(Value(item, element)))
            result_type.append(value.type)
            return value.col

        values = F.transform(nonnull_array(source.col), each)
        return self._reduce(node.function, Value(values, ArrayType(result_type[0])), node)

    def _v_aggregate_over(self, node: a.Node, env: Env) -> Value:
        assert isinstance(node, a.AggregateOver)
        values = self._tuples(node.bindings, env, lambda inner: self.value(node.value, inner))
        return self._reduce(node.function, values, node)
