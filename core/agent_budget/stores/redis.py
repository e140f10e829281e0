"""RedisStore: budget state in Redis (or Redis Cluster), shared by every process and host.

Each operation is one round trip, atomic on the server: one FCALL of a function from the
Lua library in ``stores/lua/`` (loaded on first use, Redis 7+), or one EVALSHA of the same
code as a script where the server has no functions. Holds sit in a sorted set scored by
expiry and are reaped lazily by the Lua code; amounts are integers (never INCRBYFLOAT);
finished hold ids are remembered in tombstone keys with a TTL, so commits are idempotent.
Every key of one group (the root scope of a budget tree) carries the hash tag ``{group}``,
so an operation touches one Redis Cluster slot. redis-py is imported only when a RedisStore
is made.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlunsplit

from ..errors import StoreConfigError, StoreError
from .base import (
    STORE_QUERY_OPTIONS,
    CommitResult,
    Level,
    Line,
    ReserveResult,
    Store,
    StoreOptions,
    check_text,
    is_windowed,
    new_tuple,
    number_option,
)

__all__ = ["RedisStore"]

_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_OPERATIONS = ("reserve", "commit", "release", "read", "reset")
_HOLD_IN_USE = "AB_HOLD_IN_USE"

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


@dataclass(frozen=True)
class _Script:
    name: str
    source: str
    sha: str


def _lua(name: str) -> str:
    folder = resources.files("agent_budget.stores").joinpath("lua")
    return folder.joinpath(f"{name}.lua").read_text("utf-8")


@cache
def _script(name: str) -> _Script:
    """One operation as a script for EVALSHA: the shared code, then the operation, and its SHA1."""
    source = _lua("_common") + "\nbegin(KEYS, ARGV)\n" + _lua(name)
    return _Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class _Library:
    source: str
    functions: dict[str, str]  # operation -> function name


@cache
def _library() -> _Library:
    """Every operation as one Redis Function library (Redis 7+): the shared code is compiled
    once when the library loads, not on every call. Its name carries a digest of its code, so
    two agent-budget versions on one server never replace each other's functions."""
    common = _lua("_common")
    bodies = {op: _lua(op) for op in _OPERATIONS}
    tag = hashlib.sha1((common + "".join(bodies.values())).encode("utf-8")).hexdigest()[:16]
    source = f"#!lua name=agent_budget_{tag}\n{common}"
    for op, body in bodies.items():
        source += (
            f"\nredis.register_function('ab_{tag}_{op}', function(KEYS, ARGV)\n"
            f"begin(KEYS, ARGV)\n{body}\nend)\n"
        )
    return _Library(source, {op: f"ab_{tag}_{op}" for op in _OPERATIONS})


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


def _bool_option(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StoreConfigError(f"option {name} must be a boolean (1/0, true/false), got {text!r}")


def _parse_store_query(name: str, text: str) -> Any:
    if name == "key_prefix":
        return text
    if name in ("server_time", "functions"):
        return _bool_option(name, text)
    if name == "retries":
        return number_option(name, int, positive=False)(text)
    return STORE_QUERY_OPTIONS[name](text)


_STORE_QUERY_OPTIONS = (
    "key_prefix",
    "server_time",
    "functions",
    "retries",
    *STORE_QUERY_OPTIONS,
)


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
    callable making one on first use). ``key_prefix`` starts every key. With
    ``server_time=True`` (the default) the scripts read the server's clock, one clock for
    every host; ``False`` uses the ``now`` each caller passes (tests with a fake clock).
    ``functions=True`` (the default) runs the operations as Redis Functions where the server
    allows, else as EVALSHA scripts; ``False`` always uses scripts.
    """

    schemes = _SCHEMES

    def __init__(
        self,
        client: Any = None,
        *,
        key_prefix: str = "ab",
        server_time: bool = True,
        functions: bool = True,
        options: StoreOptions | None = None,
        **kwargs: Any,
    ) -> None:
        if options is not None and kwargs:
            raise StoreConfigError("pass either options= or StoreOptions fields, not both")
        self.options = options or StoreOptions(**kwargs)
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
        self._functions = functions
        self.key_prefix = key_prefix
        self.server_time = server_time
        self._client_lock = threading.Lock()
        self._closed = False
        self._bases: dict[str, str] = {}
        if client is None:
            redis = _redis_module()
            self._client: Any = redis.Redis()
            self._factory: Callable[[], Any] | None = None
        elif callable(client) and not hasattr(client, "evalsha"):
            self._client = None
            self._factory = client
        else:
            self._client = client
            self._factory = None
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
    def _from_url(cls, url: str, parsed: SplitResult, **options: Any) -> Store:
        redis = _redis_module()
        scheme = parsed.scheme.lower()
        cluster = scheme in _CLUSTER_SCHEMES
        base_scheme = scheme.split("+")[0]
        if parsed.fragment:
            raise StoreConfigError(f"malformed Redis URL {url!r}: unexpected #fragment")
        db_text = parsed.path.strip("/")
        if db_text and not db_text.isdigit():
            raise StoreConfigError(
                f"malformed Redis URL {url!r}: the path must be a database number, "
                f"got {parsed.path!r}"
            )
        userinfo, nodes = _split_hosts(url, parsed.netloc) if parsed.netloc else ("", [])
        if not cluster and len(nodes) > 1:
            raise StoreConfigError(
                f"several hosts in {url!r}: use {base_scheme}+cluster:// for Redis Cluster"
            )
        store_opts: dict[str, Any] = {}
        passthrough: list[tuple[str, str]] = []
        for name, value in parse_qsl(parsed.query, keep_blank_values=True):
            if name in store_opts or any(name == n for n, _ in passthrough):
                raise StoreConfigError(f"option {name!r} given twice in {url!r}")
            if name in _STORE_QUERY_OPTIONS:
                store_opts[name] = _parse_store_query(name, value)
            elif name in _REDIS_QUERY_OPTIONS:
                passthrough.append((name, value))
            else:
                known = ", ".join(sorted({*_STORE_QUERY_OPTIONS, *_REDIS_QUERY_OPTIONS}))
                raise StoreConfigError(
                    f"unknown option {name!r} in Redis URL {url!r} (known: {known})"
                )
        for name in list(options):
            if name in _STORE_QUERY_OPTIONS:
                store_opts[name] = options.pop(name)
        if "options" in options:
            store_opts["options"] = options.pop("options")
        valid = _client_parameters(cluster)
        unknown = sorted(set(options) - valid)
        if unknown:
            raise StoreConfigError(f"unknown Redis store option(s): {', '.join(unknown)}")
        retries = store_opts.pop("retries", 1)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise StoreConfigError(f"retries must be a non-negative int, got {retries!r}")
        client_kwargs = _client_defaults(retries)
        client_kwargs.update(options)
        host, port = nodes[0] if nodes else ("localhost", 6379)
        host_text = f"[{host}]" if ":" in host else host
        first = urlunsplit(
            (base_scheme, f"{userinfo}{host_text}:{port}", parsed.path, urlencode(passthrough), "")
        )
        try:
            parsed_kwargs = redis.connection.parse_url(first)
        except ValueError as exc:
            raise StoreConfigError(f"malformed Redis URL {url!r}: {exc}") from None
        if cluster:
            if parsed_kwargs.get("db", 0) != 0:
                raise StoreConfigError(f"Redis Cluster has only database 0, not in {url!r}")
            extra_nodes = nodes[1:]

            def make_cluster() -> Any:
                from redis.cluster import ClusterNode, RedisCluster

                return RedisCluster(
                    url=first,
                    startup_nodes=[
                        ClusterNode(h, p)  # type: ignore[no-untyped-call]
                        for h, p in extra_nodes
                    ],
                    **client_kwargs,
                )

            return cls(make_cluster, **store_opts)
        try:
            client = redis.Redis.from_url(first, **client_kwargs)
        except (TypeError, ValueError) as exc:
            raise StoreConfigError(f"malformed Redis URL {url!r}: {exc}") from None
        return cls(client, **store_opts)

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
                        raise StoreError(f"cannot reach Redis: {exc}") from exc
                client = self._client
        return client

    def _base(self, group: str) -> str:
        base = self._bases.get(group)
        if base is None:
            base = f"{self.key_prefix}:{{{_key_tag(group)}}}:"
            if len(self._bases) >= 4096:
                self._bases.clear()
            self._bases[group] = base
        return base

    def _eval(self, name: str, group: str, now: float, *args: str) -> Any:
        """Run one operation: one FCALL, or one EVALSHA where the server has no functions
        (plus a FUNCTION LOAD or SCRIPT LOAD the first time and after a restart)."""
        client = self.client
        keys_and_args = (self._base(group), f"{float(now)!r} {self._settings}", *args)
        try:
            if self._functions:
                try:
                    return self._fcall(client, name, keys_and_args)
                except self._response_error as exc:
                    if not _no_functions(exc):
                        raise
                    self._functions = False  # Redis < 7, or FUNCTION denied: use scripts
            script = _script(name)
            try:
                return client.evalsha(script.sha, 1, *keys_and_args)
            except self._no_script:
                client.script_load(script.source)
                return client.evalsha(script.sha, 1, *keys_and_args)
        except self._response_error as exc:
            if _HOLD_IN_USE in str(exc):
                raise ValueError(str(exc).replace(_HOLD_IN_USE, "").strip()) from None
            raise StoreError(f"Redis store {name} failed: {exc}") from exc
        except self._errors as exc:
            raise StoreError(f"Redis store {name} failed: {exc}") from exc

    def _fcall(self, client: Any, name: str, keys_and_args: tuple[str, ...]) -> Any:
        library = _library()
        function = library.functions[name]
        try:
            return client.fcall(function, 1, *keys_and_args)
        except self._response_error as exc:
            if "function not found" not in str(exc).lower():
                raise
        # First use on this server, or it restarted or was flushed: load, then call again.
        client.function_load(library.source, replace=True)
        return client.fcall(function, 1, *keys_and_args)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreError(f"Redis store call failed: {exc}") from exc

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
        blob = _encode(lines, limits=True)
        ttl_dry = f"{float(ttl)!r} {'1' if dry_run else '0'}"
        reply = self._eval("reserve", group, now, hold_id, ttl_dry, blob)
        fields = reply.split()
        refused = int(fields[1])
        return ReserveResult(
            fields[0] in (b"1", "1"), _levels(fields[2:]), None if refused < 0 else refused
        )

    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        blob = _encode(lines, limits=False)
        fields = self._eval("commit", group, now, hold_id, blob).split()
        return CommitResult(fields[0] in (b"1", "1"), _levels(fields[1:]))

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        return bool(int(self._eval("release", group, now, hold_id)))

    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        extra = (json.dumps({k: _int(v) for k, v in periods.items()}),) if periods else ()
        reply = self._eval("read", group, now, scope, *extra)
        return {
            _text(reply[i]): Level(int(reply[i + 1]), int(reply[i + 2]))
            for i in range(0, len(reply), 3)
        }

    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        self._eval("reset", group, now, scope, prefix)

    @property
    def _defs_key(self) -> str:
        return f"{self.key_prefix}:scopes"

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(dict(data), sort_keys=True)
        self._call(self.client.hset, self._defs_key, name, text)

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self._defs_key)
        return {_text(k): json.loads(_text(v)) for k, v in raw.items()}

    def delete_scope(self, name: str) -> None:
        self._call(self.client.hdel, self._defs_key, name)

    def ping(self) -> bool:
        """True when the server answers (raises StoreError otherwise)."""
        return bool(self._call(self.client.ping))

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
            self._closed = True
        if client is not None:
            try:
                client.close()
            except self._errors:
                pass

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.key_prefix!r}, server_time={self.server_time})"


def _int(value: int) -> int:
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"store amounts must be ints, got {value!r}")
    return int(value)


@lru_cache(maxsize=4096)
def _json_head(scope: str, metric: str) -> tuple[str, bool]:
    """The start of one line as the scripts read it (a JSON array, decoded by cjson):
    ``["scope","metric",`` in escaped ASCII, so any name survives; and whether the metric
    is a window. Checks the names first (ValueError before anything is sent)."""
    check_text("scope name", scope)
    check_text("metric", metric)
    return f"[{_quote(scope)},{_quote(metric)},", is_windowed(metric)


_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


_SMALL = 10**14


def _encode(lines: Sequence[Line], *, limits: bool) -> str:
    """Lines as the scripts read them: ``[[scope, metric, amount(, limit or null(,
    period))], ...]``. An amount or limit of 1e14 or more travels as a decimal string (cjson
    reads numbers as doubles, and the scripts print numbers exactly only below 1e14); the
    JSON then starts with a space, telling the scripts to read the strings (and nulls)."""
    parts = []
    slow = False
    for line in lines:
        head, windowed = _json_head(line[0], line[1])
        amount = _int(line[2])
        if not -_SMALL < amount < _SMALL:
            slow = True
            amount_text = f'"{amount}"'
        else:
            amount_text = str(amount)
        limit = line[3] if limits else None
        if limit is None:
            cap = "null"
        else:
            limit = _int(limit)
            if not -_SMALL < limit < _SMALL:
                slow = True
                cap = f'"{limit}"'
            else:
                cap = str(limit)
        period = line[4]
        if period is not None:
            if windowed:
                raise ValueError(f"a rolling window ({line[1]!r}) cannot carry a period")
            if limit is None:
                slow = True
            parts.append(f"{head}{amount_text},{cap},{_int(period)}]")
        elif limit is not None:
            parts.append(f"{head}{amount_text},{cap}]")
        else:
            parts.append(f"{head}{amount_text}]")
    return (" [" if slow else "[") + ",".join(parts) + "]"


def _no_functions(exc: BaseException) -> bool:
    """True when the server cannot run our functions (no FUNCTION/FCALL before Redis 7, or
    an ACL that denies them): scripts serve instead."""
    text = str(exc).lower()
    return "unknown command" in text or "noperm" in text or "no permissions" in text


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _levels(flat: Sequence[Any]) -> tuple[Level, ...]:
    numbers = [int(x) for x in flat]
    return tuple([new_tuple(Level, pair) for pair in zip(numbers[::2], numbers[1::2], strict=True)])


def _client_defaults(retries: int) -> dict[str, Any]:
    """Short timeouts and few retries: a budget check must fail fast when Redis is down."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
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
