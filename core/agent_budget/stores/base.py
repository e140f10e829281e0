"""The store interface every backend implements, and the URL-scheme registry that picks one.

A store keeps integer counters per scope (tokens, nano-USD) plus short-lived *holds*
(reservations). It knows nothing of models, prices or alerts: the budget turns a call into
:class:`Line` items and the store applies them atomically, all or nothing.

Semantics every store must share (:mod:`agent_budget.testing` checks them, on every built-in
store in ``tests/test_store_conformance.py``):

- **Numbers.** Amounts, limits and counters are Python ints of any size, stored and read
  back exactly (no float rounding, no exponent form).
- **Windows.** Which metrics are rolling windows is decided by :func:`window_of` alone: a
  metric starting with ``day:`` is a window of ``StoreOptions.window_seconds`` in buckets of
  ``bucket_seconds``; ``roll:<seconds>:<rest>`` (``roll:3600:tokens``) is a window of
  ``<seconds>`` in buckets of :func:`roll_bucket` ``(seconds)``. An amount added at time
  ``t`` lands in the bucket starting ``floor(t / bucket) * bucket`` and counts while
  ``bucket_start > now - window - bucket``, so it leaves the window between ``window`` and
  ``window + bucket`` seconds later (never early). Other counters are plain totals.
- **Calendar periods.** A line may carry ``period``, the start (epoch seconds) of the
  calendar period its counter counts (a plain total only; a window with a period is a
  ``ValueError``). The counter remembers the newest period any line has brought to it: a
  line with a newer period restarts its committed value at zero for that period (holds
  stay); a line with an older period counts into the stored, newer one; a line without a
  period counts into whatever period is stored. Levels are reported for the current
  period. A reserve that is refused or a dry run writes nothing, so it moves no period.
  ``read(..., periods={metric: start})`` reports a counter whose stored period is older
  than ``start`` as zero committed.
- **Reserve** first drops expired holds, then refuses (writing nothing) when any line with
  a limit has ``committed + reserved + amount > limit``; otherwise it holds every line's
  amount until ``now + ttl``. ``dry_run`` checks without holding (ids may repeat).
- **Repeated reserve.** A reserve whose ``hold_id`` is still held with the same
  ``(scope, metric, amount)`` lines (a client retrying after a lost reply) is admitted
  again without holding twice, and reports the levels as they were before that hold
  (what the first reply said, if nothing else changed). A hold id that is held with other
  lines, or that was committed or released within ``tombstone_ttl``, raises ``ValueError``
  ("already in use") and changes nothing. An id whose hold expired may be reused.
- **Commit** drops the hold (if still live) and adds every line's amount to its counter,
  even above a limit, exactly once per ``hold_id`` within ``tombstone_ttl``: a second
  commit is a no-op (``applied=False``). A store may also bound how many finished ids it
  remembers, forgetting the oldest first (MemoryStore: ``max_tombstones``, 10,000); a
  retried commit comes seconds after the first. Commit after release still records (money was
  spent). The levels a commit returns are read in the same atomic step, after it: for an
  applied commit ``committed - amount`` is the level just before it, so exactly one commit
  crosses any threshold. ``release`` drops a live hold; it is a no-op for unknown,
  expired, committed or released ids.
- **Idle expiry.** With ``idle_ttl``, an ordinary scope unused that long is dropped
  (counters and all), lazily, with no background thread. *Session scopes* (names made by
  :func:`session_scope`) follow ``session_ttl`` instead (7 days by default). Either way a
  scope is never dropped while anything in it still counts: a live hold, a window with
  usage still inside it, or a non-zero period counter less than :data:`PERIOD_HORIZON`
  seconds past its period start. So no setting can void a cap.
- Bad lines (a malformed ``roll:`` metric, a period on a window, a name that is not valid
  UTF-8 text) raise ``ValueError`` before anything is written. Backend failures raise
  :class:`~agent_budget.errors.StoreError`.

What happened, for reports (``stores/ledger.py`` holds the shared row fields and filters):

- A store that ``keeps_ledger`` appends the ``record`` a commit receives to a bounded ledger,
  atomically with the counters and once per ``hold_id``; ``ledger()`` returns matching rows
  with the fields of ``LEDGER_FIELDS`` (same on every store) and ``aggregate()`` sums them per
  scope, session, model and time bucket. ``record_event`` keeps refusals and alerts in a
  bounded events log (``events()``) and counts them per scope and kind for good
  (``event_counts()``).
- Reads never write: ``peek`` / ``peek_many`` answer what ``read`` would without reaping,
  dropping idle scopes or loading code on a server; ``ledger``, ``aggregate``, ``events``,
  ``event_counts`` and ``load_scopes`` write nothing either. A store opened with
  ``read_only=True`` refuses every write and never creates anything.
"""

from __future__ import annotations

import abc
import asyncio
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import SplitResult, parse_qsl, urlsplit

from ..errors import StoreConfigError

if TYPE_CHECKING:
    from ..records import UsageRecord

__all__ = [
    "BUILTIN_SCHEMES",
    "MAX_WINDOW_SECONDS",
    "PERIOD_HORIZON",
    "SESSION_MARK",
    "STORE_QUERY_OPTIONS",
    "CommitResult",
    "Level",
    "Line",
    "ReserveResult",
    "Store",
    "StoreOptions",
    "StoreURL",
    "bucket_start",
    "check_text",
    "is_session_scope",
    "is_windowed",
    "make_options",
    "number_option",
    "roll_bucket",
    "roll_metric",
    "session_scope",
    "window_of",
]


class Line(NamedTuple):
    """An amount against one counter of one scope, with the cap that applies (if any) and
    the calendar period it counts in (if any; see the module docstring).

    A named tuple rather than a dataclass: several are built on every call.
    """

    scope: str
    metric: str
    amount: int
    limit: int | None = None
    period: int | None = None


class Level(NamedTuple):
    """A counter's state: committed usage and what live holds reserve on it."""

    committed: int = 0
    reserved: int = 0


# Builds a named tuple in C from a plain tuple, skipping its Python-level __new__: for the
# lines and levels made on every call (hot paths only; no defaults, no checks: a Line made
# this way must have all five fields).
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


# -- windows, periods and session scopes: the rules every store applies ---------------------

MAX_WINDOW_SECONDS = 10 * 366 * 86_400
"""Longest rolling window a ``roll:<seconds>:`` metric may name (about ten years)."""

PERIOD_HORIZON = 32 * 86_400
"""How long after its period start a period counter keeps its scope from idle expiry: the
longest calendar period a Budget uses (a month, 31 days) plus a day of slack for time
zones and DST. Calendar periods longer than this are not supported."""

ROLL_BUCKETS = 96
"""A ``roll:`` window is cut into about this many buckets (as the day window's 96 x 15
minutes), so each counter keeps at most ``ROLL_BUCKETS + 2`` buckets."""

SESSION_MARK = "\x1f"
"""The separator of session scope names (ASCII unit separator). Scope names checked by
:func:`agent_budget.validate.check_name` cannot contain control characters, so a session
scope never collides with a real scope."""


def roll_bucket(seconds: int) -> int:
    """Bucket length of a ``roll:<seconds>:`` window: ``max(1, seconds // 96)``.

    At most 98 buckets per counter whatever the window (memory and per-call work stay
    bounded), an amount leaves at most about 1% of the window late and never early, and a
    ``roll:86400:`` window buckets exactly as the default ``day:`` window (15 minutes).
    """
    return max(1, seconds // ROLL_BUCKETS)


def roll_metric(seconds: int, name: str) -> str:
    """The metric of a rolling window of ``seconds`` counting ``name``: ``roll:3600:tokens``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"window seconds must be an int, got {seconds!r}")
    if not 0 < seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(
            f"window seconds must be between 1 and {MAX_WINDOW_SECONDS}, got {seconds}"
        )
    return f"roll:{seconds}:{name}"


@lru_cache(maxsize=4096)
def _roll_window(metric: str) -> tuple[int, int]:
    """(window, bucket) of a ``roll:`` metric; ValueError if it is malformed."""
    text, sep, _ = metric[5:].partition(":")
    if (
        not sep
        or not text.isascii()
        or not text.isdigit()
        or text.startswith("0")
        or int(text) > MAX_WINDOW_SECONDS
    ):
        raise ValueError(
            f"malformed rolling-window metric {metric!r}: expected roll:<seconds>:<name> "
            f"with 1 <= seconds <= {MAX_WINDOW_SECONDS}"
        )
    seconds = int(text)
    return seconds, roll_bucket(seconds)


def window_of(metric: str, options: StoreOptions) -> tuple[int, int] | None:
    """``(window, bucket)`` seconds of a windowed metric, or None for a plain total.

    The one rule for which metrics are rolling windows (see the module docstring): ``day:``
    metrics use the store's options, ``roll:<seconds>:`` metrics their own length.
    """
    if metric.startswith("day:"):
        return options.window_seconds, options.bucket_seconds
    if metric.startswith("roll:"):
        return _roll_window(metric)
    return None


def is_windowed(metric: str) -> bool:
    """True for a rolling-window metric (``day:`` or a well-formed ``roll:<seconds>:``)."""
    if metric.startswith("day:"):
        return True
    if metric.startswith("roll:"):
        _roll_window(metric)
        return True
    return False


def bucket_start(now: float, bucket_seconds: int) -> int:
    return int(now // bucket_seconds) * bucket_seconds


def session_scope(scope: str, session_id: str) -> str:
    """The name of the counters of one session (conversation) of ``scope``.

    ``scope`` + U+001F + ``session_id``: unambiguous because real scope names cannot hold
    control characters, and recognised by every store (:func:`is_session_scope`), which
    drops it after ``StoreOptions.session_ttl`` without use.
    """
    if not isinstance(scope, str) or not scope or SESSION_MARK in scope:
        raise ValueError(f"not a scope name: {scope!r}")
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session_id must be a non-empty str, got {session_id!r}")
    return f"{scope}{SESSION_MARK}{session_id}"


def is_session_scope(name: str) -> bool:
    """True for a name made by :func:`session_scope`."""
    return SESSION_MARK in name


def check_text(what: str, value: object) -> str:
    """``value`` if it is a str that encodes as UTF-8 (no lone surrogates), else ValueError
    (TypeError for a non-str). Every store keeps names as UTF-8 text."""
    if value.__class__ is str and value.isascii():
        return value  # the usual name: ASCII text always encodes
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {value!r} is not valid text (it holds a lone surrogate at index "
            f"{exc.start}, e.g. from undecodable bytes)"
        ) from None
    return value


@dataclass(frozen=True)
class StoreOptions:
    """Tunables shared by every store.

    ``window_seconds``/``bucket_seconds`` shape the rolling ``day:`` window (96 buckets of
    15 minutes by default); ``tombstone_ttl`` is how long a finished hold id is remembered
    for idempotency; ``idle_ttl`` (seconds, or None for never) drops an ordinary scope's
    counters after that long without use; ``session_ttl`` (seconds, default 7 days, or None
    for never) does the same for session scopes (:func:`session_scope`). Neither drops a
    scope while something in it still counts (see the module docstring). ``spool`` is where
    commits made while the store is down wait for it, durably (see
    :mod:`agent_budget.outage`): None for the default place, a directory, or ``"off"`` to
    keep them in memory only.
    """

    window_seconds: int = 86_400
    bucket_seconds: int = 900
    tombstone_ttl: float = 3_600.0
    idle_ttl: float | None = None
    session_ttl: float | None = 7 * 86_400.0
    spool: str | None = None

    def __post_init__(self) -> None:
        if self.spool is not None and (not isinstance(self.spool, str) or not self.spool):
            raise StoreConfigError(
                f"spool must be 'off', a directory path or None (the default place), "
                f"got {self.spool!r}"
            )
        for name in ("window_seconds", "bucket_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise StoreConfigError(f"{name} must be a positive int, got {value!r}")
            if value > MAX_WINDOW_SECONDS:
                raise StoreConfigError(
                    f"{name} must be at most {MAX_WINDOW_SECONDS} seconds, got {value!r}"
                )
        if self.window_seconds % self.bucket_seconds:
            raise StoreConfigError("window_seconds must be a multiple of bucket_seconds")
        for name in ("tombstone_ttl", "idle_ttl", "session_ttl"):
            value = getattr(self, name)
            if value is None and name != "tombstone_ttl":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
                or value > MAX_WINDOW_SECONDS
            ):
                raise StoreConfigError(
                    f"{name} must be a positive number of seconds (at most "
                    f"{MAX_WINDOW_SECONDS}), got {value!r}"
                )

    def scope_ttl(self, scope: str) -> float | None:
        """The idle expiry that applies to ``scope``: ``session_ttl`` for a session scope,
        else ``idle_ttl``."""
        return self.session_ttl if SESSION_MARK in scope else self.idle_ttl


def number_option(
    name: str,
    kind: type[int] | type[float],
    *,
    allow_none: bool = False,
    positive: bool = True,
    maximum: float | None = None,
) -> Callable[[str], Any]:
    """A parser for one numeric store option given as URL query text (``?idle_ttl=60``);
    it also checks a value given as a number (a keyword)."""

    def parse(text: Any) -> Any:
        if allow_none and (text is None or str(text).strip().lower() in ("", "none", "off")):
            return None
        if isinstance(text, bool):
            raise StoreConfigError(f"option {name} must be a number, got {text!r}")
        try:
            value = kind(text)
        except (TypeError, ValueError, OverflowError):
            raise StoreConfigError(f"option {name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or (positive and value <= 0):
            adjective = "positive" if positive else "finite"
            raise StoreConfigError(f"option {name} must be a {adjective} number, got {text!r}")
        if maximum is not None and value > maximum:
            raise StoreConfigError(f"option {name} must be at most {maximum:g}, got {text!r}")
        return value

    return parse


def make_options(options: StoreOptions | None, fields: Mapping[str, Any]) -> StoreOptions:
    """The StoreOptions a store was given: ``options=`` or its fields as keywords (not both);
    an unknown name is a StoreConfigError listing the known ones."""
    if options is not None:
        if fields:
            raise StoreConfigError("pass either options= or StoreOptions fields, not both")
        if not isinstance(options, StoreOptions):
            raise StoreConfigError(f"options must be a StoreOptions, got {options!r}")
        return options
    known = StoreOptions.__dataclass_fields__
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise StoreConfigError(
            f"unknown store option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return StoreOptions(**fields)


STORE_QUERY_OPTIONS: dict[str, Callable[[str], Any]] = {
    "window_seconds": number_option("window_seconds", int),
    "bucket_seconds": number_option("bucket_seconds", int),
    "tombstone_ttl": number_option("tombstone_ttl", float),
    "idle_ttl": number_option("idle_ttl", float, allow_none=True),
    "session_ttl": number_option("session_ttl", float, allow_none=True),
    "spool": str,
}
"""Parsers of the :class:`StoreOptions` fields every store URL accepts in its query string."""

BUILTIN_SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster")
"""Schemes of the stores that ship with agent-budget (imported on first use)."""


@dataclass(frozen=True)
class StoreURL:
    """A store URL, split and checked once for every store (see :meth:`Store.from_url`)."""

    text: str
    scheme: str
    netloc: str
    path: str
    parts: SplitResult


def _split_url(url: object) -> StoreURL:
    if not isinstance(url, str) or not url.strip():
        raise StoreConfigError(f"store URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        raise StoreConfigError(
            f"malformed store URL {url!r}: expected scheme://..., e.g. memory:// or "
            "sqlite:///path/budget.db"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreConfigError(f"malformed store URL {url!r}: {exc}") from None
    if parts.fragment:
        raise StoreConfigError(f"malformed store URL {url!r}: unexpected #fragment")
    return StoreURL(url, parts.scheme.lower(), parts.netloc, parts.path, parts)


def _parse_query(location: StoreURL, parsers: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The query options of a URL, each parsed; unknown or repeated names are errors."""
    found: dict[str, Any] = {}
    try:
        pairs = parse_qsl(location.parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise StoreConfigError(f"malformed query in store URL {location.text!r}: {exc}") from None
    for name, value in pairs:
        parser = parsers.get(name)
        if parser is None:
            known = ", ".join(sorted(parsers))
            raise StoreConfigError(
                f"unknown option {name!r} in {location.scheme} URL {location.text!r} "
                f"(known: {known})"
            )
        if name in found:
            raise StoreConfigError(f"option {name!r} given twice in {location.text!r}")
        found[name] = parser(value)
    return found


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

    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {}
    """Query options this backend's URLs take besides the :class:`StoreOptions` fields, each
    with the parser of its text."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Store:
        """Open the store a URL names: ``memory://``, ``sqlite:///path``, ``redis://...``.

        Every store's URL is split and its query checked here, the same way: an unknown or
        repeated option, a bad value, a ``#fragment`` or an unknown scheme is a
        :class:`StoreConfigError` naming the problem. Keywords override query options.
        """
        location = _split_url(url)
        _load_builtin_backends(location.scheme)
        backend = Store._registry.get(location.scheme)
        if backend is None:
            known = ", ".join(sorted({*BUILTIN_SCHEMES, *Store._registry}))
            raise StoreConfigError(
                f"unknown store scheme {location.scheme!r} in {url!r} (known: {known})"
            )
        query = _parse_query(location, {**STORE_QUERY_OPTIONS, **backend.url_options})
        return backend._open(location, {**query, **options})

    @classmethod
    def _open(cls, location: StoreURL, options: dict[str, Any]) -> Store:
        """Make the store ``location`` names; ``options`` are its parsed query options with
        the caller's keywords over them. Backends override this (or, as before,
        ``_from_url(url, parts, **options)``)."""
        return cls._from_url(location.text, location.parts, **options)

    @classmethod
    def _from_url(cls, url: str, parsed: SplitResult, **options: Any) -> Store:
        raise StoreConfigError(f"{cls.__name__} cannot be opened from a URL")

    # -- what the outage buffer needs ----------------------------------------------------------

    def spool_key(self) -> str | None:
        """A name of this store's data, the same in every process that opens it on this host
        (a file path, a server address and key prefix), under which commits made while it
        is down are spooled to a local file for the next process; None keeps them in this
        process's memory only (the default, and MemoryStore's)."""
        return None

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
    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        """Every counter of ``scope`` that is non-zero or held, by metric. ``periods``
        (metric -> period start) reports a counter whose stored period is older as zero
        committed. Reads change nothing a later operation could observe."""

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

    # -- the same operations for asyncio ---------------------------------------------------
    # By default each runs its sync form in a worker thread, so the event loop never waits
    # on I/O; MemoryStore answers inline (no I/O) and RedisStore uses redis.asyncio.

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
        """:meth:`reserve` without blocking the event loop."""
        return await asyncio.to_thread(
            self.reserve, hold_id, lines, now=now, ttl=ttl, group=group, dry_run=dry_run
        )

    async def acommit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """:meth:`commit` without blocking the event loop."""
        return await asyncio.to_thread(
            self.commit, hold_id, lines, now=now, group=group, record=record
        )

    async def arelease(self, hold_id: str, *, now: float, group: str) -> bool:
        """:meth:`release` without blocking the event loop."""
        return await asyncio.to_thread(self.release, hold_id, now=now, group=group)

    async def aread(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        """:meth:`read` without blocking the event loop."""
        return await asyncio.to_thread(self.read, scope, now=now, group=group, periods=periods)

    async def areset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        """:meth:`reset` without blocking the event loop."""
        await asyncio.to_thread(self.reset, scope, prefix, now=now, group=group)

    async def asave_scope(self, name: str, data: Mapping[str, Any]) -> None:
        """:meth:`save_scope` without blocking the event loop."""
        await asyncio.to_thread(self.save_scope, name, data)

    async def aload_scopes(self) -> dict[str, dict[str, Any]]:
        """:meth:`load_scopes` without blocking the event loop."""
        return await asyncio.to_thread(self.load_scopes)

    async def aclose(self) -> None:
        """:meth:`close`, from a coroutine (closing asyncio connections too)."""
        self.close()

    # -- what happened: the ledger of calls and the events log, for reports ---------------
    # Defaults for stores that keep neither; every built-in store overrides them.

    read_only: bool = False
    """True for a store opened with ``read_only=True``: writes raise StoreError."""

    @staticmethod
    def ledger_entry(record: UsageRecord) -> Any:
        """What :meth:`commit` receives as ``record`` for a usage record: the JSON-safe
        mapping of ``record_payload`` (a store that keeps records in process memory may
        keep the record itself, and convert it when read)."""
        return _record_payload()(record)

    groups_natively: ClassVar[bool] = False
    """True when :meth:`aggregate` runs where the rows live (SQL); else it sums
    :meth:`ledger` rows, and a caller wanting several groupings should fetch rows once."""

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
        """Ledger rows with ``since <= timestamp < until`` of the scope(s), session and model
        given (None: any), by time, oldest first (or newest first; equal times in commit
        order), at most ``limit``. Each row has the fields of ``LEDGER_FIELDS``. A store that
        keeps no ledger returns []."""
        return []

    def ledger_stream(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The rows :meth:`ledger` gives, in no set order, for a caller that only sums them:
        a store that can stream them (Redis) never holds them all at once."""
        yield from self.ledger(since=since, until=until, scope=scope, session=session, model=model)

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
        """Sums of the matching ledger rows per group of ``by`` (``scope``, ``session_id``,
        ``model``, ``bucket`` of ``bucket`` seconds, ``price_source``, ``estimated``): each a
        dict of the group's keys, ``calls``, ``estimated_calls`` and the summed token and
        ``cost_nanos`` fields, largest ``order_by`` first, at most ``limit`` groups. This
        default sums :meth:`ledger` rows; stores that can group natively override it."""
        from .ledger import aggregate_rows  # here: ledger needs this module loaded

        rows = self.ledger(since=since, until=until, scope=scope, session=session, model=model)
        return aggregate_rows(rows, by, bucket=bucket, order_by=order_by, limit=limit)

    def record_event(self, event: Mapping[str, Any], *, group: str) -> None:  # noqa: B027
        """Keep a refusal or alert (fields of ``EVENT_FIELDS``) in the bounded events log and
        count it; a no-op for stores without one."""

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
        """Kept events in the time range, of the scope(s) (as the acting scope or the caller)
        and kinds given, newest first by default, at most ``limit``."""
        return []

    def event_counts(
        self, *, scope: str | Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """Events ever recorded, per acting scope and kind (``{"user:1": {"refusal": 3}}``);
        not bounded by the log's retention."""
        return {}

    def peek(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        """What :meth:`read` returns (``periods`` as there), without writing anything. This
        default calls read(); stores whose read writes (reaps, drops idle scopes) override
        it. A scope idle past ``idle_ttl`` may still show until a writer drops it."""
        return self.read(scope, now=now, group=group, periods=periods)

    def peek_many(
        self,
        scopes: Mapping[str, str],
        *,
        now: float,
        periods: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, dict[str, Level]]:
        """:meth:`peek` of many scopes at once: ``{scope: group}`` (and ``{scope: periods}``)
        in, ``{scope: counters}`` out; stores override it to batch the reads."""
        wanted = periods or {}
        return {
            name: self.peek(name, now=now, group=group, periods=wanted.get(name))
            for name, group in scopes.items()
        }

    def now(self) -> float | None:
        """The store's own clock for reads (Redis with ``server_time``), else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@lru_cache(maxsize=1)
def _record_payload() -> Callable[[UsageRecord], dict[str, Any]]:
    """``records.record_payload``, imported on first use (records imports this package)."""
    from ..records import record_payload

    return record_payload


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
