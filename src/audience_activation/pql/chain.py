"""``chain(source, orderField, [A: WHAT(c) WHEN(t) COUNT(n), ...])``: ordered sequences of events.

Each event becomes ``struct(t, f0, ..., fn)``: its ordering value and one flag per step (the
step's ``WHAT`` condition, and its ``WHEN`` time test relative to the event). A greedy scan over
the flagged events sorted by time then completes each step as early as possible. The same struct
list is what push-down collects per person (:mod:`audience_activation.pql.pushdown`), so both
paths share :meth:`ChainMixin._chain_match`. Rules owned here:

- The ordering field is a timestamp (or a date); a number is accepted only when no step has a
  ``WHEN``.
- Steps happen in strictly increasing order; step ``k`` needs ``COUNT`` flagged events after the
  event that completed step ``k - 1``; events without an ordering value never match.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, DataType, DoubleType, StructField, StructType, TimestampType

from audience_activation.pql import ast as a
from audience_activation.pql.logic import any_of, false_if_null, nonnull_array
from audience_activation.pql.occurs import OccursMixin
from audience_activation.pql.scope import Env, Table, Value
from audience_activation.pql.types import describe, is_numeric, is_temporal
from audience_activation.pql.values import ValuesMixin


class ChainMixin(OccursMixin, ValuesMixin):
    """Compiles ``chain`` over a list of events (builds on the time tests and attribute paths)."""

    def _chain_flags(self, node: a.Chain, element: Value | Table, env: Env) -> tuple[Column, list[Column], DataType]:
        """The ordering value and the per-step flags of one event (item scope of the steps)."""
        order = self._path(element, node.order_by, node)
        order_type: DataType
        if is_temporal(order.type):
            ts, order_type = self._timestamp(order, node, "the ordering field of `chain`"), TimestampType()
        elif is_numeric(order.type) and not any(step.when is not None for step in node.steps):
            ts, order_type = order.col.cast(DoubleType()), DoubleType()
        else:
            self._error(
                node,
                f"the ordering field `{'.'.join(node.order_by)}` of `chain` must be a timestamp, "
                f"but it is {describe(order.type)}",
            )
        inner = env.push_item(element)
        flags = []
        for step in node.steps:
            flag = self.cond(step.what, inner)
            if step.when is not None:
                flag = flag & self._occurs_test(ts, step.when, inner)
            flags.append(flag)
        return ts, flags, order_type

    @staticmethod
    def _chain_struct(ts: Column, flags: list[Column]) -> Column:
        return F.struct(ts.alias("t"), *[flag.alias(f"f{index}") for index, flag in enumerate(flags)])

    @staticmethod
    def _chain_type(order_type: DataType, steps: int) -> ArrayType:
        fields = [StructField("t", order_type), *[StructField(f"f{index}", BooleanType()) for index in range(steps)]]
        return ArrayType(StructType(fields))

    @staticmethod
    def _chain_match(events: Column, steps: Sequence[a.ChainStep], order_type: DataType) -> Column:
        """Whether the events (``struct(t, f0..fn)``) contain the steps in strictly increasing time.

        A greedy scan over the events sorted by time completes each step as early as possible
        (which leaves the most room for the next steps): step ``k`` needs ``COUNT`` events
        flagged for it with a time after the event that completed step ``k - 1``.
        """
        initial = F.struct(
            F.lit(0).alias("k"),
            F.lit(0).alias("c"),
            F.lit(None).cast(order_type).alias("t"),
        )

        def merge(acc: Column, event: Column) -> Column:
            step, count, last = acc["k"], acc["c"], acc["t"]
            flagged = any_of([(step == index) & event[f"f{index}"] for index in range(len(steps))])
            need = F.lit(steps[-1].count)
            for index in range(len(steps) - 2, -1, -1):
                need = F.when(step == index, F.lit(steps[index].count)).otherwise(need)
            usable = flagged & (last.isNull() | (event["t"] > last))
            complete = usable & (count + 1 >= need)
            return F.struct(
                F.when(complete, step + 1).otherwise(step).alias("k"),
                F.when(complete, F.lit(0)).when(usable, count + 1).otherwise(count).alias("c"),
                F.when(complete, event["t"]).otherwise(last).alias("t"),
            )

        matched = F.aggregate(F.array_sort(events), initial, merge, lambda acc: acc["k"] >= len(steps))
        return false_if_null(matched)

    def _c_chain(self, node: a.Node, env: Env) -> Column:
        assert isinstance(node, a.Chain)
        source = self._array(node.source, env, "(`chain` reads a list of events)")
        assert isinstance(source.type, ArrayType)
        element_type = source.type.elementType
        if not isinstance(element_type, StructType):
            self._error(node.source, "`chain` needs a list of events (objects with a timestamp)")
        order_type: list[DataType] = []

        def to_struct(item: Column) -> Column:
            ts, flags, kind = self._chain_flags(node, Value(item, element_type), env)
            order_type.append(kind)
            return self._chain_struct(ts, flags)

        structs = F.transform(nonnull_array(source.col), to_struct)
        relevant = F.filter(
            structs,
            lambda s: s["t"].isNotNull() & any_of([s[f"f{index}"] for index in range(len(node.steps))]),
        )
        return self._chain_match(relevant, node.steps, order_type[0])
