"""Observability: reports over big ledgers, the dashboard's data endpoint, and what keeping a
ledger adds to a commit.

- Report over 10^6 ledger rows on SQLite (1,000 tenants, 10,000 sessions, 4 models, one
  day) and over 10^5 rows on Redis: ``build_report`` end to end (every breakdown, refusals,
  limits) next to a bare scan of the same rows (SQL ``COUNT/SUM``; ``XRANGE`` of every
  entry). Targets: under 2 s each.
- The dashboard's ``/api/report`` for 1,000 tenants (SQLite, 10^5 rows in the day), over
  HTTP from a real server, next to its ``/healthz``. Target: under 500 ms.
- A commit with the ledger against the same commit without it (the store told to keep no
  ledger), on memory, SQLite and Redis: CPU time per commit of this process (for Redis the
  server's time per call is reported too). Target: at most +10%.

Rows are written straight into each store's own ledger format (the statement or encoding
its commit uses), so filling a big ledger takes seconds, not hours of commits.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_budget import Budget, MemoryStore, Usage
from agent_budget.dashboard import DashboardServer
from agent_budget.report import build_report, open_for_reading
from agent_budget.stores import Store

from .bench_stores import _redis_binary, _RedisServer
from .harness import Table, bench_scope

__all__ = ["run"]

SMOKE_MARKS = ("slow",)
END = 1_800_000_000.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash")
REPORT_TARGET = 2.0
DASHBOARD_TARGET = 0.5
LEDGER_TARGET = 1.10


def _rows(count: int, tenants: int) -> Any:
    """``count`` ledger records over the day before END, spread over tenants and sessions."""
    rng = random.Random(7)
    for i in range(count):
        tenant = f"user:{rng.randrange(tenants):04d}"
        ts = END - 86_400 + 86_400 * (i + 0.5) / count
        yield {
            "timestamp": ts,
            "scope": tenant,
            "session_id": f"{tenant}-{rng.randrange(10)}",
            "model": MODELS[i % 4],
            "input_tokens": 800 + i % 3_000,
            "output_tokens": 50 + i % 700,
            "cache_read_tokens": (i % 5) * 100,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_nanos": 1_000 + i % 90_000,
            "estimated": i % 97 == 0,
            "price_source": "builtin:bench@2026-11-01",
            "reservation_id": f"r{i:x}",
            "metadata": {},
        }


def _registry(store: Store, tenants: int) -> None:
    """A global scope and ``tenants`` template-made tenant scopes, as managers record them."""
    store.save_scope("global", {"name": "global", "max_cost_per_day_usd": "5000", "parent": None})
    for t in range(tenants):
        name = f"user:{t:04d}"
        store.save_scope(
            name,
            {"name": name, "max_cost_per_day_usd": "25", "parent": "global", "template": "user:"},
        )


def fill_sqlite(path: str, count: int, tenants: int) -> None:
    from agent_budget.stores.sqlite_ledger import INSERT_RECORD, record_params

    store = Store.from_url(f"sqlite:///{path}")
    _registry(store, tenants)
    conn = store._conn()  # type: ignore[attr-defined]
    batch: list[tuple[Any, ...]] = []
    for record in _rows(count, tenants):
        batch.append(record_params(record["timestamp"], record["reservation_id"], record))
        if len(batch) == 50_000:
            conn.execute("BEGIN")
            conn.executemany(INSERT_RECORD, batch)
            conn.execute("COMMIT")
            batch = []
    conn.execute("BEGIN")
    conn.executemany(INSERT_RECORD, batch)
    conn.execute(
        "INSERT OR IGNORE INTO ab_ledger_marks (hour, first_id) "
        "SELECT CAST(ts / 3600 AS INTEGER), MIN(id) FROM ab_ledger GROUP BY 1"
    )
    conn.execute("COMMIT")
    store.close()


def fill_redis(url: str, count: int, tenants: int) -> None:
    import redis

    from agent_budget.stores.redis_ledger import encode_record

    store = Store.from_url(url)
    _registry(store, tenants)
    client = redis.Redis.from_url(url.split("?")[0])
    key = "ab:{global}:ledger"
    pipe = client.pipeline(transaction=False)
    for i, record in enumerate(_rows(count, tenants)):
        pipe.xadd(key, {"r": encode_record(record)}, id=f"{int(record['timestamp'] * 1000)}-*")
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()
    client.sadd("ab:groups", "global")
    client.close()
    store.close()


def _median_seconds(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU time of this process (every thread) for one run: the load-independent figure."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def _verdict(seconds: float, target: float) -> str:
    return f"{'met' if seconds < target else 'NOT met'} (target < {target:g} s)"


def report_sqlite(work: Path, count: int, rounds: int) -> list[str]:
    path = str(work / "report.db")
    fill_sqlite(path, count, 1_000)
    store = open_for_reading(f"sqlite:///{path}")
    since = END - 86_400

    def bare() -> object:
        return store._read(  # type: ignore[attr-defined]
            lambda c: c.execute(
                "SELECT COUNT(*), SUM(cost_nanos) FROM ab_ledger WHERE ts >= ?", (since,)
            ).fetchone()
        )

    def report() -> object:
        return build_report(store, since=since, until=END, now=END)

    full = _median_seconds(report, rounds)
    cpu = _cpu_seconds(report)
    floor = _median_seconds(bare, rounds)
    store.close()
    return [
        f"report over {count:,} rows, SQLite",
        f"{full:.2f} s ({cpu:.2f} s CPU)",
        f"{floor:.2f} s",
        f"{full / floor:.1f}",
        _verdict(full, REPORT_TARGET) if count >= 10**6 else "(quick run)",
    ]


def report_redis(url: str, count: int, rounds: int) -> list[str]:
    fill_redis(url, count, 1_000)
    store = open_for_reading(url)
    import redis

    client = redis.Redis.from_url(url.split("?")[0])

    def bare() -> int:
        n, low = 0, "-"
        while True:
            page = client.xrange("ab:{global}:ledger", low, "+", 5_000)
            n += len(page)
            if len(page) < 5_000:
                return n
            low = "(" + page[-1][0].decode()

    def report() -> object:
        return build_report(store, since=END - 86_400, until=END, now=END)

    full = _median_seconds(report, rounds)
    cpu = _cpu_seconds(report)
    floor = _median_seconds(bare, rounds)
    client.close()
    store.close()
    return [
        f"report over {count:,} rows, Redis",
        f"{full:.2f} s ({cpu:.2f} s CPU)",
        f"{floor:.2f} s",
        f"{full / floor:.1f}",
        _verdict(full, REPORT_TARGET) if count >= 10**5 else "(quick run)",
    ]


def dashboard(work: Path, count: int, rounds: int) -> list[str]:
    path = str(work / "dashboard.db")
    fill_sqlite(path, count, 1_000)
    with DashboardServer(f"sqlite:///{path}", port=0) as server:
        server.start()

        def get(target: str) -> bytes:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("GET", target)
            body = conn.getresponse().read()
            conn.close()
            return body

        query = f"/api/report?since={END - 86_400}&until={END}"
        assert len(json.loads(get(query))["limits"]) == 1_001
        full = _median_seconds(lambda: get(query), rounds)
        floor = _median_seconds(lambda: get("/healthz"), rounds)
    return [
        f"dashboard /api/report, 1,000 tenants, {count:,} rows",
        f"{full * 1000:.0f} ms",
        f"{floor * 1000:.1f} ms",
        f"{full / floor:.0f}",
        _verdict(full, DASHBOARD_TARGET) if count >= 10**5 else "(quick run)",
    ]


def _commit_cpu(budgets: dict[str, Budget], n: int, rounds: int) -> dict[str, float]:
    """CPU microseconds of this process per commit, per case, interleaved rounds."""
    usage = Usage(1_200, 350)
    samples: dict[str, list[float]] = {name: [] for name in budgets}
    names = list(budgets)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            budget = budgets[name]
            holds = [budget.reserve("gpt-4o-mini", 1_200, 400) for _ in range(n)]
            start = time.process_time()
            for hold in holds:
                hold.commit(usage)
            samples[name].append((time.process_time() - start) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def ledger_overhead(work: Path, redis_url: str | None, n: int, rounds: int) -> list[list[str]]:
    def without(store: Store) -> Store:
        store.keeps_ledger = False  # type: ignore[misc]  # the budget then sends no record
        return store

    makers: dict[str, Callable[[bool], Store]] = {
        "memory": lambda on: MemoryStore() if on else without(MemoryStore()),
        "sqlite": lambda on: (lambda s: s if on else without(s))(
            Store.from_url(f"sqlite:///{work / ('on.db' if on else 'off.db')}")
        ),
    }
    if redis_url:
        makers["redis"] = lambda on: (lambda s: s if on else without(s))(
            Store.from_url(f"{redis_url}?key_prefix={'on' if on else 'off'}")
        )
    rows = []
    for kind, make in makers.items():
        budgets = {"with": Budget(bench_scope(), store=make(True)),
                   "without": Budget(bench_scope(), store=make(False))}  # fmt: skip
        for budget in budgets.values():
            budget.reserve("gpt-4o-mini", 10, 10).commit()  # warm: tables, functions
        cpu = _commit_cpu(budgets, n, rounds)
        ratio = cpu["with"] / cpu["without"]
        note = ""
        if kind == "redis":
            note = _redis_server_side(redis_url or "", budgets, n)
        rows.append(
            [
                f"commit, {kind}",
                f"{cpu['with']:.1f} us",
                f"{cpu['without']:.1f} us",
                f"{ratio:.2f}",
                f"{'met' if ratio <= LEDGER_TARGET else 'NOT met'} (target <= "
                f"{LEDGER_TARGET:.2f}){note}",
            ]
        )
        for budget in budgets.values():
            budget.store.close()
    return rows


def _redis_server_side(url: str, budgets: dict[str, Budget], n: int) -> str:
    """Server CPU per commit call (INFO commandstats of FCALL), with and without."""
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    per_call = {}
    for name, budget in budgets.items():
        holds = [budget.reserve("gpt-4o-mini", 1_200, 400) for _ in range(n)]
        client.config_resetstat()
        for hold in holds:
            hold.commit(Usage(1_200, 350))
        stats = client.info("commandstats").get("cmdstat_fcall", {})
        per_call[name] = stats.get("usec_per_call", 0.0)
    client.close()
    if not per_call.get("without"):
        return ""
    return (
        f"; server {per_call['with']:.1f} vs {per_call['without']:.1f} us per commit call "
        f"({per_call['with'] / per_call['without']:.2f}x)"
    )


def run(quick: bool = False) -> list[Table]:
    sqlite_rows, redis_rows, dash_rows = (2_000, 1_000, 1_000) if quick else (10**6, 10**5, 10**5)
    rounds = 1 if quick else 3
    commits, commit_rounds = (200, 3) if quick else (3_000, 9)
    notes: list[str] = []
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ab-bench-obs-") as tmp:
        work = Path(tmp)
        binary = _redis_binary()
        server = _RedisServer(binary, work) if binary else None
        try:
            rows.append(report_sqlite(work, sqlite_rows, rounds))
            if server:
                rows.append(report_redis(server.url + "?key_prefix=ab", redis_rows, rounds))
            else:
                notes.append("Redis rows left out: no redis-server binary or redis-py.")
            rows.append(dashboard(work, dash_rows, rounds))
            overhead = ledger_overhead(work, server.url if server else None, commits, commit_rounds)
        finally:
            if server:
                server.stop()
    reads = Table(
        "Reports and the dashboard: time for the whole answer, next to a bare read of the rows",
        ["case", "time", "bare read", "x bare", "verdict"],
        rows,
        [
            *notes,
            f"Median of {rounds} runs (CPU: one run, every thread of this process). The report "
            "computes every breakdown (scope, model, session, hour), refusals, alerts and the "
            "limits of every scope; the bare read only counts the rows (SQLite) or fetches "
            "them (Redis XRANGE). The dashboard's page shows no sessions, so its endpoint "
            "skips that query.",
        ],
    )
    writes = Table(
        "Ledger writes: a commit with the ledger against the same commit without it",
        ["case", "with ledger", "without", "ratio", "verdict"],
        overhead,
        [
            f"CPU time of this process per commit (reserve not counted), median of "
            f"{commit_rounds} interleaved rounds of {commits}. Without: the store is told to "
            "keep no ledger (no record is built or sent).",
        ],
    )
    return [reads, writes]


def main() -> None:
    import sys

    for table in run(quick="--quick" in sys.argv):
        print(table.text())


if __name__ == "__main__":
    main()
