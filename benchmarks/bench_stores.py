"""Stores: reserve+commit pairs per second on memory, SQLite and Redis, 1 and 8 processes.

Each store runs the same Budget (four caps: session and day, tokens and USD; one reserve
then one commit per pair) and, below it, the bare store calls with prebuilt lines. Next to
them, the raw ceiling measured in the same run: for SQLite a bare ``BEGIN IMMEDIATE;
INSERT ... ON CONFLICT DO UPDATE; COMMIT`` transaction on a file with the same pragmas, for
Redis a bare ``EVALSHA`` of ``return 1`` (one round trip). A pair is two operations, so the
ceiling for a pair is two bare transactions or round trips. Redis runs one FCALL per
operation (one EVALSHA on servers without functions). Between the two, the "redis floor"
row runs ``redis_floor.lua``: the commands any idempotent reserve/commit with expiring
holds must run and nothing else, so the store's distance from it is the cost of its
features and code, and the floor's distance from the bare script is the cost of the work.
The case starts its
own redis-server on a free loopback port (the Redis rows are left out, with a note, when no
redis-server binary exists). Memory cannot be shared between processes, so its "8" rows
are 8 threads on one MemoryStore.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_budget import Budget, MemoryStore, Usage
from agent_budget.rates import RateTable
from agent_budget.scope import Metric
from agent_budget.stores import Line, Store

from .harness import BIG, Table, bench_scope, interleaved

__all__ = ["run"]

MODEL = "gpt-4o-mini"
IN_TOKENS, MAX_OUT, OUT_TOKENS = 1200, 400, 350
PROCESSES = 8
REDIS_RATE_TARGET = 0.6  # issue 18: the store at least 0.6x the bare EVALSHA rate
REDIS_SERVER_TARGET = 15.0  # issue 18: server time at most 15x a bare one-key script
SQLITE_TARGET = 0.3  # issue 18: the Budget at least 0.3x the bare transaction loop
FLOOR_LUA = Path(__file__).with_name("redis_floor.lua")
START = 1_800_000_000.0


# -- what one pair is, at each level -------------------------------------------------------------


def _lines() -> tuple[list[Line], list[Line]]:
    """The lines Budget sends for one call: four capped on reserve, six on commit."""
    rates = RateTable().resolve(MODEL).rates
    worst = rates.worst_case_nanos(IN_TOKENS, MAX_OUT)
    cost = rates.cost_nanos(Usage(IN_TOKENS, OUT_TOKENS))
    tokens = IN_TOKENS + MAX_OUT
    used = IN_TOKENS + OUT_TOKENS
    reserve = [
        Line("bench", Metric.SESSION_TOKENS, tokens, BIG),
        Line("bench", Metric.SESSION_COST, worst, BIG),
        Line("bench", Metric.DAY_TOKENS, tokens, BIG),
        Line("bench", Metric.DAY_COST, worst, BIG),
    ]
    commit = [
        Line("bench", Metric.SESSION_TOKENS, used),
        Line("bench", Metric.SESSION_COST, cost),
        Line("bench", Metric.DAY_TOKENS, used),
        Line("bench", Metric.DAY_COST, cost),
        Line("bench", Metric.model_tokens(MODEL), used),
        Line("bench", Metric.model_cost(MODEL), cost),
    ]
    return reserve, commit


def budget_pairs(store: Store) -> Callable[[int], None]:
    """``op(k)``: k reserve+commit pairs through a Budget on ``store``."""
    budget = Budget(bench_scope(), store=store, hold_ttl=600)
    usage = Usage(IN_TOKENS, OUT_TOKENS)

    def op(k: int) -> None:
        for _ in range(k):
            budget.commit(budget.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

    return op


def store_pairs(store: Store) -> Callable[[int], None]:
    """``op(k)``: k reserve+commit pairs straight on the store, prebuilt lines."""
    reserve, commit = _lines()

    def op(k: int) -> None:
        for _ in range(k):
            hold = uuid.uuid4().hex
            now = time.time()
            store.reserve(hold, reserve, now=now, ttl=600, group="bench")
            store.commit(hold, commit, now=now, group="bench")

    return op


def sqlite_bare(path: str) -> Callable[[int], None]:
    """``op(k)``: 2k bare upsert transactions (the SQLite ceiling for k pairs)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bare (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID"
    )
    sql = "INSERT INTO bare (k, v) VALUES ('x', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1"

    def op(k: int) -> None:
        for _ in range(2 * k):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql)
            conn.execute("COMMIT")

    return op


def redis_bare(url: str) -> Callable[[int], None]:
    """``op(k)``: 2k bare EVALSHA round trips (the Redis ceiling for k pairs)."""
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    sha = client.script_load("return 1")

    def op(k: int) -> None:
        for _ in range(2 * k):
            client.evalsha(sha, 1, "ab:{bench}:bare")

    return op


def redis_floor(url: str) -> Callable[[int], None]:
    """``op(k)``: k reserve+commit pairs of the lean floor functions (``redis_floor.lua``),
    with the lines the store sends."""
    import redis

    from agent_budget.stores.redis_code import encode_lines

    client = redis.Redis.from_url(url.split("?")[0])
    client.function_load(FLOOR_LUA.read_text("utf-8"), replace=True)
    reserve, commit = _lines()
    reserve_json = encode_lines(reserve, limits=True)
    commit_json = encode_lines(commit, limits=False)
    base = "floor:{bench}:"

    def op(k: int) -> None:
        for _ in range(k):
            hold = uuid.uuid4().hex
            now = repr(time.time())
            client.fcall("floor_reserve", 1, base, now, hold, reserve_json)
            client.fcall("floor_commit", 1, base, now, hold, commit_json)

    return op


def _make(kind: str, target: str) -> Callable[[int], None]:
    """Build one measured operation by name (also in spawned worker processes)."""
    if kind == "sqlite bare":
        return sqlite_bare(target)
    if kind == "redis bare":
        return redis_bare(target)
    if kind == "redis floor":
        return redis_floor(target)
    store = Store.from_url(target)
    return budget_pairs(store) if kind.endswith("Budget") else store_pairs(store)


# -- 8 processes ------------------------------------------------------------------------------


def _worker(commands: Any, results: Any, barrier: Any) -> None:
    """A persistent worker: build the op a command names, wait for all, run it, report."""
    while True:
        command = commands.get()
        if command is None:
            return
        kind, target, k = command
        try:
            op = _make(kind, target)
            op(1)  # connect and warm up outside the timed part
            barrier.wait(timeout=120)
            start = time.monotonic()
            op(k)
            results.put((start, time.monotonic(), None))
        except Exception as exc:
            barrier.abort()
            results.put((0.0, 0.0, repr(exc)))


class _Pool:
    """PROCESSES spawned workers reused for every multi-process measurement."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands = ctx.Queue()
        self.results = ctx.Queue()
        self.barrier = ctx.Barrier(PROCESSES)
        self.procs = [
            ctx.Process(target=_worker, args=(self.commands, self.results, self.barrier))
            for _ in range(PROCESSES)
        ]
        for proc in self.procs:
            proc.start()

    def pairs_per_second(self, kind: str, target: str, k: int) -> float:
        """All workers run k pairs at once; total pairs over the wall time of the run."""
        self.barrier.reset()
        for _ in self.procs:
            self.commands.put((kind, target, k))
        spans = [self.results.get(timeout=600) for _ in self.procs]
        errors = [s[2] for s in spans if s[2]]
        if errors:
            raise RuntimeError(f"{kind}: {errors[0]}")
        wall = max(s[1] for s in spans) - min(s[0] for s in spans)
        return PROCESSES * k / wall

    def close(self) -> None:
        for _ in self.procs:
            self.commands.put(None)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _threads_pairs_per_second(op: Callable[[int], None], k: int) -> float:
    barrier = threading.Barrier(PROCESSES)
    spans: list[tuple[float, float]] = []

    def work() -> None:
        barrier.wait()
        start = time.monotonic()
        op(k)
        spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=work) for _ in range(PROCESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = max(s[1] for s in spans) - min(s[0] for s in spans)
    return PROCESSES * k / wall


# -- a private redis-server -----------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGTERM when the benchmark dies (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _RedisServer:
    """redis-server on a free loopback port in a temporary directory, no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        import redis

        deadline = time.monotonic() + 15
        while True:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=1).ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _redis_binary() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return None
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def _server_side(port: int, single: dict[str, Callable[[int], None]], n: int) -> dict[str, float]:
    """Server CPU per operation (INFO commandstats) of the store, the floor and the bare
    script, each run alone."""
    import redis

    client = redis.Redis(port=port)
    per_call = {}
    for name in ("redis store", "redis floor", "redis bare"):
        client.config_resetstat()
        single[name](n)
        stats = client.info("commandstats")
        ran = [stats[k] for k in ("cmdstat_fcall", "cmdstat_evalsha") if k in stats]
        per_call[name] = sum(s["usec"] for s in ran) / max(1, sum(s["calls"] for s in ran))
    client.close()
    return per_call


def _server_side_note(per_call: dict[str, float]) -> str:
    ours, floor, bare = (per_call[k] for k in ("redis store", "redis floor", "redis bare"))
    verdict = "met" if ours <= REDIS_SERVER_TARGET * bare else "NOT met"
    return (
        f"Server time per operation (INFO commandstats, averaged over reserve and commit): "
        f"the store's functions {ours:.1f} us, the lean floor {floor:.1f} us, the bare "
        f"script {bare:.1f} us. Store {ours / bare:.1f}x bare (target at most "
        f"{REDIS_SERVER_TARGET:.0f}x: {verdict}); floor {floor / bare:.1f}x bare; store "
        f"{ours / floor:.2f}x the floor."
    )


# -- the case -----------------------------------------------------------------------------------


def _verdict(
    what: str,
    row: str,
    ceiling: str,
    target: float,
    one: dict[str, float],
    multi: dict[str, float],
) -> str:
    """'<what> at least <target>x its ceiling: <ratios> (met|NOT met)', 1 and 8 processes."""
    reached = {1: one[ceiling] / one[row]}
    if multi.get(row) and multi.get(ceiling):
        reached[PROCESSES] = multi[row] / multi[ceiling]
    verdict = "met" if all(r >= target for r in reached.values()) else "NOT met"
    at = ", ".join(f"{r:.2f}x at {k} process{'es' if k > 1 else ''}" for k, r in reached.items())
    return f"Target: {what} at least {target:.1f}x the {ceiling} rate: {at} ({verdict})."


def _rate(us_per_pair: float) -> str:
    return f"{1e6 / us_per_pair:,.0f}"


def run(quick: bool = False) -> list[Table]:
    """Measure every store at 1 and 8 processes next to its raw ceiling."""
    n, rounds, k_multi, multi_rounds = (100, 3, 60, 1) if quick else (2000, 5, 1500, 3)
    with tempfile.TemporaryDirectory(prefix="ab-bench-stores-") as tmp:
        work = Path(tmp)
        db = str(work / "budget.db")
        bare_db = str(work / "bare.db")
        sqlite_url = f"sqlite:///{db}?busy_timeout=60"
        binary = _redis_binary()
        server = _RedisServer(binary, work) if binary else None
        notes: list[str] = []
        try:
            redis_url = f"{server.url}?key_prefix=bench" if server else None
            single: dict[str, Callable[[int], None]] = {
                "memory Budget": budget_pairs(MemoryStore()),
                "memory store": store_pairs(MemoryStore()),
                "sqlite Budget": _make("sqlite Budget", sqlite_url),
                "sqlite store": _make("sqlite store", sqlite_url),
                "sqlite bare": sqlite_bare(bare_db),
            }
            if redis_url:
                single.update(
                    {
                        "redis Budget": _make("redis Budget", redis_url),
                        "redis store": _make("redis store", redis_url),
                        "redis floor": redis_floor(redis_url),
                        "redis bare": redis_bare(redis_url),
                    }
                )
            else:
                notes.append("Redis rows left out: no redis-server binary or redis-py.")
            for op in single.values():
                op(5)  # connect, load scripts, create tables
            one = interleaved(single, n, rounds)
            if server:
                notes.append(_server_side_note(_server_side(server.port, single, n)))

            multi: dict[str, float] = {}
            shared = MemoryStore()
            multi["memory Budget"] = _threads_pairs_per_second(budget_pairs(shared), k_multi)
            multi["memory store"] = _threads_pairs_per_second(store_pairs(shared), k_multi)
            pool = _Pool()
            try:
                kinds = [
                    ("sqlite Budget", sqlite_url),
                    ("sqlite store", sqlite_url),
                    ("sqlite bare", bare_db),
                ]
                if redis_url:
                    kinds += [
                        ("redis Budget", redis_url),
                        ("redis store", redis_url),
                        ("redis floor", redis_url),
                        ("redis bare", redis_url),
                    ]
                runs: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
                for _ in range(multi_rounds):  # interleaved, so drift hits every kind alike
                    for kind, target in kinds:
                        runs[kind].append(pool.pairs_per_second(kind, target, k_multi))
                for kind, rates in runs.items():
                    multi[kind] = statistics.median(rates)
            finally:
                pool.close()
        finally:
            if server:
                server.stop()

    ceilings = {"memory": None, "sqlite": "sqlite bare", "redis": "redis bare"}
    rows = []
    for name, us in one.items():
        family = name.split()[0]
        ceiling = ceilings[family]
        ratio_one = f"{one[ceiling] / us:.2f}" if ceiling and name != ceiling else ""
        rate_multi = multi.get(name)
        ratio_multi = (
            f"{rate_multi / multi[ceiling]:.2f}"
            if ceiling and name != ceiling and rate_multi and ceiling in multi
            else ""
        )
        rows.append(
            [
                name,
                f"{us:.1f}",
                _rate(us),
                ratio_one,
                f"{rate_multi:,.0f}" if rate_multi else "",
                ratio_multi,
            ]
        )
    if "sqlite Budget" in one:
        notes.append(
            _verdict("SQLite Budget", "sqlite Budget", "sqlite bare", SQLITE_TARGET, one, multi)
        )
    if "redis store" in one:
        notes.append(
            _verdict("Redis store", "redis store", "redis bare", REDIS_RATE_TARGET, one, multi)
        )
        notes.append(
            _verdict(
                "the lean floor (for scale)",
                "redis floor",
                "redis bare",
                REDIS_RATE_TARGET,
                one,
                multi,
            )
        )
    notes += [
        f"1 process: {n} pairs per round, {rounds} rounds, median, interleaved. 8 processes: "
        f"{k_multi} pairs each, started together (spawned workers, connected and warm); "
        f"pairs/s is the total over the wall time of a run, median of {multi_rounds} runs "
        "interleaved across the rows.",
        "x ceiling = this row's pairs/s divided by the bare ceiling's (1.00 = as fast as a "
        "bare transaction or round trip per operation). bare rows count two transactions or "
        "round trips as one pair.",
        f"Machine: {os.cpu_count()} CPUs shared by {PROCESSES} processes; "
        f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}.",
    ]
    table = Table(
        "Stores: reserve+commit pairs per second, next to each backend's raw ceiling",
        ["case", "1 proc us/pair", "1 proc pairs/s", "x ceiling", "8 procs pairs/s", "x ceiling"],
        rows,
        notes,
    )
    return [table]


def main() -> None:
    """``python -m benchmarks.bench_stores [--quick]``: print the table."""
    for table in run(quick="--quick" in sys.argv):
        print(table.text())


if __name__ == "__main__":
    main()
