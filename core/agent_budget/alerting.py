"""Alerter: one scope's alert policy: callbacks, the recent alerts, and once-per-crossing.

A limit alerts WARNING once when its usage reaches ``alert_at_pct`` of the cap and CRITICAL
once when it is exceeded or a call is refused; a commit that starts below the warning
threshold (the window moved on, the session was reset) re-arms both. Alert callbacks that
raise are logged and never break accounting.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from .alerts import AlertLevel, AlertState, BudgetAlert
from .scope import Limit

__all__ = ["REFUSED", "AlertCallback", "Alerter", "format_amount", "warn_thresholds"]

log = logging.getLogger("agent_budget")

AlertCallback = Callable[[BudgetAlert], "Awaitable[None] | None"]
REFUSED = ":refused"
"""Alert-state key suffix for pre-call alerts (refusals, ``check()``), kept apart from the
usage level of the same limit."""


def warn_thresholds(limits: Iterable[Limit], pct: Decimal) -> dict[str, int]:
    """The integer warning threshold of each limit: counters are integers, so
    ``used >= pct * cap`` is ``used >= ceil(pct * cap)``."""
    return {
        lim.limit_type: int((pct * lim.amount).to_integral_value(rounding=ROUND_CEILING))
        for lim in limits
    }


def format_amount(value: float) -> str:
    """An amount for a message: whole numbers without decimals, USD to 6 places."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0")


class Alerter:
    """The alerts of one scope: who hears them, the last ``max_alerts``, and which limits
    have already fired in their current crossing."""

    def __init__(
        self,
        scope: str,
        clock: Callable[[], float],
        warn_at: Mapping[str, int],
        max_alerts: int,
    ) -> None:
        self.scope = scope
        self.clock = clock
        self.warn_at = dict(warn_at)
        self.state = AlertState()
        self._lock = threading.Lock()
        self._alerts: deque[BudgetAlert] = deque(maxlen=max_alerts)
        self._count = 0
        self._callbacks: list[AlertCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def add_callback(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` on every alert: a function, or an ``async def`` one."""
        if not callable(callback):
            raise TypeError("on_alert needs a callable")
        with self._lock:
            self._callbacks.append(callback)

    @property
    def alerts(self) -> list[BudgetAlert]:
        with self._lock:
            return list(self._alerts)

    @property
    def count(self) -> int:
        """Alerts fired in this process since the scope was made (not only those kept)."""
        with self._lock:
            return self._count

    def fire(self, alert: BudgetAlert) -> None:
        """Keep ``alert`` and hand it to every callback.

        On a thread running an event loop the callbacks never run on the loop: plain ones go
        to the loop's default executor and ``async`` ones become tasks, so a slow callback
        cannot stall the app. Elsewhere they run here, in order.
        """
        with self._lock:
            self._alerts.append(alert)
            self._count += 1
            callbacks = list(self._callbacks)
        if not callbacks:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for callback in callbacks:
            if loop is None:
                self._call(callback, alert)
            elif inspect.iscoroutinefunction(callback):
                task = loop.create_task(self._acall(callback, alert))
                self._tasks.add(task)  # tasks are weakly held by the loop
                task.add_done_callback(self._tasks.discard)
            else:
                loop.run_in_executor(None, self._call, callback, alert)

    def _call(self, callback: AlertCallback, alert: BudgetAlert) -> None:
        try:
            result = callback(alert)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception:
            log.exception("alert callback %r failed for scope %r", callback, alert.scope)

    async def _acall(self, callback: AlertCallback, alert: BudgetAlert) -> None:
        try:
            result = callback(alert)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("alert callback %r failed for scope %r", callback, alert.scope)

    def warn(self, message: str, limit_type: str) -> None:
        """A WARNING that is about the scope, not a limit's level (unknown model, outage)."""
        self.fire(
            BudgetAlert(self.scope, AlertLevel.WARNING, message, 0.0, 0.0, self.clock(), limit_type)
        )

    def after_commit(self, limit: Limit, committed: int, amount: int) -> None:
        """Alert for ``limit`` if the commit of ``amount`` that left it at ``committed``
        crossed a threshold: WARNING when it went from below ``alert_at_pct`` of the cap to
        at or above it (and not over the cap), CRITICAL when it went over the cap.

        ``committed`` is read atomically with the commit, so ``committed - amount`` is the
        level just before it: exactly one commit crosses each threshold, whatever the number
        of threads, processes or hosts, and a window that moved on or a reset session
        re-arms both by letting usage fall below them again. A commit that starts below the
        warning threshold also re-arms this scope's pre-call (check and refusal) alerts.
        """
        # A threshold of 0 (alert_at_pct=0) means "at the first usage".
        warn_at = self.warn_at[limit.limit_type] or 1
        before = committed - amount
        if before < warn_at and self.state.armed:
            self.state.should_fire(limit.limit_type + REFUSED, None)
        cap = limit.amount
        if before <= cap < committed:
            level = AlertLevel.CRITICAL
        elif before < warn_at <= committed <= cap:
            level = AlertLevel.WARNING
        else:
            return
        self._fire_level(limit, level, committed, prospective=False)

    def prospective(self, limit: Limit, total: int) -> None:
        """Alert for ``check()`` of a call that would bring ``limit`` to ``total``: WARNING
        from ``alert_at_pct``, CRITICAL above the cap (a soft limit; a hard one refuses
        instead), as the original API's check did. Pre-call alerts (these and refusals)
        fire once per crossing of their own, apart from the alerts of usage committed."""
        if total < self.warn_at[limit.limit_type]:
            return
        level = AlertLevel.CRITICAL if total > limit.amount else AlertLevel.WARNING
        if self.state.should_fire(limit.limit_type + REFUSED, level):
            self._fire_level(limit, level, total, prospective=True)

    def _fire_level(
        self, limit: Limit, level: AlertLevel, amount: int, *, prospective: bool
    ) -> None:
        value = limit.to_user(amount)
        cap = limit.to_user(limit.amount)
        pct = amount / limit.amount if limit.amount else 1.0
        would = " would reach" if prospective else ""
        if level is AlertLevel.CRITICAL:
            message = (
                f"Budget EXCEEDED: {limit.limit_type}{would} used={format_amount(value)} "
                f"limit={format_amount(cap)}"
            )
        else:
            message = (
                f"Budget WARNING: {limit.limit_type}{would or ' at'} {pct:.0%} "
                f"({format_amount(value)}/{format_amount(cap)})"
            )
        alert = BudgetAlert(self.scope, level, message, value, cap, self.clock(), limit.limit_type)
        self.fire(alert)

    def refused(self, limit_type: str, message: str, used: float, cap: float) -> None:
        """A CRITICAL alert for a refusal by ``limit_type``, once per crossing."""
        if self.state.should_fire(limit_type + REFUSED, AlertLevel.CRITICAL):
            self.fire(
                BudgetAlert(
                    self.scope, AlertLevel.CRITICAL, message, used, cap, self.clock(), limit_type
                )
            )

    def rearm(self, limit_types: Iterable[str]) -> None:
        """Start a new crossing for these limits (their counters were reset)."""
        for limit_type in limit_types:
            self.state.should_fire(limit_type, None)
            self.state.should_fire(limit_type + REFUSED, None)

    def clear(self) -> None:
        self.state.clear()


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable
