"""The original agent-budget API keeps working: its README snippets verbatim and its tests.

The one deliberate change: built-in prices are today's (gpt-4o is $2.50 / $10 per 1M, not the
May-2024 launch price of $5 / $15 the original table carried).
"""

from __future__ import annotations

import threading

import pytest

from agent_budget import (
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
