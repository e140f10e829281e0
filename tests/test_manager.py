"""BudgetManager: registration, templates made on first use, parents, bounded caching."""

from __future__ import annotations

import pytest

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, MemoryStore, ModelRates

from .flaky_store import FlakyStore

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=1)}


def tenant_manager(clock, **kwargs) -> BudgetManager:
    mgr = BudgetManager(rates=RATES, clock=clock, **kwargs)
    mgr.register(BudgetScope(name="global", max_tokens_per_day=10_000))
    mgr.add_template("user:", BudgetScope(name="user", max_tokens_per_day=1_000), parent="global")
    mgr.add_template("conv:", BudgetScope(name="conv", max_tokens_per_session=400))
    return mgr


def test_template_makes_scope_on_first_use(clock):
    mgr = tenant_manager(clock)
    alice = mgr.get("user:alice")
    assert alice is not None and alice.scope.max_tokens_per_day == 1_000
    assert alice.parent is mgr.get("global") and mgr.get("user:alice") is alice
    assert mgr.get("nobody") is None


def test_conversation_user_global_chain(clock):
    mgr = tenant_manager(clock)
    conv = mgr.get("conv:1", parent="user:alice")
    assert [b.name for b in conv.chain] == ["conv:1", "user:alice", "global"]
    mgr.reserve("conv:1", "m", 300, 0)
    with pytest.raises(BudgetExceededError) as info:
        mgr.reserve("conv:1", "m", 200, 0)
    assert info.value.scope == "conv:1"
    mgr.get("conv:2", parent="user:alice")
    mgr.reserve("conv:2", "m", 400, 0)
    mgr.get("conv:3", parent="user:alice")
    with pytest.raises(BudgetExceededError) as info:
        mgr.reserve("conv:3", "m", 400, 0)  # user:alice: 700 + 400 > 1000
    assert info.value.scope == "user:alice"


def test_parent_mismatch_and_missing_parent(clock):
    mgr = tenant_manager(clock)
    mgr.get("conv:1", parent="user:a")
    with pytest.raises(ValueError, match="parent"):
        mgr.get("conv:1", parent="user:b")
    mgr.add_template("team:", BudgetScope(name="t"), parent="missing")
    with pytest.raises(KeyError, match="missing"):
        mgr.get("team:x")


def test_callable_parent(clock):
    mgr = tenant_manager(clock)
    mgr.add_template(
        "org:", BudgetScope(name="org"), parent=lambda name: "user:" + name.split(":")[1]
    )
    assert mgr.get("org:bob").parent.name == "user:bob"


def test_evicted_budgets_keep_their_usage(clock):
    store = MemoryStore()
    mgr = BudgetManager(store, rates=RATES, clock=clock, max_cached=10)
    mgr.add_template("u:", BudgetScope(name="u", max_tokens_per_session=100))
    mgr.record("u:0", "s", "m", 60, 0)
    for i in range(1, 50):
        mgr.record(f"u:{i}", "s", "m", 1, 0)
    assert len(mgr._cached) == 10
    with pytest.raises(BudgetExceededError):
        mgr.reserve("u:0", "m", 50, 0)  # rebuilt from the template: usage came from the store
    assert mgr.summary("u:0")["session"]["tokens"] == 60


def test_all_summaries_sees_other_managers_on_the_same_store(clock):
    store = MemoryStore()
    first = BudgetManager(store, rates=RATES, clock=clock)
    first.register(BudgetScope(name="team-a", max_tokens_per_day=500))
    first.record("team-a", "s", "m", 42, 0)
    second = BudgetManager(store, rates=RATES, clock=clock)
    summaries = second.all_summaries()
    assert summaries["team-a"]["day"]["tokens"] == 42
    assert summaries["team-a"]["limits"]["day_tokens"]["limit"] == 500


def test_manager_alerts_reach_manager_callbacks(clock):
    mgr = tenant_manager(clock)
    seen = []
    mgr.on_alert(seen.append)
    mgr.record("user:z", "s", "m", 900, 0)
    assert [(a.scope, a.limit_type) for a in seen] == [("user:z", "day_tokens")]


def test_remove_and_bad_arguments(clock):
    mgr = tenant_manager(clock)
    with pytest.raises(TypeError):
        mgr.register({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        mgr.add_template("", BudgetScope(name="x"))
    with pytest.raises(ValueError, match="name"):
        mgr.get("")
    with pytest.raises(KeyError):
        mgr.reserve("nope", "m", 1)
    assert mgr.remove("global") and "global" not in mgr.scopes()


def test_buffered_usage_survives_eviction_of_its_budget(clock):
    store = FlakyStore()
    mgr = BudgetManager(store, rates=RATES, clock=clock, max_cached=1)
    mgr.add_template("user:", BudgetScope(name="u", max_tokens_per_session=100))
    mgr.get("user:1")
    store.down = True
    mgr.record("user:1", "s", "m", 90, 0)  # the store is down: buffered
    mgr.get("user:2")  # evicts user:1's Budget object
    store.down = False
    rebuilt = mgr.get("user:1")
    with pytest.raises(BudgetExceededError):
        rebuilt.reserve("m", 90, 0)  # the buffer was replayed first: 90 + 90 > 100
    assert mgr.summary("user:1")["session"]["tokens"] == 90


def test_replacing_a_parent_rebinds_its_children(clock):
    mgr = BudgetManager(rates=RATES, clock=clock)
    mgr.register(BudgetScope(name="global", max_tokens_per_day=1000))
    mgr.register(BudgetScope(name="team"), parent="global")
    mgr.add_template("conv:", BudgetScope(name="conv"), parent="team")
    mgr.get("conv:1")
    mgr.register(BudgetScope(name="global", max_tokens_per_day=100))
    assert mgr.get("team").parent is mgr.get("global")
    with pytest.raises(BudgetExceededError) as info:
        mgr.reserve("conv:1", "m", 500, 0)
    assert info.value.scope == "global" and info.value.limit == 100


def test_an_evicted_scope_keeps_its_parent(clock):
    mgr = BudgetManager(rates=RATES, clock=clock, max_cached=2)
    mgr.register(BudgetScope(name="u1"))
    mgr.register(BudgetScope(name="u2"))
    mgr.add_template("conv:", BudgetScope(name="conv"), parent="u2")
    assert mgr.get("conv:1", parent="u1").parent.name == "u1"
    mgr.get("conv:2")
    mgr.get("conv:3")  # conv:1 leaves the cache
    assert "conv:1" not in mgr._cached
    assert mgr.get("conv:1").parent.name == "u1"  # not the template's u2
    with pytest.raises(ValueError, match="parent"):
        mgr.get("conv:1", parent="u2")


def test_all_summaries_keeps_the_cache_bounded(clock):
    store = MemoryStore()
    other = BudgetManager(store, rates=RATES, clock=clock)
    for i in range(30):
        other.register(BudgetScope(name=f"team-{i}"))
    mgr = BudgetManager(store, rates=RATES, clock=clock, max_cached=10)
    assert len(mgr.all_summaries()) == 30
    assert len(mgr._cached) <= 10


def test_bad_parent_names(clock):
    mgr = tenant_manager(clock)
    with pytest.raises(TypeError, match="parent"):
        mgr.get("conv:1", parent=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parent"):
        mgr.register(BudgetScope(name="x"), parent="")
