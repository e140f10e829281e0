"""Who hears about a :class:`~agent_budget.Budget`'s calls: alert callbacks, record and
refusal listeners (a budget has its own only from its first one on), the store's events
log of alerts and refusals, and the manager told of a scope's first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .alerting import AlertCallback
from .alerts import BudgetAlert
from .errors import BudgetExceededError
from .events import (
    Listeners,
    RecordListener,
    RefusalEvent,
    RefusalListener,
    alert_event,
    refusal_event,
)

if TYPE_CHECKING:
    from .budget import Budget

NO_LISTENERS = Listeners()
"""Shared by every budget without listeners; never added to (a budget copies it first)."""
MAKING = threading.Lock()
"""Held while a budget makes its own alerter or listeners, so each is made once."""

__all__ = [
    "MAKING",
    "NO_LISTENERS",
    "log_alert",
    "note_first_use",
    "on_alert",
    "on_record",
    "on_refusal",
    "own_listeners",
    "refused",
    "remove_listener",
]


def own_listeners(self: Budget) -> Listeners:
    if self._listeners is NO_LISTENERS:
        with MAKING:
            if self._listeners is NO_LISTENERS:
                self._listeners = Listeners()
    return self._listeners


def on_alert(self: Budget, callback: AlertCallback) -> None:
    """Call ``callback(alert)`` on every alert of this scope; exceptions are logged."""
    self._alerter.add_callback(callback)


def on_record(self: Budget, callback: RecordListener) -> None:
    """Call ``callback(RecordEvent)`` after each call of this scope is recorded (the
    record and when the call started); exceptions are logged."""
    self._own_listeners().add_record(callback)


def on_refusal(self: Budget, callback: RefusalListener) -> None:
    """Call ``callback(RefusalEvent)`` when a call made on this scope is refused, by its
    own limits or an ancestor's; exceptions are logged."""
    self._own_listeners().add_refusal(callback)


def remove_listener(self: Budget, callback: Callable[..., None]) -> bool:
    """Stop calling an ``on_record`` / ``on_refusal`` callback; True if it was there."""
    return self._own_listeners().remove(callback)


def note_first_use(self: Budget) -> None:
    """Tell the manager that made this scope that it has recorded usage (once)."""
    callback, self._first_use = self._first_use, None
    if callback is not None:
        callback(self)


def log_alert(self: Budget, alert: BudgetAlert) -> None:
    """Keep an alert in the store's events log (not an outage alert: the store is down)."""
    if alert.limit_type == "store_unavailable":
        return
    limit = next((lim for lim in self._limits if lim.limit_type == alert.limit_type), None)
    event = alert_event(alert, limit.unit if limit is not None else "")
    self._store_call(self.store.record_event, event, group=self.group, quiet=True)


def refused(self: Budget, error: BudgetExceededError, model: str, session_id: str) -> None:
    """Note a refusal in the store's events log (best effort) and tell the listeners. A
    template-made scope refused before it ever recorded usage is registered in the store
    now, as at its first record, so reports list the tenant whose every call was refused."""
    for node in self._chain:
        if node._first_use is not None:
            node._note_first_use()
    unit = next(
        (
            lim.unit
            for budget in self._chain
            if budget.name == error.scope
            for lim in budget._limits
            if lim.limit_type == error.limit_type
        ),
        "",
    )
    event = RefusalEvent(error, self.name, model, session_id, unit, self.clock())
    self._store_call(self.store.record_event, refusal_event(event), group=self.group, quiet=True)
    if self._listeners.refusal:
        self._listeners.emit_refusal(event)
