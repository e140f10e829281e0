"""Prices: the built-in table, name normalisation, exact costs and the unknown-model policy."""

from __future__ import annotations

import math
import re
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_budget import (
    Budget,
    BudgetScope,
    BudgetWarning,
    ModelRates,
    RateTable,
    UnknownModelError,
    Usage,
    builtin_rates,
    normalize_model_name,
)

PRICING_NOTES = Path(__file__).resolve().parents[2] / "shared" / "notes" / "pricing.md"


def _notes_rows() -> dict[str, tuple[str, str | None, str]]:
    rows = {}
    for line in PRICING_NOTES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.match(r"^[0-9.]+$", cells[1] or ""):
            model, inp, cached, out = cells[0], cells[1], cells[2], cells[3]
            for name in model.split(" / "):
                name = name.strip()
                if name == "4.1":
                    name = "claude-opus-4-1"
                rows[name] = (inp, None if cached == "-" else cached, out)
    return rows


@pytest.mark.skipif(not PRICING_NOTES.exists(), reason="shared/notes not beside the checkout")
def test_builtin_table_matches_pricing_notes():
    rows = _notes_rows()
    assert len(rows) >= 24
    table = builtin_rates()
    for model, (inp, cached, out) in rows.items():
        assert model in table, model
        row = table[model]
        assert row.input_per_1m == Decimal(inp), model
        assert row.output_per_1m == Decimal(out), model
        if cached is not None:
            assert row.cached_input_per_1m == Decimal(cached), model


def test_every_row_is_dated_and_sourced_and_exact():
    for name, row in builtin_rates().items():
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", row.effective), name
        assert row.source, name
        inp, out, _c, _w = row.rates._exact
        assert inp * 1000 == row.input_per_1m and out * 1000 == row.output_per_1m, name


def test_gpt4o_is_todays_price_and_launch_snapshot_is_dearer():
    table = RateTable()
    assert table.resolve("gpt-4o").rates.cost(Usage(1_000_000, 0)) == Decimal("2.5")
    launch = table.resolve("gpt-4o-2024-05-13")
    assert launch.rates.cost(Usage(1_000_000, 1_000_000)) == Decimal("20")
    assert launch.name == "gpt-4o" and launch.price_key == "gpt-4o-2024-05-13"


@pytest.mark.parametrize(
    ("raw", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("GPT-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("anthropic/claude-3-haiku-20240307", "claude-3-haiku"),
        ("anthropic.claude-3-sonnet-20240229-v1:0", "claude-3-sonnet"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ],
)
def test_name_shapes_resolve_to_priced_family(raw, family):
    resolved = RateTable(on_unknown="raise").resolve(raw)
    assert resolved.known and resolved.name == family


def test_normalize_keeps_dated_names():
    assert normalize_model_name(" OpenAI/GPT-4o-2024-08-06 ") == "gpt-4o-2024-08-06"


def test_unknown_model_is_never_silently_free():
    table = RateTable()
    resolved = table.resolve("gpt-5.2-20251211")
    assert not resolved.known and resolved.name == "gpt-5.2"
    assert resolved.rates == ModelRates() and resolved.rates.cost(Usage(1000, 0)) > 0


def test_unknown_model_warns_once_per_model_with_alert():
    b = Budget(BudgetScope(name="u"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.record("s", "my-azure-deployment", 10, 10)
        b.record("s", "my-azure-deployment", 10, 10)
        b.record("s", "other-unknown", 10, 10)
    budget_warnings = [w for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(budget_warnings) == 2
    assert "my-azure-deployment" in str(budget_warnings[0].message)
    assert [a.limit_type for a in b.alerts] == ["unknown_model", "unknown_model"]
    assert b.records[0].cost_nanos == 40_000  # fallback ModelRates(): $0.002/1k


def test_unknown_model_raise_policy_changes_nothing():
    b = Budget(BudgetScope(name="u", max_tokens_per_session=10**6), RateTable(on_unknown="raise"))
    with pytest.raises(UnknownModelError, match="no-such-model"):
        b.reserve("no-such-model", 10, 10)
    with pytest.raises(UnknownModelError):
        b.record("s", "no-such-model", 10, 10)
    assert b.usage() == {} and b.records == []


def test_aliases_price_deployment_names():
    table = RateTable(aliases={"prod-chat": "gpt-4o-mini"}, on_unknown="raise")
    resolved = table.resolve("azure/prod-chat")
    assert resolved.known and resolved.rates == table.resolve("gpt-4o-mini").rates


def test_user_rates_override_builtins():
    mine = ModelRates.per_million("1", "2")
    table = RateTable({"gpt-4o": mine})
    assert table.resolve("gpt-4o-2024-08-06").rates is mine


def test_cache_and_reasoning_pricing_is_exact():
    rates = builtin_rates()["claude-3-5-sonnet"].rates
    usage = Usage(
        input_tokens=10_000,
        output_tokens=2_000,
        cache_read_tokens=6_000,
        cache_write_tokens=1_000,
        reasoning_tokens=500,
    )
    # 3000 uncached @3 + 6000 read @0.30 + 1000 write @3.75 + 2000 out @15, per 1M
    expected = (
        Decimal(3000) * 3
        + Decimal(6000) * Decimal("0.30")
        + Decimal(1000) * Decimal("3.75")
        + Decimal(2000) * 15
    ) / 1_000_000
    assert rates.cost(usage) == expected
    assert rates.cost_nanos(usage) == 44_550_000


def test_long_context_tier_reprices_whole_call():
    rates = builtin_rates()["claude-sonnet-4-5"].rates
    assert rates.cost(Usage(200_000, 0)) == Decimal("0.6")
    assert rates.cost(Usage(200_001, 1000)) == (Decimal(200_001) * 6 + 1000 * Decimal("22.5")) / (
        10**6
    )


def test_worst_case_covers_cache_writes():
    rates = builtin_rates()["claude-3-5-sonnet"].rates
    worst = rates.worst_case_nanos(1000, 100)
    assert worst >= rates.cost_nanos(Usage(1000, 100, cache_write_tokens=1000))
    assert worst >= rates.cost_nanos(Usage(1000, 100))


def test_costs_round_up_to_the_nano_dollar():
    rates = builtin_rates()["gemini-1.5-flash"].rates  # $0.075 / 1M = 75 nano per token
    assert rates.cost_nanos(Usage(1, 0)) == 75
    cached = Usage(1, 0, cache_read_tokens=1)  # $0.01875 / 1M = 18.75 nano
    assert rates.cost_nanos(cached) == 19


def test_no_float_drift_over_many_records():
    b = Budget(BudgetScope(name="d"), {"m": ModelRates(input_per_1k=0.0001, output_per_1k=0)})
    for _ in range(10_000):
        b.record("s", "m", 1, 0)  # $1e-7 each
    assert b.summary(exact=True)["session"]["cost_usd"] == Decimal("0.001")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_per_1k": -1}, "input_per_1k"),
        ({"input_per_1k": float("nan")}, "input_per_1k"),
        ({"output_per_1k": float("inf")}, "output_per_1k"),
        ({"output_per_1k": "abc"}, "output_per_1k"),
        ({"cached_input_per_1k": True}, "cached_input_per_1k"),
        ({"long_context_threshold": 10}, "long_context"),
    ],
)
def test_bad_rates_name_the_field(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ModelRates(**kwargs)


def test_bad_rate_tables():
    with pytest.raises(TypeError, match="rates"):
        RateTable({"m": (0.1, 0.2)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="on_unknown"):
        RateTable(on_unknown="ignore")  # type: ignore[arg-type]


@given(
    rates=st.sampled_from(sorted(builtin_rates())),
    inp=st.integers(0, 400_000),
    out=st.integers(0, 100_000),
    read=st.integers(0, 400_000),
    write=st.integers(0, 400_000),
)
def test_integer_pricing_equals_the_exact_decimal_price(rates, inp, out, read, write):
    model = builtin_rates()[rates].rates
    read = min(read, inp)
    write = min(write, inp - read)
    usage = Usage(inp, out, read, write)
    exact = model.cost(usage)
    assert model.cost_nanos(usage) == math.ceil(exact * 10**9)
    tier = model._tier(inp)
    worst = (inp * max(tier._exact[0], tier._exact[3]) + out * tier._exact[1]) / 1000
    assert model.worst_case_nanos(inp, out) == math.ceil(worst * 10**9)


def test_rates_that_are_not_whole_atto_dollars_take_the_decimal_path():
    odd = ModelRates(input_per_1k="0.0000000000000001", output_per_1k="1")
    assert odd._atto is None
    assert odd.cost_nanos(Usage(10**7, 0)) == 1  # 1e-12 USD, rounded up to one nano-dollar
