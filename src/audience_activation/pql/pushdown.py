"""Push-down of event conditions into the one aggregation over the events.

An event condition that reads nothing but the event itself (its fields, arrays inside it,
constants and ``now``) is compiled to an expression over one events row and aggregated per
person (see ``docs/segments.md``, "How evaluation is planned"):

- ``xEvent[c]``, ``select X from xEvent where c``, ``exists X from xEvent where c``, ``.count()``
  -> ``count_if(c)``; ``forall X from S where c`` -> ``count_if(S and not c) = 0``;
- ``.sum(e)``/``sum e over X from xEvent where c`` -> ``sum(when(c, e))`` (0 when nothing
  matches); ``average``/``min``/``max`` -> ``avg``/``min``/``max(when(c, e))`` (missing when
  nothing matches);
- clauses over arrays inside the event (``I from X.productListItems``) are reduced per event with
  higher-order functions and then across events;
- ``chain(...)`` whose steps look only at their event -> ``collect_list`` of the
  ``struct(t, step flags)`` of the events matching some step.

Identical conditions of different segments (up to variable names, :func:`canonical`) share one
aggregate column. Anything else (conditions relating several events, or reading profile
attributes or other segments) returns None here and is compiled generically over the collected
event list. ``compile_segments(..., pushdown=False)`` turns push-down off; the results are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DecimalType, DoubleType, LongType, StructType

from audience_activation.pql import ast as a
from audience_activation.pql.analysis import canonical, free_refs
from audience_activation.pql.arrays import ArraysMixin
from audience_activation.pql.chain import ChainMixin
from audience_activation.pql.compiled import AGGREGATE_PREFIX, EventAggregate
from audience_activation.pql.logic import all_of, any_of
from audience_activation.pql.scope import Env, EventSet, Value
from audience_activation.pql.types import accumulator_type, sum_type


class PushdownMixin(ChainMixin, ArraysMixin):
    """Compiles event conditions to aggregate columns over the events table (when they allow it)."""

    def _event_set(self, node: a.Node, env: Env) -> EventSet | None:
        """Recognise a set of events defined by conditions on each event alone."""
        if self._event_row is None or not self._pushdown:
            return None
        node, env = self._deref(node, env)
        if isinstance(node, a.FieldRef):
            if isinstance(node.root, a.EventsRoot) and not node.parts:
                return EventSet(node)
            return None
        if isinstance(node, a.Filter):
            inner = self._event_set(node.source, env)
            if inner is None or inner.rest or not free_refs(node.condition) <= {("item", 0)}:
                return None
            return dataclasses.replace(inner, node=node, predicates=(*inner.predicates, (None, node.condition)))
        if isinstance(node, a.Select):
            first, rest = node.bindings[0], node.bindings[1:]
            inner = self._event_set(first.source, env)
            if inner is None or inner.rest:
                return None
            closed = a.Select((a.Binding(first.variable, a.ListLit(()), first.condition), *rest))
            if free_refs(closed):
                return None
            predicates = inner.predicates
            if first.condition is not None:
                predicates = (*predicates, (first.variable, first.condition))
            return EventSet(node, predicates, first.variable, rest)
        return None

    def _row_env(self, variable: str | None) -> Env:
        assert self._event_row is not None
        if variable is None:
            return Env(event_level=True, items=(self._event_row,))
        return Env(event_level=True, variables=((variable, self._event_row),))

    def _row_predicate(self, events: EventSet) -> Column:
        return all_of([self.cond(condition, self._row_env(variable)) for variable, condition in events.predicates])

    def _aggregate(self, key: object, build: Callable[[], tuple[Column, Column | None, DataType]]) -> Value:
        spec = self._aggregates.get(key)
        if spec is None:
            expression, default, data_type = build()
            spec = EventAggregate(f"{AGGREGATE_PREFIX}{len(self._aggregates)}", expression, default, data_type)
            self._aggregates[key] = spec
        return Value(F.col(spec.name), spec.type)

    def _event_count(self, events: EventSet) -> Column:
        """The number of matching events (tuples for selects over arrays inside each event)."""

        def build() -> tuple[Column, Column | None, DataType]:
            predicate = self._row_predicate(events)
            if not events.rest:
                return F.count_if(predicate), F.lit(0).cast(LongType()), LongType()
            one = Value(F.lit(1), LongType())
            per_event = self._tuples(events.rest, self._row_env(events.variable), lambda _: one)
            count = F.when(predicate, F.size(per_event.col)).otherwise(F.lit(0)).cast(LongType())
            return F.sum(count), F.lit(0).cast(LongType()), LongType()

        return self._aggregate(("count", canonical(events.node)), build).col

    def _event_values(
        self,
        function: a.AggregateFunction,
        events: EventSet,
        value: Callable[[Env], Value],
        value_env: Env,
        key: object,
        node: a.Node,
    ) -> Value:
        """``sum``/``average``/``min``/``max`` of a value over the matching events."""
        if not events.rest:

            def build() -> tuple[Column, Column | None, DataType]:
                predicate = self._row_predicate(events)
                item = value(value_env)
                self._check_aggregable(function, item.type, node)
                selected = F.when(predicate, item.col)
                if function is a.AggregateFunction.SUM:
                    return F.sum(selected), F.lit(0), sum_type(item.type)
                if function is a.AggregateFunction.AVERAGE:
                    average_type = item.type if isinstance(item.type, DecimalType) else DoubleType()
                    return F.avg(selected), None, average_type
                aggregate = F.min if function is a.AggregateFunction.MIN else F.max
                return aggregate(selected), None, item.type

            return self._aggregate((function.value, key), build)

        # Tuples inside each event: reduce per event, then across events.
        def per_event() -> tuple[Column, DataType]:
            values = self._tuples(events.rest, value_env, value)
            assert isinstance(values.type, ArrayType)
            self._check_aggregable(function, values.type.elementType, node)
            return values.col, values.type.elementType

        def reduced(inner: a.AggregateFunction) -> Callable[[], tuple[Column, Column | None, DataType]]:
            def build() -> tuple[Column, Column | None, DataType]:
                predicate = self._row_predicate(events)
                values, element = per_event()
                present = F.filter(values, lambda item: item.isNotNull())
                if inner is a.AggregateFunction.MIN:
                    return F.min(F.when(predicate, F.array_min(present))), None, element
                if inner is a.AggregateFunction.MAX:
                    return F.max(F.when(predicate, F.array_max(present))), None, element
                if inner is a.AggregateFunction.COUNT:
                    count = F.when(predicate, F.size(present)).otherwise(F.lit(0)).cast(LongType())
                    return F.sum(count), F.lit(0).cast(LongType()), LongType()
                accumulator = accumulator_type(element)
                total = F.aggregate(
                    present,
                    F.lit(0).cast(accumulator),
                    lambda acc, item: (acc + item.cast(accumulator)).cast(accumulator),
                )
                return F.sum(F.when(predicate, total)), F.lit(0).cast(accumulator), accumulator

            return build

        if function is a.AggregateFunction.AVERAGE:
            total = self._aggregate(("sum", key), reduced(a.AggregateFunction.SUM))
            count = self._aggregate(("count-values", key), reduced(a.AggregateFunction.COUNT))
            return Value(F.try_divide(total.col, count.col), DoubleType())
        return self._aggregate((function.value, key), reduced(function))

    def _pushdown_condition(self, node: a.Node, env: Env) -> Column | None:
        if isinstance(node, a.IsDefined):
            events = self._event_set(node.operand, env)
            return None if events is None else self._event_count(events) > 0
        if isinstance(node, a.Quantifier):
            if node.kind is a.QuantifierKind.EXISTS:
                events = self._event_set(a.Select(node.bindings, pos=node.pos), env)
                return None if events is None else self._event_count(events) > 0
            return self._pushdown_forall(node, env)
        if isinstance(node, a.Chain):
            return self._pushdown_chain(node, env)
        return None

    def _pushdown_forall(self, node: a.Quantifier, env: Env) -> Column | None:
        if len(node.bindings) != 1:
            return None
        binding = node.bindings[0]
        source = self._event_set(binding.source, env)
        if source is None or source.rest:
            return None
        if binding.condition is None:
            return F.lit(True)
        if not free_refs(binding.condition) <= {("var", binding.variable)}:
            return None
        # forall X from S where c  <=>  no event of S violates c.
        violation = a.Not(binding.condition, pos=binding.condition.pos)
        violations = EventSet(
            a.Select((a.Binding(binding.variable, binding.source, violation),)),
            (*source.predicates, (binding.variable, violation)),
            binding.variable,
        )
        return self._event_count(violations) == 0

    def _pushdown_chain(self, node: a.Chain, env: Env) -> Column | None:
        events = self._event_set(node.source, env)
        if events is None or events.rest:
            return None
        for step in node.steps:
            refs = free_refs(step.what) | (free_refs(step.when) if step.when is not None else frozenset())
            if not refs <= {("item", 0)}:
                return None
        row = self._event_row
        assert row is not None

        def build() -> tuple[Column, Column | None, DataType]:
            predicate = self._row_predicate(events)
            ts, flags, order_type = self._chain_flags(node, row, Env(event_level=True))
            keep = predicate & ts.isNotNull() & any_of(flags)
            # Only the events that can match a step are collected, with their step flags.
            collected = F.collect_list(F.when(keep, self._chain_struct(ts, flags)))
            list_type = self._chain_type(order_type, len(node.steps))
            return collected, F.array().cast(list_type), list_type

        collected = self._aggregate(("chain", canonical(node)), build)
        assert isinstance(collected.type, ArrayType) and isinstance(collected.type.elementType, StructType)
        order_type = collected.type.elementType.fields[0].dataType
        return self._chain_match(collected.col, node.steps, order_type)

    def _pushdown_value(self, node: a.Node, env: Env) -> Value | None:
        if isinstance(node, a.Aggregate):
            events = self._event_set(node.source, env)
            if events is None:
                return None
            if node.function is a.AggregateFunction.COUNT:
                return Value(self._event_count(events), LongType())
            if node.value is None:
                self._error(
                    node,
                    f"`.{node.function.value}()` of events needs a value, e.g. "
                    f"`.{node.function.value}(commerce.order.priceTotal)`",
                )
            if events.rest or not free_refs(node.value) <= {("item", 0)}:
                return None
            value_node = node.value
            key: object = (canonical(events.node), "item", canonical(value_node))
            return self._event_values(
                node.function,
                events,
                lambda inner: self.value(value_node, inner),
                self._row_env(None),
                key,
                node,
            )
        if isinstance(node, a.AggregateOver):
            select = a.Select(node.bindings, pos=node.pos)
            events = self._event_set(select, env)
            if events is None:
                return None
            bound = {binding.variable for binding in node.bindings}
            if not all(ref[0] == "var" and ref[1] in bound for ref in free_refs(node.value)):
                return None
            over_key = (canonical(a.AggregateOver(node.function, node.value, node.bindings)), "over")
            value_node = node.value
            return self._event_values(
                node.function,
                events,
                lambda inner: self.value(value_node, inner),
                self._row_env(events.variable),
                over_key,
                node,
            )
        return None
