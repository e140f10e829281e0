"""BudgetScope: the limits of one named budget, validated, and the limit lines they imply."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .money import usd_to_nanos
from .stores.base import is_windowed
from .validate import check_name, check_tokens, to_decimal
from .windows import Window

__all__ = ["BudgetScope", "Limit", "Metric"]


class Metric:
    """Names of the counters a scope keeps in its store."""

    SESSION_TOKENS = "session:tokens"
    SESSION_COST = "session:cost"
    DAY_TOKENS = "day:tokens"
    DAY_COST = "day:cost"

    # Interned: every scope's counters of one model share the one name in a store.

    @staticmethod
    def model_tokens(model: str) -> str:
        return sys.intern(f"model:{model}:tokens")

    @staticmethod
    def model_cost(model: str) -> str:
        return sys.intern(f"model:{model}:cost")

    @staticmethod
    def parse_model(metric: str) -> tuple[str, str] | None:
        """``("gpt-4o", "tokens")`` for ``"model:gpt-4o:tokens"``, else None."""
        if not metric.startswith("model:"):
            return None
        name, _, kind = metric[len("model:") :].rpartition(":")
        return (name, kind) if name and kind in ("tokens", "cost") else None


@dataclass(frozen=True)
class Limit:
    """One cap of a scope: which counter, how much, and in what unit (tokens or nano-USD)."""

    limit_type: str
    metric: str
    amount: int
    unit: Literal["tokens", "usd"]
    calendar: tuple[str, str] | None = None
    """``(unit, timezone)`` of a calendar window, whose lines carry the current period."""
    per_session: bool = False
    """A ``*_per_session`` limit: counted per session id when the scope counts sessions
    apart (see :attr:`BudgetScope.per_session_id`)."""

    @property
    def windowed(self) -> bool:
        """True when the counter is a rolling window (the stores' rule, in one place)."""
        return is_windowed(self.metric)

    def to_user(self, value: int) -> float:
        """``value`` in the unit users see: tokens, or USD as a float."""
        return float(value) if self.unit == "tokens" else value / 1_000_000_000


@dataclass
class BudgetScope:
    """Limits for a named scope (a session, user, tenant or global budget).

    Every ``max_*`` is optional: ``None`` means no cap. Costs are USD and may be float, int,
    str or Decimal; they are held exactly. ``alert_at_pct`` (0..1) fires a WARNING alert
    when usage reaches that fraction of a limit; ``hard_stop=False`` alerts without refusing.
    Limits are read when a Budget is made from the scope.

    ``windows`` adds caps over other windows: ``rolling(hours=1, max_tokens=...)`` or
    ``calendar("month", timezone="Europe/Paris", max_cost_usd=...)``. ``per_session_id``
    (default True) makes the ``*_per_session`` limits count each session id (a conversation:
    ``session_id=``, ``budget_session`` metadata, LangGraph's ``thread_id``) apart; calls
    without a session id, and every call when it is False, share the scope's one session,
    as in the original API. ``summary()["session"]`` always shows the scope's whole session.
    """

    name: str
    max_tokens_per_session: int | None = None
    max_cost_per_session_usd: float | None = None
    max_tokens_per_day: int | None = None
    max_cost_per_day_usd: float | None = None
    max_tokens_per_model: dict[str, int] = field(default_factory=dict)
    max_cost_per_model_usd: dict[str, float] = field(default_factory=dict)
    alert_at_pct: float = 0.8
    hard_stop: bool = True
    windows: Sequence[Window] = ()
    per_session_id: bool = True

    def __post_init__(self) -> None:
        check_name("name", self.name)
        for fld in ("max_tokens_per_session", "max_tokens_per_day"):
            value = getattr(self, fld)
            if value is not None:
                check_tokens(fld, value, maximum=None)
        for fld in ("max_cost_per_session_usd", "max_cost_per_day_usd"):
            value = getattr(self, fld)
            if value is not None:
                to_decimal(fld, value)
        if not isinstance(self.max_tokens_per_model, Mapping):
            raise TypeError("max_tokens_per_model must be a dict {model: tokens}")
        if not isinstance(self.max_cost_per_model_usd, Mapping):
            raise TypeError("max_cost_per_model_usd must be a dict {model: usd}")
        for model, tokens in self.max_tokens_per_model.items():
            check_name("max_tokens_per_model key", model)
            check_tokens(f"max_tokens_per_model[{model!r}]", tokens, maximum=None)
        for model, usd in self.max_cost_per_model_usd.items():
            check_name("max_cost_per_model_usd key", model)
            to_decimal(f"max_cost_per_model_usd[{model!r}]", usd)
        pct = to_decimal("alert_at_pct", self.alert_at_pct)
        if pct > 1:
            raise ValueError(f"alert_at_pct must be between 0 and 1, got {self.alert_at_pct!r}")
        if not isinstance(self.hard_stop, bool):
            raise TypeError(f"hard_stop must be a bool, got {self.hard_stop!r}")
        if not isinstance(self.per_session_id, bool):
            raise TypeError(f"per_session_id must be a bool, got {self.per_session_id!r}")
        windows: object = self.windows
        if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence):
            raise TypeError("windows must be a list of rolling(...) / calendar(...) windows")
        labels: set[str] = set()
        for window in self.windows:
            if not isinstance(window, Window):
                raise TypeError(
                    f"windows must hold rolling(...) / calendar(...) windows, got {window!r}"
                )
            if window.label in labels:
                raise ValueError(f"two windows of the same kind: {window.label}")
            labels.add(window.label)

    def limits(self, canonical: Callable[[str], str] = lambda m: m) -> tuple[Limit, ...]:
        """Every cap of this scope, per-model keys passed through ``canonical``.

        Two keys of one per-model dict that name the same model (``"gpt-4o"`` and
        ``"GPT-4o"``, ``"openai/gpt-4o"``, a dated snapshot) are a ValueError: only one cap
        could be enforced, and which one would be an accident of dict order."""
        for field_name in ("max_tokens_per_model", "max_cost_per_model_usd"):
            seen: dict[str, str] = {}
            for model in getattr(self, field_name):
                name = canonical(model)
                if name in seen:
                    raise ValueError(
                        f"{field_name} of scope {self.name!r} has two caps for model "
                        f"{name!r}: keys {seen[name]!r} and {model!r}; keep one"
                    )
                seen[name] = model
        out: list[Limit] = []
        if self.max_tokens_per_session is not None:
            out.append(
                Limit(
                    "session_tokens",
                    Metric.SESSION_TOKENS,
                    self.max_tokens_per_session,
                    "tokens",
                    per_session=True,
                )
            )
        if self.max_cost_per_session_usd is not None:
            out.append(
                Limit(
                    "session_cost_usd",
                    Metric.SESSION_COST,
                    usd_to_nanos(self.max_cost_per_session_usd),
                    "usd",
                    per_session=True,
                )
            )
        if self.max_tokens_per_day is not None:
            out.append(Limit("day_tokens", Metric.DAY_TOKENS, self.max_tokens_per_day, "tokens"))
        if self.max_cost_per_day_usd is not None:
            out.append(
                Limit(
                    "day_cost_usd", Metric.DAY_COST, usd_to_nanos(self.max_cost_per_day_usd), "usd"
                )
            )
        for window in self.windows:
            key = window.calendar_key
            if window.max_tokens is not None:
                out.append(
                    Limit(
                        f"{window.label}_tokens",
                        window.metric("tokens"),
                        window.max_tokens,
                        "tokens",
                        calendar=key,
                    )
                )
            if window.max_cost_usd is not None:
                out.append(
                    Limit(
                        f"{window.label}_cost_usd",
                        window.metric("cost"),
                        usd_to_nanos(window.max_cost_usd),
                        "usd",
                        calendar=key,
                    )
                )
        for model, tokens in self.max_tokens_per_model.items():
            name = canonical(model)
            out.append(Limit(f"model_{name}_tokens", Metric.model_tokens(name), tokens, "tokens"))
        for model, usd in self.max_cost_per_model_usd.items():
            name = canonical(model)
            out.append(
                Limit(f"model_{name}_cost_usd", Metric.model_cost(name), usd_to_nanos(usd), "usd")
            )
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, kept in stores so other processes and the CLI can read limits."""

        def num(v: Any) -> Any:
            return None if v is None else str(to_decimal("limit", v))

        return {
            "name": self.name,
            "max_tokens_per_session": self.max_tokens_per_session,
            "max_cost_per_session_usd": num(self.max_cost_per_session_usd),
            "max_tokens_per_day": self.max_tokens_per_day,
            "max_cost_per_day_usd": num(self.max_cost_per_day_usd),
            "max_tokens_per_model": dict(self.max_tokens_per_model),
            "max_cost_per_model_usd": {k: num(v) for k, v in self.max_cost_per_model_usd.items()},
            "alert_at_pct": float(self.alert_at_pct),
            "hard_stop": self.hard_stop,
            "windows": [w.to_dict() for w in self.windows],
            "per_session_id": self.per_session_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetScope:
        """Inverse of :meth:`to_dict`; cost limits come back as floats."""

        def num(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(
            name=data["name"],
            max_tokens_per_session=data.get("max_tokens_per_session"),
            max_cost_per_session_usd=num(data.get("max_cost_per_session_usd")),
            max_tokens_per_day=data.get("max_tokens_per_day"),
            max_cost_per_day_usd=num(data.get("max_cost_per_day_usd")),
            max_tokens_per_model=dict(data.get("max_tokens_per_model") or {}),
            max_cost_per_model_usd={
                k: float(v) for k, v in (data.get("max_cost_per_model_usd") or {}).items()
            },
            alert_at_pct=float(data.get("alert_at_pct", 0.8)),
            hard_stop=bool(data.get("hard_stop", True)),
            windows=[Window.from_dict(w) for w in data.get("windows") or ()],
            per_session_id=bool(data.get("per_session_id", True)),
        )
