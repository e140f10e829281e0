"""The agent-budget command line, driven as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_budget import BudgetManager, BudgetScope

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "agent_budget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_demo_shows_refusals_alerts_and_summary():
    out = cli("demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "REFUSED before the model ran" in text
    assert "ALERT [warning]" in text
    assert "session_cost_usd" in text and "day_cost_usd" in text
    assert "-- summary" in text


def test_rates_lists_dated_sourced_rows():
    out = cli("rates", "gpt-4o*")
    assert out.returncode == 0
    assert "gpt-4o-mini" in out.stdout and "openai" in out.stdout
    assert "sources: genai-prices" in out.stdout and "snapshot 20" in out.stdout
    rows = json.loads(cli("rates", "--json").stdout)
    assert {r["model"] for r in rows} >= {"gpt-4o", "claude-3-5-sonnet", "gemini-2.5-pro"}
    assert all(r["effective"] and r["source"] and r["provider"] for r in rows)
    assert cli("rates", "nothing-matches*").returncode == 1
    assert cli("rates", "nothing-matches").returncode == 1


def test_rates_model_shows_how_a_name_resolves_and_what_it_pays():
    out = cli("rates", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "family:    claude-sonnet-4-5" in text
    assert "aws:regional.anthropic.claude-sonnet-4-5-20250929-v1:0" in text
    assert "genai-prices" in text and "rule contains" in text
    assert "input $3.3" in text and "1h cache write $6.6" in text
    data = json.loads(cli("rates", "gpt-5.4", "--tier", "flex", "--json").stdout)
    assert data["price_id"] == "openai:gpt-5.4" and data["tier"] == "flex"
    assert data["rates_per_1m"]["input"] == "1.25" and data["rates_per_1m"]["above"] == 272000
    assert "service_tier=priority" in data["variants"]
    past = json.loads(cli("rates", "o3", "--at", "2025-06-01", "--json").stdout)
    assert past["rates_per_1m"]["input"] == "10"
    assert "history" in cli("rates", "o3").stdout


def test_estimate_exact_and_errors():
    out = cli("estimate", "gpt-4o-2024-08-06", "--input", "1000", "--output", "500", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["cost_usd"] == "0.0075" and data["model"] == "gpt-4o"
    unknown = cli("estimate", "no-such-model", "--input", "1")
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr
    negative = cli("estimate", "gpt-4o", "--input", "-3")
    assert negative.returncode == 2 and "negative" in negative.stderr


def test_estimate_every_token_kind_tier_and_overlay(tmp_path):
    out = cli(
        "estimate",
        "claude-sonnet-4-5",
        "--input",
        "100",
        "--cache-write",
        "3000",
        "--cache-write-1h",
        "2000",
        "--output",
        "50",
        "--web-searches",
        "3",
        "--json",
    )
    data = json.loads(out.stdout)
    assert data["cost_usd"] == "0.0468" and data["price_source"].startswith("genai-prices")
    batch = json.loads(
        cli("estimate", "gpt-5", "--input", "1000", "--tier", "batch", "--json").stdout
    )
    assert batch["cost_usd"] == "0.000625" and batch["price_tier"] == "batch"
    overlay = tmp_path / "acme.json"
    overlay.write_text(
        json.dumps({"source": "ACME", "models": {"gpt-4o": {"input": 1, "output": 1}}})
    )
    mine = json.loads(
        cli("estimate", "gpt-4o", "--input", "1000000", "--overlay", str(overlay), "--json").stdout
    )
    assert (mine["cost_usd"], mine["price_source"]) == ("1", "ACME")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    broken = cli("estimate", "gpt-4o", "--input", "1", "--overlay", str(bad))
    assert broken.returncode == 2 and "bad.json" in broken.stderr


@pytest.mark.parametrize(
    ("url", "needle"),
    [("nonsense", "malformed"), ("ftp://x", "unknown store scheme"), ("", "store URL")],
)
def test_report_bad_urls(url, needle):
    out = cli("report", "--store", url)
    assert out.returncode == 2 and needle in out.stderr


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.db'}"
    return request.getfixturevalue("redis_url")


def test_report_on_a_memory_store_is_empty_in_a_new_process():
    out = cli("report", "--store", "memory://")
    assert out.returncode == 0 and "no scopes" in out.stdout


def test_report_on_a_shared_store(store_url):
    url = store_url
    mgr = BudgetManager(store=url)
    mgr.register(BudgetScope(name="global", max_cost_per_day_usd=10))
    mgr.register(BudgetScope(name="team-a", max_tokens_per_day=10_000), parent="global")
    mgr.record("team-a", "s1", "gpt-4o", 1000, 500)
    mgr.reserve("team-a", "gpt-4o-mini", 100, 100)
    mgr.close()
    out = cli("report", "--store", url, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    limits = {(row["scope"], row["limit"]): row for row in data["limits"]}
    assert limits["team-a", "day_tokens"]["used"] == 1500
    assert limits["team-a", "day_tokens"]["reserved"] == 200
    assert limits["team-a", "day_tokens"]["unit"] == "tokens"
    assert limits["global", "day_cost_usd"]["used"] == "0.0075"
    assert limits["global", "day_cost_usd"]["unit"] == "USD"
    table = cli("report", "--store", url)
    assert table.returncode == 0 and "team-a" in table.stdout and "15.0%" in table.stdout
    missing = cli("report", "--store", url, "--scope", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_the_source_line_is_last_and_the_counts_agree_with_estimate():
    listing = cli("rates")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.rstrip().splitlines()
    assert any(line.startswith("* has prompt-size tiers") for line in lines)
    assert lines[-1].startswith("sources: genai-prices")
    shown = len(json.loads(cli("rates", "--json").stdout))
    assert f"({shown} distinct priced model ids)" in lines[-1]
    unknown = cli("estimate", "gpt-nonexistent-9", "--input", "1")
    assert unknown.returncode == 2
    assert f"lists the {shown} distinct priced model ids" in unknown.stderr
