"""The shipped price catalogue against the maintained source it is generated from.

Every model of the installed genai-prices is priced by agent-budget exactly as
``genai_prices`` prices it, on probe calls across every price period (history), every
prompt-size tier and every request variant (batch, flex, priority), and every name the
source resolves resolves to the same model here. The file is what ``make prices`` would
write, carries its source, version and date, and ships the source's licence.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from agent_budget import RateTable, Usage
from agent_budget.catalogue import Catalogue, default_catalogue
from agent_budget.names import family_name

genai_prices = pytest.importorskip("genai_prices")
from genai_prices import Usage as GenaiUsage  # noqa: E402
from genai_prices import types as gtypes  # noqa: E402
from genai_prices.data import providers as GENAI_PROVIDERS  # noqa: E402
from genai_prices.data_snapshot import get_snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "core" / "agent_budget" / "data"
UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.snapshot_file()


def _names(model: gtypes.ModelInfo) -> set[str]:
    """A model's id and every name its match clause spells out exactly."""
    out = {model.id.lower()}

    def walk(clause: object) -> None:
        if isinstance(clause, gtypes.ClauseEquals):
            out.add(clause.equals.lower())
        for sub in getattr(clause, "or_", None) or ():
            walk(sub)

    walk(model.match)
    return out


def _row(catalogue: Catalogue, provider: gtypes.Provider, model: gtypes.ModelInfo):
    index = catalogue.provider_index(provider.id)
    assert index is not None
    row = catalogue.row(catalogue.providers[index].start + provider.models.index(model))
    assert (row.provider, row.id) == (provider.id, model.id)
    return row


def _times(model: gtypes.ModelInfo) -> list[dt.datetime]:
    """Now, long ago, and both sides of every date and time-of-day a price changes."""
    out = {NOW, dt.datetime(2024, 1, 1, tzinfo=UTC)}
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    for constraint in constraints:
        if isinstance(constraint, gtypes.StartDateConstraint):
            start = dt.datetime.combine(constraint.start_date, dt.time(0), UTC)
            out |= {start, start - dt.timedelta(seconds=1), start + dt.timedelta(hours=1)}
        elif isinstance(constraint, gtypes.TimeOfDateConstraint):
            for clock in (constraint.start_time, constraint.end_time):
                edge = dt.datetime.combine(NOW.date(), clock.replace(tzinfo=None), UTC)
                out |= {edge, edge - dt.timedelta(seconds=1)}
    return sorted(out)


def _thresholds(model: gtypes.ModelInfo) -> set[int]:
    prices = [model.prices] if isinstance(model.prices, gtypes.ModelPrice) else []
    prices += [c.prices for c in model.prices] if isinstance(model.prices, list) else []
    prices += [v.prices for v in model.price_variants or ()]
    return {
        tier.start
        for price in prices
        for value in vars(price).values()
        if isinstance(value, gtypes.TieredPrices)
        for tier in value.tiers
    }


def _probes(input_tokens: int) -> list[dict[str, int]]:
    return [
        {"input_tokens": input_tokens, "output_tokens": 700},
        {
            "input_tokens": input_tokens,
            "output_tokens": 700,
            "cache_read_tokens": input_tokens // 4,
            "cache_write_tokens": input_tokens // 5,
            "cache_write_1h_tokens": input_tokens // 10,
        },
        {
            "input_tokens": input_tokens,
            "output_tokens": 700,
            "output_reasoning_tokens": 300,
            "web_searches": 3,
        },
        {"input_tokens": input_tokens, "output_tokens": 0, "cache_read_tokens": input_tokens},
    ]


def _ours(probe: dict[str, int]) -> Usage:
    return Usage(
        probe["input_tokens"],
        probe["output_tokens"],
        probe.get("cache_read_tokens", 0),
        probe.get("cache_write_tokens", 0),
        probe.get("output_reasoning_tokens", 0),
        probe.get("cache_write_1h_tokens", 0),
        probe.get("web_searches", 0),
    )


def test_the_file_is_the_installed_source_version(catalogue: Catalogue) -> None:
    assert catalogue.source == "genai-prices"
    assert catalogue.version == genai_prices.__version__, "run make prices"
    assert dt.date.fromisoformat(catalogue.snapshot)
    assert catalogue.url.startswith("https://github.com/pydantic/genai-prices")
    assert len(catalogue) == sum(len(p.models) for p in GENAI_PROVIDERS) > 2000


def test_every_model_prices_as_the_source_across_periods_tiers_and_variants(
    catalogue: Catalogue,
) -> None:
    checked = 0
    for provider in GENAI_PROVIDERS:
        for model in provider.models:
            row = _row(catalogue, provider, model)
            thresholds = _thresholds(model)
            inputs = sorted({1000, 5000} | thresholds | {t + 1 for t in thresholds})
            contexts = [None] + [dict(v.when) for v in model.price_variants or ()]
            for when in _times(model):
                for context in contexts:
                    tier = (
                        None
                        if context is None
                        else ",".join(f"{k}={v}" for k, v in context.items())
                    )
                    quote = row.quote(when.timestamp(), tier)
                    for input_tokens in inputs:
                        for probe in _probes(input_tokens):
                            expected = model.calc_price(
                                GenaiUsage(**probe),
                                provider,
                                genai_request_timestamp=when,
                                price_context=context,
                            ).total_price
                            if quote is None:  # priced by audio hours, images ...
                                assert expected == 0, (provider.id, model.id)
                                continue
                            ours = quote.rates.cost(_ours(probe))
                            assert ours == expected, (provider.id, model.id, when, tier, probe)
                            checked += 1
    assert checked > 50_000


def test_every_name_the_source_resolves_in_a_provider_resolves_the_same(
    catalogue: Catalogue,
) -> None:
    snapshot = get_snapshot()
    compared = 0
    for provider in GENAI_PROVIDERS:
        for model in provider.models:
            for name in _names(model):
                try:
                    their_provider, theirs = snapshot.find_provider_model(
                        name, None, provider.id, None
                    )
                except LookupError:
                    continue
                found = catalogue.find(name, provider=provider.id)
                assert found is not None, (provider.id, name)
                assert found.row.id == theirs.id, (provider.id, name, found.how)
                own = any(theirs is m for m in their_provider.models)
                assert found.variants == own, (provider.id, name)
                compared += 1
    assert compared > 2000


def test_names_without_a_provider_resolve_as_the_source_or_to_a_longer_known_name(
    catalogue: Catalogue,
) -> None:
    """Where the source's own provider detection finds a model for a name, the same model
    prices it here; except where the source's vendor rule reaches a different model by a
    shorter prefix while another provider knows the name exactly (a longer known name is
    never cut down to a shorter one)."""
    snapshot = get_snapshot()
    owners: dict[str, set[tuple[str, str]]] = {}
    for provider in GENAI_PROVIDERS:
        for model in provider.models:
            for name in _names(model):
                owners.setdefault(name, set()).add((provider.id, model.id))
    same = longer = 0
    for name, owned_by in owners.items():
        found = catalogue.find(name)
        assert found is not None, name
        ours = (found.row.provider, found.row.id)
        try:
            their_provider, theirs = snapshot.find_provider_model(name, None, None, None)
        except LookupError:
            # The source finds no provider: a row that knows the name prices it, or the
            # same model family, or the rules of the provider its prefix names.
            named = catalogue.provider_index(name.split("/")[0]) if "/" in name else None
            assert (
                ours in owned_by
                or family_name(found.row.id) == family_name(name)
                or (named is not None and found.row.provider == catalogue.providers[named].id)
            ), (name, found.how)
            continue
        if found.row.id == theirs.id:
            same += 1
        else:
            assert ours in owned_by and (their_provider.id, theirs.id) not in owned_by, name
            assert family_name(theirs.id) != family_name(name), name
            longer += 1
    assert same > 700 and longer < 40


def test_the_generator_reproduces_the_shipped_file() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_prices.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_the_licence_notice_ships_beside_the_data() -> None:
    notice = (DATA / "genai-prices.LICENSE").read_text()
    assert "MIT License" in notice and "Pydantic Services Inc." in notice
    assert "prices.json" in notice
    doc = json.loads((DATA / "prices.json").read_text())
    assert doc["license"].startswith("MIT")


def test_the_catalogue_is_loaded_lazily_not_at_import() -> None:
    code = (
        "import sys, agent_budget, agent_budget.catalogue as c\n"
        "from agent_budget import Budget, BudgetScope, ModelRates\n"
        "Budget(BudgetScope(name='s'), {'m': ModelRates()}).record('s', 'm', 1, 1)\n"
        "print(c._default is None)\n"
        "Budget(BudgetScope(name='t')).record('s', 'gpt-4o', 1, 1)\n"
        "print(c._default is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_call_at_a_past_date_pays_the_price_then_in_force() -> None:
    """o3's input price fell from $10 to $2 per 1M on 2025-06-10: a call recorded with the
    budget's clock before that date is charged the old price, after it the new one."""
    table = RateTable(on_unknown="raise")
    resolved = table.resolve("o3-2025-04-16")
    before = dt.datetime(2025, 6, 9, 23, 59, tzinfo=UTC).timestamp()
    after = dt.datetime(2025, 6, 10, 0, 0, tzinfo=UTC).timestamp()
    usage = Usage(1_000_000, 0)
    assert resolved.quote(before).rates.cost(usage) == Decimal(10)
    assert resolved.quote(after).rates.cost(usage) == Decimal(2)
    assert resolved.quote(after).effective == "2025-06-10"

    from agent_budget import Budget, BudgetScope

    budget = Budget(BudgetScope(name="past"), table, clock=lambda: before)
    record = budget.record("s", "o3", 1_000_000, 0)
    assert record.cost_nanos == 10 * 10**9
    budget.clock = lambda: after
    assert budget.record("s", "o3", 1_000_000, 0).cost_nanos == 2 * 10**9


def test_a_time_of_day_price_follows_the_clock() -> None:
    """deepseek-chat's catalogue price is lower outside 00:30-16:30 UTC."""
    resolved = RateTable(on_unknown="raise").resolve("deepseek-chat")
    day = dt.datetime(2026, 12, 1, tzinfo=UTC)
    peak = resolved.quote((day + dt.timedelta(hours=12)).timestamp())
    off = resolved.quote((day + dt.timedelta(hours=20)).timestamp())
    edge = resolved.quote((day + dt.timedelta(hours=16, minutes=30)).timestamp())
    usage = Usage(1_000_000, 1_000_000)
    assert peak.rates.cost(usage) == Decimal("1.37")
    assert off.rates.cost(usage) == edge.rates.cost(usage) == Decimal("0.685")


def test_a_scheduled_price_change_is_picked_up_by_a_cached_name() -> None:
    """A resolved name caches its quote only until the next price change of its row."""
    rates = RateTable(on_unknown="raise").resolve("deepseek-v4-pro")
    first = rates.quote(dt.datetime(2026, 8, 16, 20, tzinfo=UTC).timestamp())
    later = rates.quote(dt.datetime(2026, 8, 17, 20, tzinfo=UTC).timestamp())
    assert first.rates != later.rates


def test_load_time_and_the_default_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    Catalogue.snapshot_file()
    assert time.perf_counter() - started < 5  # a sanity bound; speed is benchmarked
    assert default_catalogue() is default_catalogue()


def test_live_genai_prices_data_can_replace_the_snapshot() -> None:
    live = Catalogue.from_genai_prices()
    assert live.origin == "genai-prices" and "(live)" in live.label
    table = RateTable(catalogue=live, on_unknown="raise")
    resolved = table.resolve("claude-sonnet-4-5-20250929")
    assert resolved.source == live.label and resolved.price_key == "claude-sonnet-4-5"
    snap = RateTable(on_unknown="raise").resolve("claude-sonnet-4-5-20250929")
    assert resolved.rates == snap.rates


def test_the_environment_selects_live_data_without_code(tmp_path: Path) -> None:
    code = "from agent_budget import RateTable\nprint(RateTable().resolve('gpt-4o').source)\n"
    env = {"AGENT_BUDGET_PRICES": "genai-prices", "PATH": "/usr/bin:/bin"}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().endswith("(live)")
    copy = tmp_path / "prices.json"
    copy.write_text((DATA / "prices.json").read_text())
    env["AGENT_BUDGET_PRICES"] = str(copy)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == f"genai-prices {genai_prices.__version__}"
