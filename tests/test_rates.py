"""Prices: the built-in catalogue, name normalisation, exact costs of every token kind and
fee, prompt-size and service tiers, and the unknown-model policy."""

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

_HERE = Path(__file__).resolve()
PRICING_NOTES = next(
    (
        p / "shared" / "notes" / "pricing.md"
        for p in _HERE.parents
        if (p / "shared" / "notes").is_dir()
    ),
    _HERE.parents[2] / "shared" / "notes" / "pricing.md",
)


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
def test_catalogue_matches_pricing_notes():
    rows = _notes_rows()
    assert len(rows) >= 24
    table = RateTable(on_unknown="raise")
    for model, (inp, cached, out) in rows.items():
        rates = table.resolve(model).rates
        assert rates.cost(Usage(1000, 0)) * 1000 == Decimal(inp), model
        assert rates.cost(Usage(0, 1000)) * 1000 == Decimal(out), model
        if cached is not None:
            assert rates.cost(Usage(1000, 0, 1000)) * 1000 == Decimal(cached), model


def test_every_row_is_dated_and_sourced_and_exact():
    rows = builtin_rates()
    assert len(rows) > 1500  # unique model ids; a model's own vendor wins a shared id
    for name, row in rows.items():
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", row.effective), name
        assert row.source.startswith("genai-prices ") and row.provider, name
        inp, out, _c, _w = row.rates._exact
        assert inp * 1000 == row.input_per_1m and out * 1000 == row.output_per_1m, name


def test_the_seed_models_are_priced():
    """Every model of the original table, and the seed's other built-ins, has a price."""
    table = RateTable(on_unknown="raise")
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "claude-3-opus",
        "claude-3-sonnet",
        "claude-3-haiku",
        "gemini-1.5-pro",
        "gemini-1.5-flash",
    ):
        assert table.resolve(model).known, model


def test_gpt4o_is_todays_price_and_launch_snapshot_is_dearer():
    table = RateTable()
    assert table.resolve("gpt-4o").rates.cost(Usage(1_000_000, 0)) == Decimal("2.5")
    launch = table.resolve("gpt-4o-2024-05-13")
    assert launch.rates.cost(Usage(1_000_000, 1_000_000)) == Decimal("20")
    assert launch.name == "gpt-4o" and launch.price_key == "gpt-4o-2024-05-13"
    assert launch.price_id == "openai:gpt-4o-2024-05-13" and launch.source.startswith("genai")


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
    resolved = table.resolve("gpt-9.9-20991211")
    assert not resolved.known and resolved.name == "gpt-9.9"
    assert resolved.rates.cost(Usage(1000, 0)) > 0


def test_unknown_model_warns_once_per_model_with_alert():
    b = Budget(BudgetScope(name="u"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.record("s", "my-azure-deployment", 10, 10)
        b.record("s", "my-azure-deployment", 10, 10)
        b.record("s", "other-unknown", 10, 10)
    budget_warnings = [w for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(budget_warnings) == 2
    message = str(budget_warnings[0].message)
    assert "my-azure-deployment" in message and "ModelRates(" not in message
    assert len(message) < 300
    assert [a.limit_type for a in b.alerts] == ["unknown_model", "unknown_model"]
    # Priced at the highest rates of the catalogue, not a flat $2 per 1M.
    ceiling = RateTable().resolve("my-azure-deployment").rates
    assert b.records[0].cost_nanos == ceiling.cost_nanos(Usage(10, 10)) > 40_000
    assert b.records[0].price_source == "fallback" and b.records[0].price_id.startswith("fallback")


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


def test_one_hour_cache_writes_reasoning_and_fees_have_their_own_rates():
    rates = ModelRates.per_million(
        "3",
        "15",
        "0.3",
        "3.75",
        cache_write_1h="6",
        reasoning="20",
        per_request="0.01",
        per_web_search="0.01",
    )
    usage = Usage(10_000, 2_000, 1_000, 3_000, 500, cache_write_1h_tokens=1_000, web_searches=2)
    # 6000 plain @3 + 1000 read @0.30 + 2000 5m writes @3.75 + 1000 1h writes @6
    # + 1500 output @15 + 500 reasoning @20, per 1M; + $0.01 request + 2 x $0.01 searches
    expected = (
        Decimal(6000) * 3
        + Decimal(1000) * Decimal("0.3")
        + Decimal(2000) * Decimal("3.75")
        + Decimal(1000) * 6
        + Decimal(1500) * 15
        + Decimal(500) * 20
    ) / 1_000_000 + Decimal("0.03")
    assert rates.cost(usage) == expected
    assert rates.cost_nanos(usage) == math.ceil(expected * 10**9)
    assert ModelRates.per_million("3", "15").cost(usage) == ModelRates.per_million(
        "3", "15", cache_write_1h="3", reasoning="15"
    ).cost(usage)


def test_defaults_of_the_new_rates_follow_the_old_ones():
    rates = ModelRates(0.001, 0.002, cache_write_per_1k=0.004)
    assert rates.cost(Usage(10, 10, 0, 10, 10, cache_write_1h_tokens=10)) == Decimal("0.00006")


def test_prompt_size_tiers_chain():
    top = ModelRates.per_million("4", "40")
    middle = ModelRates.per_million("2", "20", long_context_threshold=500, long_context=top)
    rates = ModelRates.per_million("1", "10", long_context_threshold=100, long_context=middle)
    assert rates.cost(Usage(100, 0)) == Decimal("0.0001")
    assert rates.cost(Usage(101, 0)) == Decimal(101) * 2 / 10**6
    assert rates.cost(Usage(501, 1)) == (Decimal(501) * 4 + 40) / 10**6
    assert [rates.tier_label(n) for n in (100, 101, 501)] == ["", "input>100", "input>500"]
    with pytest.raises(ValueError, match="higher"):
        ModelRates(long_context_threshold=600, long_context=middle)


def _usages(max_input: int, max_output: int):
    @st.composite
    def build(draw):
        inp = draw(st.integers(0, max_input))
        out = draw(st.integers(0, max_output))
        read = draw(st.integers(0, inp))
        write = draw(st.integers(0, inp - read))
        write_1h = draw(st.integers(0, write))
        reasoning = draw(st.integers(0, out))
        return Usage(inp, out, read, write, reasoning, write_1h)

    return build()


_ROWS = sorted(builtin_rates())


@given(name=st.sampled_from(_ROWS), usage=_usages(400_000, 100_000), data=st.data())
def test_worst_case_bounds_every_call_of_that_size_in_every_tier(name, usage, data):
    """A reservation for a prompt of ``input`` tokens and up to ``max_output`` tokens holds
    at least what the call can cost: any mix of cache reads, 5-minute and 1-hour writes and
    reasoning, at the prompt-size tier the prompt lands in, in the service tier the
    reservation was priced in."""
    resolved = RateTable(on_unknown="raise").resolve(name)
    tier = data.draw(st.sampled_from([None, "batch", "flex", "priority", "fast"]))
    rates = resolved.quote(1_800_000_000, tier).rates
    more_out = data.draw(st.integers(0, 1000))
    worst = rates.worst_case_nanos(usage.input_tokens, usage.output_tokens + more_out)
    assert rates.cost_nanos(usage) <= worst


@given(
    rates=st.sampled_from(_ROWS),
    usage=_usages(400_000, 100_000),
    searches=st.integers(0, 5),
)
def test_integer_pricing_equals_the_exact_decimal_price(rates, usage, searches):
    model = builtin_rates()[rates].rates
    usage = Usage(
        *[
            getattr(usage, f)
            for f in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
                "cache_write_1h_tokens",
            )
        ],
        web_searches=searches,
    )
    exact = model.cost(usage)
    assert model.cost_nanos(usage) == math.ceil(exact * 10**9)
    tier = model._tier(usage.input_tokens)
    inp, out, cached, write = tier._exact
    write_1h, reasoning, request, _search = tier._extra
    worst = (
        usage.input_tokens * max(inp, cached, write, write_1h)
        + usage.output_tokens * max(out, reasoning)
    ) / 1000 + request
    assert model.worst_case_nanos(usage.input_tokens, usage.output_tokens) == math.ceil(
        worst * 10**9
    )


def test_rates_that_are_not_whole_atto_dollars_take_the_decimal_path():
    odd = ModelRates(input_per_1k="0.0000000000000001", output_per_1k="1")
    assert odd._atto is None
    assert odd.cost_nanos(Usage(10**7, 0)) == 1  # 1e-12 USD, rounded up to one nano-dollar


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_per_1k": -1}, "input_per_1k"),
        ({"input_per_1k": float("nan")}, "input_per_1k"),
        ({"output_per_1k": float("inf")}, "output_per_1k"),
        ({"output_per_1k": "abc"}, "output_per_1k"),
        ({"cached_input_per_1k": True}, "cached_input_per_1k"),
        ({"long_context_threshold": 10}, "long_context"),
        ({"cache_write_1h_per_1k": -1}, "cache_write_1h_per_1k"),
        ({"per_request": "x"}, "per_request"),
        ({"per_web_search": -0.1}, "per_web_search"),
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
    with pytest.raises(TypeError, match="fallback"):
        RateTable(fallback=(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service_tier"):
        RateTable(service_tier=" ")
