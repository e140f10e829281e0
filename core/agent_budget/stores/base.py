"""The store interface every backend implements, and the URL-scheme registry that picks one.

A store keeps integer counters per scope (tokens, nano-USD) plus short-lived *holds*
(reservations). It knows nothing of models, prices or alerts: the budget turns a call into
:class:`Line` items and the store applies them atomically, all or nothing.

Semantics every store must share (the conformance suite in ``tests/`` checks them):

- Counters whose metric starts with ``day:`` are rolling windows: an amount added at time
  ``t`` lands in the bucket starting ``floor(t / bucket) * bucket`` and counts while
  ``bucket_start > now - window - bucket``; so it leaves the window between ``window`` and
  ``window + bucket`` seconds later (never early). Other counters are plain totals.
- ``reserve`` first drops expired holds, then refuses (writing nothing) when any line with a
  limit has ``committed + reserved + amount > limit``; otherwise it holds every line's amount
  until ``now + ttl``. ``dry_run`` checks without holding.
- ``commit`` drops the hold (if still live) and adds every line's amount to its counter, even
  above a limit, exactly once per ``hold_id``: a second commit is a no-op. Commit after
  release still records (money was spent). ``release`` drops a live hold; it is a no-op for
  unknown, expired, committed or released ids.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple
from urllib.parse import SplitResult, urlsplit

from ..errors import StoreConfigError

__all__ = [
    "STORE_QUERY_OPTIONS",
    "CommitResult",
    "Level",
    "Line",
    "ReserveResult",
    "Store",
    "StoreOptions",
    "bucket_start",
    "is_windowed",
    "number_option",
]


class Line(NamedTuple):
    """An amount against one counter of one scope, with the cap that applies (if any).

    A named tuple rather than a dataclass: several are built on every call.
    """

    scope: str
    metric: str
    amount: int
    limit: int | None = None


class Level(NamedTuple):
    """A counter's state: committed usage and what live holds reserve on it."""

    committed: int = 0
    reserved: int = 0


# Builds a named tuple in C from a plain tuple, skipping its Python-level __new__: for the
# lines and levels made on every call (hot paths only; no defaults, no checks).
new_tuple = tuple.__new__


class ReserveResult(NamedTuple):
    """Outcome of a reserve: ``levels`` are per line, as they were before this hold.

    A named tuple, like :class:`Line` and :class:`Level`: one is made on every call.
    """

    admitted: bool
    levels: tuple[Level, ...]
    refused_at: int | None = None


class CommitResult(NamedTuple):
    """Outcome of a commit: ``levels`` are per line, after it; ``applied`` is False for a
    repeated commit of the same hold id."""

    applied: bool
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class StoreOptions:
    """Tunables shared by every store.

    ``window_seconds``/``bucket_seconds`` shape the rolling day window (96 buckets of 15
    minutes by default); ``tombstone_ttl`` is how long a finished hold id is remembered for
    idempotency; ``idle_ttl`` (seconds, or None for never) drops a scope's counters after that
    long without use.
    """

    window_seconds: int = 86_400
    bucket_seconds: int = 900
    tombstone_ttl: float = 3_600.0
    idle_ttl: float | None = None

    def __post_init__(self) -> None:
        for name in ("window_seconds", "bucket_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise StoreConfigError(f"{name} must be a positive int, got {value!r}")
        if self.window_seconds % self.bucket_seconds:
            raise StoreConfigError("window_seconds must be a multiple of bucket_seconds")
        for name in ("tombstone_ttl", "idle_ttl"):
            value = getattr(self, name)
            if value is None and name == "idle_ttl":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise StoreConfigError(f"{name} must be a positive number, got {value!r}")


def number_option(
    name: str, kind: type[int] | type[float], *, allow_none: bool = False, positive: bool = True
) -> Callable[[str], Any]:
    """A parser for one numeric store option given as URL query text (``?idle_ttl=60``)."""

    def parse(text: str) -> Any:
        if allow_none and text.strip().lower() in ("", "none", "off"):
            return None
        try:
            value = kind(text)
        except ValueError:
            raise StoreConfigError(f"option {name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or (positive and value <= 0):
            adjective = "positive" if positive else "finite"
            raise StoreConfigError(f"option {name} must be a {adjective} number, got {text!r}")
        return value

    return parse


STORE_QUERY_OPTIONS: dict[str, Callable[[str], Any]] = {
    "window_seconds": number_option("window_seconds", int),
    "bucket_seconds": number_option("bucket_seconds", int),
    "tombstone_ttl": number_option("tombstone_ttl", float),
    "idle_ttl": number_option("idle_ttl", float, allow_none=True),
}
"""Parsers of the :class:`StoreOptions` fields every store URL accepts in its query string."""


def is_windowed(metric: str) -> bool:
    return metric.startswith("day:")


def bucket_start(now: float, bucket_seconds: int) -> int:
    return int(now // bucket_seconds) * bucket_seconds


class Store(abc.ABC):
    """Base class of budget stores. Subclasses set ``schemes`` to be found by URL."""

    schemes: ClassVar[tuple[str, ...]] = ()
    keeps_ledger: ClassVar[bool] = True
    """Whether ``commit`` stores the usage record it is given (else the budget skips building
    it)."""
    does_io: ClassVar[bool] = True
    """Whether an operation may wait on a disk or a network; async callers run such a store's
    operations off the event loop."""
    _registry: ClassVar[dict[str, type[Store]]] = {}

    options: StoreOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            Store._registry[scheme] = cls

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Store:
        """Open the store a URL names: ``memory://``, ``sqlite:///path``, ``redis://...``."""
        if not isinstance(url, str) or not url.strip():
            raise StoreConfigError(f"store URL must be a non-empty string, got {url!r}")
        if "://" not in url:
            raise StoreConfigError(
                f"malformed store URL {url!r}: expected scheme://..., e.g. memory:// or "
                "sqlite:///path/budget.db"
            )
        try:
            parsed = urlsplit(url)
        except ValueError as exc:
            raise StoreConfigError(f"malformed store URL {url!r}: {exc}") from None
        scheme = parsed.scheme.lower()
        _load_builtin_backends(scheme)
        backend = Store._registry.get(scheme)
        if backend is None:
            known = ", ".join(sorted(set(Store._registry) | set(BUILTIN_SCHEMES)))
            raise StoreConfigError(f"unknown store scheme {scheme!r} in {url!r} (known: {known})")
        return backend._from_url(url, parsed, **options)

    @classmethod
    def _from_url(cls, url: str, parsed: SplitResult, **options: Any) -> Store:
        raise StoreConfigError(f"{cls.__name__} cannot be opened from a URL")

    # -- the atomic operations -------------------------------------------------------------

    @abc.abstractmethod
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
        """Hold every line's amount, or refuse without writing if any limit would be crossed."""

    @abc.abstractmethod
    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """Free the hold and add the actual amounts, once per ``hold_id``."""

    @abc.abstractmethod
    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        """Free a live hold without spending; True if one was freed."""

    @abc.abstractmethod
    def read(self, scope: str, *, now: float, group: str) -> dict[str, Level]:
        """Every counter of ``scope`` that is non-zero or held, by metric."""

    @abc.abstractmethod
    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        """Zero the committed value of ``scope``'s counters whose metric starts with
        ``prefix`` (holds stay)."""

    # -- scope definitions, so every process and the CLI see the same limits ----------------

    @abc.abstractmethod
    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        """Remember a scope's definition (its ``BudgetScope.to_dict()`` plus ``parent``)."""

    @abc.abstractmethod
    def load_scopes(self) -> dict[str, dict[str, Any]]:
        """Every saved scope definition, by name."""

    @abc.abstractmethod
    def delete_scope(self, name: str) -> None:
        """Forget a scope's definition (its counters stay until idle expiry)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BUILTIN_SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster")
"""Schemes of the stores that ship with agent-budget (imported on first use)."""


def _load_builtin_backends(scheme: str) -> None:
    """Import the module of a built-in backend lazily, so optional drivers stay optional."""
    if scheme in Store._registry:
        return
    if scheme in ("sqlite",):
        from . import sqlite  # noqa: F401
    elif scheme.startswith("redis") or scheme.startswith("rediss"):
        try:
            from . import redis  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise StoreConfigError(
                f"the {scheme}:// store needs redis-py: pip install 'agent-budget[redis]' ({exc})"
            ) from None
