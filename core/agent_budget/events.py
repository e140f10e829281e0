"""Call events: what a budget tells its listeners when a call is recorded or refused.

``Budget.on_record`` / ``Budget.on_refusal`` (and the same on ``BudgetManager``) subscribe;
integrations such as OpenTelemetry and Prometheus build on them. Listeners run in the
thread that committed or was refused, after the store has answered; one that raises is
logged and never breaks accounting. With no listener the budget does no extra work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .alerts import BudgetAlert
from .errors import BudgetExceededError
from .records import UsageRecord

__all__ = [
    "Listeners",
    "RecordEvent",
    "RecordListener",
    "RefusalEvent",
    "RefusalListener",
    "alert_event",
    "refusal_event",
]

log = logging.getLogger("agent_budget")


@dataclass(frozen=True)
class RecordEvent:
    """A call's usage was recorded. ``started_at`` is when the call began (its reservation
    was made; the record's own time for ``Budget.record``); ``record.timestamp`` is when it
    ended. Times are the budget clock's epoch seconds."""

    record: UsageRecord
    started_at: float

    @property
    def ended_at(self) -> float:
        return self.record.timestamp


@dataclass(frozen=True)
class RefusalEvent:
    """A call was refused before it ran. ``scope`` is the scope whose limit refused (the
    call's own or an ancestor's), ``caller`` the scope the call was made on; ``unit`` is
    ``"tokens"`` or ``"usd"``, the unit of ``error.used`` and ``error.limit``."""

    error: BudgetExceededError
    caller: str
    model: str
    session_id: str
    unit: str
    timestamp: float

    @property
    def scope(self) -> str:
        return self.error.scope

    @property
    def limit_type(self) -> str:
        return self.error.limit_type


RecordListener = Callable[[RecordEvent], None]
RefusalListener = Callable[[RefusalEvent], None]


class Listeners:
    """The record and refusal listeners of one budget or manager. ``record`` and
    ``refusal`` are tuples, replaced on change, so the hot path reads them without a lock
    and skips all work while they are empty."""

    def __init__(self) -> None:
        self.record: tuple[RecordListener, ...] = ()
        self.refusal: tuple[RefusalListener, ...] = ()
        self._lock = threading.Lock()

    def add_record(self, callback: RecordListener) -> None:
        if not callable(callback):
            raise TypeError("on_record needs a callable")
        with self._lock:
            self.record = (*self.record, callback)

    def add_refusal(self, callback: RefusalListener) -> None:
        if not callable(callback):
            raise TypeError("on_refusal needs a callable")
        with self._lock:
            self.refusal = (*self.refusal, callback)

    def remove(self, callback: Callable[..., None]) -> bool:
        """Unsubscribe ``callback`` from both lists; True if it was there."""
        with self._lock:
            before = len(self.record) + len(self.refusal)
            self.record = tuple(c for c in self.record if c != callback)
            self.refusal = tuple(c for c in self.refusal if c != callback)
            return len(self.record) + len(self.refusal) < before

    def emit_record(self, event: RecordEvent) -> None:
        for callback in self.record:
            try:
                callback(event)
            except Exception:
                log.exception("record listener %r failed", callback)

    def emit_refusal(self, event: RefusalEvent) -> None:
        for callback in self.refusal:
            try:
                callback(event)
            except Exception:
                log.exception("refusal listener %r failed", callback)


def in_unit(value: Any, unit: str) -> Any:
    """An events-log amount as its unit counts: tokens are whole numbers (``3100``, never
    ``3100.0``, whatever a limit's user-facing value was); money is left as it is."""
    if unit == "tokens" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def events_in_unit(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` from a store's events log with its token amounts whole (rows written before
    tokens were kept whole)."""
    unit = row.get("unit", "")
    if unit != "tokens":
        return row
    return {**row, "used": in_unit(row.get("used"), unit), "limit": in_unit(row.get("limit"), unit)}


def refusal_event(event: RefusalEvent) -> dict[str, Any]:
    """A refusal as a row of a store's events log."""
    error = event.error
    return {
        "timestamp": event.timestamp,
        "kind": "refusal",
        "scope": error.scope,
        "caller": event.caller,
        "limit_type": error.limit_type,
        "level": "critical",
        "message": str(error),
        "model": event.model,
        "session_id": event.session_id,
        "used": in_unit(error.used, event.unit),
        "limit": in_unit(error.limit, event.unit),
        "unit": event.unit,
    }


def alert_event(alert: BudgetAlert, unit: str) -> dict[str, Any]:
    """An alert as a row of a store's events log."""
    return {
        "timestamp": alert.timestamp,
        "kind": "alert",
        "scope": alert.scope,
        "caller": alert.scope,
        "limit_type": alert.limit_type,
        "level": alert.level.value,
        "message": alert.message,
        "model": "",
        "session_id": "",
        "used": in_unit(alert.used, unit),
        "limit": in_unit(alert.limit, unit),
        "unit": unit,
    }
