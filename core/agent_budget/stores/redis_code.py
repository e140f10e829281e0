"""What RedisStore sends and reads: the Lua code, lines as the scripts take them, replies,
and which driver errors are transient. No redis-py import at module level."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ..errors import StoreError, StorePermanentError, StoreTransientError
from .base import Level, Line, check_text, is_windowed, new_tuple

__all__ = [
    "HOLD_IN_USE",
    "OPERATIONS",
    "Library",
    "Script",
    "classify",
    "encode_lines",
    "levels",
    "library",
    "no_functions",
    "script",
    "text",
]

OPERATIONS = ("reserve", "commit", "release", "read", "reset")
HOLD_IN_USE = "AB_HOLD_IN_USE"
SMALL = 10**14
"""Integers below this (in magnitude) travel as JSON numbers; larger ones as decimal strings
(cjson reads numbers as doubles; the scripts print numbers exactly only below 1e14)."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _lua(name: str) -> str:
    folder = resources.files("agent_budget.stores").joinpath("lua")
    return folder.joinpath(f"{name}.lua").read_text("utf-8")


@cache
def script(name: str) -> Script:
    """One operation as a script for EVALSHA: the shared code, then the operation, and its SHA1."""
    source = _lua("_common") + "\nbegin(KEYS, ARGV)\n" + _lua(name)
    return Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class Library:
    source: str
    functions: dict[str, str]  # operation -> function name


@cache
def library() -> Library:
    """Every operation as one Redis Function library (Redis 7+): the shared code is compiled
    once when the library loads, not on every call. Its name carries a digest of its code, so
    two agent-budget versions on one server never replace each other's functions."""
    common = _lua("_common")
    bodies = {op: _lua(op) for op in OPERATIONS}
    tag = hashlib.sha1((common + "".join(bodies.values())).encode("utf-8")).hexdigest()[:16]
    source = f"#!lua name=agent_budget_{tag}\n{common}"
    for op, body in bodies.items():
        source += (
            f"\nredis.register_function('ab_{tag}_{op}', function(KEYS, ARGV)\n"
            f"begin(KEYS, ARGV)\n{body}\nend)\n"
        )
    return Library(source, {op: f"ab_{tag}_{op}" for op in OPERATIONS})


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


def encode_lines(lines: Sequence[Line], *, limits: bool) -> str:
    """Lines as the scripts read them: ``[[scope, metric, amount(, limit or null(,
    period))], ...]``. An amount or limit of 1e14 or more travels as a decimal string; the
    JSON then starts with a space, telling the scripts to read the strings (and nulls)."""
    parts = []
    slow = False
    for line in lines:
        head, windowed = _json_head(line[0], line[1])
        amount = _int(line[2])
        if -SMALL < amount < SMALL:
            amount_text = str(amount)
        else:
            slow = True
            amount_text = f'"{amount}"'
        limit = line[3] if limits else None
        if limit is None:
            cap = "null"
        else:
            limit = _int(limit)
            if -SMALL < limit < SMALL:
                cap = str(limit)
            else:
                slow = True
                cap = f'"{limit}"'
        period = line[4]
        if period is not None:
            if windowed:
                raise ValueError(f"a rolling window ({line[1]!r}) cannot carry a period")
            slow = slow or limit is None
            parts.append(f"{head}{amount_text},{cap},{_int(period)}]")
        elif limit is not None:
            parts.append(f"{head}{amount_text},{cap}]")
        else:
            parts.append(f"{head}{amount_text}]")
    return (" [" if slow else "[") + ",".join(parts) + "]"


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def levels(flat: Sequence[Any]) -> tuple[Level, ...]:
    numbers = [int(x) for x in flat]
    return tuple([new_tuple(Level, pair) for pair in zip(numbers[::2], numbers[1::2], strict=True)])


def no_functions(exc: BaseException) -> bool:
    """True when the server cannot run our functions (no FUNCTION/FCALL before Redis 7, or
    an ACL that denies them): scripts serve instead."""
    lowered = str(exc).lower()
    return "unknown command" in lowered or "noperm" in lowered or "no permissions" in lowered


# Replies that say the server cannot take any write just now (loading, failing over, out of
# memory, a long script, a failed save, an ACL): it rejected the call before running it.
_BUSY_REPLIES = (
    "LOADING",
    "BUSY",
    "READONLY",
    "OOM",
    "MISCONF",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "NOREPLICAS",
)


def _sent(exc: BaseException) -> bool:
    """Whether a failed command may have reached the server: only a connection that could
    not be made is certain not to have carried it."""
    message = str(exc)
    return not ("connecting to" in message or "Timeout connecting" in message)


def classify(
    exc: BaseException, what: str, *, certain: bool, redis_module: Any
) -> tuple[StoreError, bool]:
    """The library's error for a driver failure, and whether retrying the call may help.

    ``certain`` says whether the client tells sending failures apart (no hidden retries of
    its own); otherwise a transient failure is always taken as possibly applied.
    """
    exceptions = redis_module.exceptions
    if isinstance(exc, exceptions.ResponseError) and not isinstance(
        exc, exceptions.ConnectionError
    ):
        busy_types = (
            exceptions.ReadOnlyError,
            exceptions.OutOfMemoryError,
            exceptions.ClusterDownError,
            exceptions.TryAgainError,
            exceptions.NoPermissionError,
        )
        code = str(getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]).upper()
        if code in _BUSY_REPLIES or isinstance(exc, busy_types):
            return (
                StoreTransientError(f"Redis store {what} failed: {exc}", maybe_applied=False),
                False,
            )
        return StorePermanentError(f"Redis store {what} failed: {exc}"), False
    if isinstance(exc, (exceptions.DataError, UnicodeError, TypeError, ValueError)):
        return StorePermanentError(f"Redis store {what} failed: {exc}"), False
    timeout = isinstance(exc, (exceptions.TimeoutError, TimeoutError))
    sent = _sent(exc) if certain else True
    error = StoreTransientError(f"Redis store {what} failed: {exc}", maybe_applied=sent)
    # A stale pooled connection fails at once: one more try on a new one. A timeout is not
    # retried: the server is hung or slow, and the caller is waiting.
    return error, not timeout
