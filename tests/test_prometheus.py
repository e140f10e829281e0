"""Prometheus: the collector against a real prometheus_client registry and HTTP exposition."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, ModelRates, Store
from agent_budget_callbacks.prometheus import BudgetCollector

from .clock import FakeClock

RATES = {
    "small": ModelRates.per_million(input="1", output="2"),
    "large": ModelRates.per_million(input="10", output="20"),
}


def tenants(url: str, clock: FakeClock, count: int = 30) -> BudgetManager:
    """``count`` tenants under a global cap; tenant i spends about i units."""
    mgr = BudgetManager(store=url, rates=RATES, clock=clock)
    mgr.register(BudgetScope("global", max_cost_per_day_usd=100, max_tokens_per_day=10**8))
    mgr.add_template("tenant:", BudgetScope("tenant", max_cost_per_day_usd="0.05"), parent="global")
    for i in range(count):
        name = f"tenant:{i:02d}"
        mgr.record(name, "s", "small", 1_000 * (i + 1), 100)
        if i % 10 == 9:
            mgr.record(name, "s", "large", 500, 50)
    return mgr


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_exports_what_the_store_holds(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    mgr = tenants(url, clock)
    with pytest.raises(BudgetExceededError):
        mgr.reserve("tenant:29", "large", 10_000, 0)  # $0.10 > its $0.05 cap
    registry = CollectorRegistry()
    registry.register(BudgetCollector(url, top=5))
    store = Store.from_url(url, read_only=True)
    levels = store.peek("global", now=clock(), group="global")
    total = levels["day:cost"].committed / 1e9
    assert sample(registry, "agent_budget_store_up") == 1
    assert sample(registry, "agent_budget_day_spend_usd", scope="global") == pytest.approx(total)
    small = levels["model:small:cost"].committed / 1e9
    assert sample(
        registry, "agent_budget_spend_usd_total", scope="global", model="small"
    ) == pytest.approx(small)
    assert sample(registry, "agent_budget_tokens_total", scope="global", model="large") == 3 * 550
    cap = {"scope": "tenant:29", "limit": "day_cost_usd", "unit": "usd"}
    assert sample(registry, "agent_budget_limit", **cap) == pytest.approx(0.05)
    used29 = store.peek("tenant:29", now=clock(), group="global")["day:cost"].committed / 1e9
    assert sample(registry, "agent_budget_used", **cap) == pytest.approx(used29)
    assert sample(registry, "agent_budget_remaining", **cap) == pytest.approx(0.05 - used29)
    assert sample(registry, "agent_budget_refusals_total", scope="tenant:29") == 1
    assert sample(registry, "agent_budget_alerts_total", scope="tenant:29") == 1
    tokens_cap = {"scope": "global", "limit": "day_tokens", "unit": "tokens"}
    assert (
        sample(registry, "agent_budget_remaining", **tokens_cap)
        == 10**8 - sum(1_000 * (i + 1) + 100 for i in range(30)) - 3 * 550
    )
    store.close()
    mgr.close()


def test_label_cardinality_is_bounded(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    tenants(url, clock).close()
    registry = CollectorRegistry()
    registry.register(BudgetCollector(url, top=4, scopes=["tenant:00"], max_models=1))
    text = generate_latest(registry).decode()
    scopes = {
        s.labels["scope"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "scope" in s.labels
    }
    # the allow-list, then the top 4 by 24 h spend: global (all calls), then the biggest tenants
    assert scopes == {"tenant:00", "global", "tenant:29", "tenant:28", "tenant:27"}
    models = {
        s.labels["model"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "model" in s.labels
    }
    assert models == {"small", "other"}  # one model label, the rest summed
    assert sample(registry, "agent_budget_scopes", state="exported") == 5
    assert sample(registry, "agent_budget_scopes", state="omitted") == 31 - 5
    assert (
        sample(registry, "agent_budget_spend_usd_total", scope="global", model="other") is not None
    )


def test_a_store_outage_reads_as_down_not_as_an_error(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    tenants(url, clock, 3).close()
    collector = BudgetCollector(url)
    registry = CollectorRegistry()
    registry.register(collector)
    assert sample(registry, "agent_budget_store_up") == 1
    collector.store.close()  # any store error from here on
    assert sample(registry, "agent_budget_store_up") == 0
    assert sample(registry, "agent_budget_day_spend_usd", scope="global") is None


@pytest.mark.redis
def test_served_over_http_from_redis(redis_url: str, clock: FakeClock) -> None:
    url = redis_url + "?server_time=0"
    tenants(url, clock, 5).close()
    registry = CollectorRegistry()
    registry.register(BudgetCollector(url, top=3, selection_ttl=0))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["agent_budget_store_up"].samples[0].value == 1
    spend = {s.labels["scope"] for s in families["agent_budget_spend_usd"].samples}
    assert spend == {"global", "tenant:04", "tenant:03"}
