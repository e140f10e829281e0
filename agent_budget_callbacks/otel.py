"""OpenTelemetry for agent-budget (``pip install 'agent-budget[otel]'``).

``instrument(budget_or_manager)`` subscribes to the budget's call events and, for every
recorded call, emits a span carrying the GenAI semantic conventions' usage attributes
(``gen_ai.usage.input_tokens``, ``output_tokens``, ``cache_read.input_tokens``,
``cache_creation.input_tokens``, ``reasoning.output_tokens``) and the call's cost as the open
proposal spells it (``gen_ai.usage.cost.amount`` in ``gen_ai.usage.cost.currency``,
``source`` ``local``: priced by agent-budget). The cost attributes are **provisional**: the
GenAI conventions have no cost attribute yet, and these names follow the proposal, so they
may change with it. The span starts when the call's reservation was made and ends when its
usage was committed, as a child of the context current at the commit (the framework's own
call span, when there is one). A refused call gets a zero-length span with ``error.type``
``BudgetExceededError``.

Metrics: ``agent_budget.spend`` (counter, USD), ``gen_ai.client.token.usage`` (histogram,
tokens, per ``gen_ai.token.type``), ``agent_budget.refusals`` (counter) and
``agent_budget.remaining.tokens`` / ``agent_budget.remaining.cost`` (gauges, read from the
store at each collection, per scope and limit).

The API is imported here only: the core stays standard library. Bring your own SDK and
exporters; without a configured provider the global no-op one makes all of this free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent_budget import Budget, BudgetManager, __version__
from agent_budget.events import RecordEvent, RefusalEvent
from agent_budget.report import limit_periods
from agent_budget.stores import Level

__all__ = ["BudgetInstrumentation", "instrument"]

_NANOS = 1_000_000_000
ScopeLabel = Callable[[str], "str | None"]


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


@dataclass
class BudgetInstrumentation:
    """What :func:`instrument` set up; :meth:`uninstrument` stops it."""

    target: Budget | BudgetManager
    tracer: trace.Tracer
    meter: metrics.Meter
    system: str | None = None
    operation: str = "chat"
    scope_label: ScopeLabel = field(default=lambda name: name)
    max_scopes: int = 200
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        meter = self.meter
        self.spend = meter.create_counter(
            "agent_budget.spend",
            unit="USD",
            description="Money spent on model calls, priced by agent-budget",
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per model call, by gen_ai.token.type",
        )
        self.refusals = meter.create_counter(
            "agent_budget.refusals",
            unit="{call}",
            description="Model calls refused before they ran, by the scope and limit that refused",
        )
        self.remaining_tokens = meter.create_observable_gauge(
            "agent_budget.remaining.tokens",
            callbacks=[self._observe("tokens")],
            unit="{token}",
            description="Tokens left under each token limit, net of calls in flight",
        )
        self.remaining_cost = meter.create_observable_gauge(
            "agent_budget.remaining.cost",
            callbacks=[self._observe("usd")],
            unit="USD",
            description="Dollars left under each cost limit, net of calls in flight",
        )
        self.target.on_record(self._on_record)
        self.target.on_refusal(self._on_refusal)

    def uninstrument(self) -> None:
        """Stop emitting spans and metrics for the target's calls."""
        self.target.remove_listener(self._on_record)
        self.target.remove_listener(self._on_refusal)

    # -- spans ------------------------------------------------------------------------------

    def _base(self, model: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.request.model": model,
        }
        if self.system:
            attributes["gen_ai.provider.name"] = self.system
        return attributes

    def _on_record(self, event: RecordEvent) -> None:
        record = event.record
        cost = record.cost_nanos / _NANOS
        attributes = self._base(record.model)
        attributes.update(
            {
                "gen_ai.response.model": record.model,
                "gen_ai.usage.input_tokens": record.input_tokens,
                "gen_ai.usage.output_tokens": record.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": record.cache_read_tokens,
                "gen_ai.usage.cache_creation.input_tokens": record.cache_write_tokens,
                "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens,
                "gen_ai.usage.cost.amount": cost,
                "gen_ai.usage.cost.currency": "USD",
                "gen_ai.usage.cost.source": "local",
                "agent_budget.scope": record.scope,
                "agent_budget.estimated": record.estimated,
                "agent_budget.price_source": record.price_source,
                "agent_budget.price_id": record.price_id,
                "agent_budget.price_tier": record.price_tier,
                "agent_budget.reservation_id": record.reservation_id,
            }
        )
        if record.session_id:
            attributes["gen_ai.conversation.id"] = record.session_id
        span = self.tracer.start_span(
            f"{self.operation} {record.model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(event.started_at),
        )
        span.end(end_time=max(_ns(event.ended_at), _ns(event.started_at)))
        metric = self._metric_attributes(record.scope, record.model)
        self.spend.add(cost, metric)
        for kind, count in (("input", record.input_tokens), ("output", record.output_tokens)):
            self.tokens.record(count, {**metric, "gen_ai.token.type": kind})

    def _on_refusal(self, event: RefusalEvent) -> None:
        attributes = self._base(event.model)
        attributes.update(
            {
                "error.type": "BudgetExceededError",
                "agent_budget.scope": event.caller,
                "agent_budget.refused_by": event.scope,
                "agent_budget.limit": event.limit_type,
            }
        )
        if event.session_id:
            attributes["gen_ai.conversation.id"] = event.session_id
        when = _ns(event.timestamp)
        span = self.tracer.start_span(
            f"{self.operation} {event.model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=when,
        )
        span.set_status(Status(StatusCode.ERROR, str(event.error)))
        span.end(end_time=when)
        labels: dict[str, Any] = {"agent_budget.limit": event.limit_type}
        scope = self.scope_label(event.scope)
        if scope is not None:
            labels["agent_budget.scope"] = scope
        self.refusals.add(1, labels)

    def _metric_attributes(self, scope: str, model: str) -> dict[str, Any]:
        attributes = self._base(model)
        label = self.scope_label(scope)
        if label is not None:
            attributes["agent_budget.scope"] = label
        return attributes

    # -- gauges -----------------------------------------------------------------------------

    def _budgets(self) -> list[Budget]:
        """The scopes whose limits are observed: a budget's chain, or the manager's
        registered and cached scopes (at most ``max_scopes``)."""
        target = self.target
        if isinstance(target, Budget):
            return target.chain
        found: dict[str, Budget] = {}
        for budget in target.budgets():
            for node in budget.chain:
                found.setdefault(node.name, node)
        return list(found.values())[: self.max_scopes]

    def _observe(self, unit: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            budgets = [b for b in self._budgets() if any(lim.unit == unit for lim in b.limits)]
            if not budgets:
                return
            store = budgets[0].store
            now = store.now() or budgets[0].clock()
            counters = store.peek_many(
                {b.name: b.group for b in budgets},
                now=now,
                periods={b.name: limit_periods(b.limits, now) for b in budgets},
            )
            for budget in budgets:
                levels = counters.get(budget.name, {})
                label = self.scope_label(budget.name)
                for limit in budget.limits:
                    if limit.unit != unit:
                        continue
                    level = levels.get(limit.metric, Level())
                    left = max(limit.amount - level.committed - level.reserved, 0)
                    attributes = {"agent_budget.limit": limit.limit_type}
                    if label is not None:
                        attributes["agent_budget.scope"] = label
                    yield Observation(left / _NANOS if unit == "usd" else left, attributes)

        return observe


def instrument(
    target: Budget | BudgetManager,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    system: str | None = None,
    scope_label: ScopeLabel | None = None,
    max_scopes: int = 200,
) -> BudgetInstrumentation:
    """Emit a span and metrics for every call ``target`` records or refuses.

    ``tracer_provider`` / ``meter_provider`` default to the global ones. ``system`` sets
    ``gen_ai.provider.name`` (e.g. ``"openai"``). ``scope_label`` maps a scope name to its
    metric attribute value, or None to leave it out: metrics need few distinct values, so
    map per-conversation scopes to their tenant (spans always carry the scope itself).
    ``max_scopes`` bounds how many scopes the remaining-budget gauges report.
    """
    if not isinstance(target, (Budget, BudgetManager)):
        raise TypeError(
            f"instrument needs a Budget or a BudgetManager, got {type(target).__name__}"
        )
    return BudgetInstrumentation(
        target,
        trace.get_tracer("agent_budget", __version__, tracer_provider=tracer_provider),
        metrics.get_meter("agent_budget", __version__, meter_provider=meter_provider),
        system=system,
        scope_label=scope_label or (lambda name: name),
        max_scopes=max_scopes,
    )
