"""Alerts: levels, the alert record, and the once-per-crossing rule."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["AlertLevel", "AlertState", "BudgetAlert"]


class AlertLevel(Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_RANK = {None: 0, AlertLevel.INFO: 1, AlertLevel.WARNING: 2, AlertLevel.CRITICAL: 3}


@dataclass
class BudgetAlert:
    """A soft warning (usage reached ``alert_at_pct``) or a critical one (exceeded/refused).

    ``used`` and ``limit`` are tokens or USD depending on ``limit_type``.
    """

    scope: str
    level: AlertLevel
    message: str
    used: float
    limit: float
    timestamp: float = field(default_factory=time.time)
    limit_type: str = ""

    @property
    def pct(self) -> float:
        return self.used / self.limit if self.limit else 0.0


class AlertState:
    """Remembers the highest level fired per limit, so each fires once per crossing.

    A limit re-arms when its usage falls back under the warning threshold (the rolling
    window moved on, or the session was reset).
    """

    def __init__(self) -> None:
        self._fired: dict[str, AlertLevel] = {}
        self._lock = threading.Lock()

    @property
    def fired(self) -> dict[str, AlertLevel]:
        """The highest level fired per key (live: cleared in place, never replaced), so a
        hot path can test it without a call."""
        return self._fired

    @property
    def armed(self) -> bool:
        """True while some alert has fired and not re-armed (so re-arming has work to do)."""
        return bool(self._fired)

    def should_fire(self, key: str, level: AlertLevel | None) -> bool:
        """Record that ``key`` is at ``level`` now; True if that is a new, higher crossing."""
        if level is None and key not in self._fired:
            return False  # the common case, without the lock: nothing fired, nothing to re-arm
        with self._lock:
            last = self._fired.get(key)
            if level is None:
                self._fired.pop(key, None)
                return False
            if _RANK[level] > _RANK[last]:
                self._fired[key] = level
                return True
            return False

    def clear(self) -> None:
        with self._lock:
            self._fired.clear()
