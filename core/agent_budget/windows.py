"""Usage windows beyond a session and the rolling 24 hours: rolling windows of any length
and calendar periods (day, week, month) in a time zone, resetting exactly at the boundary.

A rolling window is a store-side ``roll:<seconds>:`` counter. A calendar window is a plain
counter whose lines carry the start of the current period (see ``Line.period``): the
Budget computes that start with :mod:`zoneinfo`, so a month in ``Europe/Paris`` begins at
local midnight of its first day whatever DST does, and the store restarts the counter when a
newer period arrives, atomically with every other limit of the call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

from .stores.base import MAX_WINDOW_SECONDS, roll_metric
from .validate import check_tokens, to_decimal

__all__ = ["CalendarUnit", "Window", "calendar", "period_bounds", "rolling"]

CalendarUnit = Literal["day", "week", "month"]
_UNITS = ("day", "week", "month")


@dataclass(frozen=True)
class Window:
    """Caps over one window: ``rolling(...)`` or ``calendar(...)`` make one.

    ``seconds`` is set for a rolling window; ``unit`` and ``timezone`` for a calendar one.
    ``max_tokens`` and ``max_cost_usd`` are the caps (either or both).
    """

    seconds: int | None = None
    unit: CalendarUnit | None = None
    timezone: str = "UTC"
    max_tokens: int | None = None
    max_cost_usd: Any = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.unit is None):
            raise ValueError("a Window is rolling (seconds=) or calendar (unit=), not both")
        if self.seconds is not None:
            check_tokens("window seconds", self.seconds, maximum=MAX_WINDOW_SECONDS)
            if self.seconds < 1:
                raise ValueError("a rolling window must be at least 1 second long")
        if self.unit is not None:
            if self.unit not in _UNITS:
                raise ValueError(f"calendar unit must be one of {_UNITS}, got {self.unit!r}")
            _zone(self.timezone)
        if self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("a Window needs max_tokens, max_cost_usd or both")
        if self.max_tokens is not None:
            check_tokens("max_tokens", self.max_tokens, maximum=None)
        if self.max_cost_usd is not None:
            to_decimal("max_cost_usd", self.max_cost_usd)

    @property
    def label(self) -> str:
        """The window's part of a limit name: ``rolling_1h``, ``calendar_month``."""
        if self.seconds is not None:
            return f"rolling_{_duration(self.seconds)}"
        zone = "" if self.timezone == "UTC" else f"_{self.timezone}"
        return f"calendar_{self.unit}{zone}"

    def metric(self, name: Literal["tokens", "cost"]) -> str:
        """The store counter of this window for ``tokens`` or ``cost``."""
        if self.seconds is not None:
            return roll_metric(self.seconds, name)
        return f"cal:{self.unit}:{self.timezone}:{name}"

    @property
    def calendar_key(self) -> tuple[CalendarUnit, str] | None:
        return (self.unit, self.timezone) if self.unit is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "unit": self.unit,
            "timezone": self.timezone,
            "max_tokens": self.max_tokens,
            "max_cost_usd": None
            if self.max_cost_usd is None
            else str(to_decimal("max_cost_usd", self.max_cost_usd)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls(
            seconds=data.get("seconds"),
            unit=data.get("unit"),
            timezone=data.get("timezone") or "UTC",
            max_tokens=data.get("max_tokens"),
            max_cost_usd=data.get("max_cost_usd"),
        )


def rolling(
    *,
    seconds: int = 0,
    minutes: int = 0,
    hours: int = 0,
    days: int = 0,
    max_tokens: int | None = None,
    max_cost_usd: Any = None,
) -> Window:
    """Caps over a rolling window of the given length, e.g. ``rolling(hours=1,
    max_tokens=50_000)`` or ``rolling(days=30, max_cost_usd=100)``."""
    for name, value in (("seconds", seconds), ("minutes", minutes), ("hours", hours)):
        check_tokens(name, value, maximum=None)
    check_tokens("days", days, maximum=None)
    total = seconds + 60 * minutes + 3600 * hours + 86_400 * days
    return Window(seconds=total, max_tokens=max_tokens, max_cost_usd=max_cost_usd)


def calendar(
    unit: CalendarUnit,
    *,
    timezone: str = "UTC",
    max_tokens: int | None = None,
    max_cost_usd: Any = None,
) -> Window:
    """Caps over the current calendar ``unit`` (``"day"``, ``"week"`` from Monday,
    ``"month"``) in ``timezone`` (an IANA name such as ``"America/New_York"``), resetting at
    local midnight of the period's first day, e.g. ``calendar("month", timezone=
    "Europe/Paris", max_cost_usd=20)``."""
    return Window(unit=unit, timezone=timezone, max_tokens=max_tokens, max_cost_usd=max_cost_usd)


def _duration(seconds: int) -> str:
    for size, suffix in ((86_400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def _zone(name: str) -> ZoneInfo:
    # Imported here: zoneinfo loads sysconfig data at import, which only calendar windows need.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be an IANA zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {name!r}: use an IANA name such as 'Europe/Paris' (the system "
            "zone database, or the tzdata package, must have it)"
        ) from exc


def _start_of(unit: str, local: datetime) -> datetime:
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if unit == "week":
        day -= timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return day


def _next_start(unit: str, start: datetime) -> datetime:
    if unit == "day":
        return start + timedelta(days=1)
    if unit == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


_cache: dict[tuple[str, str], tuple[int, int]] = {}
_cache_lock = threading.Lock()


def period_bounds(unit: str, timezone: str, now: float) -> tuple[int, int]:
    """``(start, end)`` epoch seconds of the calendar ``unit`` containing ``now`` in
    ``timezone``. Wall-clock arithmetic on local dates (so a DST change moves nothing:
    every period starts at local midnight), cached until the period ends."""
    key = (unit, timezone)
    hit = _cache.get(key)
    if hit is not None and hit[0] <= now < hit[1]:
        return hit
    zone = _zone(timezone)
    local = datetime.fromtimestamp(now, zone)
    start = _start_of(unit, local)
    end = _next_start(unit, start)
    # Local midnights may not exist (a DST jump at 00:00): fromtimestamp normalises them.
    bounds = (int(start.timestamp()), int(end.timestamp()))
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = bounds
    return bounds
