"""The original agent-budget API keeps working: its README snippets verbatim and every
behaviour its test suite checks, re-expressed here and imported the way that suite imports
(``from agent_budget.core import ...``).

The deliberate differences are listed in the README's "Compatibility with the original
API" section; the one the original suite sees is the price update (gpt-4o is $2.50 / $10 per
1M today, not the May-2024 launch price of $5 / $15 the original table carried).
"""

from __future__ import annotations

import threading

import pytest

import agent_budget
import agent_budget.core
from agent_budget.core import (
    AlertLevel,
    Budget,
    BudgetAlert,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    BudgetWarning,
    ModelRates,
    UsageRecord,
)


def test_readme_quickstart_verbatim(capsys):
    scope = BudgetScope(
        name="my-session",
        max_tokens_per_session=50_000,
        max_cost_per_session_usd=1.00,
        max_cost_per_day_usd=5.00,
        alert_at_pct=0.8,  # warn at 80%
        hard_stop=True,  # raise BudgetExceededError at 100%
    )
    budget = Budget(scope)
    budget.on_alert(lambda alert: print(f"[{alert.level.value}] {alert.message}"))
    budget.check("gpt-4o", input_tokens=800, output_tokens=200)
    record = budget.record(
        session_id="user-123",
        model="gpt-4o",
        input_tokens=800,
        output_tokens=200,
    )
    print(f"Call cost: ${record.cost_usd:.4f}")
    print(budget.summary())
    out = capsys.readouterr().out
    assert "Call cost: $0.0040" in out
    summary = budget.summary()
    assert summary["session"] == {**summary["session"], "tokens": 1000, "cost_usd": 0.004}
    assert summary["scope"] == "my-session"
    assert set(summary) >= {"scope", "session", "day", "per_model"}


def test_readme_manager_verbatim():
    mgr = BudgetManager()
    mgr.register(BudgetScope(name="user-alice", max_cost_per_day_usd=2.00))
    mgr.register(BudgetScope(name="user-bob", max_cost_per_day_usd=5.00))
    mgr.record(
        "user-alice", session_id="s1", model="gpt-4o-mini", input_tokens=100, output_tokens=50
    )
    summaries = mgr.all_summaries()
    assert set(summaries) == {"user-alice", "user-bob"}
    assert summaries["user-alice"]["day"]["tokens"] == 150
    assert summaries["user-bob"]["day"]["tokens"] == 0


def test_readme_custom_rates_verbatim():
    custom_rates = {
        "my-custom-model": ModelRates(input_per_1k=0.001, output_per_1k=0.002),
    }
    scope = BudgetScope(name="s", max_cost_per_session_usd=10.0)
    budget = Budget(scope, rates=custom_rates)
    record = budget.record("x", "my-custom-model", 1000, 1000)
    assert record.cost_usd == 0.003
    assert record.cost_nanos == 3_000_000


# The original suite, test for test (numbering kept).


def test_01_model_rates_default():
    r = ModelRates()
    assert r.input_per_1k == 0.002
    assert r.output_per_1k == 0.002


def test_02_model_rates_known_model_today():
    r = ModelRates.for_model("gpt-4o")
    assert r.input_per_1k == pytest.approx(0.0025)
    assert r.output_per_1k == pytest.approx(0.010)


def test_03_model_rates_unknown_model_uses_defaults():
    assert ModelRates.for_model("some-unknown-model").input_per_1k == 0.002


def test_04_to_07_estimate_cost():
    assert ModelRates(input_per_1k=0.01, output_per_1k=0.03).estimate_cost(0, 0) == 0.0
    assert ModelRates(input_per_1k=1.0, output_per_1k=0.0).estimate_cost(1000, 0) == 1.0
    assert ModelRates(input_per_1k=0.0, output_per_1k=2.0).estimate_cost(0, 500) == 1.0
    assert ModelRates(input_per_1k=1.0, output_per_1k=2.0).estimate_cost(1000, 1000) == 3.0


def make_budget(**kwargs):
    return Budget(BudgetScope(**{"name": "test", "hard_stop": True, **kwargs}))


def test_08_record_creates_usage_record():
    rec = make_budget().record("s1", "gpt-4o-mini", 100, 50)
    assert isinstance(rec, UsageRecord)
    assert (rec.session_id, rec.model, rec.total_tokens) == ("s1", "gpt-4o-mini", 150)


def test_09_to_12_accumulation():
    b = make_budget()
    b.record("s1", "gpt-4o-mini", 100, 50)
    b.record("s1", "gpt-4o-mini", 200, 100)
    assert b.summary()["session"]["tokens"] == 450
    assert b.summary()["day"]["tokens"] == 450
    b2 = Budget(BudgetScope(name="t"), {"custom": ModelRates(input_per_1k=1.0, output_per_1k=0.0)})
    b2.record("s1", "custom", 1000, 0)
    assert b2.summary()["session"]["cost_usd"] == 1.0
    b3 = make_budget()
    b3.record("s1", "gpt-4o", 100, 50)
    b3.record("s1", "gpt-4o-mini", 200, 100)
    assert {"gpt-4o", "gpt-4o-mini"} <= set(b3.summary()["per_model"])


def test_13_to_15_records_reset_estimate():
    b = make_budget()
    b.record("s1", "gpt-4o-mini", 100, 50)
    b.record("s2", "gpt-4o-mini", 200, 100)
    assert len(b.records) == 2
    b.reset_session()
    assert b.summary()["session"]["tokens"] == 0
    assert b.summary()["session"]["cost_usd"] == 0.0
    b.estimate("gpt-4o-mini", 1000, 500)
    assert len(b.records) == 2


def test_16_session_token_hard_stop():
    b = make_budget(max_tokens_per_session=100)
    b.record("s1", "gpt-4o-mini", 50, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.record("s1", "gpt-4o-mini", 60, 0)
    assert exc_info.value.limit_type == "session_tokens"
    assert len(b.records) == 2, "the record that crossed the cap is kept"


def test_17_session_cost_hard_stop():
    scope = BudgetScope(name="t", max_cost_per_session_usd=0.5, hard_stop=True)
    b = Budget(scope, {"m": ModelRates(input_per_1k=1.0, output_per_1k=0.0)})
    b.record("s1", "m", 400, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.record("s1", "m", 200, 0)
    assert "session_cost" in exc_info.value.limit_type
    assert exc_info.value.used == pytest.approx(0.6)
    assert exc_info.value.limit == 0.5


def test_18_19_day_hard_stop():
    b = make_budget(max_tokens_per_day=100)
    b.record("s1", "gpt-4o-mini", 90, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.record("s1", "gpt-4o-mini", 20, 0)
    assert "day_tokens" in exc_info.value.limit_type
    b2 = Budget(
        BudgetScope(name="t", max_cost_per_day_usd=1.0),
        {"m": ModelRates(input_per_1k=1.0, output_per_1k=0.0)},
    )
    b2.record("s1", "m", 900, 0)
    with pytest.raises(BudgetExceededError):
        b2.record("s1", "m", 200, 0)


def test_20_model_token_hard_stop():
    b = Budget(BudgetScope(name="t", max_tokens_per_model={"gpt-4o": 100}))
    b.record("s1", "gpt-4o", 80, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.record("s1", "gpt-4o", 30, 0)
    assert "gpt-4o" in exc_info.value.limit_type


def test_21_no_hard_stop_allows_overrun():
    b = make_budget(max_tokens_per_session=50, hard_stop=False)
    b.record("s1", "gpt-4o-mini", 30, 0)
    assert b.record("s1", "gpt-4o-mini", 30, 0) is not None


def test_22_check_raises_prospectively():
    b = make_budget(max_tokens_per_session=100)
    b.record("s1", "gpt-4o-mini", 80, 0)
    with pytest.raises(BudgetExceededError):
        b.check("gpt-4o-mini", 30)
    assert b.summary()["session"]["tokens"] == 80


def test_23_to_27_alerts():
    alerts: list[BudgetAlert] = []
    b = make_budget(max_tokens_per_session=100, alert_at_pct=0.7, hard_stop=False)
    b.on_alert(alerts.append)
    b.record("s1", "gpt-4o-mini", 75, 0)
    assert any(a.level == AlertLevel.WARNING for a in alerts)
    alerts2: list[BudgetAlert] = []
    b2 = make_budget(max_tokens_per_session=100, hard_stop=False)
    b2.on_alert(alerts2.append)
    b2.record("s1", "gpt-4o-mini", 110, 0)
    assert any(a.level == AlertLevel.CRITICAL for a in alerts2)
    b3 = make_budget(max_tokens_per_session=100, alert_at_pct=0.5, hard_stop=False)
    b3.record("s1", "gpt-4o-mini", 60, 0)
    b3.record("s1", "gpt-4o-mini", 50, 0)
    assert len(b3.alerts) >= 2
    b4 = make_budget(name="myapp", max_tokens_per_session=50, hard_stop=False)
    b4.record("s1", "gpt-4o-mini", 60, 0)
    assert b4.alerts[-1].scope == "myapp"
    b5 = make_budget(max_tokens_per_session=100, alert_at_pct=0.0, hard_stop=False)
    b5.record("s1", "gpt-4o-mini", 50, 0)
    assert b5.alerts[0].pct == pytest.approx(0.5)


def test_28_to_32_manager():
    mgr = BudgetManager()
    mgr.register(BudgetScope(name="s1"))
    assert mgr.get("s1") is not None
    assert mgr.record("s1", "sess", "gpt-4o-mini", 100, 50).total_tokens == 150
    with pytest.raises(KeyError):
        mgr.record("nonexistent", "sess", "gpt-4o-mini", 100, 50)
    mgr.register(BudgetScope(name="a"))
    mgr.register(BudgetScope(name="b"))
    assert {"a", "b"} <= set(mgr.all_summaries())
    mgr.register(BudgetScope(name="to_remove"))
    assert mgr.remove("to_remove") is True
    assert mgr.get("to_remove") is None
    assert mgr.remove("to_remove") is False


def test_33_34_thread_safety():
    b = Budget(BudgetScope(name="concurrent", max_tokens_per_session=100000))
    errors: list[Exception] = []

    def worker():
        try:
            b.record("s1", "gpt-4o-mini", 10, 5)
        except Exception as e:  # pragma: no cover - failure path
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert b.summary()["session"]["tokens"] == 1500


def test_35_record_with_metadata():
    rec = make_budget().record("s1", "gpt-4o-mini", 100, 50, metadata={"request_id": "abc123"})
    assert rec.metadata["request_id"] == "abc123"


def test_names_and_fields_exist():
    err = BudgetExceededError("m", "s", "session_tokens", 1, 2)
    assert (err.scope, err.limit_type, err.used, err.limit) == ("s", "session_tokens", 1, 2)
    assert issubclass(BudgetWarning, UserWarning)
    alert = BudgetAlert("s", AlertLevel.WARNING, "m", 8, 10)
    assert alert.pct == 0.8
    scope = BudgetScope(name="x")
    assert scope.alert_at_pct == 0.8 and scope.hard_stop is True
    assert scope.max_tokens_per_model == {} and scope.max_cost_per_model_usd == {}


# -- check(): the original's prospective semantics ---------------------------------------------


def test_check_refusal_carries_the_prospective_total_as_used():
    """The original's check() raised with used = current use + the call's request; the
    breakdown is kept in requested and reserved."""
    b = make_budget(max_tokens_per_session=100)
    b.record("s1", "gpt-4o-mini", 80, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.check("gpt-4o-mini", 20, 10)
    err = exc_info.value
    assert (err.used, err.limit, err.requested, err.reserved) == (110, 100, 30, 0)
    assert err.limit_type == "session_tokens"
    assert "would reach 110" in str(err)


def test_check_refusal_on_a_cost_limit_is_prospective_too():
    scope = BudgetScope(name="t", max_cost_per_session_usd=0.5)
    b = Budget(scope, {"m": ModelRates(input_per_1k=1.0, output_per_1k=0.0)})
    b.record("s1", "m", 400, 0)
    with pytest.raises(BudgetExceededError) as exc_info:
        b.check("m", 200)
    assert exc_info.value.used == pytest.approx(0.6)
    assert exc_info.value.requested == pytest.approx(0.2)
    assert exc_info.value.limit == 0.5


def test_check_refusal_fires_a_critical_alert_with_the_prospective_use():
    b = make_budget(max_tokens_per_session=100)
    b.record("s1", "gpt-4o-mini", 80, 0)
    with pytest.raises(BudgetExceededError):
        b.check("gpt-4o-mini", 30)
    assert (b.alerts[-1].level, b.alerts[-1].used) == (AlertLevel.CRITICAL, 110)


def test_check_warns_when_the_prospective_use_crosses_alert_at_pct():
    alerts: list[BudgetAlert] = []
    b = make_budget(max_tokens_per_session=100, alert_at_pct=0.7)
    b.on_alert(alerts.append)
    b.record("s1", "gpt-4o-mini", 50, 0)
    assert alerts == []
    b.check("gpt-4o-mini", 25)  # would reach 75 of 100: fits, warns
    assert [(a.level, a.used, a.limit_type) for a in alerts] == [
        (AlertLevel.WARNING, 75, "session_tokens")
    ]
    assert alerts[0].pct == pytest.approx(0.75)
    assert b.summary()["session"]["tokens"] == 50, "check records nothing"


def test_check_on_a_soft_scope_alerts_critical_without_raising():
    b = make_budget(max_tokens_per_session=100, hard_stop=False)
    b.record("s1", "gpt-4o-mini", 80, 0)
    assert [a.level for a in b.alerts] == [AlertLevel.WARNING]  # 80 of 100 recorded
    b.check("gpt-4o-mini", 30)  # no raise: hard_stop=False
    assert [(a.level, a.used) for a in b.alerts[1:]] == [(AlertLevel.CRITICAL, 110)]


def test_check_below_the_threshold_is_silent():
    b = make_budget(max_tokens_per_session=100, alert_at_pct=0.8)
    b.check("gpt-4o-mini", 79)
    assert b.alerts == []


# -- the module the original suite imports -----------------------------------------------------


def test_agent_budget_core_holds_the_same_objects():
    for name in agent_budget.core.__all__:
        assert getattr(agent_budget.core, name) is getattr(agent_budget, name), name
    assert set(agent_budget.core.__all__) <= set(agent_budget.__all__)
    from agent_budget.core import RateTable, Usage  # the package's newer names too

    assert (RateTable, Usage) == (agent_budget.RateTable, agent_budget.Usage)
    with pytest.raises(ImportError):
        from agent_budget.core import NoSuchName  # noqa: F401
