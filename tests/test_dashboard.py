"""``agent-budget dashboard``: the page in a real headless Chromium shows the store's numbers.

Spend is written by a separate process (``tests/spend_writer.py``) into SQLite and Redis;
the dashboard reads the store read-only; Chromium (driven by Playwright, the system binary)
loads the page, and every number checked on it must equal what the writer recorded and
what the store holds. The page refreshes itself: a later call shows up without a reload.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_budget.dashboard import DashboardServer
from agent_budget.report import open_for_reading

from .browser import headless_page
from .test_report import ROOT, run, usd, write_spend

pytestmark = pytest.mark.timeout(180)


def ready(page: Any, generation: int = 1) -> None:
    page.wait_for_function(
        "(n) => document.body.dataset.state === 'ready' && "
        "Number(document.body.dataset.generation) >= n",
        arg=generation,
        timeout=30_000,
    )


def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    parts = url.split("/")[2]
    host, port = parts.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.db'}"
    return str(request.getfixturevalue("redis_url"))


def test_the_page_shows_the_stores_numbers_and_refreshes(shared_url: str) -> None:
    import time

    end = time.time()
    truth = write_spend(shared_url, end)
    with DashboardServer(shared_url, port=0, refresh=1) as dashboard, headless_page() as page:
        page.goto(dashboard.start() + "?since=24h&bucket=hour")
        ready(page)
        total = page.get_attribute("#total-cost", "data-value")
        assert total == usd(truth["total_nanos"])
        assert page.text_content("#total-cost") == "$" + usd(truth["total_nanos"])
        assert page.get_attribute("#total-calls", "data-value") == str(truth["calls"])
        assert page.get_attribute("#total-refusals", "data-value") == str(truth["refused"])
        assert int(page.get_attribute("#total-alerts", "data-value")) > 0
        # Top spenders: each row's cost is exactly what the writer recorded for that scope.
        rows = page.eval_on_selector_all(
            "#spenders tbody tr[data-scope]",
            "rows => rows.map(r => [r.dataset.scope, r.querySelector('.cost').dataset.value])",
        )
        expected = sorted(truth["per_scope_nanos"].items(), key=lambda kv: -kv[1])[:10]
        assert rows == [[scope, usd(nanos)] for scope, nanos in expected]
        # The chart: its bars add up to the spend, per scope, as the store's ledger has it.
        bars = page.eval_on_selector_all(
            "#chart-scope svg rect",
            "bars => bars.map(b => [b.dataset.series, Number(b.dataset.costNanos)])",
        )
        assert sum(nanos for _, nanos in bars) == truth["total_nanos"]
        leader = expected[0][0]
        assert sum(n for s, n in bars if s == leader) == truth["per_scope_nanos"][leader]
        store = open_for_reading(shared_url)
        try:
            from_ledger = sum(row["cost_nanos"] for row in store.ledger(since=end - 86_400))
            assert from_ledger == truth["total_nanos"]
            counters = store.peek("global", now=store.now() or time.time(), group="global")
        finally:
            store.close()
        used = page.get_attribute(
            "#limits tr[data-scope='global'][data-limit='day_cost_usd'] .used", "data-value"
        )
        assert Decimal(used) == Decimal(counters["day:cost"].committed) / 10**9
        remaining = page.get_attribute(
            "#limits tr[data-scope='global'][data-limit='day_cost_usd'] .remaining", "data-value"
        )
        assert Decimal(remaining) == 1 - Decimal(used)
        assert page.locator("#refusals tbody tr[data-kind='refusal']").count() == min(
            truth["refused"], 20
        )
        # A call made now, by another process, appears at the next refresh.
        before = int(page.evaluate("document.body.dataset.generation"))
        more = write_spend(shared_url, time.time(), extra=3)
        ready(page, before + 2)
        total_after = page.get_attribute("#total-cost", "data-value")
        assert total_after == usd(truth["total_nanos"] + more["total_nanos"])


def test_the_token_guards_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    truth = write_spend(url, 1_800_000_000.0)
    secret = "s3cret-token-123"
    with DashboardServer(url, port=0, token=secret) as dashboard:
        page_url = dashboard.start()
        assert get(page_url, "/api/report")[0] == 401
        assert get(page_url, "/api/report?token=wrong-token-x")[0] == 401
        status, body = get(
            page_url,
            "/api/report?since=1800000000&until=1800000001",
            {"Authorization": f"Bearer {secret}"},
        )
        assert status == 200 and json.loads(body)["totals"]["calls"] == 0
        with headless_page(allow_errors=True) as page:  # the 401 is logged by the browser
            page.goto(page_url)
            page.wait_for_function("() => document.body.dataset.state === 'error'")
            assert "access token" in page.text_content("#error")
        with headless_page() as page:
            page.goto(page_url + f"?token={secret}&since=1799900000&until=1800000000")
            ready(page)
            assert page.get_attribute("#total-calls", "data-value") == str(truth["calls"])
    with pytest.raises(ValueError, match="access token"):
        DashboardServer(url, host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="8 characters"):
        DashboardServer(url, port=0, token="short")


def test_the_server_is_local_read_only_and_strict(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_spend(url, 1_800_000_000.0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with DashboardServer(url, port=0) as dashboard:
        page_url = dashboard.start()
        status, body = get(page_url, "/")
        assert status == 200 and b"<svg" not in body and b"/static/app.js" in body
        for asset in ("app.js", "style.css"):
            assert get(page_url, f"/static/{asset}")[0] == 200
        assert get(page_url, "/static/../__init__.py")[0] == 404
        assert get(page_url, "/healthz") == (200, b"ok")
        assert get(page_url, "/api/report", {"Host": "evil.example:80"})[0] == 403
        assert get(page_url, "/api/report?bucket=week")[0] == 400
        assert get(page_url, "/api/report?scope=nobody")[0] == 404
        host, port = page_url.split("/")[2].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/api/report", body=b"{}")
        assert conn.getresponse().status == 405
        conn.close()
        for _ in range(3):
            assert get(page_url, "/api/report")[0] == 200
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_command_serves_until_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_spend(url, 1_800_000_000.0)
    exposed = run("-m", "agent_budget", "dashboard", "--store", url, "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "access token" in exposed.stderr
    missing = run("-m", "agent_budget", "dashboard", "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert missing.returncode == 1 and "no SQLite store" in missing.stderr
    proc = _serve(url)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "agent-budget dashboard of" in line, line
        page_url = line.split(" on ")[1].split()[0]
        assert get(page_url, "/healthz") == (200, b"ok")
        assert get(page_url, "/api/report")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def _serve(url: str) -> subprocess.Popen[str]:
    """``agent-budget dashboard`` of ``url`` on a free port, in a real process."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent_budget", "dashboard", "--store", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_dashboard_leaves_the_directory_as_it_was(tmp_path: Path, stop: int) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_spend(url, 1_800_000_000.0)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == ["b.db"]
    proc = _serve(url)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        page_url = line.split(" on ")[1].split()[0]
        assert get(page_url, "/api/report")[0] == 200
        assert "b.db-wal" in {p.name for p in tmp_path.iterdir()}  # a reader is open
    finally:
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
