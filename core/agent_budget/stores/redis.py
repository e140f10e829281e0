"""RedisStore: budget state in Redis (or Redis Cluster), shared by every process and host.

Each operation is one round trip, atomic on the server: one FCALL of a function from the
Lua library in ``stores/lua/`` (loaded on first use, Redis 7+), or one EVALSHA of the same
code as a script where the server has no functions. Holds sit in a sorted set scored by
expiry and are reaped lazily by the Lua code; amounts are exact integers of any size (never
INCRBYFLOAT); finished hold ids are remembered in tombstone keys with a TTL, so commits are
idempotent. Every key of one group (the root scope of a budget tree) carries the hash tag
``{group}``, so an operation touches one Redis Cluster slot. The same operations run on an
asyncio client (``redis.asyncio``) for the ``a*`` methods. redis-py is imported only when a
RedisStore is made.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any
from urllib.parse import unquote, urlencode, urlunsplit

from ..errors import StoreConfigError, StoreError, StorePermanentError, StoreTransientError
from . import redis_ledger
from .base import (
    CommitResult,
    Level,
    Line,
    ReserveResult,
    Store,
    StoreOptions,
    StoreURL,
    make_options,
    number_option,
)
from .ledger import EventFilter, LedgerFilter
from .redis_code import (
    HOLD_IN_USE,
    classify,
    encode_lines,
    levels,
    library,
    no_functions,
    script,
    text,
)

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "RedisStore"]

_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

DEFAULT_SOCKET_TIMEOUT = 2.0
"""Seconds a Redis command may take before it fails (redis-py's ``socket_timeout``)."""
DEFAULT_CONNECT_TIMEOUT = 1.0
"""Seconds to open a connection (``socket_connect_timeout``)."""
_RETRY_PAUSE = 0.02

# redis-py connection options that may appear in a URL's query string (as strings).
_REDIS_QUERY_OPTIONS = frozenset(
    {
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "ssl_check_hostname",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_min_version",
        "ssl_ciphers",
        "client_name",
        "protocol",
        "timeout",
    }
)
_NUMERIC_QUERY = {"socket_timeout": 3_600.0, "socket_connect_timeout": 3_600.0, "timeout": 3_600.0}


class _Passthrough(str):
    """A query option handed to redis-py as it was written."""


def _bool_option(name: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise StoreConfigError(f"option {name} must be a boolean (1/0, true/false), got {value!r}")

    return parse


def _passthrough(name: str) -> Callable[[str], _Passthrough]:
    check = (
        number_option(name, float, maximum=_NUMERIC_QUERY[name]) if name in _NUMERIC_QUERY else None
    )

    def parse(value: str) -> _Passthrough:
        if check is not None:
            check(value)
        return _Passthrough(value)

    return parse


_STORE_OPTIONS = frozenset(
    {
        "key_prefix",
        "server_time",
        "functions",
        "retries",
        "ledger_maxlen",
        "retention_days",
        "read_only",
        "options",
    }
)
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "key_prefix": str,
    "server_time": _bool_option("server_time"),
    "functions": _bool_option("functions"),
    "read_only": _bool_option("read_only"),
    "retries": number_option("retries", int, positive=False, maximum=10),
    "ledger_maxlen": number_option("ledger_maxlen", int, positive=False),
    "retention_days": number_option("retention_days", float, allow_none=True),
    **{name: _passthrough(name) for name in _REDIS_QUERY_OPTIONS},
}


def _redis_module() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise StoreConfigError(
            f"the Redis store needs redis-py: pip install 'agent-budget[redis]' ({exc})"
        ) from None
    return redis


def _driver_errors() -> tuple[type[BaseException], ...]:
    redis = _redis_module()
    from redis.exceptions import RedisClusterException

    return (redis.exceptions.RedisError, RedisClusterException, OSError)


def _split_hosts(url: str, netloc: str) -> tuple[str, list[tuple[str, int]]]:
    """``user:pass@`` and the ``host:port`` pairs of a (possibly comma-separated) netloc."""
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        item = item.strip()
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise StoreConfigError(f"malformed host {item!r} in Redis URL {url!r}")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise StoreConfigError(f"missing host in Redis URL {url!r}")
        port = 6379
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise StoreConfigError(f"invalid port {port_text!r} in Redis URL {url!r}")
            port = int(port_text)
        nodes.append((unquote(host), port))
    return (userinfo + at), nodes


def _key_tag(group: str) -> str:
    """The hash-tag text for a group: the name itself, or a digest if it cannot be a tag."""
    if group and "}" not in group:
        return group
    return "~" + hashlib.sha1(group.encode("utf-8")).hexdigest()


class RedisStore(Store):
    """Budget state in Redis: atomic Lua functions or scripts, one round trip per operation.

    ``client`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster`` (or a zero-argument
    callable making one on first use); ``async_client`` the same for ``redis.asyncio``
    (without one, the ``a*`` methods run the sync calls in a worker thread). ``key_prefix``
    starts every key. With ``server_time=True`` (the default) the scripts read the server's
    clock, one clock for every host; ``False`` uses the ``now`` each caller passes (tests
    with a fake clock). ``functions=True`` (the default) runs the operations as Redis
    Functions where the server allows, else as EVALSHA scripts; ``False`` always uses
    scripts. ``retries`` is how many times a call that failed on its connection is tried
    again on a new one (never after a timeout). Each group keeps a ledger stream of committed
    calls, capped at about ``ledger_maxlen`` entries (0: no ledger) and ``retention_days``
    (None: by length only). ``read_only=True`` refuses every write and reads with plain
    commands only (no function or script is loaded).
    """

    schemes = _SCHEMES
    url_options = _URL_OPTIONS

    def __init__(
        self,
        client: Any = None,
        *,
        key_prefix: str = "ab",
        server_time: bool = True,
        functions: bool = True,
        retries: int = 1,
        async_client: Any = None,
        ledger_maxlen: int = 100_000,
        retention_days: float | None = 30.0,
        read_only: bool = False,
        options: StoreOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = make_options(options, kwargs)
        if (
            not isinstance(key_prefix, str)
            or not key_prefix
            or "{" in key_prefix
            or ("}" in key_prefix)
        ):
            raise StoreConfigError(
                f"key_prefix must be a non-empty string without braces, got {key_prefix!r}"
            )
        if not isinstance(server_time, bool):
            raise StoreConfigError(f"server_time must be a bool, got {server_time!r}")
        if not isinstance(functions, bool):
            raise StoreConfigError(f"functions must be a bool, got {functions!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise StoreConfigError(f"retries must be an int from 0 to 10, got {retries!r}")
        self._functions = functions
        self._afunctions = functions
        self._ledger_spec = _ledger_spec(ledger_maxlen, retention_days, server_time)
        self._ledger_groups: set[str] = set()
        # Scope definitions this store saved, saved again when the server is found restarted
        # without its data (bounded: a process saves few).
        self._saved_scopes: dict[str, str] = {}
        self.read_only = bool(read_only)
        self.key_prefix = key_prefix
        self.server_time = server_time
        self.retries = retries
        self._client_lock = threading.Lock()
        self._closed = False
        self._bases: dict[str, str] = {}
        self._spool_key: str | None = None
        redis = _redis_module()
        self._redis = redis
        if client is None:
            client = redis.Redis(
                socket_timeout=DEFAULT_SOCKET_TIMEOUT,
                socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
            )
        if callable(client) and not hasattr(client, "evalsha"):
            self._client: Any = None
            self._factory: Callable[[], Any] | None = client
        else:
            self._client = client
            self._factory = None
        if async_client is None:
            self._async_factory: Callable[[], Any] | None = None
        elif callable(async_client) and not hasattr(async_client, "evalsha"):
            self._async_factory = async_client
        else:
            self._async_factory = lambda: async_client
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._certain = False  # set by _open for clients that do not retry on their own
        opts = self.options
        idle = "" if opts.idle_ttl is None else repr(float(opts.idle_ttl))
        session = "" if opts.session_ttl is None else repr(float(opts.session_ttl))
        self._settings = " ".join(
            (
                "1" if server_time else "0",
                str(opts.window_seconds),
                str(opts.bucket_seconds),
                idle,
                repr(float(opts.tombstone_ttl)),
                session,
            )
        )
        self._errors = _driver_errors()
        from redis.exceptions import NoScriptError, ResponseError

        self._no_script: type[BaseException] = NoScriptError
        self._response_error: type[BaseException] = ResponseError

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def _open(cls, location: StoreURL, options: dict[str, Any]) -> Store:
        redis = _redis_module()
        url = location.text
        scheme = location.scheme
        cluster = scheme in _CLUSTER_SCHEMES
        base_scheme = scheme.split("+")[0]
        db_text = location.path.strip("/")
        if db_text and not db_text.isdigit():
            raise StoreConfigError(
                f"malformed Redis URL {url!r}: the path must be a database number, "
                f"got {location.path!r}"
            )
        userinfo, nodes = _split_hosts(url, location.netloc) if location.netloc else ("", [])
        if not cluster and len(nodes) > 1:
            raise StoreConfigError(
                f"several hosts in {url!r}: use {base_scheme}+cluster:// for Redis Cluster"
            )
        store_opts: dict[str, Any] = {}
        passthrough: list[tuple[str, str]] = []
        client_opts: dict[str, Any] = {}
        for name, value in options.items():
            if isinstance(value, _Passthrough):
                passthrough.append((name, str(value)))
            elif name in _STORE_OPTIONS or name in StoreOptions.__dataclass_fields__:
                store_opts[name] = value
            else:
                client_opts[name] = value
        unknown = sorted(set(client_opts) - _client_parameters(cluster))
        if unknown:
            raise StoreConfigError(f"unknown Redis store option(s): {', '.join(unknown)}")
        host, port = nodes[0] if nodes else ("localhost", 6379)
        host_text = f"[{host}]" if ":" in host else host
        first = urlunsplit(
            (
                base_scheme,
                f"{userinfo}{host_text}:{port}",
                location.path,
                urlencode(passthrough),
                "",
            )
        )
        try:
            parsed_kwargs = redis.connection.parse_url(first)
        except ValueError as exc:
            raise StoreConfigError(f"malformed Redis URL {url!r}: {exc}") from None
        sync_kwargs = {**_client_defaults(asynchronous=False, cluster=cluster), **client_opts}
        async_kwargs = {**_client_defaults(asynchronous=True, cluster=cluster), **client_opts}
        prefix = store_opts.get("key_prefix", "ab")
        if cluster:
            if parsed_kwargs.get("db", 0) != 0:
                raise StoreConfigError(f"Redis Cluster has only database 0, not in {url!r}")
            extra_nodes = nodes[1:]

            def make_cluster() -> Any:
                from redis.cluster import ClusterNode, RedisCluster

                return RedisCluster(
                    url=first,
                    startup_nodes=[ClusterNode(h, p) for h, p in extra_nodes],  # type: ignore[no-untyped-call]
                    **sync_kwargs,
                )

            def make_async_cluster() -> Any:
                from redis.asyncio.cluster import ClusterNode, RedisCluster

                return RedisCluster.from_url(
                    first, startup_nodes=[ClusterNode(h, p) for h, p in extra_nodes], **async_kwargs
                )

            store = cls(make_cluster, async_client=make_async_cluster, **store_opts)
            store._spool_key = (
                "redis+cluster:"
                + ",".join(sorted(f"{h}:{p}" for h, p in (nodes or [("localhost", 6379)])))
                + f"/{prefix}"
            )
            return store
        try:
            client = redis.Redis.from_url(first, **sync_kwargs)
        except (TypeError, ValueError) as exc:
            raise StoreConfigError(f"malformed Redis URL {url!r}: {exc}") from None

        def make_async() -> Any:
            from redis.asyncio import Redis as AsyncRedis

            return AsyncRedis.from_url(first, **async_kwargs)

        store = cls(client, async_client=make_async, **store_opts)
        store._certain = "retry" not in client_opts
        store._spool_key = f"redis:{host}:{port}/{parsed_kwargs.get('db', 0)}/{prefix}"
        return store

    def spool_key(self) -> str | None:
        if self._spool_key is not None:
            return self._spool_key
        client = self._client
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        if not kwargs or "host" not in kwargs:
            return None
        where = f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        return f"redis:{where}/{self.key_prefix}"

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The redis-py client (made on first use for Redis Cluster URLs)."""
        if self._closed:
            raise StoreError("the Redis store is closed")
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    assert self._factory is not None
                    try:
                        self._client = self._factory()
                    except self._errors as exc:
                        raise StoreTransientError(f"cannot reach Redis: {exc}") from exc
                client = self._client
        return client

    def _aclient(self) -> Any:
        """The asyncio client of the running event loop (one per loop, made on first use)."""
        if self._closed:
            raise StoreError("the Redis store is closed")
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            assert self._async_factory is not None
            try:
                client = self._aclients[loop] = self._async_factory()
            except self._errors as exc:
                raise StoreTransientError(f"cannot reach Redis: {exc}") from exc
        return client

    def _base(self, group: str) -> str:
        base = self._bases.get(group)
        if base is None:
            base = f"{self.key_prefix}:{{{_key_tag(group)}}}:"
            if len(self._bases) >= 4096:
                self._bases.clear()
            self._bases[group] = base
        return base

    def _args(self, group: str, now: float, args: tuple[str, ...]) -> tuple[str, ...]:
        return (self._base(group), f"{float(now)!r} {self._settings}", *args)

    def _failure(self, exc: BaseException, name: str, applied: bool) -> tuple[Exception, bool]:
        """The error to raise for a failed attempt (carrying whether any attempt so far may
        have been applied), and whether to try again."""
        if isinstance(exc, self._response_error) and HOLD_IN_USE in str(exc):
            return ValueError(str(exc).replace(HOLD_IN_USE, "").strip()), False
        certain = self._certain and not _has_own_retries(self._client)
        error, again = classify(exc, name, certain=certain, redis_module=self._redis)
        if isinstance(error, StoreTransientError):
            error.maybe_applied = applied or error.maybe_applied
        return error, again

    def _eval(self, name: str, group: str, now: float, *args: str) -> Any:
        """Run one operation: one FCALL, or one EVALSHA where the server has no functions
        (plus a FUNCTION LOAD or SCRIPT LOAD the first time and after a restart); tried again
        on a new connection when one failed, up to ``retries`` times."""
        self._writable(name)
        keys_and_args = self._args(group, now, args)
        applied = False
        for attempt in range(self.retries + 1):
            client = self.client
            try:
                return self._run(client, name, keys_and_args)
            except self._errors as exc:
                error, again = self._failure(exc, name, applied)
                applied = getattr(error, "maybe_applied", applied)
                if not again or attempt == self.retries:
                    raise error from (None if isinstance(error, ValueError) else exc)
            time.sleep(_RETRY_PAUSE * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, client: Any, name: str, keys_and_args: tuple[str, ...]) -> Any:
        if self._functions:
            function = library().functions[name]
            try:
                try:
                    return client.fcall(function, 1, *keys_and_args)
                except self._response_error as exc:
                    if "function not found" not in str(exc).lower():
                        raise
                # First use on this server, or it restarted or was flushed: load, call again.
                client.function_load(library().source, replace=True)
                self._restarted(client)
                return client.fcall(function, 1, *keys_and_args)
            except self._response_error as exc:
                if not no_functions(exc):
                    raise
                self._functions = False  # Redis < 7, or FUNCTION denied: use scripts
        code = script(name)
        try:
            return client.evalsha(code.sha, 1, *keys_and_args)
        except self._no_script:
            client.script_load(code.source)
            self._restarted(client)
            return client.evalsha(code.sha, 1, *keys_and_args)

    async def _aeval(self, name: str, group: str, now: float, *args: str) -> Any:
        """:meth:`_eval` on the event loop's asyncio client."""
        self._writable(name)
        keys_and_args = self._args(group, now, args)
        applied = False
        for attempt in range(self.retries + 1):
            client = self._aclient()
            try:
                return await self._arun(client, name, keys_and_args)
            except self._errors as exc:
                error, again = self._failure(exc, name, applied)
                applied = getattr(error, "maybe_applied", applied)
                if not again or attempt == self.retries:
                    raise error from (None if isinstance(error, ValueError) else exc)
            await asyncio.sleep(_RETRY_PAUSE * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arun(self, client: Any, name: str, keys_and_args: tuple[str, ...]) -> Any:
        if self._afunctions:
            function = library().functions[name]
            try:
                try:
                    return await client.fcall(function, 1, *keys_and_args)
                except self._response_error as exc:
                    if "function not found" not in str(exc).lower():
                        raise
                await client.function_load(library().source, replace=True)
                await self._arestarted(client)
                return await client.fcall(function, 1, *keys_and_args)
            except self._response_error as exc:
                if not no_functions(exc):
                    raise
                self._afunctions = False
        code = script(name)
        try:
            return await client.evalsha(code.sha, 1, *keys_and_args)
        except self._no_script:
            await client.script_load(code.source)
            await self._arestarted(client)
            return await client.evalsha(code.sha, 1, *keys_and_args)

    def _restarted(self, client: Any) -> None:
        """The server had to load our code again: it may have restarted without its data,
        so the group set (noted again by the next commits) and the scope definitions this
        store saved are written again."""
        self._ledger_groups.clear()
        if self._saved_scopes:
            client.hset(self._defs_key, mapping=dict(self._saved_scopes))

    async def _arestarted(self, client: Any) -> None:
        """:meth:`_restarted` on the asyncio client."""
        self._ledger_groups.clear()
        if self._saved_scopes:
            await client.hset(self._defs_key, mapping=dict(self._saved_scopes))

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise self._failure(exc, getattr(fn, "__name__", "call"), False)[0] from exc

    # -- operations ----------------------------------------------------------------------------

    def reserve(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        ttl: float,
        group: str,
        dry_run: bool = False,
    ) -> ReserveResult:
        blob = encode_lines(lines, limits=True)
        ttl_dry = f"{float(ttl)!r} {'1' if dry_run else '0'}"
        return _reserve_result(self._eval("reserve", group, now, hold_id, ttl_dry, blob))

    async def areserve(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        ttl: float,
        group: str,
        dry_run: bool = False,
    ) -> ReserveResult:
        if self._async_factory is None:
            return await super().areserve(
                hold_id, lines, now=now, ttl=ttl, group=group, dry_run=dry_run
            )
        blob = encode_lines(lines, limits=True)
        ttl_dry = f"{float(ttl)!r} {'1' if dry_run else '0'}"
        return _reserve_result(await self._aeval("reserve", group, now, hold_id, ttl_dry, blob))

    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        blob = encode_lines(lines, limits=False)
        ledger = self._ledger_args(record, group)
        result = _commit_result(self._eval("commit", group, now, hold_id, blob, *ledger))
        if ledger and group not in self._ledger_groups:  # the server lost it: a restart
            redis_ledger.note_group(self, group)
        return result

    async def acommit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        if self._async_factory is None:
            return await super().acommit(hold_id, lines, now=now, group=group, record=record)
        blob = encode_lines(lines, limits=False)
        ledger = await asyncio.to_thread(self._ledger_args, record, group) if record else ()
        result = _commit_result(await self._aeval("commit", group, now, hold_id, blob, *ledger))
        if ledger and group not in self._ledger_groups:  # the server lost it: a restart
            await asyncio.to_thread(redis_ledger.note_group, self, group)
        return result

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        return bool(int(self._eval("release", group, now, hold_id)))

    async def arelease(self, hold_id: str, *, now: float, group: str) -> bool:
        if self._async_factory is None:
            return await super().arelease(hold_id, now=now, group=group)
        return bool(int(await self._aeval("release", group, now, hold_id)))

    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        if self.read_only:
            return self.peek(scope, now=now, group=group, periods=periods)
        return _read_result(self._eval("read", group, now, scope, *_periods_arg(periods)))

    async def aread(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        if self._async_factory is None or self.read_only:
            return await super().aread(scope, now=now, group=group, periods=periods)
        reply = await self._aeval("read", group, now, scope, *_periods_arg(periods))
        return _read_result(reply)

    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        self._eval("reset", group, now, scope, prefix)

    async def areset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        if self._async_factory is None:
            return await super().areset(scope, prefix, now=now, group=group)
        await self._aeval("reset", group, now, scope, prefix)
        return None

    @property
    def _defs_key(self) -> str:
        return f"{self.key_prefix}:scopes"

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        self._writable("save a scope")
        text_ = json.dumps(dict(data), sort_keys=True)
        self._call(self.client.hset, self._defs_key, name, text_)
        if len(self._saved_scopes) < 10_000 or name in self._saved_scopes:
            self._saved_scopes[name] = text_

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self._defs_key)
        return {text(k): json.loads(text(v)) for k, v in raw.items()}

    def delete_scope(self, name: str) -> None:
        self._writable("delete a scope")
        self._call(self.client.hdel, self._defs_key, name)
        self._saved_scopes.pop(name, None)

    def _ledger_args(self, record: Mapping[str, Any] | None, group: str) -> tuple[str, ...]:
        """The commit function's ledger arguments for ``record`` (none without a ledger)."""
        if record is None or not self._ledger_spec or self.read_only:
            return ()
        redis_ledger.note_group(self, group)
        return (self._ledger_spec, redis_ledger.encode_record(record))

    # -- the ledger and events (plain commands; see redis_ledger) ---------------------------

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise StorePermanentError(f"the Redis store is open read-only: cannot {what}")

    def ledger(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        return redis_ledger.ledger_rows(self, wanted, limit, newest_first)

    def ledger_stream(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        return redis_ledger.stream_rows(self, wanted)

    def aggregate(
        self,
        *,
        by: Sequence[str] = ("scope",),
        bucket: int | None = None,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
        order_by: str = "cost_nanos",
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        return redis_ledger.aggregate(self, wanted, by, bucket, order_by, limit)

    def record_event(self, event: Mapping[str, Any], *, group: str) -> None:
        self._writable("record an event")
        redis_ledger.record_event(self, event, group)

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        kinds: Collection[str] | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        wanted = EventFilter.of(since=since, until=until, scope=scope, kinds=kinds)
        return redis_ledger.query_events(self, wanted, limit, newest_first)

    def event_counts(
        self, *, scope: str | Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        return redis_ledger.event_counts(self, EventFilter.of(scope=scope).scopes)

    def peek(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        many = {scope: periods} if periods else None
        return self.peek_many({scope: group}, now=now, periods=many)[scope]

    def peek_many(
        self,
        scopes: Mapping[str, str],
        *,
        now: float,
        periods: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, dict[str, Level]]:
        if self.server_time:
            now = redis_ledger.server_now(self)
        return redis_ledger.peek_many(self, scopes, now, periods)

    def now(self) -> float | None:
        return redis_ledger.server_now(self) if self.server_time else None

    def ping(self) -> bool:
        """True when the server answers (raises StoreError otherwise)."""
        return bool(self._call(self.client.ping))

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
            self._closed = True
            aclients = list(self._aclients.items())
            self._aclients.clear()
        if client is not None:
            try:
                client.close()
            except self._errors:
                pass
        for loop, aclient in aclients:
            _close_async_client(loop, aclient)

    async def aclose(self) -> None:
        """Close the running loop's asyncio client (then the rest, as :meth:`close`)."""
        loop = asyncio.get_running_loop()
        aclient = self._aclients.pop(loop, None)
        if aclient is not None:
            try:
                await aclient.aclose()
            except self._errors:
                pass
        self.close()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.key_prefix!r}, server_time={self.server_time})"


def _ledger_spec(maxlen: object, retention_days: object, server_time: bool) -> str:
    """The commit function's ledger argument: ``"<max entries> <max age ms> <server clock
    1|0>"`` ("" for no ledger)."""
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
        raise StoreConfigError(f"ledger_maxlen must be a non-negative int, got {maxlen!r}")
    if retention_days is not None and (
        isinstance(retention_days, bool)
        or not isinstance(retention_days, (int, float))
        or not 0 < retention_days < 100_000
    ):
        raise StoreConfigError(f"retention_days must be a positive number, got {retention_days!r}")
    if maxlen == 0:
        return ""
    age = "" if retention_days is None else str(int(retention_days * 86_400_000))
    return f"{maxlen} {age} {'1' if server_time else '0'}"


def _reserve_result(reply: Any) -> ReserveResult:
    fields = reply.split()
    refused = int(fields[1])
    return ReserveResult(
        fields[0] in (b"1", "1"), levels(fields[2:]), None if refused < 0 else refused
    )


def _commit_result(reply: Any) -> CommitResult:
    fields = reply.split()
    return CommitResult(fields[0] in (b"1", "1"), levels(fields[1:]))


def _read_result(reply: Any) -> dict[str, Level]:
    return {
        text(reply[i]): Level(int(reply[i + 1]), int(reply[i + 2])) for i in range(0, len(reply), 3)
    }


def _periods_arg(periods: Mapping[str, int] | None) -> tuple[str, ...]:
    if not periods:
        return ()
    return (json.dumps({str(k): int(v) for k, v in periods.items()}),)


def _has_own_retries(client: Any) -> bool:
    """Whether a client retries failed commands itself (hiding whether the first attempt was
    sent); a cluster client always may."""
    if client is None or hasattr(client, "get_nodes"):
        return True
    get_retry = getattr(client, "get_retry", None)
    retry = get_retry() if callable(get_retry) else None
    return retry is None or bool(getattr(retry, "_retries", 1))


def _close_async_client(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close an asyncio client from outside its loop: on the loop if it still runs."""
    try:
        if loop.is_closed():
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)
    except RuntimeError:
        pass


def _client_defaults(*, asynchronous: bool, cluster: bool) -> dict[str, Any]:
    """Timeouts that fail fast and no retries inside redis-py (the store retries a failed
    connection itself, knowing whether a command may have been sent). A cluster client
    keeps a few retries of its own: it re-reads the topology between them."""
    from redis.backoff import ExponentialBackoff, NoBackoff

    if asynchronous:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry  # type: ignore[assignment]
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 2) if cluster else Retry(NoBackoff(), 0)
    return {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "retry": retry,
    }


@cache
def _client_parameters(cluster: bool) -> frozenset[str]:
    """Keyword options redis-py's client accepts, to reject unknown ones up front."""
    redis = _redis_module()
    names = set(inspect.signature(redis.Redis.__init__).parameters)
    if cluster:
        from redis.cluster import RedisCluster

        names |= set(inspect.signature(RedisCluster.__init__).parameters)
    names -= {"self", "kwargs", "args"}
    return frozenset(names)
