"""Further price sources and provenance: an overlay file (negotiated and private prices),
LiteLLM's price file, precedence over the catalogue, service tiers at reserve and commit,
and where every record says its price came from (records and the store's ledger)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from agent_budget import Budget, BudgetScope, ModelRates, RateTable, Usage
from agent_budget.price_sources import litellm_prices, load_prices, overlay_prices

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc).timestamp()

OVERLAY = {
    "source": "ACME contract",
    "date": "2026-11-01",
    "models": {
        "gpt-4o": {"input": "2.00", "output": "8.00", "cache_read": "1.00"},
        "llama-local": [
            {"input": 0, "output": 0},
            {"from": "2027-01-01", "input": "0.10", "output": "0.10"},
        ],
        "claude-sonnet-4-5": {
            "input": 3,
            "output": 15,
            "cache_write": 3.75,
            "cache_write_1h": 6,
            "tiers": [{"above": 200000, "input": 6, "output": 22.5}],
            "service_tiers": {"batch": {"input": 1.5, "output": 7.5}},
            "per_web_search": "0.01",
        },
    },
    "aliases": {"prod-chat": "gpt-4o"},
}

# A slice of LiteLLM's model_prices_and_context_window.json (USD per token).
LITELLM = {
    "sample_spec": {"input_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat"},
    "gpt-4o": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token_batches": 1.25e-06,
        "output_cost_per_token_batches": 5e-06,
        "input_cost_per_token_priority": 4.25e-06,
        "output_cost_per_token_priority": 1.7e-05,
        "search_context_cost_per_query": {
            "search_context_size_low": 0.03,
            "search_context_size_medium": 0.035,
            "search_context_size_high": 0.05,
        },
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "gemini/gemini-1.5-pro": {
        "input_cost_per_token": 1.25e-06,
        "output_cost_per_token": 5e-06,
        "input_cost_per_token_above_128k_tokens": 2.5e-06,
        "output_cost_per_token_above_128k_tokens": 1e-05,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "my-private-model": {
        "input_cost_per_token": 1e-07,
        "output_cost_per_token": 2e-07,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "dall-e-3": {"input_cost_per_pixel": 1e-08, "litellm_provider": "openai", "mode": "image"},
}


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_overlay_prices_win_over_the_catalogue_in_every_spelling(tmp_path: Path) -> None:
    table = RateTable(overlays=[write(tmp_path, "acme.json", OVERLAY)], on_unknown="raise")
    for spelling in ("gpt-4o", "openai/gpt-4o-2024-08-06", "prod-chat", "azure/gpt-4o"):
        resolved = table.resolve(spelling)
        assert resolved.source == "ACME contract" and resolved.source_date == "2026-11-01"
        assert resolved.rates.cost(Usage(1_000_000, 0)) == Decimal(2), spelling
    assert table.resolve("gpt-4o-mini").source.startswith("genai-prices")  # not overridden
    assert table.resolve("llama-local").price_id == "ACME contract:llama-local"


def test_your_rates_win_over_overlays() -> None:
    mine = ModelRates.per_million("1", "1")
    table = RateTable({"gpt-4o": mine}, overlays=[overlay_prices(OVERLAY)])
    assert table.resolve("gpt-4o").rates is mine


def test_overlay_history_tiers_and_service_tiers() -> None:
    table = RateTable(overlays=[overlay_prices(OVERLAY)], on_unknown="raise")
    local = table.resolve("llama-local")
    before = dt.datetime(2026, 12, 31, tzinfo=dt.timezone.utc).timestamp()
    after = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    assert local.quote(before).rates.cost(Usage(10**6, 0)) == 0
    assert local.quote(after).rates.cost(Usage(10**6, 0)) == Decimal("0.1")
    sonnet = table.resolve("claude-sonnet-4-5-20250929")
    assert sonnet.quote(NOW).rates.cost(Usage(200_001, 0)) == Decimal(200_001) * 6 / 10**6
    batch = sonnet.quote(NOW, "batch")
    assert batch.tier == "batch" and batch.rates.cost(Usage(10**6, 10**6)) == Decimal(9)
    usage = Usage(1000, 0, 0, 1000, 0, cache_write_1h_tokens=1000, web_searches=1)
    assert sonnet.quote(NOW).rates.cost(usage) == Decimal("0.016")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"models": {}}, "non-empty 'models'"),
        ({"models": {"m": {"input": "x"}}}, "not a number"),
        ({"models": {"m": {"input": -1, "output": 1}}}, "non-negative"),
        ({"models": {"m": {"output": 1, "inptu": 2}}}, "unknown price field 'inptu'"),
        ({"models": {"m": {"note": "no prices"}}}, "needs at least"),
        ({"models": {"m": {"input": 1, "tiers": [{"above": "big", "input": 2}]}}}, "'above'"),
        ({"models": {"m": {"input": 1, "from": "soon"}}}, "YYYY-MM-DD"),
    ],
)
def test_a_bad_overlay_is_refused_naming_the_problem(doc: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay_prices(doc, label="bad.json")


def test_litellm_price_file(tmp_path: Path) -> None:
    source = load_prices(write(tmp_path, "model_prices_and_context_window.json", LITELLM))
    assert source.label.startswith("litellm:") and len(source) == 3  # dall-e-3 is per pixel
    table = RateTable(overlays=[source], use_builtins=False, on_unknown="raise")
    gpt = table.resolve("gpt-4o-2024-08-06")
    assert gpt.rates.cost(Usage(10**6, 10**6, 10**6 // 2)) == Decimal("11.875")
    assert gpt.quote(NOW, "batch").rates.cost(Usage(10**6, 10**6)) == Decimal("6.25")
    assert gpt.quote(NOW, "priority").rates.cost(Usage(10**6, 10**6)) == Decimal("21.25")
    assert gpt.rates.cost(Usage(0, 0, web_searches=2)) == Decimal("0.1")  # dearest size
    pro = table.resolve("gemini/gemini-1.5-pro")
    assert pro.rates.cost(Usage(128_001, 0)) == Decimal(128_001) * Decimal("2.5") / 10**6
    assert table.resolve("my-private-model").rates.cost(Usage(10**6, 10**6)) == Decimal("0.3")


def test_litellm_file_from_a_mapping_needs_token_prices() -> None:
    with pytest.raises(ValueError, match="no token-priced models"):
        litellm_prices({"dall-e-3": LITELLM["dall-e-3"]})
    assert litellm_prices(LITELLM).find("GPT-4O") is not None


def test_records_and_the_ledger_say_where_each_price_came_from(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'b.db'}"
    models = {k: v for k, v in OVERLAY["models"].items() if k != "claude-sonnet-4-5"}
    overlay = overlay_prices({**OVERLAY, "models": models})
    table = RateTable({"mine": ModelRates.per_million(1, 1)}, overlays=[overlay])
    b = Budget(BudgetScope(name="p"), table, store=store, clock=lambda: NOW)
    catalogue = b.record("s", "claude-sonnet-4-5-20250929", 300_000, 10)
    assert catalogue.price_source.startswith("genai-prices ")
    assert catalogue.price_date == RateTable().catalogue.snapshot  # type: ignore[union-attr]
    assert catalogue.price_id == "anthropic:claude-sonnet-4-5"
    assert catalogue.price_tier == "standard, input>200000"
    overlay = b.record("s", "gpt-4o", 10, 10)
    assert (overlay.price_source, overlay.price_date, overlay.price_id) == (
        "ACME contract",
        "2026-11-01",
        "ACME contract:gpt-4o",
    )
    mine = b.record("s", "mine", 10, 10, service_tier="flex")
    assert (mine.price_source, mine.price_id, mine.price_tier) == (
        "rates=",
        "rates:mine",
        "standard",
    )
    batch = b.commit(b.reserve("claude-haiku-4-5", 100, 10, service_tier="batch"), Usage(100, 10))
    assert batch.price_tier == "batch"
    ledger = b.store.ledger(scope="p")  # type: ignore[attr-defined]
    assert [row["price_id"] for row in ledger] == [
        catalogue.price_id,
        overlay.price_id,
        "rates:mine",
        batch.price_id,
    ]
    assert ledger[0]["price_tier"] == "standard, input>200000"
    assert all(row["price_source"] and "price_date" in row for row in ledger)


def test_original_positional_usage_record_still_works() -> None:
    from agent_budget import UsageRecord

    record = UsageRecord("s", "gpt-4o", 10, 5, 0.001)
    assert (record.price_source, record.price_id, record.cache_write_1h_tokens) == ("", "", 0)


def test_service_tier_prices_the_hold_and_the_commit() -> None:
    b = Budget(BudgetScope(name="t"), RateTable(on_unknown="raise"), clock=lambda: NOW)
    standard = b.reserve("gpt-5", 10_000, 1_000)
    flex = b.reserve("gpt-5", 10_000, 1_000, service_tier="flex")
    priority = b.reserve("gpt-5", 10_000, 1_000, service_tier="priority")
    assert flex.cost_nanos * 2 == standard.cost_nanos == priority.cost_nanos // 2
    # The response's tier wins at commit; without one, the requested tier prices it.
    record = flex.commit(Usage(10_000, 1_000, service_tier="default"))
    assert record.price_tier == "default" and record.cost_nanos == standard.cost_nanos
    assert priority.commit(Usage(10_000, 1_000)).price_tier == "priority"
    table = RateTable(service_tier="priority")
    project_default = Budget(BudgetScope(name="p"), table, clock=lambda: NOW)
    assert project_default.reserve("gpt-5", 10_000, 1_000).cost_nanos == priority.cost_nanos
    assert project_default.reserve("gpt-5", 10_000, 1_000, service_tier="auto").cost_nanos == (
        priority.cost_nanos
    )


def _per_token(inp: float, out: float, provider: str) -> dict:
    return {
        "input_cost_per_token": inp / 1e6,
        "output_cost_per_token": out / 1e6,
        "litellm_provider": provider,
        "mode": "chat",
    }


# Issue 12 review: several providers' rows of one model in one LiteLLM file.
MANY_HOSTS = {
    "gpt-4o-2024-08-06": _per_token(2.5, 10, "openai"),
    "azure/gpt-4o-mini": _per_token(0.165, 0.66, "azure"),
    "openrouter/openai/gpt-4o-mini": _per_token(0.15, 0.6, "openrouter"),
    "ollama/llama3.1": _per_token(0, 0, "ollama"),
    "deepinfra/meta-llama/Llama-3.3-70B-Instruct-Turbo": _per_token(0.23, 0.40, "deepinfra"),
    "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo": _per_token(0.88, 0.88, "together_ai"),
}


def _litellm_file(tmp_path: Path, order: list[str]) -> Path:
    return write(
        tmp_path, f"litellm-{len(list(tmp_path.iterdir()))}.json", {k: MANY_HOSTS[k] for k in order}
    )


def _cost(table: RateTable, name: str) -> Decimal:
    return Decimal(table.resolve(name).rates.cost(Usage(10**6, 10**6)))


def test_a_litellm_row_of_another_provider_never_prices_a_name_the_catalogue_knows(
    tmp_path: Path,
) -> None:
    catalogue = RateTable(on_unknown="fallback")
    keys = list(MANY_HOSTS)
    for order in (keys, keys[::-1]):
        table = RateTable(overlays=[_litellm_file(tmp_path, order)], on_unknown="fallback")
        for name in (
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",  # the catalogue's together row
            "gpt-4o-mini",  # openai's, not azure's
            "openai/gpt-4o-mini",
            "gpt-4o-2024-05-13",  # its own catalogue row, not the file's gpt-4o-2024-08-06
        ):
            assert table.resolve(name).price_id == catalogue.resolve(name).price_id, name
            assert _cost(table, name) == _cost(catalogue, name), name
        # The file's own keys, spelled as the file spells them, still win.
        assert _cost(table, "azure/gpt-4o-mini") == Decimal("0.825")
        assert _cost(table, "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo") == Decimal(
            "1.76"
        )
        assert _cost(table, "ollama/llama3.1") == 0
        # A free local row never prices a call that does not name its provider.
        local = table.resolve("llama3.1")
        assert not local.known and _cost(table, "llama3.1") > 0


def test_a_litellm_family_fallback_is_the_dearest_row_whatever_the_file_order(
    tmp_path: Path,
) -> None:
    keys = list(MANY_HOSTS)
    seen = set()
    for order in (keys, keys[::-1]):
        table = RateTable(
            overlays=[_litellm_file(tmp_path, order)], use_builtins=False, on_unknown="fallback"
        )
        llama = table.resolve("Llama-3.3-70B-Instruct-Turbo")
        mini = table.resolve("gpt-4o-mini")
        seen.add((llama.price_key, mini.price_key))
        assert _cost(table, "Llama-3.3-70B-Instruct-Turbo") == Decimal("1.76")
        assert mini.price_key == "azure/gpt-4o-mini"  # the dearer of azure and openrouter
        assert "family" in mini.how
        # A call that names a provider never takes another provider's row.
        assert not table.resolve("openai/gpt-4o-mini").known
        assert not table.resolve("groq/llama-3.3-70b-instruct-turbo").known
        assert not table.resolve("llama3.1").known  # the free ollama row serves ollama only
        assert table.resolve("ollama/llama3.1-latest").known
        # An organisation prefix is not a provider: every host's row still serves it.
        org = table.resolve("meta-llama/Llama-3.3-70B-Instruct-Turbo")
        assert org.known and _cost(table, "meta-llama/Llama-3.3-70B-Instruct-Turbo") == Decimal(
            "1.76"
        )
    assert len(seen) == 1
