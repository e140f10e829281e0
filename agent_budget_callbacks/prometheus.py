"""Prometheus for agent-budget (``pip install 'agent-budget[prometheus]'``).

:class:`BudgetCollector` is a ``prometheus_client`` collector that reads a store at each
scrape (read-only: nothing is written, nothing loaded on a server) and exposes, per scope:

- ``agent_budget_spend_usd_total{scope,model}`` and ``agent_budget_tokens_total{scope,model}``
  (counters: since the scope's first use or reset; a scope's total includes the calls of
  the scopes below it),
- ``agent_budget_day_spend_usd{scope}``, ``agent_budget_day_tokens{scope}`` (rolling 24 h),
- ``agent_budget_limit{scope,limit,unit}``, ``agent_budget_used{...}``,
  ``agent_budget_reserved{...}`` and ``agent_budget_remaining{...}`` (``unit`` is
  ``tokens`` or ``usd``),
- ``agent_budget_refusals_total{scope}`` and ``agent_budget_alerts_total{scope}`` (from the
  store's durable event counts, by the scope whose limit acted),
- ``agent_budget_scopes{state="exported"|"omitted"}`` and ``agent_budget_store_up``.

Label cardinality is bounded: only the scopes of an allow-list (``scopes=``) and the ``top``
scopes by spend over the last 24 hours (their own calls and their descendants') are
exported, with at most ``max_models`` model labels each (the rest summed as
``model="other"``). The selection is recomputed at most every ``selection_ttl`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_budget import BudgetManager, RateTable, Store, StoreError
from agent_budget.report import (
    ScopeInfo,
    ancestors,
    limit_periods,
    open_for_reading,
    scope_registry,
)
from agent_budget.scope import Metric as Counter
from agent_budget.stores import Level

__all__ = ["BudgetCollector"]

log = logging.getLogger("agent_budget")
_NANOS = 1_000_000_000
OTHER = "other"


class BudgetCollector(Collector):
    """Budget metrics read from ``store`` (a URL, a Store, or a BudgetManager's store) at
    each scrape. Register it: ``REGISTRY.register(BudgetCollector("redis://..."))``."""

    def __init__(
        self,
        store: Store | BudgetManager | str,
        *,
        scopes: Iterable[str] | None = None,
        top: int = 20,
        max_models: int = 10,
        selection_ttl: float = 60.0,
        rates: RateTable | None = None,
        namespace: str = "agent_budget",
    ) -> None:
        for name, value in (("top", top), ("max_models", max_models)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if isinstance(store, BudgetManager):
            store = store.store
        self.store = open_for_reading(store) if isinstance(store, str) else store
        self.allowed = tuple(dict.fromkeys(scopes or ()))
        self.top = top
        self.max_models = max_models
        self.selection_ttl = float(selection_ttl)
        self.rates = rates or RateTable()
        self.namespace = namespace
        self._lock = threading.Lock()
        self._selected: tuple[float, list[str], int] | None = None

    # -- which scopes ------------------------------------------------------------------------

    def select(self, registry: Mapping[str, ScopeInfo], now: float) -> tuple[list[str], int]:
        """The exported scopes (allow-list first, then the top spenders) and how many known
        scopes are left out."""
        with self._lock:
            cached = self._selected
            if cached is not None and now - cached[0] < self.selection_ttl:
                return cached[1], cached[2]
        spend: dict[str, int] = {}
        if self.top:
            for row in self.store.aggregate(by=("scope",), since=now - 86_400):
                for node in ancestors(row["scope"], registry):
                    spend[node] = spend.get(node, 0) + row["cost_nanos"]
        leaders = sorted(spend, key=lambda name: (-spend[name], name))[: self.top]
        chosen = list(dict.fromkeys([*self.allowed, *leaders]))
        omitted = len((set(registry) | set(spend)) - set(chosen))
        with self._lock:
            self._selected = (now, chosen, omitted)
        return chosen, omitted

    # -- the scrape --------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time only: registering never touches the store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            self._name("store_up"), "1 when the budget store answered this scrape, else 0"
        )
        try:
            families = list(self._families())
        except StoreError as exc:
            log.warning("budget metrics: the store did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def _families(self) -> Iterator[Metric]:
        now = self.store.now() or time.time()
        registry = scope_registry(self.store)
        chosen, omitted = self.select(registry, now)
        groups = {name: ancestors(name, registry)[-1] for name in chosen}
        limits = {
            name: scope.limits(self.rates.canonical)
            for name in chosen
            if name in registry and (scope := registry[name].scope) is not None
        }
        periods = {name: limit_periods(found, now) for name, found in limits.items()}
        counters = self.store.peek_many(groups, now=now, periods=periods) if groups else {}
        spend = CounterMetricFamily(
            self._name("spend_usd"),
            "Dollars spent since the scope's first use (its descendants' calls included)",
            labels=["scope", "model"],
        )
        tokens = CounterMetricFamily(
            self._name("tokens"),
            "Tokens used since the scope's first use (its descendants' calls included)",
            labels=["scope", "model"],
        )
        day_spend = GaugeMetricFamily(
            self._name("day_spend_usd"), "Dollars spent in the rolling 24 hours", labels=["scope"]
        )
        day_tokens = GaugeMetricFamily(
            self._name("day_tokens"), "Tokens used in the rolling 24 hours", labels=["scope"]
        )
        labels = ["scope", "limit", "unit"]
        limit = GaugeMetricFamily(self._name("limit"), "Each limit's cap", labels=labels)
        used = GaugeMetricFamily(self._name("used"), "What each limit has used", labels=labels)
        reserved = GaugeMetricFamily(
            self._name("reserved"), "What calls in flight hold under each limit", labels=labels
        )
        remaining = GaugeMetricFamily(
            self._name("remaining"),
            "What is left under each limit, net of calls in flight (never below 0)",
            labels=labels,
        )
        for name in chosen:
            levels = counters.get(name, {})
            for model, (cost, count) in self._per_model(levels).items():
                spend.add_metric([name, model], cost / _NANOS)
                tokens.add_metric([name, model], count)
            day_spend.add_metric([name], levels.get(Counter.DAY_COST, Level()).committed / _NANOS)
            day_tokens.add_metric([name], levels.get(Counter.DAY_TOKENS, Level()).committed)
            for lim in limits.get(name, ()):
                level = levels.get(lim.metric, Level())
                scale = _NANOS if lim.unit == "usd" else 1
                values = [name, lim.limit_type, lim.unit]
                left = max(lim.amount - level.committed - level.reserved, 0)
                limit.add_metric(values, lim.amount / scale)
                used.add_metric(values, level.committed / scale)
                reserved.add_metric(values, level.reserved / scale)
                remaining.add_metric(values, left / scale)
        refusals = CounterMetricFamily(
            self._name("refusals"),
            "Calls refused before they ran, by the scope whose limit refused",
            labels=["scope"],
        )
        alerts = CounterMetricFamily(
            self._name("alerts"), "Budget alerts fired, by scope", labels=["scope"]
        )
        counts = self.store.event_counts(scope=chosen) if chosen else {}
        for name in chosen:
            kinds = counts.get(name, {})
            refusals.add_metric([name], kinds.get("refusal", 0))
            alerts.add_metric([name], kinds.get("alert", 0))
        scopes = GaugeMetricFamily(
            self._name("scopes"),
            "Scopes exported to Prometheus and scopes left out to bound label cardinality",
            labels=["state"],
        )
        scopes.add_metric(["exported"], len(chosen))
        scopes.add_metric(["omitted"], omitted)
        yield from (spend, tokens, day_spend, day_tokens, limit, used, reserved, remaining)
        yield from (refusals, alerts, scopes)

    def _per_model(self, levels: Mapping[str, Level]) -> dict[str, tuple[int, int]]:
        """(cost nanos, tokens) per model, the largest ``max_models`` by cost, the rest as
        "other"."""
        found: dict[str, list[int]] = {}
        for metric, level in levels.items():
            parsed = Counter.parse_model(metric)
            if parsed is None:
                continue
            model, kind = parsed
            entry = found.setdefault(model, [0, 0])
            entry[0 if kind == "cost" else 1] = level.committed
        ranked = sorted(found, key=lambda m: (-found[m][0], m))
        out: dict[str, Any] = {m: tuple(found[m]) for m in ranked[: self.max_models]}
        rest = ranked[self.max_models :]
        if rest:
            out[OTHER] = (sum(found[m][0] for m in rest), sum(found[m][1] for m in rest))
        return out
