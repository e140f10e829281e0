"""``agent-budget report`` and the report API: another process's spend, read without writing.

A separate process (``tests/spend_writer.py``) makes a known day of calls on a SQLite file
and on a Redis server; the report, run as its own process, must show exactly what that
writer recorded: per scope, session, model and hour, refusals, alerts, and limits with
units. Nothing in the report comes from the reporting process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_budget import Budget, BudgetScope, MemoryStore, ModelRates, open_store
from agent_budget.report import build_report, descendants, parse_time, scope_registry
from agent_budget.report_render import render_csv, render_text

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "agent_budget", *args)


def write_spend(url: str, end: float = NOW, extra: int = 0) -> dict[str, Any]:
    """Run the writer in its own process; what it recorded."""
    out = run("-m", "tests.spend_writer", url, repr(end), str(extra))
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def usd(nanos: int) -> str:
    return str(Decimal(nanos) / 10**9)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.db'}"
    return str(request.getfixturevalue("redis_url")) + "?server_time=0"


def report_json(url: str, *args: str) -> dict[str, Any]:
    out = cli("report", "--store", url, "--json", "--until", repr(NOW), "--since", "1d", *args)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_a_second_process_sees_every_tenants_spend(shared_url: str) -> None:
    truth = write_spend(shared_url)
    report = report_json(shared_url)
    assert report["totals"]["calls"] == truth["calls"]
    assert report["totals"]["cost_nanos"] == truth["total_nanos"]
    assert report["totals"]["cost_usd"] == usd(truth["total_nanos"])
    by_scope = {row["scope"]: row["cost_nanos"] for row in report["by_scope"]}
    assert by_scope == truth["per_scope_nanos"]
    assert report["by_scope"][0]["cost_nanos"] == max(truth["per_scope_nanos"].values())
    assert {r["scope"]: r["parent"] for r in report["by_scope"]}["conv:ada-0"] == "user:ada"
    sessions = {row["session_id"]: row["cost_nanos"] for row in report["by_session"]}
    assert sessions == truth["per_session_nanos"]
    assert sum(r["cost_nanos"] for r in report["by_model"]) == truth["total_nanos"]
    assert sum(r["cost_nanos"] for r in report["series_by_scope"]) == truth["total_nanos"]
    assert len({r["bucket"] for r in report["series_by_scope"]}) > 10  # hourly over 20 hours
    assert all(r["bucket"] % 3600 == 0 for r in report["series_by_scope"])
    assert report["refusals"]["count"] == truth["refused"] > 0
    assert report["alerts"]["count"] > 0
    limits = {(row["scope"], row["limit"]): row for row in report["limits"]}
    glob = limits["global", "day_cost_usd"]
    assert (glob["unit"], glob["window"], glob["limit_value"]) == ("USD", "rolling 24h", "1")
    assert glob["used"] == usd(truth["total_nanos"])
    assert Decimal(glob["remaining"]) == 1 - Decimal(glob["used"])
    conv = limits["conv:ada-0", "session_tokens"]
    assert (conv["unit"], conv["window"], conv["limit_value"]) == ("tokens", "session", 50_000)
    assert ("user:ada", "day_cost_usd") in limits  # template-made scopes, from the registry


def test_report_narrows_and_rolls_up(shared_url: str) -> None:
    truth = write_spend(shared_url)
    ada = {s: n for s, n in truth["per_scope_nanos"].items() if "ada" in s}
    narrowed = report_json(shared_url, "--scope", "user:ada")
    assert narrowed["totals"]["cost_nanos"] == sum(ada.values())  # with its conversations
    assert {r["scope"] for r in narrowed["limits"]} == {"user:ada", "global"}
    rolled = report_json(shared_url, "--rollup", "user:")
    per_user: dict[str, int] = {}
    for scope, nanos in truth["per_scope_nanos"].items():
        user = scope if scope.startswith("user:") else "user:" + scope[5:].split("-")[0]
        per_user[user] = per_user.get(user, 0) + nanos
    assert {r["scope"]: r["cost_nanos"] for r in rolled["by_scope"]} == per_user
    one_model = report_json(shared_url, "--model", "large")
    assert {r["model"] for r in one_model["by_model"]} == {"large"}
    daily = report_json(shared_url, "--bucket", "day", "--since", "2d")
    assert {r["bucket"] % 86_400 for r in daily["series_by_scope"]} == {0}


def test_report_text_and_csv(shared_url: str) -> None:
    truth = write_spend(shared_url)
    text = cli("report", "--store", shared_url, "--until", repr(NOW), "--since", "24h")
    assert text.returncode == 0, text.stderr
    for needle in ("spend per scope", "spend per model", "top sessions", "spend per hour (USD)",
                   "recent refusals", "recent alerts", "limits", "rolling 24h", "USD", "tokens",
                   "user:ada", usd(truth["total_nanos"])):  # fmt: skip
        assert needle in text.stdout, needle
    out = cli("report", "--store", shared_url, "--until", repr(NOW), "--csv", "--by", "model")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["model"] for r in rows} == {"large", "small"}
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(usd(truth["total_nanos"]))
    hours = cli("report", "--store", shared_url, "--until", repr(NOW), "--csv", "--by", "hour")
    series = list(csv.DictReader(io.StringIO(hours.stdout)))
    assert series and all(r["bucket_iso"].endswith(":00:00Z") for r in series)
    limits = cli("report", "--store", shared_url, "--until", repr(NOW), "--by", "limits")
    assert "remaining" in limits.stdout and "global" in limits.stdout


def test_report_errors_and_exit_codes(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    out = cli("report", "--store", f"sqlite:///{missing}")
    assert out.returncode == 1 and "no SQLite store" in out.stderr
    assert list(tmp_path.iterdir()) == []  # reading never creates a database
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_spend(url)
    unknown = cli("report", "--store", url, "--scope", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    bad_time = cli("report", "--store", url, "--since", "yesterday-ish")
    assert bad_time.returncode == 2 and "cannot read the time" in bad_time.stderr
    empty = cli("report", "--store", url, "--since", "1h", "--until", "2h")
    assert empty.returncode == 2 and "period is empty" in empty.stderr
    too_many = cli("report", "--store", url, "--since", "3650d")
    assert too_many.returncode == 2 and "too many" in too_many.stderr


def test_report_writes_nothing_to_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_spend(url)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args in ((), ("--json",), ("--csv", "--by", "session")):
        assert cli("report", "--store", url, *args).returncode == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.redis
def test_report_loads_no_code_on_redis(redis_server_factory: Any) -> None:
    import redis

    redis_url = redis_server_factory().url  # a private server: no other client touches it
    url = redis_url + "?server_time=0"
    truth = write_spend(url)
    admin = redis.Redis.from_url(redis_url)
    admin.function_flush()
    admin.script_flush()
    report = report_json(url)
    assert report["totals"]["cost_nanos"] == truth["total_nanos"]
    assert admin.function_list() == []
    assert admin.info("commandstats").get("cmdstat_script|load") is None
    admin.close()


# -- the Python API (one process) ------------------------------------------------------------


def test_parse_time() -> None:
    assert parse_time("24h", NOW) == NOW - 86_400
    assert parse_time("90m", NOW) == NOW - 5_400
    assert parse_time("2w", NOW) == NOW - 14 * 86_400
    assert parse_time("2027-01-15", NOW) == 1_800_000_000.0 - 1_800_000_000 % 86_400
    assert parse_time("2027-01-15T08:00:00+01:00", NOW) == parse_time("2027-01-15T07:00Z", NOW)
    assert parse_time("1234.5", NOW) == 1234.5 and parse_time(None, NOW) is None
    with pytest.raises(ValueError, match="cannot read the time"):
        parse_time("soon", NOW)


def test_build_report_on_a_memory_store() -> None:
    rates = {"m": ModelRates(input_per_1k=1, output_per_1k=1)}
    clock = [NOW - 7200.0]
    store = MemoryStore()
    glob = Budget(BudgetScope("global", max_tokens_per_day=1_000), rates, store=store,
                  clock=lambda: clock[0])  # fmt: skip
    team = Budget(BudgetScope("team:a"), rates, parent=glob, clock=lambda: clock[0])
    team.record("s1", "m", 100, 50)
    clock[0] += 3600
    glob.record("s2", "m", 10, 5)
    report = build_report(store, now=NOW, top=1)
    assert report["totals"]["tokens"] == 165 and report["totals"]["calls"] == 2
    assert [r["scope"] for r in report["top_spenders"]] == ["team:a"]
    assert {r["scope"] for r in report["series_by_scope"]} == {"team:a", "(other)"}
    assert report["limits"][0]["used"] == 165 and report["limits"][0]["remaining"] == 835
    assert descendants(["global"], scope_registry(store)) == {"global", "team:a"}
    assert "team:a" in render_text(report)
    assert render_csv(report, "scope").splitlines()[0].startswith("scope,parent,calls")
    with pytest.raises(ValueError, match="bucket"):
        build_report(store, bucket="week")
    with pytest.raises(ValueError, match="top"):
        build_report(store, top=0)


REFUSED_ONLY = """
import sys
from agent_budget import BudgetExceededError, BudgetManager, BudgetScope
mgr = BudgetManager(store=sys.argv[1])
mgr.register(BudgetScope(name="global", max_cost_per_day_usd=200))
mgr.add_template("user:", BudgetScope(name="user:", max_tokens_per_day=5_000), parent="global")
mgr.record("user:ok", "c1", "gpt-4o-mini", 3000, 100)
for _ in range(3):
    try:
        mgr.get("user:blocked").reserve("gpt-4o", 9_000, 100)
    except BudgetExceededError:
        pass
    else:
        raise SystemExit("user:blocked was not refused")
mgr.close()
"""


def test_a_tenant_whose_every_call_was_refused_is_a_known_scope(shared_url: str) -> None:
    out = run("-c", REFUSED_ONLY, shared_url)
    assert out.returncode == 0, out.stderr
    listed = run(
        "-c",
        "import sys; from agent_budget import BudgetManager\n"
        "m = BudgetManager(store=sys.argv[1]); print(sorted(m.scopes())); m.close()",
        shared_url,
    )
    assert listed.stdout.split() == ["['global',", "'user:blocked',", "'user:ok']"], listed.stderr
    report = json.loads(cli("report", "--store", shared_url, "--json").stdout)
    limits = {(r["scope"], r["limit"]): r for r in report["limits"]}
    assert limits["user:blocked", "day_tokens"]["limit_value"] == 5_000
    assert limits["user:blocked", "day_tokens"]["used"] == 0
    narrowed = cli("report", "--store", shared_url, "--scope", "user:blocked", "--json")
    assert narrowed.returncode == 0, narrowed.stderr
    blocked = json.loads(narrowed.stdout)
    assert blocked["refusals"]["count"] == 3
    assert {r["scope"] for r in blocked["limits"]} == {"user:blocked", "global"}
    registry = run(
        "-c",
        "import sys; from agent_budget import open_store\n"
        "from agent_budget.report import scope_registry\n"
        "s = open_store(sys.argv[1]); info = scope_registry(s)['user:blocked']\n"
        "print(info.parent, info.template); s.close()",
        shared_url,
    )
    assert registry.stdout.split() == ["global", "user:"], registry.stderr


OLD_REFUSAL = {
    "kind": "refusal",
    "scope": "user:ok",
    "caller": "user:ok",
    "limit_type": "day_tokens",
    "level": "critical",
    "message": "m",
    "model": "gpt-4o",
    "session_id": "old",
    "used": 4100.0,
    "limit": 5000.0,
    "unit": "tokens",
}


def test_token_amounts_of_refusals_and_alerts_are_whole_numbers(shared_url: str) -> None:
    out = run("-c", REFUSED_ONLY, shared_url)
    assert out.returncode == 0, out.stderr
    raw = run(
        "-c",
        "import sys; from agent_budget import open_store\n"
        "s = open_store(sys.argv[1], read_only=True)\n"
        "for e in s.events():\n"
        "    print(e['kind'], e['unit'], type(e['used']).__name__, type(e['limit']).__name__)\n"
        "s.close()",
        shared_url,
    )
    rows = [line.split() for line in raw.stdout.splitlines()]
    assert rows and all(r[1] == "tokens" for r in rows), raw.stderr
    assert {(r[2], r[3]) for r in rows} == {("int", "int")}
    # A row written as floats (before tokens were kept whole) reads back whole too.
    old = {**json.loads(json.dumps(OLD_REFUSAL)), "timestamp": time.time()}
    if shared_url.startswith("sqlite"):
        with sqlite3.connect(shared_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "INSERT INTO ab_events (ts, kind, scope, caller, event) VALUES (?, ?, ?, ?, ?)",
                (old["timestamp"], "refusal", "user:ok", "user:ok", json.dumps(old)),
            )
        conn.close()
    else:
        store = open_store(shared_url)
        store.client.xadd(store._base("global") + "events", {"e": json.dumps(old)})  # type: ignore[attr-defined]
        store.close()
    csv_out = cli("report", "--store", shared_url, "--by", "refusals", "--csv")
    assert csv_out.returncode == 0, csv_out.stderr
    table = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert {(r["used"], r["limit"]) for r in table} == {("0", "5000"), ("4100", "5000")}
    as_json = json.loads(cli("report", "--store", shared_url, "--json").stdout)
    assert all(isinstance(e["used"], int) for e in as_json["refusals"]["recent"])
