"""One unknown-model policy on every path that needs a price: reserve, a commit answered by
another model, estimate, record, check and the command line. The default never charges an
unpriced model less than a model of its family or provider could cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from decimal import Decimal

import pytest

from agent_budget import (
    Budget,
    BudgetScope,
    BudgetWarning,
    ModelRates,
    RateTable,
    UnknownModelError,
    Usage,
)

UNKNOWN = "no-such-model-9"


def budget(policy: str = "warn", **table: object) -> Budget:
    return Budget(
        BudgetScope(name="u", max_cost_per_day_usd=10**6),
        RateTable(on_unknown=policy, **table),  # type: ignore[arg-type]
    )


def budget_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]


# -- raise: refused before anything is held or recorded ------------------------------------


def test_raise_refuses_reserve_record_estimate_and_check_changing_nothing() -> None:
    b = budget("raise")
    for call in (
        lambda: b.reserve(UNKNOWN, 10, 10),
        lambda: b.record("s", UNKNOWN, 10, 10),
        lambda: b.estimate(UNKNOWN, 10, 10),
        lambda: b.estimate_exact(UNKNOWN, 10, 10),
        lambda: b.check(UNKNOWN, 10, 10),
    ):
        with pytest.raises(UnknownModelError, match=UNKNOWN):
            call()
    assert b.usage() == {} and b.records == [] and b.alerts == []


def test_raise_commit_answered_by_an_expensive_model_is_charged_its_price() -> None:
    """The issue's case: reserve gpt-4o, the answer comes from o1-pro. It is priced as
    o1-pro ($150 / $600 per 1M), not silently as gpt-4o."""
    b = budget("raise")
    reservation = b.reserve("gpt-4o", 10_000, 10_000)
    record = b.commit(reservation, Usage(10_000, 10_000), model="o1-pro-2025-03-19")
    assert record.model == "o1-pro" and record.price_id == "openai:o1-pro"
    assert record.cost == Decimal("7.5")  # 10k * 150/1M + 10k * 600/1M


def test_raise_commit_answered_by_an_unpriced_model_is_recorded_at_the_fallback_loudly() -> None:
    """A commit records money already spent: it never raises, and never prices the answer
    as the (cheaper) requested model. It charges the fallback and warns."""
    b = budget("raise")
    reservation = b.reserve("gpt-4o-mini", 1000, 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = b.commit(reservation, Usage(1000, 1000), model="gpt-9-ultra-2099-01-01")
    mini = RateTable().resolve("gpt-4o-mini").rates.cost_nanos(Usage(1000, 1000))
    assert record.cost_nanos > 10 * mini
    assert record.price_source == "fallback" and record.model == "gpt-9-ultra"
    assert budget_warnings(caught) and "gpt-9-ultra-2099-01-01" in budget_warnings(caught)[0]
    assert [a.limit_type for a in b.alerts] == ["unknown_model"]
    assert b.usage()["session:cost"].committed == record.cost_nanos


# -- warn (default): one short warning and alert per model name, charged the fallback ---------


def test_warn_applies_on_every_path_once_per_model_name() -> None:
    b = budget()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate = b.estimate(UNKNOWN, 1000, 1000)
        reservation = b.reserve(UNKNOWN, 1000, 1000)
        b.commit(reservation, Usage(1000, 1000))
        b.record("s", UNKNOWN, 1000, 1000)
        b.check(UNKNOWN, 1000, 1000)
        other = b.reserve("gpt-4o", 10, 10)
        b.commit(other, Usage(10, 10), model="another-unknown")
    messages = budget_warnings(caught)
    assert len(messages) == 2, messages
    assert UNKNOWN in messages[0] and "another-unknown" in messages[1]
    assert all(len(m) < 300 and "ModelRates(" not in m for m in messages)
    assert [a.limit_type for a in b.alerts] == ["unknown_model", "unknown_model"]
    assert estimate > 0 and all(r.cost_nanos > 0 for r in b.records)


def test_the_default_fallback_holds_the_cap_for_the_family_and_provider() -> None:
    """An unknown OpenAI-looking model costs at least its family's dearest model; an
    unknown model of no recognisable provider the catalogue's highest rates."""
    table = RateTable(on_unknown="fallback")
    usage = Usage(100_000, 10_000)
    new_gpt5 = table.resolve("gpt-5.9-pro-2099-01-01")
    assert not new_gpt5.known and "gpt-5" in new_gpt5.how and "openai" in new_gpt5.how
    for known in ("gpt-5", "gpt-5-pro", "gpt-5.4-pro", "gpt-5-mini"):
        assert new_gpt5.rates.cost(usage) >= table.resolve(known).rates.cost(usage), known
    new_claude = table.resolve("claude-opus-9")
    assert new_claude.rates.cost(usage) >= table.resolve("claude-opus-4-1").rates.cost(usage)
    assert "claude-opus" in new_claude.how
    anything = table.resolve(UNKNOWN)
    assert "all models of the catalogue" in anything.how
    assert anything.rates.cost(usage) >= table.resolve("o1-pro").rates.cost(usage)
    # Its reservation holds every input token at the dearest input kind of any model.
    worst = anything.rates.worst_case_nanos(1000, 0)
    assert worst >= table.resolve("o1-pro").rates.worst_case_nanos(1000, 0)


def test_a_user_set_fallback_is_used_everywhere() -> None:
    mine = ModelRates.per_million("1", "2")
    b = budget(fallback=mine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert b.estimate_exact(UNKNOWN, 1_000_000, 0) == Decimal(1)
        record = b.record("s", UNKNOWN, 1_000_000, 1_000_000)
    assert record.cost == Decimal(3) and "fallback rates you set" in budget_warnings(caught)[0]
    reservation = b.reserve(UNKNOWN, 1_000_000, 0)
    assert reservation.cost_nanos == 10**9


def test_fallback_policy_is_silent() -> None:
    b = budget("fallback")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.record("s", UNKNOWN, 10, 10)
        b.commit(b.reserve("gpt-4o", 1, 1), Usage(1, 1), model="other-unknown")
    assert budget_warnings(caught) == [] and b.alerts == []


def test_for_model_keeps_the_original_default_for_unknown_names() -> None:
    assert ModelRates.for_model(UNKNOWN) == ModelRates()
    assert ModelRates.for_model("gpt-4o").input_per_1k == 0.0025


# -- the command line --------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "agent_budget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_estimate_refuses_by_default_and_can_charge_the_fallback() -> None:
    refused = cli("estimate", UNKNOWN, "--input", "1000")
    assert refused.returncode == 2 and UNKNOWN in refused.stderr
    warned = cli("estimate", UNKNOWN, "--input", "1000", "--on-unknown", "warn", "--json")
    assert warned.returncode == 0 and "no known price" in warned.stderr
    data = json.loads(warned.stdout)
    assert data["price_source"] == "fallback" and Decimal(data["cost_usd"]) > 0


def test_cli_rates_explains_an_unknown_name_and_fails() -> None:
    out = cli("rates", UNKNOWN)
    assert out.returncode == 1
    assert "no price" in out.stdout.lower() or "none" in out.stdout
    assert "highest rates" in out.stdout
