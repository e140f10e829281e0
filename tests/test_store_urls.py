"""Store URLs: every scheme opens the right store with its options; a malformed URL or an
unknown scheme is a StoreConfigError that names the problem and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetManager,
    BudgetScope,
    MemoryStore,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
)
from agent_budget.stores import Line, Store, open_store
from agent_budget.stores.redis import RedisStore
from agent_budget.stores.redis_code import script as _script
from agent_budget.stores.sqlite import SQLiteStore

from .clock import FakeClock
from .store_fixtures import RedisCluster, RedisServer, free_port, need_redis, self_signed_cert


def _redis_kwargs(store: Store) -> dict[str, Any]:
    assert isinstance(store, RedisStore)
    return dict(store.client.connection_pool.connection_kwargs)


# -- memory and SQLite ------------------------------------------------------------------------


def test_memory_url() -> None:
    store = Store.from_url("memory://", idle_ttl=5)
    assert isinstance(store, MemoryStore) and store.options.idle_ttl == 5
    assert isinstance(open_store(None), MemoryStore)
    assert open_store(store) is store


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Store.from_url("sqlite:///relative.db")
    assert isinstance(relative, SQLiteStore) and relative.path == "relative.db"
    assert (tmp_path / "relative.db").exists()
    relative.close()
    absolute_path = tmp_path / "sub dir" / "abs.db"
    absolute_path.parent.mkdir()
    absolute = Store.from_url(f"sqlite:///{absolute_path}".replace(" ", "%20"))
    assert isinstance(absolute, SQLiteStore) and absolute.path == str(absolute_path)
    assert absolute_path.exists()
    absolute.close()


def test_sqlite_options_from_query_and_keywords(tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path}/b.db?retention_days=7&busy_timeout=2.5&idle_ttl=60"
        "&window_seconds=3600&bucket_seconds=900&tombstone_ttl=30&synchronous=full"
    )
    store = Store.from_url(url)
    assert isinstance(store, SQLiteStore)
    assert (store.retention_days, store.busy_timeout, store.synchronous) == (7.0, 2.5, "FULL")
    opts = store.options
    assert (opts.idle_ttl, opts.window_seconds, opts.bucket_seconds, opts.tombstone_ttl) == (
        60.0,
        3600,
        900,
        30.0,
    )
    store.close()
    forever = Store.from_url(f"sqlite:///{tmp_path}/b.db?retention_days=none", busy_timeout=1)
    assert isinstance(forever, SQLiteStore)
    assert forever.retention_days is None and forever.busy_timeout == 1
    forever.close()


def test_budget_and_manager_take_a_store_url(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path}/budget.db"
    budget = Budget(BudgetScope("s", max_tokens_per_session=100), store=url, clock=clock)
    assert isinstance(budget.store, SQLiteStore)
    budget.record("x", "gpt-4o", 10, 5)
    manager = BudgetManager(store=url, clock=clock)
    assert isinstance(manager.store, SQLiteStore)
    assert manager.summary("s")["session"]["tokens"] == 15
    budget.store.close()
    manager.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("budget.db", "expected scheme://"),
        ("ftp://host/x", "unknown store scheme 'ftp'"),
        ("sqlite://", "no database path"),
        ("sqlite://host/budget.db", "takes no host"),
        ("sqlite:///budget.db?bogus=1", "unknown option 'bogus'"),
        ("sqlite:///budget.db?retention_days=abc", "retention_days must be a number"),
        ("sqlite:///budget.db?retention_days=-1", "retention_days must be a positive"),
        ("sqlite:///budget.db?busy_timeout=1&busy_timeout=2", "given twice"),
        ("sqlite:///budget.db?synchronous=off", "synchronous"),
        ("sqlite:///budget.db?window_seconds=1000", "multiple of bucket_seconds"),
        ("sqlite:///budget.db?bucket_seconds=0", "bucket_seconds must be a positive"),
        ("sqlite:///budget.db?idle_ttl=nan", "idle_ttl must be a positive"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///no/such/dir/budget.db", "does not exist"),
        ("sqlite:///budget.db#frag", "fragment"),
        ("memory://somewhere", "takes no host"),
        ("memory://?window_seconds=banana", "window_seconds must be a number"),
        ("memory://?nonsense=1", "unknown option 'nonsense'"),
        ("memory://?idle_ttl=60&idle_ttl=70", "given twice"),
        ("memory://#frag", "fragment"),
        ("sqlite:///budget.db?busy_timeout=1e308", "busy_timeout must be at most"),
        ("sqlite:///budget.db?busy_timeout=inf", "busy_timeout must be a positive"),
        ("sqlite:///budget.db?session_ttl=-1", "session_ttl must be a positive"),
        ("redis://host?socket_timeout=1e308", "socket_timeout must be at most"),
    ],
)
def test_malformed_urls_name_the_problem_and_change_nothing(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = dict(Store._registry)
    with pytest.raises(StoreConfigError, match=message):
        Store.from_url(url)
    assert list(tmp_path.iterdir()) == []
    assert Store._registry == registry


@pytest.mark.parametrize("url", [None, 42, b"sqlite:///x.db"])
def test_non_string_urls(url: object) -> None:
    with pytest.raises(StoreConfigError):
        Store.from_url(url)  # type: ignore[arg-type]


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(StoreConfigError) as info:
        Store.from_url("mongodb://localhost/budget")
    for scheme in ("memory", "sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster"):
        assert f"{scheme}," in str(info.value) or f"{scheme})" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_memory_url_takes_the_options_every_store_takes() -> None:
    """memory:// parses and checks its query as SQLite and Redis do (issue 16, #11)."""
    store = Store.from_url("memory://?window_seconds=3600&bucket_seconds=60&idle_ttl=off")
    assert isinstance(store, MemoryStore)
    assert (store.options.window_seconds, store.options.bucket_seconds) == (3600, 60)
    assert store.options.idle_ttl is None
    with pytest.raises(StoreConfigError, match="unknown store option"):
        Store.from_url("memory://", bogus=1)
    with pytest.raises(StoreConfigError, match="unknown store option"):
        MemoryStore(bogus=1)


def test_clear_errors_for_settings_and_names(tmp_path: Path) -> None:
    """Errors name the problem instead of OverflowError or UnicodeEncodeError (issue 16, #12)."""
    from agent_budget.stores.sqlite import SQLiteStore

    with pytest.raises(StoreConfigError, match="busy_timeout"):
        SQLiteStore(tmp_path / "x.db", busy_timeout=1e308)
    with pytest.raises(StoreConfigError, match="retention_days"):
        SQLiteStore(tmp_path / "x.db", retention_days=float("inf"))
    with pytest.raises(ValueError, match="surrogate"):
        BudgetScope("user:\udcff")
    with pytest.raises(ValueError, match="surrogate"):
        BudgetScope("ok", max_tokens_per_model={"gpt-\udcff": 5})
    assert list(tmp_path.iterdir()) == []


def test_a_third_party_store_registers_by_subclassing() -> None:
    class TenantStore(MemoryStore):
        schemes = ("tenant-test",)

    store = Store.from_url("tenant-test://")
    assert type(store) is TenantStore
    assert Store.from_url("TENANT-TEST://").__class__ is TenantStore


# -- Redis ------------------------------------------------------------------------------------


def test_redis_url_with_options() -> None:
    store = Store.from_url(
        "redis://127.0.0.1:6390/2?key_prefix=team&server_time=0&idle_ttl=60&socket_timeout=1.5"
        "&tombstone_ttl=120"
    )
    assert isinstance(store, RedisStore)
    assert (store.key_prefix, store.server_time) == ("team", False)
    assert (store.options.idle_ttl, store.options.tombstone_ttl) == (60.0, 120.0)
    kwargs = _redis_kwargs(store)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 1.0  # our fail-fast default
    default = Store.from_url("redis://localhost")
    assert isinstance(default, RedisStore)
    assert (default.key_prefix, default.server_time) == ("ab", True)
    assert _redis_kwargs(default)["port"] == 6379


def test_rediss_url_with_password_uses_tls() -> None:
    from redis.connection import SSLConnection

    store = Store.from_url(
        "rediss://worker:p%40ss%3Aword@cache.example.com:6380/1?ssl_cert_reqs=none"
    )
    assert isinstance(store, RedisStore)
    pool = store.client.connection_pool
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("worker", "p@ss:word")
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example.com", 6380, 1)
    assert kwargs["ssl_cert_reqs"] == "none"


@pytest.mark.redis
def test_rediss_with_password_against_a_real_tls_server(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path, clock: FakeClock
) -> None:
    server = redis_server_factory(tls=self_signed_cert(tmp_path), password="s3cr%t")
    url = server.url.replace("s3cr%t", "s3cr%25t")  # percent-encoded in the URL
    store = Store.from_url(f"{url}?ssl_cert_reqs=none&server_time=0")
    assert store.reserve(
        "h", [Line("s", "session:tokens", 5, 10)], now=clock(), ttl=60, group="s"
    ).admitted
    assert store.read("s", now=clock(), group="s")["session:tokens"].reserved == 5
    store.close()
    wrong = Store.from_url(url.replace("s3cr%25t", "nope") + "?ssl_cert_reqs=none")
    with pytest.raises(StoreError, match=r"(?i)auth|password"):
        wrong.read("s", now=clock(), group="s")
    plain = Store.from_url(url.replace("rediss://", "redis://"))
    with pytest.raises(StoreError):  # a plain-text client cannot talk to the TLS port
        plain.read("s", now=clock(), group="s")


def test_cluster_urls_open_lazily_without_network() -> None:
    port = free_port()
    for scheme in ("redis+cluster", "rediss+cluster"):
        store = Store.from_url(f"{scheme}://:secret@127.0.0.1:{port},[::1]:{port}/?key_prefix=c")
        assert isinstance(store, RedisStore) and store.key_prefix == "c"
    store = Store.from_url(f"redis+cluster://127.0.0.1:{port}")
    with pytest.raises(StoreError) as info:  # nothing listens there: a StoreError, not redis's
        store.read("s", now=0.0, group="g")
    assert not isinstance(info.value, StoreConfigError)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://host:99999", "invalid port"),
        ("redis://host:abc", "invalid port"),
        ("redis://:6379", "missing host"),
        ("redis://h1:1,h2:2", "redis\\+cluster"),
        ("redis://host/abc", "database number"),
        ("redis://host?bogus=1", "unknown option 'bogus'"),
        ("redis://host?server_time=maybe", "server_time must be a boolean"),
        ("redis://host?functions=maybe", "functions must be a boolean"),
        ("redis://host?key_prefix=a{b", "key_prefix"),
        ("redis://host?key_prefix=", "key_prefix"),
        ("redis://host?db=1&db=2", "given twice"),
        ("redis://host?idle_ttl=-5", "idle_ttl must be a positive"),
        ("redis://host?retries=-1", "retries"),
        ("redis://host?socket_timeout=soon", "socket_timeout"),
        ("redis+cluster://host:7000/3", "database 0"),
        ("rediss://[::1:6379", "malformed"),
    ],
)
def test_malformed_redis_urls(url: str, message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        Store.from_url(url)


def test_unknown_redis_keyword_options() -> None:
    with pytest.raises(StoreConfigError, match="bogus"):
        Store.from_url("redis://localhost", bogus=1)
    store = Store.from_url("redis://localhost", health_check_interval=5, key_prefix="k")
    assert isinstance(store, RedisStore) and store.key_prefix == "k"
    assert _redis_kwargs(store)["health_check_interval"] == 5


def test_driver_errors_surface_as_store_errors(clock: FakeClock) -> None:
    store = Store.from_url(f"redis://127.0.0.1:{free_port()}/0?server_time=0")
    with pytest.raises(StoreError) as info:
        store.reserve("h", [Line("s", "session:tokens", 1, 10)], now=clock(), ttl=5, group="g")
    import redis

    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    budget = Budget(BudgetScope("s", max_tokens_per_session=10), store=store, clock=clock)
    with pytest.raises(StoreUnavailableError):
        budget.reserve("gpt-4o", 1)


@pytest.mark.redis
def test_cluster_url_with_several_startup_nodes(redis_cluster: RedisCluster) -> None:
    store = Store.from_url(redis_cluster.url + "?key_prefix=multi")
    assert isinstance(store, RedisStore) and store.ping()
    store.save_scope("x", {"name": "x"})
    assert store.load_scopes() == {"x": {"name": "x"}}
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load_scopes()


def test_lua_scripts_ship_as_package_data() -> None:
    for name in ("reserve", "commit", "release", "read", "reset"):
        script = _script(name)
        assert "local function reap()" in script.source and len(script.sha) == 40


def test_core_imports_and_reports_without_redis_py(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import agent_budget\n"
        "from agent_budget import Store, StoreConfigError\n"
        f"s = Store.from_url('sqlite:///{tmp_path}/x.db'); s.close()\n"
        "try:\n"
        "    Store.from_url('redis://localhost')\n"
        "except StoreConfigError as e:\n"
        "    print('CONFIG', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert "CONFIG" in out.stdout and "agent-budget[redis]" in out.stdout


def test_need_redis_fails_instead_of_skipping_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need_redis("redis-server-that-is-missing")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        need_redis("redis-server-that-is-missing")
